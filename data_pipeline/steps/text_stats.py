"""Text statistics computed once per document and shared by every heuristic filter.

DataTrove's Gopher, C4 and FineWeb filters each re-tokenise the text with spaCy; that repetition is
most of their cost. Here `text_stats(doc)` splits lines, paragraphs and words once and caches the
result on the document (invalidated when `doc.text` is replaced), so four filters cost little more
than one. Words are `\\w+` runs joined by inner apostrophes/hyphens/dots (a regex tokenizer: close
to spaCy's word tokens without its punctuation tokens, and two orders of magnitude faster).
"""

from __future__ import annotations

import re
from functools import cached_property

import numpy as np

from data_pipeline.document import Document

WORD_RE = re.compile(r"\w+(?:['’\-.]\w+)*")
PARAGRAPH_RE = re.compile(r"\n{2,}")
_ATTR = "_anvil_text_stats"
_MULT = np.uint64(0x9E3779B97F4A7C15)
_MIX = np.uint64(0xBF58476D1CE4E5B9)


class TextStats:
    __slots__ = ("text", "__dict__")

    def __init__(self, text: str):
        self.text = text

    @cached_property
    def words(self) -> list[str]:
        return WORD_RE.findall(self.text)

    @cached_property
    def lines(self) -> list[str]:
        """Non-empty lines (runs of newlines collapse), as Gopher's line splitter."""
        return [line for line in self.text.split("\n") if line]

    @cached_property
    def raw_lines(self) -> list[str]:
        return self.text.split("\n")

    @cached_property
    def paragraphs(self) -> list[str]:
        return PARAGRAPH_RE.split(self.text.strip())

    @cached_property
    def word_ids(self) -> np.ndarray:
        """Each word as a 64-bit integer (equal words, equal values): n-gram hashing works on these.
        Python's str hash is salted per process, which changes the values but never which words are
        equal, so every decision made from them is the same in any process."""
        return np.fromiter(map(hash, self.words), dtype=np.int64, count=len(self.words)).view(np.uint64)

    @cached_property
    def word_lengths(self) -> np.ndarray:
        return np.fromiter(map(len, self.words), dtype=np.int64, count=len(self.words))

    def ngram_hashes(self, n: int) -> np.ndarray:
        """64-bit polynomial hashes of every word n-gram, built from the (n-1)-gram hashes."""
        cache = self.__dict__.setdefault("_ngrams", {})
        if n not in cache:
            ids = self.word_ids
            m = len(ids) - n + 1
            if m <= 0:
                cache[n] = np.zeros(0, dtype=np.uint64)
            elif n == 1:
                cache[n] = ids * _MIX
            else:
                prev = self.ngram_hashes(n - 1)
                with np.errstate(over="ignore"):
                    cache[n] = prev[:m] * _MULT + ids[n - 1 :] * _MIX
        return cache[n]


def text_stats(doc: Document) -> TextStats:
    stats = doc.__dict__.get(_ATTR)
    if stats is None or stats.text is not doc.text:
        stats = TextStats(doc.text)
        doc.__dict__[_ATTR] = stats
    return stats


def find_duplicates(items: list[str]) -> tuple[int, int]:
    """(number of repeated items, characters in the repeats), first occurrences not counted."""
    seen: set[str] = set()
    n_dup = chars = 0
    for item in items:
        if item in seen:
            n_dup += 1
            chars += len(item)
        else:
            seen.add(item)
    return n_dup, chars


def top_ngram_chars(hashes: np.ndarray, ngram_lengths: np.ndarray) -> int:
    """Characters covered by the most frequent n-gram (its length x its count); ties -> first seen,
    as Counter.most_common does."""
    uniq, counts = np.unique(hashes, return_counts=True)
    best = counts.max()
    if best == 1:
        return int(ngram_lengths[0])
    tied = uniq[counts == best]
    pos = int(np.argmax(hashes == tied[0])) if len(tied) == 1 else np.flatnonzero(np.isin(hashes, tied))[0]
    return int(ngram_lengths[pos]) * int(best)


def repeats(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(later, repeating): masks of the positions whose n-gram occurred before, and of every
    position whose n-gram occurs more than once."""
    order = np.argsort(hashes, kind="stable")
    eq = hashes[order[1:]] == hashes[order[:-1]]
    later = np.zeros(len(hashes), dtype=bool)
    later[order[1:][eq]] = True
    repeating = later.copy()
    repeating[order[:-1][eq]] = True
    return later, repeating


CITATION_RE = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")
POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


def c4_lines(lines, p, edits, count_sentences, datatrove: bool = False) -> tuple[str | None, list[str], int]:
    """C4's line rules in C4's order (TFDS c4_utils, also DataTrove's): a line is first checked for
    long words, punctuation and length; only lines that survive those can drop the whole page.
    Returns (drop reason or None, kept lines, sentences counted by `count_sentences`, None = not
    counted). `datatrove`: empty lines are judged (as too short) rather than skipped, and
    max_word_length -1 turns the long-word rule off, as DataTrove does."""
    kept: list[str] = []
    sentences = 0
    for line in lines:
        line = line.strip()
        if not line and not datatrove:
            continue
        words = line.split()
        if any(len(w) > p.max_word_length for w in words) and not (datatrove and p.max_word_length == -1):
            edits["line_word_too_long"] += 1
            continue
        if p.remove_citations:
            line = CITATION_RE.sub("", line)
        if p.filter_no_terminal_punct and (not line.endswith((".", "?", "!", '"', "'")) or line.endswith("...")):
            edits["line_no_terminal_punct"] += 1
            continue
        if len(words) < p.min_words_per_line:
            edits["line_too_few_words"] += 1
            continue
        lower = line.lower()
        if p.filter_lorem_ipsum and "lorem ipsum" in lower:
            return "lorem_ipsum", kept, sentences
        if p.filter_javascript and "javascript" in lower:
            edits["line_javascript"] += 1
            continue
        if p.filter_curly_bracket and "{" in line:
            return "curly_bracket", kept, sentences
        if p.filter_policy and any(s in lower for s in POLICY_SUBSTRINGS):
            edits["line_policy"] += 1
            continue
        if count_sentences is not None:
            sentences += count_sentences(line)
        kept.append(line)
    return None, kept, sentences
