"""Exact dedup of paragraphs (Dolma) and of 3-sentence spans (C4, DataTrove) across the corpus.

`paragraph_dedup`: a paragraph is a line, as in Dolma. A non-blank line (whitespace collapsed)
that already occurred in an earlier document is removed; repeats inside one document are kept.
`sentence_dedup`: every window of `span` consecutive sentences (lowercased, whitespace collapsed)
is hashed; a window that occurred in an earlier document has all its sentences removed (C4:
"discarded all but one of any three-sentence span occurring more than once"). Sentences end at
`. ! ?` (and CJK/ellipsis forms, closing quotes and brackets included) followed by whitespace, or
at a line break. In both, "earlier" is input order (shard, then position in the shard), so the first
occurrence is kept whatever the number of workers; a document that lost text and is left with
fewer than `min_doc_words` words is dropped with reason `short_after_dedup`.

Both are CorpusStages (see base.py). Memory: each unit is one 64-bit xxh3 hash. A scan writes its
shard's (hash, document, unit index) triples sorted by hash (24 bytes a unit, on disk); the reduce
walks the hash space in `ceil(units x 80 bytes / memory_mb)` ranges, reading each range's slice of
every scan through a memory map, so it holds about `memory_mb` plus 8 bytes per removed unit (the
mapped scan pages also show in RSS, as reclaimable file cache). Measured on 4M units (1.8M removed):
peak RSS +316 MB in one range, +138 MB with `memory_mb: 64` (96 MB of it mapped scan pages).
Decisions do not depend on the number of ranges. False positives: two different units share a
64-bit hash with probability 2^-64; over a corpus of n distinct units the chance that any unit is
wrongly removed is about n^2 / 2^65 (1e9 distinct lines: ~2.7%, i.e. one line in the corpus; 1e8: 0.03%).
"""

from __future__ import annotations

import math
import re
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import xxhash

from data_pipeline.document import Document
from data_pipeline.steps.base import CorpusStage, register
from framework.configtree import ConfigError

_xxh3 = xxhash.xxh3_64_intdigest


def _hash(unit: str) -> int:
    return _xxh3(unit.encode("utf-8", "surrogatepass"))


_SENTENCE_END = re.compile(r"[.!?…。！？]+[\"'”’»)\]]*(?:\s+|$)|\n\s*")
_BYTES_PER_UNIT = 80  # reduce working set per unit (measured ~79): hash, key, unit, shard, sort order, copies


def split_sentences(text: str) -> list[str]:
    """Pieces covering `text` exactly, each a sentence with the whitespace after it."""
    pieces, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        if m.end() > start:
            pieces.append(text[start : m.end()])
            start = m.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


