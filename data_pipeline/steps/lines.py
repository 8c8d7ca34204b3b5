"""Repeated line / paragraph removal across the corpus, CCNet-style (a CorpusStage).

Boilerplate (navigation, cookie banners, licence headers) repeats across many documents. Each line
(or paragraph) is normalised (lowercase, digits -> 0, whitespace collapsed) and hashed; units that
occur in at least `min_docs` distinct documents of the corpus are removed from every document.
Documents left with no text are dropped (`all_boilerplate`). Counting is corpus-wide, so the
result does not depend on sharding or workers.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from data_pipeline.document import Document
from data_pipeline.steps.base import CorpusStage, register

_DIGITS = re.compile(r"\d")


def unit_hash(unit: str) -> int:
    norm = _DIGITS.sub("0", " ".join(unit.lower().split()))
    return int.from_bytes(hashlib.blake2b(norm.encode("utf-8"), digest_size=8).digest(), "little")


@register("line_dedup")
class LineDedup(CorpusStage):
    @dataclass
    class Params:
        unit: Literal["line", "paragraph"] = "line"  # remove repeated lines, or paragraphs (split on blank lines)
        min_docs: int = 3  # a unit seen in this many documents is boilerplate
        min_chars: int = 10  # shorter units are never removed (e.g. "Example:")

    def _units(self, text: str) -> list[str]:
        return text.split("\n\n" if self.params.unit == "paragraph" else "\n")

    def _doc_hashes(self, text: str) -> set[int]:
        return {unit_hash(u) for u in self._units(text) if len(u.strip()) >= self.params.min_chars}

    def scan(self, docs, shard: int, workdir: Path) -> None:
        hashes: list[int] = []
        for doc in docs:
            hashes.extend(self._doc_hashes(doc.text))
        uniq, counts = np.unique(np.array(hashes, dtype=np.uint64), return_counts=True)
        np.savez(workdir / f"scan-{shard:05d}.npz", hashes=uniq, counts=counts.astype(np.int64))

    def reduce(self, num_shards: int, workdir: Path) -> None:
        parts = [np.load(workdir / f"scan-{s:05d}.npz") for s in range(num_shards)]
        hashes = np.concatenate([p["hashes"] for p in parts] + [np.zeros(0, np.uint64)])
        counts = np.concatenate([p["counts"] for p in parts] + [np.zeros(0, np.int64)])
        uniq, inverse = np.unique(hashes, return_inverse=True)
        totals = np.bincount(inverse.reshape(-1), weights=counts, minlength=len(uniq))
        np.save(workdir / "boilerplate.npy", uniq[totals >= self.params.min_docs])

    def prepare(self, shard: int, workdir: Path) -> None:
        self._boilerplate = set(np.load(workdir / "boilerplate.npy").tolist())

    def process(self, doc: Document):
        sep = "\n\n" if self.params.unit == "paragraph" else "\n"
        kept, removed = [], 0
        for unit in self._units(doc.text):
            if len(unit.strip()) >= self.params.min_chars and unit_hash(unit) in self._boilerplate:
                removed += 1
            else:
                kept.append(unit)
        if removed:
            self.stats.edits[f"{self.params.unit}s_removed"] += removed
            doc.text = sep.join(kept).strip()
        return None if doc.text.strip() else "all_boilerplate"
