"""Benchmark: the Ray executor against the local one on one machine: Ray's start-up, reported apart,
and the steady-state throughput ratio Ray / local.

    .venv/bin/python -P benchmarks/ray_overhead.py [--docs 2000] [--files 8] [--cpus 2] [--repeats 2]

Curates the sample corpus (`anvil data sample`, real text, no download) with configs/data/demo.yaml
(filters, exact_dedup, minhash_dedup, pii: three segments, two barriers) and deduplicates it, with
the local executor (`--workers CPUS`) and on a local Ray runtime of CPUS CPUs, one task per input
file in both.

- Start-up: the wall seconds of `init_ray` (starting the local runtime: GCS, raylet, workers), and
  the first curation job on the fresh runtime (its workers import the pipeline), both reported
  apart. A long-lived cluster pays them once; one `anvil data run --executor ray` without
  --ray-address pays them every time.
- Steady state: each job `--repeats` more times on the warm runtime, best run; the local jobs run
  `--repeats` times (before Ray starts and after it is shut down), best run. docs/s = input
  documents per wall-clock second of the job; the local times include starting the executor's
  process pool (the dedup pool spawns fresh interpreters), as a user's run does.
- Outputs: every output file of each Ray run (documents, duplicates, rejected) is compared byte for
  byte with the local run's; only stats.json and timings.json (wall times) are left out.

The machine is shared: run it when it is quiet, and compare rows of the same run.
"""

from __future__ import annotations

import argparse
import filecmp
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # benchmarks/tokenize.py shadows stdlib
sys.path.insert(0, str(ROOT))

from benchmarks.common import Recorder, row  # noqa: E402

RUN_METADATA = {"stats.json", "timings.json"}  # wall times and run facts, not output
TARGET = "Ray on one machine: report start-up separately and the steady-state ratio to local"


def output_files(root: Path) -> set[Path]:
    return {
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).parts[0][0] != "." and p.name not in RUN_METADATA
    }


def differences(a: Path, b: Path) -> list[str]:
    """Output files that differ between two runs (or exist in one only); [] when identical."""
    fa, fb = output_files(a), output_files(b)
    if not fa:
        return [f"no output files in {a}"]
    diff = [f"only in {a.name}: {f}" for f in sorted(fa - fb)] + [f"only in {b.name}: {f}" for f in sorted(fb - fa)]
    return diff + [str(f) for f in sorted(fa & fb) if not filecmp.cmp(a / f, b / f, shallow=False)]