class _UnitDedup(CorpusStage):
    """Shared machinery: a subclass says what its hashed units are and how to cut them out."""

    @dataclass
    class Params:
        min_doc_words: int = 50  # a document that lost text and has fewer words left is dropped
        memory_mb: int = 1024  # reduce working set (the hash space is walked in ranges to fit)
        step: ClassVar[str] = "paragraph_dedup"

        def validate(self) -> None:
            if self.min_doc_words < 0:
                raise ConfigError(f"config key '{self.step}.min_doc_words': expected >= 0, got {self.min_doc_words}")
            if self.memory_mb < 16:
                raise ConfigError(f"config key '{self.step}.memory_mb': expected >= 16 (MB), got {self.memory_mb}")

    def units(self, text: str) -> tuple[list[str], list[int]]:
        """(pieces covering the text, hash of each hashed unit in order)."""
        raise NotImplementedError

    def kept_text(self, pieces: list[str], removed_units: set[int]) -> tuple[str, int]:
        """Text without the removed units, and how many pieces were removed."""
        raise NotImplementedError

    # --- phases ---------------------------------------------------------------------------
    def scan(self, docs, shard: int, workdir: Path) -> None:
        hashes, doc_pos = array("Q"), array("I")
        for pos, doc in enumerate(docs):
            _, h = self.units(doc.text)
            hashes.extend(h)
            doc_pos.extend([pos] * len(h))
        h = np.frombuffer(hashes, dtype=np.uint64) if hashes else np.zeros(0, np.uint64)
        d = np.frombuffer(doc_pos, dtype=np.uint32) if doc_pos else np.zeros(0, np.uint32)
        order = np.argsort(h, kind="stable")
        for name, arr in (("hash", h[order]), ("doc", d[order]), ("unit", order.astype(np.uint64))):
            np.save(workdir / f"scan-{shard:05d}.{name}.npy", arr)

    def reduce(self, num_shards: int, workdir: Path) -> None:
        maps = [
            {k: np.load(workdir / f"scan-{s:05d}.{k}.npy", mmap_mode="r") for k in ("hash", "doc", "unit")}
            for s in range(num_shards)
        ]
        total = sum(len(m["hash"]) for m in maps)
        ranges = max(1, math.ceil(total * _BYTES_PER_UNIT / (self.params.memory_mb * 2**20)))
        bounds = [(2**64 * r) // ranges for r in range(ranges + 1)]
        removed: list[list[np.ndarray]] = [[] for _ in range(num_shards)]
        for r in range(ranges):
            lo, hi = np.uint64(bounds[r]), bounds[r + 1]
            hs, keys, units, shards = [], [], [], []
            for s, m in enumerate(maps):
                i0 = int(np.searchsorted(m["hash"], lo, side="left"))
                i1 = len(m["hash"]) if hi >= 2**64 else int(np.searchsorted(m["hash"], np.uint64(hi), side="left"))
                if i1 > i0:
                    hs.append(np.asarray(m["hash"][i0:i1]))
                    keys.append((np.uint64(s) << np.uint64(32)) | np.asarray(m["doc"][i0:i1]).astype(np.uint64))
                    units.append(np.asarray(m["unit"][i0:i1]))
                    shards.append(np.full(i1 - i0, s, dtype=np.uint32))
            if not hs:
                continue
            h, key = np.concatenate(hs), np.concatenate(keys)
            order = np.lexsort((key, h))
            h, key = h[order], key[order]
            starts = np.flatnonzero(np.concatenate([[True], h[1:] != h[:-1]]))
            first_key = np.repeat(key[starts], np.diff(np.append(starts, len(h))))
            dup = order[key > first_key]  # positions (in the concatenation) of later copies
            unit, shard = np.concatenate(units)[dup], np.concatenate(shards)[dup]
            for s in np.unique(shard):
                removed[int(s)].append(unit[shard == s])
        for s in range(num_shards):
            arr = np.sort(np.concatenate(removed[s])) if removed[s] else np.zeros(0, np.uint64)
            np.save(workdir / f"remove-{s:05d}.npy", arr.astype(np.uint64))

    def prepare(self, shard: int, workdir: Path) -> None:
        self._remove = np.load(workdir / f"remove-{shard:05d}.npy")
        self._next_unit = 0  # index of this document's first unit among the shard's units

    def process(self, doc: Document):
        pieces, hashes = self.units(doc.text)
        first = self._next_unit
        self._next_unit += len(hashes)
        lo, hi = np.searchsorted(self._remove, [first, first + len(hashes)])
        if lo == hi:
            return None
        removed_units = {int(u) - first for u in self._remove[lo:hi]}
        text, n_removed = self.kept_text(pieces, removed_units)
        self.stats.edits[self.edit_name] += n_removed
        doc.text = text
        if len(text.split()) < self.params.min_doc_words:
            return "short_after_dedup"
        return None


@register("paragraph_dedup")
class ParagraphDedup(_UnitDedup):
    edit_name = "lines_removed"

    def units(self, text: str):
        lines = text.split("\n")
        return lines, [_hash(" ".join(line.split())) for line in lines if line and not line.isspace()]

    def kept_text(self, pieces, removed_units):
        kept, unit, n = [], 0, 0
        for line in pieces:
            if line and not line.isspace():
                unit += 1
                if unit - 1 in removed_units:
                    n += 1
                    continue
            kept.append(line)
        return "\n".join(kept).strip(), n


@register("sentence_dedup")
class SentenceDedup(_UnitDedup):
    edit_name = "sentences_removed"

    @dataclass
    class Params(_UnitDedup.Params):
        span: int = 3  # sentences per hashed window (C4: 3)
        step: ClassVar[str] = "sentence_dedup"

        def validate(self) -> None:
            super().validate()
            if self.span < 1:
                raise ConfigError(f"config key 'sentence_dedup.span': expected >= 1 sentence, got {self.span}")

    def units(self, text: str):
        pieces = split_sentences(text)
        norm = [" ".join(p.lower().split()) for p in pieces]
        k = self.params.span
        return pieces, [_hash(" ".join(norm[i : i + k])) for i in range(len(norm) - k + 1)]

    def kept_text(self, pieces, removed_units):
        drop = set()
        for w in removed_units:
            drop.update(range(w, w + self.params.span))
        return "".join(p for i, p in enumerate(pieces) if i not in drop).strip(), len(drop)
