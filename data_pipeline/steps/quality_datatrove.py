"""`compat: datatrove`: the heuristic filters' decisions as DataTrove 0.10 makes them.

Teams reproducing FineWeb need FineWeb's decisions, not the papers'. DataTrove's filters differ from
the paper-faithful defaults of quality.py in ways that change many decisions on technical text:

* words are spaCy's English tokens (en_tokens.py), punctuation included: `foo():` is three words.
  Gopher quality counts and averages only tokens with a character outside DataTrove's punctuation
  list, but divides `#`, ellipsis and "has a letter" counts by all tokens, so punctuation-heavy pages
  fail the 80%-alphabetic rule; stop words are counted as distinct words (`the` twice is one);
  bullets are only `-` and `•`; lines are `str.splitlines()`;
* Gopher repetition drops empty documents, splits lines on `\\n+` (an empty first or last line
  counts), and keys repeated n-grams by their words joined *without* spaces, so different token
  splits of the same characters count as repeats;
* C4 splits lines with `str.splitlines()` and counts sentences with spaCy's sentencizer on the
  tokens; a page with no line left is dropped as `too_few_sentences` (kept, empty, when the
  sentence minimum is off);
* FineWeb's terminal punctuation is the Unicode sentence terminals only (no quotes, no `…`) and its
  list ratio divides newlines by tokens.

Thresholds are the step's own parameters; a threshold DataTrove treats as "off" when falsy (0) is off
here too. Reasons keep Anvil's names; `quality.DATATROVE_REASONS` maps them to DataTrove's.
"""

from __future__ import annotations

import re
from functools import cached_property

import numpy as np

from data_pipeline.document import Document
from data_pipeline.steps.en_tokens import SENTENCE_END, sentence_count, words
from data_pipeline.steps.text_stats import PARAGRAPH_RE, TextStats, c4_lines, find_duplicates, repeats, top_ngram_chars


def _chars(*ranges: tuple[int, ...]) -> frozenset[str]:
    return frozenset(chr(c) for r in ranges for c in range(r[0], r[-1] + 1))


# Unicode sentence terminals, as DataTrove lists them (FineWeb's line-end test).
TERMINAL = SENTENCE_END | _chars(
    (0x061D, 0x061E), (0x0837,), (0x0839,), (0x083D, 0x083E), (0x17D4, 0x17D6), (0x17D9, 0x17DA),
    (0x1B7D, 0x1B7E), (0x2E53, 0x2E54), (0x10F55, 0x10F59), (0x10F86, 0x10F89), (0x11944,), (0x11946,),
    (0x11EF7, 0x11EF8), (0x11F43, 0x11F44), (0x16E98,),
)  # fmt: skip
# What DataTrove's Gopher quality filter calls punctuation: a token made only of these is a symbol,
# not a word (ASCII punctuation, common CJK/fullwidth marks, control characters, terminals).
PUNCTUATION = (
    frozenset('!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„\';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_."}►»')
    | _chars((0, 8), (11, 12), (13, 31), (127, 159))
    | TERMINAL
)
STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
_LINE_RUNS = re.compile("\n+")


class _IsWord(dict):
    """token -> has a character outside PUNCTUATION; fills `_WORD_CHARS` and `_HAS_LETTER` too,
    so that a document's counts are C-level dictionary lookups (cached per process)."""

    def __missing__(self, token: str) -> bool:
        if len(self) > 2_000_000:
            self.clear()
            _WORD_CHARS.clear()
            _HAS_LETTER.clear()
        is_word = self[token] = not PUNCTUATION.issuperset(token)
        _WORD_CHARS[token] = len(token) if is_word else 0
        _HAS_LETTER[token] = any(map(str.isalpha, token))
        return is_word


class _Derived(dict):
    def __missing__(self, token: str):
        _IS_WORD.__missing__(token)  # fills this one too
        return self[token]


