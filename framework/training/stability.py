"""Stability guards: honest accounting of skipped (non-finite) steps and loss-spike detection.

The engine skips a step whose gradient norm is not finite (DeepSpeed's overflow path, or
`GuardedAdamW` at ZeRO-0); this module counts those skips, stops the run after
`train.max_consecutive_skips` in a row, and flags loss spikes by their z-score against a window
of recent losses. Its state travels in checkpoints, so a resumed run flags exactly what an
uninterrupted one would. With `train.spike_action: rollback` it does not stop the run: the trainer
rolls back (`framework.training.rollback`) and restores the loss window of the checkpoint, while
the skip and spike counts keep counting what happened.
"""

from __future__ import annotations

import math
from collections import deque


class TrainingDiverged(RuntimeError):
    pass


class StabilityMonitor:
    def __init__(self, max_consecutive_skips: int, window: int, zscore: float, stop_on_skips: bool = True):
        self.max_consecutive_skips = max_consecutive_skips
        self.stop_on_skips = stop_on_skips
        self.zscore = zscore
        self.window: deque[float] = deque(maxlen=max(window, 2))
        self.skipped_total = 0
        self.consecutive_skips = 0
        self.spikes = 0

    def observe(self, step: int, loss: float, applied: bool) -> dict:
        """Record one step; return the fields to log (loss_z, and skip counters)."""
        out: dict = {}
        if not applied or not math.isfinite(loss):
            self.skipped_total += 1
            self.consecutive_skips += 1
            if self.stop_on_skips and self.consecutive_skips >= self.max_consecutive_skips:
                raise TrainingDiverged(
                    f"step {step}: {self.consecutive_skips} consecutive steps with a non-finite loss or "
                    f"gradient norm (train.max_consecutive_skips={self.max_consecutive_skips}); stopping. "
                    "Lower train.lr, raise warmup, or check the data."
                )
        else:
            self.consecutive_skips = 0
            if len(self.window) >= min(10, self.window.maxlen):
                mean = sum(self.window) / len(self.window)
                std = math.sqrt(sum((x - mean) ** 2 for x in self.window) / len(self.window))
                z = (loss - mean) / std if std > 0 else 0.0
                out["loss_z"] = z
                if z > self.zscore:
                    self.spikes += 1
                    out["spike"] = True
            self.window.append(loss)
        out["skipped_steps"] = self.skipped_total
        return out

    def state_dict(self) -> dict:
        return {
            "window": list(self.window),
            "skipped_total": self.skipped_total,
            "consecutive_skips": self.consecutive_skips,
            "spikes": self.spikes,
        }

    def restore_window(self, state: dict) -> None:
        """Back to a checkpoint's loss window (a rollback); the skip and spike totals keep counting."""
        self.window.clear()
        self.window.extend(state.get("window", []))
        self.consecutive_skips = state.get("consecutive_skips", 0)

    def load_state_dict(self, state: dict) -> None:
        self.window.clear()
        self.window.extend(state.get("window", []))
        self.skipped_total = state.get("skipped_total", 0)
        self.consecutive_skips = state.get("consecutive_skips", 0)
        self.spikes = state.get("spikes", 0)
