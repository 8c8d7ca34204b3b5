"""`anvil plan CONFIG --world-size N [--device-memory 80GB]`: per-rank memory of every layout."""
from __future__ import annotations

import argparse

from launch.cli import Command


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="training config or model preset (YAML with a model: section)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.precision=bf16")
    p.add_argument("--world-size", type=int, required=True, help="number of devices (ranks)")
    p.add_argument("--device-memory", default="80GB", help="memory per device (default 80GB; GB=1e9, GiB=2^30)")
    p.add_argument("--gpus-per-node", type=int, default=8,
                   help="devices per node; tensor parallelism beyond it is not recommended (default 8)")
    p.add_argument("--fitting-only", action="store_true", help="list only the layouts that fit")


def _gb(x: float) -> str:
    return f"{x / 1e9:.2f}"


def _run(args: argparse.Namespace) -> int:
    from framework.config import load_run_config
    from framework.parallel import planner

    if args.world_size <= 0:
        raise SystemExit(f"anvil plan: --world-size must be positive, got {args.world_size}")
    try:
        device = planner.parse_bytes(args.device_memory)
    except ValueError as exc:
        raise SystemExit(f"anvil plan: --device-memory: {exc}") from None
    cfg = load_run_config(args.config, args.overrides)
    cfg.model.validate()
    plans = planner.plan(cfg, args.world_size, device)
    if not plans:
        raise SystemExit(f"anvil plan: no valid layout of {args.world_size} ranks for this model "
                         f"(tensor must divide n_heads={cfg.model.n_heads} and vocab_size={cfg.model.vocab_size})")
    best = planner.recommend(plans, args.gpus_per_node)
    rows = []
    for p in plans:
        if args.fitting_only and not p.fits_ckpt:
            continue
        rows.append({"DP": p.layout.data, "TP": p.layout.tensor, "PP": p.layout.pipeline, "ZeRO": p.zero,
                     "params GB": _gb(p.params), "grads GB": _gb(p.grads), "optim GB": _gb(p.optimizer),
                     "act GB": _gb(p.act), "act ckpt GB": _gb(p.act_ckpt),
                     "fits": "yes" if p.fits else ("with ckpt" if p.fits_ckpt else "no"),
                     "batch": "ok" if p.batch_ok else "no",
                     "": "<- recommended" if p is best else ""})
    from framework.runtime import print_table

    m, t = cfg.model, cfg.train
    print_table(rows, title=f"anvil plan: {args.config} on {args.world_size} x {args.device_memory} "
                            f"({t.precision}, micro-batch {t.micro_batch_size}, global batch {t.global_batch_size}, "
                            f"seq {m.seq_len}; per rank, most loaded pipeline stage)")
    print("activations: Korthikanti et al. 2022 (arXiv:2205.05198), attention matrix not stored (SDPA); "
          f"fits = model states + activations <= {planner.HEADROOM:.0%} of device memory")
    if best is None and any(p.fits_ckpt for p in plans):
        print(f"no fitting layout divides train.global_batch_size={t.global_batch_size} into micro-batches of "
              f"{t.micro_batch_size} per data-parallel rank (batch=no); raise or change train.global_batch_size")
        return 1
    if best is None:
        print(f"no layout fits in {args.device_memory} per device, even with activation checkpointing "
              "(add devices, or lower train.micro_batch_size / model.seq_len)")
        return 1
    ckpt = "" if best.fits else " parallel.activation_checkpointing=true"
    print(f"recommended: parallel.tensor={best.layout.tensor} parallel.pipeline={best.layout.pipeline} "
          f"parallel.zero_stage={best.zero}{ckpt} (DP {best.layout.data}; {best.total / 1e9:.1f} GB per rank)")
    return 0


COMMANDS = [Command(("plan",), "memory planner: per-rank bytes of every DP x TP x PP x ZeRO layout, and a recommendation",
                    _configure, _run)]
