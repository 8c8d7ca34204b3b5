"""In-loop evaluation on the live model: lm-evaluation-harness tasks (`eval.tasks`) and held-out
loss per domain (`eval.datasets`), every `eval.interval` steps and at the end.

No export and no checkpoint round trip: the engine's module scores the requests directly, each
data-parallel rank its shard of the examples (the harness shards documents; the adapter gathers
per-document metrics back in document order), so the numbers equal `anvil eval` on a checkpoint
of the same step. Under ZeRO-3 every rank runs the same number of forward passes (lockstep), as
each one gathers parameters collectively.

Evaluation must not change training: the module is put back in training mode and the Python,
NumPy and torch RNG states are restored afterwards (the harness seeds all three). Its wall time
is logged as `eval/seconds` and left out of the throughput window.

Layouts with tensor or pipeline parallelism are refused at start-up with the alternative: their
logits are split over ranks, and `anvil eval --tasks` on the saved checkpoints covers them.
"""

from __future__ import annotations

import random
import time

import numpy as np
import torch

from framework.config import RunConfig
from framework.configtree import ConfigError


def check_supported(cfg: RunConfig, tokenizer_path: str | None) -> tuple | None:
    """Start-up check, before any training step; returns the resolved harness tasks (or None)."""
    e = cfg.eval
    if not e.enabled:
        return None
    if cfg.parallel.tensor * cfg.parallel.pipeline > 1:
        raise ConfigError(
            "config key 'eval': in-loop tasks / datasets need parallel.tensor = parallel.pipeline = 1 "
            f"(got {cfg.parallel.tensor} x {cfg.parallel.pipeline}); evaluate this layout's checkpoints "
            "with `anvil eval --checkpoint RUN --tasks ...`"
        )
    if e.tasks and not tokenizer_path:
        raise ConfigError("config key 'eval.tasks': harness tasks need the run's tokenizer (data.tokenizer)")
    from framework.data.shards import PrefixError, inspect_prefix

    for name, prefix in e.datasets.items():
        try:
            inspect_prefix(prefix)
        except (PrefixError, FileNotFoundError, OSError) as exc:
            raise ConfigError(f"config key 'eval.datasets.{name}': {exc}") from None
    if e.tasks:
        from framework.eval.harness import TaskError, resolve_tasks

        try:
            return resolve_tasks(e.tasks, [e.include_path] if e.include_path else None)
        except TaskError as exc:
            raise ConfigError(f"config key 'eval.tasks': {exc}") from None
    return None


class InLoopEval:
    def __init__(
        self,
        cfg: RunConfig,
        module: torch.nn.Module,
        tokenizer_path: str | None,
        device,
        rank: int,
        world: int,
        resolved_tasks: tuple | None = None,  # check_supported's answer: tasks resolved once per run
    ):
        from framework.eval.perplexity import Scorer, _load_tokenizer

        self.cfg, self.rank, self.world = cfg.eval, rank, world
        self.lockstep = cfg.parallel.zero_stage == 3 and world > 1
        tok, eos = _load_tokenizer(tokenizer_path) if tokenizer_path else (None, None)
        self.scorer = Scorer(module, cfg.model.seq_len, cfg.model.vocab_size, tok, eos, "live", device=device)
        self.seconds = 0.0
        self.resolved_tasks = resolved_tasks

    def due(self, step: int, last_step: int) -> bool:
        return self.cfg.enabled and ((self.cfg.interval and step % self.cfg.interval == 0) or step == last_step)

    def run(self, step: int) -> dict:
        """{"step", "eval/TASK/METRIC": ..., "eval/DOMAIN/loss": ..., "eval/seconds"} (same on every rank)."""
        start = time.perf_counter()
        rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        module = self.scorer.model
        was_training = module.training
        module.eval()
        try:
            out = {"step": step, **self._domains(), **self._tasks()}
        finally:
            module.train(was_training)
            random.setstate(rng[0])
            np.random.set_state(rng[1])
            torch.set_rng_state(rng[2])
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)
        self.seconds += time.perf_counter() - start
        out["eval/seconds"] = time.perf_counter() - start
        return out

    def _domains(self) -> dict:
        from framework.eval.perplexity import evaluate_prefix

        out = {}
        for name, prefix in self.cfg.datasets.items():
            r = evaluate_prefix(
                self.scorer,
                [prefix],
                None,
                self.cfg.batch_size,
                self.cfg.max_tokens,
                self.rank,
                self.world,
                self.lockstep,
            )
            out[f"eval/{name}/loss"] = r["loss"]
            out[f"eval/{name}/perplexity"] = r["perplexity"]
        return out

    def _tasks(self) -> dict:
        if not self.cfg.tasks:
            return {}
        import torch.distributed as dist

        from framework.eval.harness import flat_metrics, run_tasks
        from framework.eval.lm_adapter import AnvilLM

        s = self.scorer
        lm = AnvilLM(
            s.logits,
            s.tokenizer,
            s.eos_id,
            s.seq_len,
            self.cfg.batch_size,
            rank=self.rank,
            world_size=self.world,
            lockstep=self.lockstep,
        )
        include = [self.cfg.include_path] if self.cfg.include_path else None
        results = run_tasks(lm, self.cfg.tasks, include, self.cfg.limit, resolved=self.resolved_tasks)
        metrics = flat_metrics(results) if results is not None else {}
        if self.world > 1:  # rank 0 holds the results; every rank returns the same record
            box = [metrics]
            dist.broadcast_object_list(box, src=0)
            metrics = box[0]
        return metrics
