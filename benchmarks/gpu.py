"""GPU throughput of the trainer: tokens/s, TFLOP/s per device and MFU in bf16 on one GPU.

    python benchmarks/gpu.py [--presets 125m 1.3b] [--steps 10] [--micro-batch 125m=16,1.3b=8]

For each preset (configs/models/*.yaml) it runs ZeRO 0 and 1, with and without activation
checkpointing, through the same `Engine.train_step` that `anvil train` uses, on synthetic tokens
(data loading is not what this measures). FLOPs per token are the closed form of
`framework.model.presets` (6 N_matmul + 12 L T d); MFU uses the per-device peak table of
`framework.training.metrics` (override with --peak-tflops). Target: >= 45% MFU at 1.3B on H100/H200.
Needs a CUDA GPU; on a machine without one it says so, writes benchmarks/results/gpu.json with no
rows and the status "not run: no CUDA GPU", and exits 0. Results: benchmarks/results/gpu.json
(one table row per preset: its fastest ZeRO / activation-checkpointing combination).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import Recorder, row  # noqa: E402

TARGET = ">= 45% MFU at 1.3B on H100/H200 (gpu.py's target)"


def run_one(preset: str, zero: int, ac: bool, micro: int, steps: int, peak: float | None) -> dict:
    import deepspeed  # noqa: F401

    from framework.config import load_run_config
    from framework.model.presets import PRESET_DIR, count_params
    from framework.training.engine import Engine
    from framework.training.trainer import build_model

    cfg = load_run_config(
        str(PRESET_DIR / f"{preset}.yaml"),
        [
            f"parallel.zero_stage={zero}",
            f"parallel.activation_checkpointing={str(ac).lower()}",
            "train.precision=bf16",
            f"train.micro_batch_size={micro}",
            f"train.global_batch_size={micro}",
            "train.lr=1e-4",
        ],
    )
    device = torch.device("cuda", torch.cuda.current_device())
    torch.cuda.reset_peak_memory_stats()
    engine = Engine(cfg, build_model(cfg), 1, device)
    T, V = cfg.model.seq_len, cfg.model.vocab_size
    x = torch.randint(0, V, (micro, T), device=device)
    batch = [(x, torch.roll(x, -1, 1))]
    for _ in range(3):
        engine.train_step(batch, cfg.train.lr)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        engine.train_step(batch, cfg.train.lr)
    torch.cuda.synchronize()
    dt = (time.perf_counter() - start) / steps
    tps = micro * T / dt
    tflops = count_params(cfg.model).flops_per_token * tps / 1e12
    row = {
        "preset": preset,
        "ZeRO": zero,
        "act ckpt": ac,
        "micro batch": micro,
        "step s": dt,
        "tokens/s": tps,
        "TFLOP/s": tflops,
        "MFU %": 100 * tflops / peak if peak else float("nan"),
        "peak mem GB": torch.cuda.max_memory_allocated() / 2**30,
    }
    del engine
    torch.cuda.empty_cache()
    return row


def table_rows(results: list[dict], device: str) -> list[dict]:
    """Per preset, its fastest measured combination; the 1.3B row carries the MFU target on H100/H200."""
    out = []
    for preset in dict.fromkeys(r["preset"] for r in results):
        done = [r for r in results if r["preset"] == preset and isinstance(r.get("step s"), float)]
        if not done:
            out.append(
                row(f"gpu.py: bf16 training, {preset} preset, one {device}", "not measured", "not measured: OOM")
            )
            continue
        best = max(done, key=lambda r: r["tokens/s"])
        mfu = best["MFU %"]
        judged = preset == "1.3b" and any(k in device for k in ("H100", "H200")) and mfu == mfu
        out.append(
            row(
                f"gpu.py: bf16 training throughput, {preset} preset, one {device} (fastest of ZeRO 0/1 x act ckpt)",
                "tokens per wall-s; TFLOP/s and MFU from the closed-form FLOPs per token",
                f"{best['tokens/s']:,.0f} tokens/s, {best['TFLOP/s']:.0f} TFLOP/s, MFU {mfu:.1f}% "
                f"(ZeRO {best['ZeRO']}, act ckpt {'on' if best['act ckpt'] else 'off'}, micro batch {best['micro batch']})",
                target=TARGET if preset == "1.3b" else "",
                met=(mfu >= 45.0) if judged else None,
            )
        )
    return out


def main() -> int:
    rec = Recorder("gpu")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["125m", "1.3b"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--micro-batch", default="125m=16,1.3b=8", help="per-preset micro batch, e.g. 125m=16,1.3b=8")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak (default: looked up by name)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA GPU on this machine; nothing to measure")
        rec.write({"status": "not run: no CUDA GPU"}, [], "none: not run (no CUDA GPU on this machine)")
        return 0
    from framework.distributed import init_distributed
    from framework.runtime import print_table
    from framework.training.metrics import peak_tflops

    init_distributed()
    micro = dict(item.split("=") for item in args.micro_batch.split(","))
    peak = peak_tflops(args.peak_tflops)
    print(f"device: {torch.cuda.get_device_name()}  peak bf16: {peak} TFLOP/s")
    rows = []
    for preset in args.presets:
        for zero in (0, 1):
            for ac in (False, True):
                try:
                    rows.append(run_one(preset, zero, ac, int(micro.get(preset, 8)), args.steps, peak))
                except torch.cuda.OutOfMemoryError:
                    rows.append(
                        {
                            "preset": preset,
                            "ZeRO": zero,
                            "act ckpt": ac,
                            "micro batch": micro.get(preset),
                            "step s": "OOM",
                        }
                    )
                    torch.cuda.empty_cache()
                print(rows[-1], flush=True)
    print_table(rows, title="bf16 training throughput, one GPU")
    device = torch.cuda.get_device_name()
    rec.write(
        {"device": device, "peak_tflops": peak, "steps": args.steps, "results": rows},
        table_rows(rows, device),
        "synthetic token ids (uniform random); data loading is not measured",
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
