"""`minhash_dedup`: MinHash LSH near-duplicate removal as a stage of `anvil data run`.

The executor calls `scan` on every shard (in parallel), `reduce` once after the barrier, then
`prepare` + `process` per shard. The work is the same as the standalone `anvil data dedup`
(index.py): scans hold signatures and band keys, the reduce clusters with the external-sort LSH
inside the memory budget, decides every distinct candidate pair on the exact Jaccard of the two
documents' n-gram sets (`exact_verify: false`: on the signature estimate) and writes, per shard,
the positions to drop and the id each duplicates.

    steps:
      - minhash_dedup: {threshold: 0.8, num_perm: 128, ngram: 5, memory_budget: 1GB, exact_verify: true}
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from data_pipeline.dedup.index import DedupConfig, MinhashSettings, scan_shard
from data_pipeline.dedup.reduce import reduce
from data_pipeline.document import Document
from data_pipeline.steps.base import CorpusStage, register


@register("minhash_dedup")
class MinhashDedup(CorpusStage):
    Params = MinhashSettings  # the algorithm's one settings object (DedupConfig minus how the command runs)

    def __init__(self, params=None):
        super().__init__(params)
        # The executor owns the workers and shards; the library takes a DedupConfig.
        self.cfg = DedupConfig(**dataclasses.asdict(self.params))
        self.cfg.check()
        self._drops: dict[int, tuple[str, str | None]] = {}

    def scan(self, docs, shard: int, workdir: Path) -> None:
        scan_shard(list(docs), Path(workdir) / f"scan-{shard:05d}", self.cfg)

    def reduce(self, num_shards: int, workdir: Path) -> None:
        workdir = Path(workdir)
        shards = [workdir / f"scan-{s:05d}" for s in range(num_shards)]
        store = workdir / "store"
        if store.exists():  # a reduce that crashed half-way is redone from the scans
            import shutil

            shutil.rmtree(store)
        result = reduce(store, shards, self.cfg)
        rep, excluded, store_obj = result["rep"], result["excluded"], result["store"]
        start = 0
        for s, shard in enumerate(shards):
            m = json.loads((shard / "scan.json").read_text())["docs"]
            idx = np.arange(start, start + m)
            drop = idx[(rep[idx] != idx) | excluded[idx]]
            names = store_obj.ids([int(rep[i]) for i in drop]) if len(drop) else {}
            decisions = {
                int(i - start): (["duplicate_id", None] if excluded[i] else ["duplicate", names[int(rep[i])][0]])
                for i in drop
            }
            tmp = workdir / f"drop-{s:05d}.json.tmp"
            tmp.write_text(json.dumps(decisions, sort_keys=True))
            tmp.replace(workdir / f"drop-{s:05d}.json")
            start += m
        (workdir / "reduce-stats.json").write_text(json.dumps(result["stats"], indent=1))

    def prepare(self, shard: int, workdir: Path) -> None:
        raw = json.loads((Path(workdir) / f"drop-{shard:05d}.json").read_text())
        self._drops = {int(k): tuple(v) for k, v in raw.items()}

    def process(self, doc: Document):
        decision = self._drops.get(self.position)
        if decision is None:
            return None
        reason, dup_of = decision
        return (reason, {"duplicate_of": dup_of}) if dup_of is not None else reason
