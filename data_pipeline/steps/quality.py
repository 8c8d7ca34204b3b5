"""Heuristic quality filters with their published defaults: Gopher quality and repetition (Rae et
al. 2021, Table A1), C4 (Raffel et al. 2020) and FineWeb (Penedo et al. 2024).

Rules and thresholds follow DataTrove 0.10's implementations so results can be compared; every
drop is tagged with the rule that fired (named after DataTrove's reasons; `DATATROVE_REASONS` maps
the ones that differ). By default (`compat: paper`) words are `\\w+` tokens (text_stats.py),
so punctuation is not a "word" - Gopher's "80% of words contain a letter" then reads as in the
paper, whereas DataTrove counts spaCy's punctuation tokens as words without letters and drops more
punctuation-heavy technical pages. `compat: datatrove` makes each step decide exactly as
DataTrove 0.10 does (spaCy-style tokens and DataTrove's other details, quality_datatrove.py), for
teams reproducing FineWeb; benchmarks/datatrove_compat.py measures both modes against DataTrove.
All four read one shared `text_stats(doc)` (words, lines, paragraphs, n-gram hashes computed
once): see text_stats.py for why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from data_pipeline.document import Document
from data_pipeline.steps import quality_datatrove as datatrove
from data_pipeline.steps.base import Filter, Step, register
from data_pipeline.steps.text_stats import c4_lines, find_duplicates, repeats, text_stats, top_ngram_chars

STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
TERMINAL_PUNCTUATION = (".", "!", "?", '"', "'", "…", "。", "！", "？", "”", "’", "»", "؟", "।", "॥", "‼", "⁉")
_HAS_ALPHA = re.compile(r"[^\W\d_]").search


class _AlphaCache(dict):
    """word -> has a letter; misses computed once. Words repeat across documents, so counting a
    document's alphabetic words becomes C-level dict lookups (the cache is reset when it grows)."""

    def __missing__(self, word: str) -> bool:
        if len(self) > 2_000_000:
            self.clear()
        value = self[word] = _HAS_ALPHA(word) is not None
        return value


_ALPHA = _AlphaCache()
COMPAT_MODES = ("paper", "datatrove")
Compat = Literal["paper", "datatrove"]
# Anvil's reason -> DataTrove 0.10's, per step (names not listed are the same in both).
DATATROVE_REASONS = {
    "gopher_quality": {
        "short_doc": "gopher_short_doc",
        "long_doc": "gopher_long_doc",
        "below_avg_word_length": "gopher_below_avg_threshold",
        "above_avg_word_length": "gopher_above_avg_threshold",
        "too_many_hashes": "gopher_too_many_hashes",
        "too_many_ellipsis": "gopher_too_many_ellipsis",
        "too_many_bullets": "gopher_too_many_bullets",
        "too_many_end_ellipsis": "gopher_too_many_end_ellipsis",
        "below_alpha_words_ratio": "gopher_below_alpha_threshold",
        "not_enough_stop_words": "gopher_enough_stop_words",
    },
    "gopher_repetition": {},
    "c4": {},
    "fineweb": {},
}


class _CompatChecked:
    """Checks `compat` of Params built by hand (recipes are checked by their `Literal` type)."""

    def __init__(self, params=None):
        super().__init__(params)
        if self.params.compat not in COMPAT_MODES:
            raise ValueError(f"{self.name}.compat: expected one of {list(COMPAT_MODES)}, got {self.params.compat!r}")