_IS_WORD = _IsWord()
_WORD_CHARS = _Derived()  # token -> its length if it is a word, else 0
_HAS_LETTER = _Derived()  # token -> has a letter
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd: invertible modulo 2**64
_INV = np.uint64(pow(0x9E3779B97F4A7C15, -1, 1 << 64))
_POW = np.ones(1, dtype=np.uint64)  # _MULT**i and _INV**i modulo 2**64, grown on demand
_IPOW = np.ones(1, dtype=np.uint64)


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    global _POW, _IPOW
    if len(_POW) < n:
        size = max(n, 2 * len(_POW))
        with np.errstate(over="ignore"):
            _POW = np.cumprod(np.full(size, _MULT, dtype=np.uint64)) * _INV  # starts at _MULT**0
            _IPOW = np.cumprod(np.full(size, _INV, dtype=np.uint64)) * _MULT
    return _POW[:n], _IPOW[:n]


class DatatroveStats(TextStats):
    """TextStats over spaCy-style tokens, plus hashes of n-grams joined without spaces."""

    __slots__ = ()

    @cached_property
    def words(self) -> list[str]:
        return words(self.text)

    @cached_property
    def starts(self) -> np.ndarray:
        """Where each word starts in `"".join(words)` (and where the last one ends)."""
        return np.concatenate([[0], np.cumsum(self.word_lengths)])

    @cached_property
    def _joined_prefix(self) -> np.ndarray:
        chars = (
            np.frombuffer("".join(self.words).encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
            + 1
        )
        prefix = np.zeros(len(chars) + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            np.cumsum(chars * _powers(len(chars))[1], out=prefix[1:])
        return prefix

    def joined_ngram_hashes(self, n: int) -> np.ndarray:
        """Hash of `"".join(words[i:i+n])` for every i: equal strings, equal hashes (a polynomial
        over the characters, from prefix sums: sum of c_j * INV**j, shifted back by MULT**start)."""
        prefix, starts = self._joined_prefix, self.starts
        left, right = starts[: len(starts) - n], starts[n:]
        with np.errstate(over="ignore"):
            return (prefix[right] - prefix[left]) * _powers(len(prefix))[0][left]


_ATTR = "_anvil_datatrove_stats"


def stats(doc: Document) -> DatatroveStats:
    st = doc.__dict__.get(_ATTR)
    if st is None or st.text is not doc.text:
        st = doc.__dict__[_ATTR] = DatatroveStats(doc.text)
    return st


def gopher_quality(p, doc: Document) -> tuple[bool, str | None]:
    text, tokens = doc.text, stats(doc).words
    n_words = sum(map(_IS_WORD.__getitem__, tokens))  # also caches the two lookups below
    if p.min_doc_words and n_words < p.min_doc_words:
        return False, "short_doc"
    if p.max_doc_words and n_words > p.max_doc_words:
        return False, "long_doc"
    avg = sum(map(_WORD_CHARS.__getitem__, tokens)) / n_words if n_words else float("nan")
    if p.min_avg_word_length and avg < p.min_avg_word_length:
        return False, "below_avg_word_length"
    if p.max_avg_word_length and avg > p.max_avg_word_length:
        return False, "above_avg_word_length"
    n_tokens = max(len(tokens), 1)
    if p.max_symbol_word_ratio and text.count("#") / n_tokens > p.max_symbol_word_ratio:
        return False, "too_many_hashes"
    if p.max_symbol_word_ratio and (text.count("...") + text.count("…")) / n_tokens > p.max_symbol_word_ratio:
        return False, "too_many_ellipsis"
    lines = text.splitlines() or [""]
    bullets = sum(1 for s in lines if s.lstrip().startswith(("•", "-")))
    if p.max_bullet_lines_ratio and bullets / len(lines) > p.max_bullet_lines_ratio:
        return False, "too_many_bullets"
    ends = sum(1 for s in lines if s.rstrip().endswith(("...", "…")))
    if p.max_ellipsis_lines_ratio and ends / len(lines) > p.max_ellipsis_lines_ratio:
        return False, "too_many_end_ellipsis"
    if p.min_alpha_words_ratio and sum(map(_HAS_LETTER.__getitem__, tokens)) / n_tokens < p.min_alpha_words_ratio:
        return False, "below_alpha_words_ratio"
    if p.min_stop_words and len(STOP_WORDS.intersection(tokens)) < p.min_stop_words:
        return False, "not_enough_stop_words"
    return True, None


def gopher_repetition(p, doc: Document) -> tuple[bool, str | None]:
    text = doc.text
    if not text:
        return False, "empty"
    n_chars = len(text)
    paragraphs = PARAGRAPH_RE.split(text.strip())
    n_dup, chars = find_duplicates(paragraphs)
    if p.dup_para_frac and n_dup / len(paragraphs) > p.dup_para_frac:
        return False, "dup_para_frac"
    if p.dup_para_char_frac and chars / n_chars > p.dup_para_char_frac:
        return False, "dup_para_char_frac"
    lines = _LINE_RUNS.split(text)
    n_dup, chars = find_duplicates(lines)
    if p.dup_line_frac and n_dup / len(lines) > p.dup_line_frac:
        return False, "dup_line_frac"
    if p.dup_line_char_frac and chars / n_chars > p.dup_line_char_frac:
        return False, "dup_line_char_frac"
    st = stats(doc)
    n_words, csum = len(st.words), st.starts
    for n, frac in p.top_n_grams:
        n = int(n)
        if n_words < n:
            continue
        gram_chars = csum[n:] - csum[:-n] + (n - 1)  # " ".join(words) length
        if top_ngram_chars(st.ngram_hashes(n), gram_chars) / n_chars > frac:
            return False, f"top_{n}_gram"
    for n, frac in p.dup_n_grams:
        n = int(n)
        if n_words < n:
            continue
        if _joined_duplicate_chars(st, n, n_chars, frac) / n_chars > frac:
            return False, f"duplicated_{n}_n_grams"
    return True, None


def _joined_duplicate_chars(st: DatatroveStats, n: int, n_chars: int, frac: float) -> int:
    """Characters in repeated n-grams (keyed by their words joined without spaces), scanning left
    to right and jumping over each repeat. Hashes only pick the candidates; the scan compares the
    strings, so the count is exact. Returns an upper bound when that already passes."""
    hashes = st.joined_ngram_hashes(n)
    starts = st.starts
    later, repeating = repeats(hashes)
    bound = int((starts[n:] - starts[:-n])[later].sum())
    if bound / n_chars <= frac:
        return bound
    tokens = st.words
    seen: set[str] = set()
    total = skip_until = 0
    for pos in np.flatnonzero(repeating).tolist():
        if pos < skip_until:
            continue
        gram = "".join(tokens[pos : pos + n])
        if gram in seen:
            total += len(gram)
            skip_until = pos + n
        else:
            seen.add(gram)
    return total


def c4(p, doc: Document, edits) -> str | None:
    """DataTrove's C4QualityFilter: line-level removals, then document-level drops; rewrites the
    kept text. Returns the drop reason or None."""
    count = sentence_count if p.min_num_sentences > 0 else None
    reason, kept, sentences = c4_lines(doc.text.splitlines(), p, edits, count, datatrove=True)
    if reason:
        return reason
    if sentences < p.min_num_sentences:
        return "too_few_sentences"
    doc.text = "\n".join(kept).strip()
    return None


def fineweb(p, doc: Document) -> tuple[bool, str | None]:
    text = doc.text
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines:
        return False, "empty"
    ratio = sum(1 for line in lines if line[-1] in TERMINAL) / len(lines)
    if ratio < p.line_punct_thr and not (ratio == 0 and p.line_punct_exclude_zero):
        return False, "line_punct_ratio"
    if sum(1 for line in lines if len(line) <= p.short_line_length) / len(lines) > p.short_line_thr:
        return False, "short_line_ratio"
    if find_duplicates(lines)[1] / max(len(text) - text.count("\n"), 1) > p.char_duplicates_ratio:
        return False, "char_dup_ratio"
    if text.count("\n") / max(len(stats(doc).words), 1) > p.new_line_ratio:
        return False, "list_ratio"
    return True, None
