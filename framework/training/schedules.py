"""Learning-rate schedules as pure functions of the step: warmup, then cosine, linear, constant or WSD.

The LR is set on the optimizer from `lr_at(step)` before every optimizer step, so a resumed run
gets the same LR from the step number alone, and a skipped (non-finite) step does not shift it.
"""

from __future__ import annotations

import math

from framework.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """LR for optimizer step `step` (0-based) of `cfg.steps`."""
    peak, floor = cfg.lr, cfg.lr * cfg.min_lr_ratio
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return peak
    decay_steps = max(cfg.steps - cfg.warmup_steps, 1)
    t = min(max(step - cfg.warmup_steps, 0) / decay_steps, 1.0)
    if cfg.schedule == "cosine":
        return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * t))
    if cfg.schedule == "linear":
        return peak + (floor - peak) * t
    if cfg.schedule == "wsd":  # warmup-stable-decay: flat, then a linear cool-down over the last part
        decay_start = 1.0 - cfg.wsd_decay_fraction
        if t <= decay_start:
            return peak
        return peak + (floor - peak) * (t - decay_start) / cfg.wsd_decay_fraction
    raise ValueError(f"unknown schedule {cfg.schedule!r}")