@register("gopher_quality")
class GopherQuality(_CompatChecked, Filter):
    @dataclass
    class Params:
        min_doc_words: int = 50  # drop documents with fewer words
        max_doc_words: int = 100_000  # drop documents with more words
        min_avg_word_length: float = 3  # drop if mean word length (chars) is below
        max_avg_word_length: float = 10  # drop if mean word length (chars) is above
        max_symbol_word_ratio: float = 0.1  # max '#' (or '...'/'…') count per word
        max_bullet_lines_ratio: float = 0.9  # max fraction of lines starting with a bullet
        max_ellipsis_lines_ratio: float = 0.3  # max fraction of lines ending in '...' or '…'
        min_alpha_words_ratio: float = 0.8  # min fraction of words containing a letter
        min_stop_words: int = 2  # min count of English stop words (the, be, to, of...)
        compat: Compat = "paper"  # paper: the published rules; datatrove: DataTrove 0.10's decisions (FineWeb)

    def keep(self, doc: Document):
        if self.params.compat == "datatrove":
            return datatrove.gopher_quality(self.params, doc)
        p, st = self.params, text_stats(doc)
        text, words = doc.text, st.words
        n_words = len(words)
        if n_words < p.min_doc_words:
            return False, "short_doc"
        if n_words > p.max_doc_words:
            return False, "long_doc"
        avg = float(st.word_lengths.mean())
        if avg < p.min_avg_word_length:
            return False, "below_avg_word_length"
        if avg > p.max_avg_word_length:
            return False, "above_avg_word_length"
        if text.count("#") / n_words > p.max_symbol_word_ratio:
            return False, "too_many_hashes"
        if (text.count("...") + text.count("…")) / n_words > p.max_symbol_word_ratio:
            return False, "too_many_ellipsis"
        lines = st.raw_lines
        bullets = sum(1 for s in lines if s.lstrip().startswith(("•", "-", "*", "·")))
        if bullets / len(lines) > p.max_bullet_lines_ratio:
            return False, "too_many_bullets"
        ends = sum(1 for s in lines if s.rstrip().endswith(("...", "…")))
        if ends / len(lines) > p.max_ellipsis_lines_ratio:
            return False, "too_many_end_ellipsis"
        if sum(map(_ALPHA.__getitem__, words)) / n_words < p.min_alpha_words_ratio:
            return False, "below_alpha_words_ratio"
        if sum(map(STOP_WORDS.__contains__, words)) < p.min_stop_words:
            return False, "not_enough_stop_words"
        return True, None


def _all_duplicate_chars(
    hashes: np.ndarray,
    ngram_chars: np.ndarray,
    n: int,
    limit: float,
    masks: tuple[np.ndarray, np.ndarray] | None = None,
) -> float:
    """Characters in repeated n-grams, scanning left to right and jumping over each repeat (Gopher's
    definition). Returns early with an upper bound once the answer cannot exceed `limit`."""
    later, repeating = masks if masks is not None else repeats(hashes)
    bound = float(ngram_chars[later].sum())  # only non-first occurrences can ever be counted
    if bound <= limit:
        return bound
    # Unique n-grams never change the scan: walk only the positions of n-grams that repeat.
    positions = np.flatnonzero(repeating)
    seen: set[int] = set()
    total, skip_until = 0, 0
    for pos, h, c in zip(positions.tolist(), hashes[positions].tolist(), ngram_chars[positions].tolist()):
        if pos < skip_until:
            continue
        if h in seen:
            total += c
            skip_until = pos + n
        else:
            seen.add(h)
    return float(total)


@register("gopher_repetition")
class GopherRepetition(_CompatChecked, Filter):
    @dataclass
    class Params:
        dup_line_frac: float = 0.3  # max fraction of lines that repeat an earlier line
        dup_para_frac: float = 0.3  # max fraction of paragraphs that repeat an earlier one
        dup_line_char_frac: float = 0.2  # max share of characters in repeated lines
        dup_para_char_frac: float = 0.2  # max share of characters in repeated paragraphs
        top_n_grams: list[list[float]] = field(  # [n, frac]: max char share of the most frequent word n-gram
            default_factory=lambda: [[2, 0.2], [3, 0.18], [4, 0.16]]
        )
        dup_n_grams: list[list[float]] = field(  # [n, frac]: max char share of repeated word n-grams
            default_factory=lambda: [[5, 0.15], [6, 0.14], [7, 0.13], [8, 0.12], [9, 0.11], [10, 0.10]]
        )
        compat: Compat = "paper"  # paper: the published rules; datatrove: DataTrove 0.10's decisions (FineWeb)

    def keep(self, doc: Document):
        if self.params.compat == "datatrove":
            return datatrove.gopher_repetition(self.params, doc)
        p, st = self.params, text_stats(doc)
        n_chars = max(len(doc.text), 1)
        paragraphs = st.paragraphs
        n_dup, chars = find_duplicates(paragraphs)
        if n_dup / len(paragraphs) > p.dup_para_frac:
            return False, "dup_para_frac"
        if chars / n_chars > p.dup_para_char_frac:
            return False, "dup_para_char_frac"
        lines = st.lines or [""]
        n_dup, chars = find_duplicates(lines)
        if n_dup / len(lines) > p.dup_line_frac:
            return False, "dup_line_frac"
        if chars / n_chars > p.dup_line_char_frac:
            return False, "dup_line_char_frac"
        lengths = st.word_lengths
        if len(lengths) == 0:
            return True, None
        csum = np.concatenate([[0], np.cumsum(lengths)])
        for n, frac in p.top_n_grams:
            n = int(n)
            hashes = st.ngram_hashes(n)
            if len(hashes) == 0:
                continue
            gram_chars = csum[n:] - csum[:-n] + (n - 1)  # " ".join(words) length
            if top_ngram_chars(hashes, gram_chars) / n_chars > frac:
                return False, f"top_{n}_gram"
        candidates = None  # positions whose n-gram repeats; an (n+1)-gram can only repeat there
        for n, frac in sorted(p.dup_n_grams):
            n = int(n)
            hashes = st.ngram_hashes(n)
            if len(hashes) == 0:
                continue
            gram_chars = csum[n:] - csum[:-n]  # "".join(words) length
            limit = frac * n_chars
            if candidates is not None and gram_chars[candidates[: len(hashes)]].sum() <= limit:
                continue  # cheap bound from the shorter n-grams: no sort needed
            masks = repeats(hashes)
            candidates = masks[0]
            if _all_duplicate_chars(hashes, gram_chars, n, limit, masks) / n_chars > frac:
                return False, f"duplicated_{n}_n_grams"
        return True, None


