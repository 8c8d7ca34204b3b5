"""`anvil plan CONFIG --world-size N [--device-memory 80GB] [--device cuda|cpu]`: per-rank memory of every layout."""

from __future__ import annotations

import argparse

from launch.cli import Command


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="training config or model preset (YAML with a model: section)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.precision=bf16")
    p.add_argument("--world-size", type=int, required=True, help="number of devices (ranks)")
    p.add_argument(
        "--device-memory",
        default="80GB",
        help="memory per device, or host RAM per rank with --device cpu (default 80GB; GB=1e9, GiB=2^30)",
    )
    p.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="cuda (default): plan GPU memory and show each rank's host RAM apart; "
        "cpu: plan host RAM of CPU ranks (everything is host memory there)",
    )
    p.add_argument(
        "--gpus-per-node",
        type=int,
        default=8,
        help="devices per node; tensor parallelism beyond it is not recommended (default 8)",
    )
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
    plans = planner.plan(cfg, args.world_size, device, args.device)
    if not plans:
        raise SystemExit(
            f"anvil plan: no valid layout of {args.world_size} ranks for this model "
            f"(tensor must divide n_heads={cfg.model.n_heads} and vocab_size={cfg.model.vocab_size})"
        )
    best = planner.recommend(plans, args.gpus_per_node)
    gpu = args.device == "cuda"
    rows = []
    for p in plans:
        if args.fitting_only and not p.fits_ckpt:
            continue
        row = {
            "DP": p.layout.data,
            "TP": p.layout.tensor,
            "PP": p.layout.pipeline,
            "ZeRO": p.zero,
            "params GB": _gb(p.params),
            "grads GB": _gb(p.grads),
            "optim GB": _gb(p.optimizer),
            "act GB": _gb(p.act),
            "act ckpt GB": _gb(p.act_ckpt),
            "start-up GB": _gb(p.startup),
            "steps GB": _gb(p.steps if p.fits or not p.fits_ckpt else p.steps_ckpt),
            "save GB": _gb(p.save),
            "load GB": _gb(p.load),
        }
        if gpu:
            row["host GB"] = _gb(p.host)
        row.update(
            {
                "fits": "yes" if p.fits else ("with ckpt" if p.fits_ckpt else "no"),
                "batch": "ok" if p.batch_ok else "no",
                "": "<- recommended" if p is best else "",
            }
        )
        rows.append(row)
    from framework.runtime import print_table

    m, t = cfg.model, cfg.train
    where = (
        f"{args.world_size} x {args.device_memory}"
        if gpu
        else f"{args.world_size} CPU ranks x {args.device_memory} host RAM"
    )
    print_table(
        rows,
        title=f"anvil plan: {args.config} on {where} "
        f"({t.precision}, micro-batch {t.micro_batch_size}, global batch {t.global_batch_size}, "
        f"seq {m.seq_len}; per rank, most loaded pipeline stage)",
    )
    print(
        "params/grads/optim: held at the optimizer step; start-up, steps, save, load: peak per phase of "
        "`anvil train` (steps with activation checkpointing where only that fits); "
        + (
            "device memory; host GB: the rank's host RAM peak besides the CUDA runtime (load: the "
            "memory-mapped checkpoint pages it reads)"
            if gpu
            else f"host RAM above the process baseline, incl. {planner.HOST_FIXED_STARTUP / 2**20:.0f}/"
            f"{planner.HOST_FIXED_TRAINING / 2**20:.0f} MiB fixed (start-up/training; ZeRO-3 "
            f"+{planner.HOST_FIXED_ZERO3 / 2**20:.0f} MiB, TP +{planner.HOST_FIXED_TP / 2**20:.0f} MiB) measured on CPU"
        )
    )
    print(
        "activations: Korthikanti et al. 2022 (arXiv:2205.05198), attention matrix not stored (SDPA); "
        f"fits = every phase's peak <= {planner.HEADROOM:.0%} of device memory"
    )
    if best is None and any(p.fits_ckpt for p in plans):
        print(
            f"no fitting layout divides train.global_batch_size={t.global_batch_size} into micro-batches of "
            f"{t.micro_batch_size} per data-parallel rank (batch=no); raise or change train.global_batch_size"
        )
        return 1
    if best is None:
        print(
            f"no layout fits in {args.device_memory} per {'device' if gpu else 'rank'}, even with activation "
            "checkpointing (add devices, or lower train.micro_batch_size / model.seq_len)"
        )
        return 1
    ckpt = "" if best.fits else " parallel.activation_checkpointing=true"
    print(
        f"recommended: parallel.tensor={best.layout.tensor} parallel.pipeline={best.layout.pipeline} "
        f"parallel.zero_stage={best.zero}{ckpt} (DP {best.layout.data}; {best.total / 1e9:.1f} GB per rank "
        f"at its peak, {best.peak_phase})"
    )
    return 0


COMMANDS = [
    Command(
        ("plan",),
        "memory planner: per-rank bytes of every DP x TP x PP x ZeRO layout per phase, and a recommendation",
        _configure,
        _run,
    )
]
