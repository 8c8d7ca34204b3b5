"""`perplexity`: score documents under a language model and keep buckets or a threshold (CCNet).

Perplexity under a model trained on clean text is a standard quality signal: CCNet splits each
language into head / middle / tail thirds by perplexity under a Wikipedia LM. The model here is
any Anvil checkpoint (run folder or one checkpoint, any training layout) or a transformers folder
(for instance from `anvil export hf`); its own tokenizer is used.

It is a corpus stage because bucket edges are percentiles of the whole corpus, and because
scoring is batched: `scan` scores every document of a shard in padded batches and writes the
scores, `reduce` turns all scores into cutoffs (or takes fixed ones), `process` writes
`metadata["perplexity"]` and `metadata["perplexity_bucket"]` and drops what is not kept:

    - perplexity: {model: runs/wiki_lm, keep: [head, middle]}              # CCNet-style thirds
    - perplexity: {model: hf_lm/, mode: threshold, max_perplexity: 500}     # a fixed cut
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from data_pipeline.steps.base import CorpusStage, register
from framework.configtree import ConfigError

BUCKETS = ("head", "middle", "tail")


@register("perplexity")
class Perplexity(CorpusStage):
    @dataclass
    class Params:
        model: str = ""  # Anvil run/checkpoint folder or transformers folder
        mode: str = "buckets"  # buckets | threshold
        keep: list[str] = field(default_factory=lambda: ["head", "middle"])  # buckets kept: head, middle, tail
        head_percentile: float = 100 / 3  # head: perplexity at or below this corpus percentile
        tail_percentile: float = 200 / 3  # tail: perplexity above this corpus percentile
        head_max: Optional[float] = None  # fixed bucket edges instead of percentiles
        tail_min: Optional[float] = None  # fixed tail edge: perplexity above this is tail (with head_max)
        max_perplexity: Optional[float] = None  # threshold mode: drop above
        min_perplexity: Optional[float] = None  # threshold mode: drop below (boilerplate, repeats)
        batch_size: int = 16  # documents scored per padded batch
        max_tokens: int = 512  # score the first N tokens of each document
        threads: int = 0  # torch threads per worker; 0 = leave torch's default

        def validate(self) -> None:
            if not self.model:
                raise ConfigError("config key 'perplexity.model': a checkpoint or transformers folder is required")
            if not Path(self.model).exists():
                raise ConfigError(f"config key 'perplexity.model': {self.model} does not exist")
            if self.mode not in ("buckets", "threshold"):
                raise ConfigError(f"config key 'perplexity.mode': expected buckets or threshold, got {self.mode!r}")
            bad = [b for b in self.keep if b not in BUCKETS]
            if bad:
                raise ConfigError(f"config key 'perplexity.keep': unknown bucket {bad[0]!r}; expected {list(BUCKETS)}")
            if not 0 <= self.head_percentile <= self.tail_percentile <= 100:
                raise ConfigError(
                    "config keys 'perplexity.head_percentile' / 'tail_percentile': expected "
                    f"0 <= head <= tail <= 100, got {self.head_percentile}, {self.tail_percentile}"
                )
            if (self.head_max is None) != (self.tail_min is None):
                raise ConfigError("config keys 'perplexity.head_max' / 'tail_min': set both or neither")
            if self.head_max is not None and self.head_max > self.tail_min:
                raise ConfigError(f"config key 'perplexity.head_max': {self.head_max} > tail_min {self.tail_min}")
            if self.mode == "threshold" and self.max_perplexity is None and self.min_perplexity is None:
                raise ConfigError(
                    "config key 'perplexity.max_perplexity': threshold mode needs max_perplexity and/or min_perplexity"
                )
            if self.batch_size <= 0 or self.max_tokens <= 1:
                raise ConfigError(
                    "config keys 'perplexity.batch_size' / 'max_tokens': must be positive (max_tokens >= 2)"
                )

    def __init__(self, params=None):
        super().__init__(params)
        self._scorer = None
        self._scores: list[float] = []
        self._edges: tuple[float, float] = (math.inf, math.inf)

    def scorer(self):
        if self._scorer is None:
            import torch

            from framework.eval.perplexity import load_scorer

            if self.params.threads:
                torch.set_num_threads(self.params.threads)
            self._scorer = load_scorer(self.params.model)
        return self._scorer

    def scan(self, docs, shard: int, workdir: Path) -> None:
        from framework.eval.perplexity import score_texts

        texts = [d.text for d in docs]
        scores: list[Optional[float]] = []
        chunk = self.params.batch_size * 16  # bounded memory; batches form inside each chunk
        for i in range(0, len(texts), chunk):
            for r in score_texts(self.scorer(), texts[i : i + chunk], self.params.batch_size, self.params.max_tokens):
                scores.append(r["perplexity"] if math.isfinite(r["perplexity"]) else None)
        tmp = workdir / f"scan-{shard:05d}.json.tmp"
        tmp.write_text(json.dumps(scores))
        tmp.replace(workdir / f"scan-{shard:05d}.json")

    def reduce(self, num_shards: int, workdir: Path) -> None:
        import numpy as np

        p = self.params
        if p.head_max is not None:
            edges = (p.head_max, p.tail_min)
        else:
            scores = [
                s
                for k in range(num_shards)
                for s in json.loads((workdir / f"scan-{k:05d}.json").read_text())
                if s is not None
            ]
            if scores:
                edges = tuple(float(np.percentile(scores, q)) for q in (p.head_percentile, p.tail_percentile))
            else:
                edges = (math.inf, math.inf)
        (workdir / "cutoffs.json").write_text(json.dumps({"head_max": edges[0], "tail_min": edges[1]}))

    def prepare(self, shard: int, workdir: Path) -> None:
        self._scores = json.loads((workdir / f"scan-{shard:05d}.json").read_text())
        cut = json.loads((workdir / "cutoffs.json").read_text())
        self._edges = (cut["head_max"], cut["tail_min"])

    def bucket(self, ppl: float) -> str:
        head_max, tail_min = self._edges
        return "head" if ppl <= head_max else "tail" if ppl > tail_min else "middle"

    def process(self, doc):
        p = self.params
        ppl = self._scores[self.position]
        if ppl is None:
            return "too_short_to_score"
        doc.metadata["perplexity"] = round(ppl, 4)
        doc.metadata["perplexity_bucket"] = bucket = self.bucket(ppl)
        if p.mode == "threshold":
            if p.max_perplexity is not None and ppl > p.max_perplexity:
                return "perplexity_above_max"
            if p.min_perplexity is not None and ppl < p.min_perplexity:
                return "perplexity_below_min"
            return None
        return None if bucket in p.keep else f"perplexity_{bucket}"