def main() -> None:
    rec = Recorder("ray_overhead")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=2000, help="sample-corpus documents (default 2000)")
    ap.add_argument("--files", type=int, default=8, help="input files (= tasks per segment; default 8)")
    ap.add_argument("--cpus", type=int, default=2, help="local --workers and Ray CPUs (default 2)")
    ap.add_argument("--repeats", type=int, default=2, help="steady-state runs per job and executor (default 2)")
    args = ap.parse_args()
    for name in ("docs", "files", "cpus", "repeats"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1, got {getattr(args, name)}")

    from data_pipeline.sample import write_sample_corpus
    from framework.runtime import print_table

    tmp = Path(tempfile.mkdtemp(prefix="anvil-ray-bench-"))
    try:
        info = write_sample_corpus(tmp / "raw", limit=args.docs, shard_docs=-(-args.docs // args.files))
        label = f"sample corpus (`anvil data sample`, {info['documents']:,} docs in {info['shards']} files)"
        try:
            import ray  # noqa: F401
        except ImportError as exc:
            rows = [row("ray_overhead.py: Ray executor vs local", "not measured", f"not measured: {exc}")]
            rec.write({"error": str(exc)}, rows, label)
            return
        record, rows = measure(args, tmp, info)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    usage = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    record["cpu_s_reaped"] = round(sum(u.ru_utime + u.ru_stime for u in usage), 1)
    print_table(record["jobs"], title=f"Ray vs local executor, {args.cpus} CPUs (Ray start-up {record['startup_s']}s)")
    rec.write(record, rows, label)
    for r in rows:
        print(f"{r['what']}\n  {r['quantity']}: {r['anvil']} | {r['peer']} | {r['ratio']} | met={r['met']}")


def measure(args, tmp: Path, info: dict) -> tuple[dict, list[dict]]:
    import ray

    from data_pipeline.dedup.api import run_dedup
    from data_pipeline.dedup.index import DedupConfig
    from data_pipeline.executors import RayExecutor
    from data_pipeline.executors.ray import RayOptions, init_ray, run_dedup_ray
    from data_pipeline.pipeline import load_recipe, run_recipe

    n = info["documents"]
    cfg = DedupConfig(workers=args.cpus)

    def curate(out: str, executor=None):
        recipe = load_recipe(
            ROOT / "configs/data/demo.yaml",
            [f"input={tmp / 'raw'}", f"output={tmp / out}", "shard_bytes=1", "report=false"],
        )
        return run_recipe(recipe, workers=args.cpus, executor=executor)

    jobs = {
        ("curate", "local"): lambda out: curate(out),
        ("dedup", "local"): lambda out: run_dedup([str(tmp / "raw")], tmp / out, cfg),
        ("curate", "ray"): lambda out: curate(out, RayExecutor(RayOptions())),
        ("dedup", "ray"): lambda out: run_dedup_ray([str(tmp / "raw")], tmp / out, cfg),
    }
    times: dict[tuple, list[float]] = {k: [] for k in jobs}

    def timed(key: tuple, out: str) -> float:
        shutil.rmtree(tmp / out, ignore_errors=True)
        t = time.perf_counter()
        jobs[key](out)
        times[key].append(time.perf_counter() - t)
        return times[key][-1]

    def local_round():
        for job in ("curate", "dedup"):
            timed((job, "local"), f"{job}-local")

    before = -(-args.repeats // 2)  # local runs before Ray starts and after it is gone: the best counts
    for _ in range(before):
        local_round()
    t = time.perf_counter()
    init_ray(RayOptions(num_cpus=args.cpus))
    startup = time.perf_counter() - t
    first = {job: timed((job, "ray"), f"{job}-ray-first") for job in ("curate", "dedup")}
    times[("curate", "ray")].clear()  # the first jobs are reported apart, not in the steady state
    times[("dedup", "ray")].clear()
    for _ in range(args.repeats):
        for job in ("curate", "dedup"):
            timed((job, "ray"), f"{job}-ray")
    ray.shutdown()
    for _ in range(args.repeats - before):
        local_round()

    table: list[dict] = []
    rows = [
        row(
            f"ray_overhead.py: Ray start-up on one machine ({args.cpus} CPUs), apart from the jobs",
            "wall s",
            f"{startup:.1f} s start-up; first curation job on the fresh runtime {first['curate']:.1f} s "
            f"(steady {min(times[('curate', 'ray')]):.1f} s)",
        )
    ]
    diffs = {}
    for job in ("curate", "dedup"):
        local, on_ray = min(times[(job, "local")]), min(times[(job, "ray")])
        diffs[job] = differences(tmp / f"{job}-local", tmp / f"{job}-ray") + [
            f"first run: {d}" for d in differences(tmp / f"{job}-local", tmp / f"{job}-ray-first")
        ]
        same = not diffs[job]
        table.append(
            {
                "job": job,
                "docs": n,
                "tasks/segment": info["shards"],
                "local docs/s": round(n / local),
                "ray docs/s (steady)": round(n / on_ray),
                "ray / local": round(local / on_ray, 2),
                "ray first job docs/s": round(n / first[job]),
                "ray docs/s with start-up": round(n / (first[job] + startup)) if job == "curate" else "",
                "identical": same,
            }
        )
        what = (
            "curation, demo recipe (filters, exact + MinHash dedup, PII; 3 segments)"
            if job == "curate"
            else "MinHash dedup (`anvil data dedup`)"
        )
        rows.append(
            row(
                f"ray_overhead.py: {what}, Ray vs local executor on one machine, steady state "
                f"(warm runtime, best of {args.repeats}); outputs byte-identical: {'yes' if same else 'NO'}",
                "docs per wall-s",
                f"Ray {n / on_ray:,.0f} docs/s",
                f"local executor --workers {args.cpus}: {n / local:,.0f} docs/s",
                f"Ray/local {local / on_ray:.2f}x",
                TARGET,
                same,
            )
        )
    record = {
        "docs": n,
        "files": info["shards"],
        "cpus": args.cpus,
        "repeats": args.repeats,
        "startup_s": round(startup, 2),
        "first_job_s": {k: round(v, 2) for k, v in first.items()},
        "times_s": {f"{job} {ex}": [round(t, 2) for t in v] for (job, ex), v in times.items()},
        "jobs": table,
        "differences": diffs,
    }
    return record, rows


if __name__ == "__main__":
    main()
