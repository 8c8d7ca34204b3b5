"""The trainer's view of data: tokenized prefixes -> this rank's micro-batches for a given step.

All sampling logic lives in `framework.data.datasets` (packing, blending, splitting and the
global-index sampler); this module checks tokenizer / shards / model agree and turns sample
indices into tensors (`anvil train` fills an empty `data.paths` with the built-in sample corpus,
`data_pipeline.tokens.builtin`, before the trainer starts). The data position is one number, `consumed_samples`, so resuming at any
data-parallel size continues with exactly the samples an uninterrupted run would have seen.
A run whose rollbacks skipped samples (`train.spike_action: rollback`) needs more than
`train.steps x global_batch_size` of them: positions past the built dataset wrap to its start.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from framework.config import RunConfig
from framework.configtree import ConfigError


def data_cache_dir(cfg: RunConfig) -> str:
    return cfg.data.cache_dir or str(Path(cfg.run_dir).resolve().parent / ".data_cache")


class TrainingData:
    def __init__(self, cfg: RunConfig, dp_rank: int, dp_size: int):
        from framework.data.datasets import build_datasets, check_compatible
        from framework.data.tokenizer import load_tokenizer, special_ids

        self.cfg, self.dp_rank, self.dp_size = cfg, dp_rank, dp_size
        self._wrapped = False  # warned that the data position passed the built samples
        cache = data_cache_dir(cfg)
        paths, tokenizer = list(cfg.data.paths), cfg.data.tokenizer
        if not paths:  # `anvil train` fills them with the built-in sample corpus before training
            raise ConfigError("config key 'data.paths': no tokenized prefixes (PREFIX.bin/.idx) given")
        self.paths, self.tokenizer_path = paths, tokenizer
        try:
            check_compatible(paths, tokenizer, cfg.model.vocab_size)
        except (ValueError, FileNotFoundError) as exc:
            raise ConfigError(f"config keys 'data.paths' / 'data.tokenizer' / 'model.vocab_size': {exc}") from None
        eod = special_ids(load_tokenizer(tokenizer))[0] if tokenizer else 0
        t = cfg.train
        self.valid_samples = t.eval_iters * t.global_batch_size
        self.train, self.valid = build_datasets(
            paths,
            list(cfg.data.weights),
            cfg.data.split,
            cfg.model.seq_len,
            cfg.seed,
            num_train_samples=t.steps * t.global_batch_size,
            num_valid_samples=self.valid_samples,
            cache_dir=cache,
            vocab_size=cfg.model.vocab_size,
            eod_id=eod,
        )

    def _batch(self, dataset, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.from_numpy(np.stack([dataset[i] for i in indices]))
        return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()

    def train_micro_batches(self, consumed_samples: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        from framework.data.datasets import micro_batch_indices

        t = self.cfg.train
        n = len(self.train)
        if consumed_samples + t.global_batch_size > n and not self._wrapped:
            self._wrapped = True
            from framework.runtime import get_logger

            get_logger("anvil.train").warning(
                "data position %d is past the %d training samples built (rollbacks skipped some); "
                "continuing from the start of the data",
                consumed_samples + t.global_batch_size,
                n,
            )
        return [
            self._batch(self.train, [i % n for i in idx])
            for idx in micro_batch_indices(
                consumed_samples, t.global_batch_size, t.micro_batch_size, self.dp_rank, self.dp_size
            )
        ]

    def valid_micro_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The same held-out samples at every evaluation (the first eval_iters global batches)."""
        from framework.data.datasets import micro_batch_indices

        if self.valid is None:
            return []
        t = self.cfg.train
        out = []
        for b in range(t.eval_iters):
            for idx in micro_batch_indices(
                b * t.global_batch_size, t.global_batch_size, t.micro_batch_size, self.dp_rank, self.dp_size
            ):
                out.append(self._batch(self.valid, [i % len(self.valid) for i in idx]))
        return out
