"""Slurm array executor, for clusters without Ray: one array job per stage, chained with afterok.

Curation (`anvil data run ... --executor slurm`) becomes, for a recipe cut into segments 0..K:

    seg0      array, one task per input shard     run_map_task(plan, MapTask(0, $SLURM_ARRAY_TASK_ID))
    reduce1   one task, afterok:seg0              run_reduce(plan, 1)   (--mem from memory_budget)
    seg1      array, afterok:reduce1              ...
    finish    one task, afterok:segK              the same `anvil data run` again: every marker is
                                                  there, so it only writes stats.json and report.html

Dedup (`anvil data dedup ... --executor slurm`): `scan` (array, one task per input file, the same
shards as the local command) then `finish` (cluster inside --memory-budget and write the output).

Array tasks are the local executor's task units with its markers (base.py), so a finished task is
skipped when resubmitted and a job can be completed by any executor. Before submitting, the
finished tasks' files are verified (tasks.pending_work): a damaged task loses its marker, so its
array element redoes it. Each script retries its
command `retries` times before failing its array element (which holds back the next stage).
`--dry-run` prints the scripts and the sbatch commands and writes nothing. The scripts run
`python -m data_pipeline.executors.slurm {map,reduce,dedup-scan,dedup-finish} ...` (main below).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from data_pipeline.executors.tasks import MapTask, Plan, pending_work, run_map_task, run_reduce, write_json_atomic

MODULE = "data_pipeline.executors.slurm"


@dataclass
class SlurmOptions:
    retries: int = 0  # reruns of a failed array element inside its allocation
    partition: str | None = None
    time: str | None = None  # e.g. 04:00:00
    cpus_per_task: int = 1
    max_parallel: int = 0  # array throttle (%N); 0: no limit
    python: str = sys.executable
    chdir: str = field(default_factory=os.getcwd)


@dataclass
class Job:
    name: str
    command: str  # shell-quoted; array jobs append "$SLURM_ARRAY_TASK_ID"
    array: int = 0  # number of array elements; 0: a single task
    after: str | None = None  # name of the job this one waits for (afterok)
    mem_mb: int = 0
    comment: str = ""


def _py(opts: SlurmOptions, *args: str) -> str:
    return shlex.join([opts.python, "-m", MODULE, *args])


def curation_jobs(plan: Plan, plan_path: Path, finish: list[str], opts: SlurmOptions) -> list[Job]:
    from data_pipeline.executors.ray import stage_memory

    jobs: list[Job] = []
    n = len(plan.inputs)
    prev = None
    for seg in range(len(plan.segments)):
        if seg > 0:
            stage = next(iter(plan.segments[seg][0]))
            jobs.append(
                Job(
                    f"reduce{seg}",
                    _py(opts, "reduce", str(plan_path), str(seg)),
                    after=prev,
                    mem_mb=stage_memory(plan, seg) >> 20,
                    comment=f"barrier of stage {seg} ({stage})",
                )
            )
            prev = jobs[-1].name
        steps = ", ".join(next(iter(s)) for s in plan.segments[seg])
        jobs.append(
            Job(
                f"seg{seg}",
                _py(opts, "map", str(plan_path), str(seg)) + ' "$SLURM_ARRAY_TASK_ID"',
                array=n,
                after=prev,
                comment=f"segment {seg}: {steps}, one task per input shard",
            )
        )
        prev = jobs[-1].name
    jobs.append(Job("finish", shlex.join(finish), after=prev, comment="stats.json and report.html from the markers"))
    return jobs


def dedup_jobs(spec_path: Path, n_files: int, mem_mb: int, opts: SlurmOptions) -> list[Job]:
    return [
        Job(
            "scan",
            _py(opts, "dedup-scan", str(spec_path)) + ' "$SLURM_ARRAY_TASK_ID"',
            array=n_files,
            comment="signatures and band keys, one task per input file",
        ),
        Job(
            "finish",
            _py(opts, "dedup-finish", str(spec_path)),
            after="scan",
            mem_mb=mem_mb,
            comment="band buckets, candidate pairs, union-find and final filter",
        ),
    ]


def render(job: Job, folder: Path, opts: SlurmOptions, prefix: str) -> str:
    lines = ["#!/bin/bash", f"#SBATCH --job-name={prefix}-{job.name}"]
    if job.array:
        lines.append(f"#SBATCH --array=0-{job.array - 1}" + (f"%{opts.max_parallel}" if opts.max_parallel else ""))
    lines.append(f"#SBATCH --cpus-per-task={opts.cpus_per_task}")
    if job.mem_mb:
        lines.append(f"#SBATCH --mem={job.mem_mb}M")
    if opts.partition:
        lines.append(f"#SBATCH --partition={opts.partition}")
    if opts.time:
        lines.append(f"#SBATCH --time={opts.time}")
    lines += [
        f"#SBATCH --chdir={opts.chdir}",
        f"#SBATCH --output={folder}/logs/{job.name}-" + ("%A_%a.out" if job.array else "%j.out"),
        f"# {job.comment}" + (f"; after {job.after} succeeded" if job.after else ""),
        "set -uo pipefail",
        f"for attempt in $(seq 1 {opts.retries + 1}); do",
        f"  {job.command} && exit 0",
        f'  echo "anvil: attempt $attempt of {opts.retries + 1} failed on $(hostname)" >&2',
        "done",
        "exit 1",
        "",
    ]
    return "\n".join(lines)


def submit(jobs: list[Job], folder: Path, opts: SlurmOptions, prefix: str, dry_run: bool) -> dict[str, str]:
    """Write (or print, with dry_run) one script per job and sbatch them in order; returns job ids."""
    scripts = {job.name: render(job, folder, opts, prefix) for job in jobs}
    if dry_run:
        for job in jobs:
            dep = f" --dependency=afterok:${job.after.upper()}" if job.after else ""
            print(f"# {job.name.upper()}=$(sbatch --parsable{dep} {folder}/{job.name}.sbatch)")
            print(scripts[job.name])
        return {}
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    for job in jobs:
        (folder / f"{job.name}.sbatch").write_text(scripts[job.name])
    if shutil.which("sbatch") is None:
        raise SystemExit(
            f"sbatch not found: the scripts are in {folder}; submit them in this order with "
            "--dependency=afterok on the previous one: " + ", ".join(j.name for j in jobs)
        )
    ids: dict[str, str] = {}
    for job in jobs:
        cmd = ["sbatch", "--parsable"] + ([f"--dependency=afterok:{ids[job.after]}"] if job.after else [])
        out = subprocess.run(cmd + [str(folder / f"{job.name}.sbatch")], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"sbatch {folder / job.name}.sbatch failed: {out.stderr.strip()}")
        ids[job.name] = out.stdout.strip().split(";")[0]
        print(f"submitted {job.name}: job {ids[job.name]}")
    return ids


def submit_plan(plan: Plan, finish: list[str], opts: SlurmOptions, dry_run: bool = False) -> None:
    """Submit (or print) the job chain of `plan`; `finish` is the command its last job runs."""
    folder = plan.work.resolve() / "slurm"
    plan_path = folder / "plan.json"
    if not dry_run:
        from framework.runtime import get_logger

        pending_work(plan, fix=True, log=get_logger("data"))  # damaged tasks lose their marker
        write_json_atomic(plan_path, asdict(plan))
    submit(curation_jobs(plan, plan_path, finish, opts), folder, opts, "anvil-curate", dry_run)


def submit_dedup(
    inputs: list[str], output: str, cfg, incremental_store: str | None, opts: SlurmOptions, dry_run: bool = False
) -> None:
    from data_pipeline.dedup.index import parse_size
    from data_pipeline.io import expand_inputs

    files = [str(Path(p).resolve()) for p in expand_inputs(list(inputs))]
    folder = Path(output).resolve() / ".dedup-slurm"
    spec = {
        "inputs": files,
        "output": str(Path(output).resolve()),
        "cfg": asdict(cfg),
        "incremental_store": str(Path(incremental_store).resolve()) if incremental_store else None,
    }
    if not dry_run:
        write_json_atomic(folder / "spec.json", spec)
    mem_mb = (parse_size(cfg.memory_budget) + (512 << 20)) >> 20
    submit(dedup_jobs(folder / "spec.json", len(files), mem_mb, opts), folder, opts, "anvil-dedup", dry_run)


# ----------------------------------------------------------------------- entry points of the scripts
def _dedup_scan(spec: dict, index: int) -> None:
    from data_pipeline.dedup.api import scan_file
    from data_pipeline.dedup.index import DedupConfig

    folder = Path(spec["output"]) / ".dedup-slurm"
    marker = folder / "markers" / f"scan-{index:05d}.json"
    if marker.exists():
        return
    cfg = DedupConfig(**spec["cfg"]).resolved()
    shards, counts, rejects = scan_file(Path(spec["inputs"][index]), index, folder, cfg)
    write_json_atomic(marker, {"shards": [str(s) for s in shards], "counts": counts, "rejects": rejects})


def _dedup_finish(spec: dict) -> None:
    from data_pipeline.dedup.api import print_summary, run_dedup
    from data_pipeline.dedup.index import DedupConfig

    folder = Path(spec["output"]) / ".dedup-slurm"

    def collect(inputs, work, cfg, rejected):
        counts = {"files": len(inputs), "docs_in": 0, "bytes_in": 0, "rejected_read": 0}
        shard_dirs = []
        for i, path in enumerate(inputs):
            marker = folder / "markers" / f"scan-{i:05d}.json"
            if not marker.exists():
                raise SystemExit(f"anvil data dedup: the scan of {path} did not finish ({marker} missing)")
            m = json.loads(marker.read_text())
            shard_dirs += [Path(s) for s in m["shards"]]
            counts["docs_in"] += m["counts"]["docs_in"]
            counts["bytes_in"] += m["counts"]["bytes_in"]
            for rec in m["rejects"]:
                counts["rejected_read"] += 1
                rejected.write_record(rec)
        return shard_dirs, counts

    stats = run_dedup(
        spec["inputs"],
        spec["output"],
        DedupConfig(**spec["cfg"]),
        incremental_store=spec["incremental_store"],
        scan=collect,
    )
    shutil.rmtree(folder / "scan", ignore_errors=True)
    shutil.rmtree(folder / "markers", ignore_errors=True)
    print_summary(stats)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}", description="run one task of a Slurm-submitted job")
    sub = p.add_subparsers(dest="what", required=True)
    m = sub.add_parser("map")
    m.add_argument("plan")
    m.add_argument("segment", type=int)
    m.add_argument("shard", type=int)
    r = sub.add_parser("reduce")
    r.add_argument("plan")
    r.add_argument("stage", type=int)
    s = sub.add_parser("dedup-scan")
    s.add_argument("spec")
    s.add_argument("index", type=int)
    f = sub.add_parser("dedup-finish")
    f.add_argument("spec")
    args = p.parse_args(argv)
    if args.what in ("map", "reduce"):
        plan = Plan(**json.loads(Path(args.plan).read_text()))
        if args.what == "map":
            task = MapTask(args.segment, args.shard)
            if not plan.marker(task).exists():
                run_map_task(plan, task)
        elif not plan.reduce_marker(args.stage).exists():
            run_reduce(plan, args.stage, len(plan.inputs))
    elif args.what == "dedup-scan":
        _dedup_scan(json.loads(Path(args.spec).read_text()), args.index)
    else:
        _dedup_finish(json.loads(Path(args.spec).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
