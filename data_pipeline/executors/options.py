"""The executor flags `anvil data run` and `anvil data dedup` share (argparse only: cheap to import)."""

from __future__ import annotations

import argparse


def add_executor_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("executor (where the tasks run; the output is identical on each)")
    g.add_argument(
        "--executor",
        choices=("local", "ray", "slurm"),
        default="local",
        help="local processes (default), a Ray runtime/cluster, or one Slurm array job per stage",
    )
    g.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="join this Ray cluster (auto, or HOST:PORT of the head); default: start a local "
        "Ray runtime on this machine's CPUs",
    )
    g.add_argument(
        "--retries", type=int, default=2, help="ray/slurm: reruns of a failed task before the job stops (default 2)"
    )
    g.add_argument("--dry-run", action="store_true", help="slurm: print the sbatch scripts and submit nothing")
    g.add_argument("--slurm-partition", default=None, help="slurm: partition of every job")
    g.add_argument("--slurm-time", default=None, metavar="HH:MM:SS", help="slurm: time limit of every task")


def add_preflight_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("preflight (disk, memory and time estimates calibrated on a sample of the input)")
    g.add_argument(
        "--plan",
        action="store_true",
        help="print per stage the disk, memory and CPU/wall time the run would need, "
        "calibrated by running it on a small deterministic sample of the input, and run nothing",
    )
    g.add_argument(
        "--ignore-disk-estimate",
        action="store_true",
        help="start even when the output's free disk is below the preflight's estimate "
        "(by default such a run refuses to start)",
    )


def check_executor_args(args: argparse.Namespace, command: str) -> None:
    """One-line errors for flags that do not fit the chosen executor."""
    if args.retries < 0:
        raise SystemExit(f"{command}: --retries must be >= 0, got {args.retries}")
    if args.ray_address and args.executor != "ray":
        raise SystemExit(f"{command}: --ray-address needs --executor ray")
    if args.dry_run and args.executor != "slurm":
        raise SystemExit(f"{command}: --dry-run needs --executor slurm")


def ray_options(args: argparse.Namespace):
    from data_pipeline.executors.ray import RayOptions

    return RayOptions(address=args.ray_address, retries=args.retries)


def slurm_options(args: argparse.Namespace):
    from data_pipeline.executors.slurm import SlurmOptions

    return SlurmOptions(
        retries=args.retries,
        partition=args.slurm_partition,
        time=args.slurm_time,
        cpus_per_task=max(1, getattr(args, "workers", 1)),
    )
