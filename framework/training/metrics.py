"""Metrics: RUN_DIR/metrics.jsonl (the contract), a console table, wandb and TensorBoard, MFU.

Rank 0 writes. `metrics.jsonl` has one JSON object per logged step with at least `step`, `loss`,
`lr`, `tokens` (consumed so far), `tokens_per_s`, `grad_norm`; validation lines carry `val_loss`;
a rollback (`train.spike_action: rollback`) is the line `{"step", "rollback_to", "skipped_samples"}`.
On resume the file is cut back to the checkpoint's step, so a resumed run's file equals an
uninterrupted run's. wandb runs offline unless an API key is configured (never a prompt).
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
from pathlib import Path

import torch

# Dense bf16/fp16 tensor-core peak TFLOP/s per device (vendor datasheets, no sparsity).
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,
    "GH200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.0,
    "L40": 181.0,
    "A10G": 125.0,
    "A10": 125.0,
    "L4": 121.0,
    "V100": 125.0,
    "T4": 65.0,
    "MI300X": 1307.0,
    "MI250X": 383.0,
}


def peak_tflops(override: float | None = None) -> float | None:
    if override:
        return override
    if not torch.cuda.is_available():
        return None  # CPUs: no reliable table; set logging.peak_tflops to get MFU
    name = torch.cuda.get_device_name()
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_TFLOPS[key]
    return None


def peak_memory_gb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    # ru_maxrss is KiB on Linux: the process's peak resident memory.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def truncate_jsonl(path: Path, last_step: int) -> None:
    """Keep only lines with step <= last_step (lines written after the checkpoint we resume from)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= last_step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill mid-write
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(k + "\n" for k in kept))
    os.replace(tmp, path)


class MetricsLogger:
    COLUMNS = ("step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "tflops", "mfu", "mem_gb")

    def __init__(
        self,
        run_dir: str,
        cfg_dict: dict,
        enabled: bool,
        console: bool = True,
        wandb: bool = False,
        wandb_project: str = "anvil",
        wandb_group: str | None = None,
        tensorboard: bool = False,
        resume_step: int | None = None,
    ):
        self.enabled = enabled
        self.console = console and enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._wandb = self._tb = None
        self._header_done = False
        if not enabled:
            return
        if resume_step is not None:
            truncate_jsonl(self.path, resume_step)
        elif self.path.exists():
            self.path.unlink()
        self._file = open(self.path, "a", buffering=1)
        if wandb:
            import wandb as wb

            if not (os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE")):
                os.environ["WANDB_MODE"] = "offline"  # never prompt for a login
            self._wandb = wb.init(
                project=wandb_project,
                group=wandb_group,
                dir=run_dir,
                config=cfg_dict,
                name=Path(run_dir).name,
                resume="allow",
                id=_wandb_id(run_dir),
            )
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._file.write(json.dumps(clean) + "\n")
        step = record["step"]
        scalars = {k: v for k, v in clean.items() if isinstance(v, (int, float)) and v is not None and k != "step"}
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)
        if self._tb is not None:
            for k, v in scalars.items():
                tag = k if k.startswith("eval/") else ("val/" if k.startswith("val_") else "train/") + k
                self._tb.add_scalar(tag, v, step)
        if self.console:
            self._print(record)

    def _print(self, r: dict) -> None:
        if "rollback_to" in r:
            first, last = r["skipped_samples"]
            print(
                f"  step {r['step']:>7}  ROLLBACK to step {r['rollback_to']}, skipping samples {first}-{last}",
                file=sys.stdout,
                flush=True,
            )
            return
        if "val_loss" in r:
            print(
                f"  step {r['step']:>7}  val_loss {r['val_loss']:.4f}  val_ppl {math.exp(min(r['val_loss'], 50)):.2f}",
                file=sys.stdout,
                flush=True,
            )
            return
        if any(k.startswith("eval/") for k in r):
            shown = [f"{k[5:]} {v:.4g}" for k, v in r.items() if k.startswith("eval/") and "stderr" not in k]
            print(f"  step {r['step']:>7}  eval  " + "  ".join(shown), flush=True)
            return
        if not self._header_done:
            print("  " + " ".join(f"{c:>12}" for c in self.COLUMNS), flush=True)
            self._header_done = True
        cells = []
        for c in self.COLUMNS:
            v = r.get(c)
            if v is None:
                cells.append(f"{'-':>12}")
            elif c == "lr":
                cells.append(f"{v:>12.3e}")
            elif isinstance(v, float):
                cells.append(f"{v:>12.4g}" if c != "loss" else f"{v:>12.4f}")
            else:
                cells.append(f"{v:>12,}")
        extra = "  SKIPPED" if r.get("skipped") else ("  SPIKE" if r.get("spike") else "")
        print("  " + " ".join(cells) + extra, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._tb is not None:
            self._tb.close()


def _wandb_id(run_dir: str) -> str:
    import hashlib

    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
