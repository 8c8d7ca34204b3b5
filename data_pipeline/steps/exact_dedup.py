"""Exact deduplication of normalised text across the whole corpus (a CorpusStage).

The key is a 128-bit BLAKE2b of the text lowercased with whitespace collapsed. The first
occurrence in corpus order (shard, then position) is kept; every later copy is dropped with
reason `duplicate` and `duplicate_of` naming the kept document, whatever the number of workers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_pipeline.document import Document
from data_pipeline.steps.base import CorpusStage, register


def text_key(text: str, lowercase: bool = True) -> bytes:
    norm = " ".join(text.split())
    if lowercase:
        norm = norm.lower()
    return hashlib.blake2b(norm.encode("utf-8"), digest_size=16).digest()


@register("exact_dedup")
class ExactDedup(CorpusStage):
    @dataclass
    class Params:
        lowercase: bool = True  # compare texts case-insensitively (whitespace always collapsed)

    def scan(self, docs, shard: int, workdir: Path) -> None:
        keys, ids = bytearray(), []
        for doc in docs:
            keys += text_key(doc.text, self.params.lowercase)
            ids.append(doc.id)
        np.save(workdir / f"scan-{shard:05d}.npy", np.frombuffer(bytes(keys), dtype="V16"))
        (workdir / f"scan-{shard:05d}.ids.json").write_text(json.dumps(ids))

    def reduce(self, num_shards: int, workdir: Path) -> None:
        keys = [np.load(workdir / f"scan-{s:05d}.npy") for s in range(num_shards)]
        sizes = [len(k) for k in keys]
        if sum(sizes) == 0:
            allk = np.zeros(0, dtype="V16")
        else:
            allk = np.concatenate(keys)
        _, first, inverse = np.unique(allk, return_index=True, return_inverse=True)
        rep = first[inverse.reshape(-1)]  # global index of each doc's first copy
        is_dup = rep != np.arange(len(allk))
        starts = np.concatenate([[0], np.cumsum(sizes)])
        ids_cache: dict[int, list[str]] = {}

        def id_of(g: int) -> str:
            s = int(np.searchsorted(starts, g, side="right") - 1)
            if s not in ids_cache:
                ids_cache[s] = json.loads((workdir / f"scan-{s:05d}.ids.json").read_text())
            return ids_cache[s][g - starts[s]]

        for s in range(num_shards):
            lo, hi = starts[s], starts[s + 1]
            drops = {int(g - lo): id_of(int(rep[g])) for g in np.nonzero(is_dup[lo:hi])[0] + lo}
            (workdir / f"drop-{s:05d}.json").write_text(json.dumps(drops, sort_keys=True))

    def prepare(self, shard: int, workdir: Path) -> None:
        raw = json.loads((workdir / f"drop-{shard:05d}.json").read_text())
        self._drops = {int(k): v for k, v in raw.items()}

    def process(self, doc: Document):
        dup_of = self._drops.get(self.position)
        return None if dup_of is None else ("duplicate", {"duplicate_of": dup_of})