_SENTENCE_END_RE = re.compile(r"[.!?…。！？]+(?:['\"”’)\]]*)(?=\s|$)")


def _paper_sentences(line: str) -> int:
    return len(_SENTENCE_END_RE.findall(line)) or 1


@register("c4")
class C4Quality(_CompatChecked, Step):
    """C4's rules: line-level removals (kept text is rewritten) then document-level drops."""

    @dataclass
    class Params:
        remove_citations: bool = True  # strip [1], [edit], [citation needed] markers
        filter_no_terminal_punct: bool = True  # remove lines not ending in . ? ! " ' (or ending in ...)
        min_num_sentences: int = 5  # drop documents with fewer sentences left; 0 = off
        min_words_per_line: int = 3  # remove lines with fewer words
        max_word_length: int = 1000  # remove lines with a word longer than this (chars)
        filter_lorem_ipsum: bool = True  # drop documents containing 'lorem ipsum'
        filter_javascript: bool = True  # remove lines mentioning 'javascript'
        filter_curly_bracket: bool = True  # drop documents containing '{'
        filter_policy: bool = True  # remove lines with cookie / terms / privacy-policy text
        compat: Compat = "paper"  # paper: the published rules; datatrove: DataTrove 0.10's decisions (FineWeb)

    def process(self, doc: Document):
        if self.params.compat == "datatrove":
            return datatrove.c4(self.params, doc, self.stats.edits)
        p = self.params
        reason, kept, sentences = c4_lines(text_stats(doc).raw_lines, p, self.stats.edits, _paper_sentences)
        if reason:
            return reason
        if p.min_num_sentences > 0 and sentences < p.min_num_sentences:
            return "too_few_sentences"
        if not kept:
            return "no_lines_left"
        doc.text = "\n".join(kept)
        return None


@register("fineweb")
class FineWebQuality(_CompatChecked, Filter):
    @dataclass
    class Params:
        line_punct_thr: float = 0.12  # min fraction of lines ending in terminal punctuation
        line_punct_exclude_zero: bool = False  # skip line_punct_thr when no line ends in punctuation
        short_line_thr: float = 0.67  # drop if more than this fraction of lines are short
        short_line_length: int = 30  # a line of at most this many chars counts as short
        char_duplicates_ratio: float = 0.01  # max share of characters in repeated lines
        new_line_ratio: float = 0.3  # max newlines per word (list-like pages)
        compat: Compat = "paper"  # paper: the published rules; datatrove: DataTrove 0.10's decisions (FineWeb)

    def keep(self, doc: Document):
        if self.params.compat == "datatrove":
            return datatrove.fineweb(self.params, doc)
        p, st = self.params, text_stats(doc)
        lines = [line for line in st.raw_lines if line.strip()]
        if not lines:
            return False, "empty"
        ratio = sum(1 for line in lines if line.endswith(TERMINAL_PUNCTUATION)) / len(lines)
        if ratio < p.line_punct_thr and not (ratio == 0 and p.line_punct_exclude_zero):
            return False, "line_punct_ratio"
        if sum(1 for line in lines if len(line) <= p.short_line_length) / len(lines) > p.short_line_thr:
            return False, "short_line_ratio"
        if find_duplicates(lines)[1] / max(len(doc.text) - doc.text.count("\n"), 1) > p.char_duplicates_ratio:
            return False, "char_dup_ratio"
        if doc.text.count("\n") / max(len(st.words), 1) > p.new_line_ratio:
            return False, "list_ratio"
        return True, None
