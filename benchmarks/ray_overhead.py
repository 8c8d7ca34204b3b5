"""Benchmark: the Ray executor against the local one on one machine (the overhead of Ray).

    .venv/bin/python benchmarks/ray_overhead.py [--docs 2000] [--files 8] [--cpus 2]

Curates the sample corpus (`anvil data sample`, real text, no download) with configs/data/demo.yaml
(filters, exact_dedup, minhash_dedup, pii: three segments, two barriers) and deduplicates it, once
with the local executor (`--workers CPUS`) and once on a local Ray runtime of CPUS CPUs, one task
per input file in both. Ray's start-up is timed apart from the runs (a long-lived cluster pays it
once; one `anvil data run --executor ray` without --ray-address pays it every time: last column);
docs/s are input documents per wall-clock second; the local jobs run before and after Ray and
the faster run counts. The local executor's times include starting its
process pool (the dedup pool spawns fresh interpreters); Ray's workers are started with the runtime. The outputs are checked to be byte-identical.
The machine is shared: run it when it is quiet, and compare rows of the same run.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # benchmarks/tokenize.py shadows stdlib
sys.path.insert(0, str(ROOT))


def same_tree(a: Path, b: Path) -> bool:
    files = sorted(
        p.relative_to(a)
        for p in a.rglob("*")
        if p.is_file() and p.relative_to(a).parts[0][0] != "." and p.name != "stats.json"
    )
    return all(filecmp.cmp(a / f, b / f, shallow=False) for f in files) and bool(files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--files", type=int, default=8, help="input files (= tasks per segment)")
    ap.add_argument("--cpus", type=int, default=2)
    args = ap.parse_args()

    from data_pipeline.dedup.api import run_dedup
    from data_pipeline.dedup.index import DedupConfig
    from data_pipeline.executors import RayExecutor
    from data_pipeline.executors.ray import RayOptions, init_ray, run_dedup_ray
    from data_pipeline.pipeline import load_recipe, run_recipe
    from data_pipeline.sample import write_sample_corpus
    from framework.runtime import print_table

    tmp = Path(tempfile.mkdtemp(prefix="anvil-ray-bench-"))
    info = write_sample_corpus(tmp / "raw", limit=args.docs, shard_docs=-(-args.docs // args.files))
    n = info["documents"]
    cfg = DedupConfig(workers=args.cpus)

    def curate(out: str, executor=None):
        recipe = load_recipe(
            ROOT / "configs/data/demo.yaml",
            [f"input={tmp / 'raw'}", f"output={tmp / out}", "shard_bytes=1", "report=false"],
        )
        return run_recipe(recipe, workers=args.cpus, executor=executor)

    rows, times = [], {}

    def timed(name, fn):
        t = time.perf_counter()
        fn()
        times[name] = min(times.get(name, float("inf")), time.perf_counter() - t)

    local_jobs = [
        ("curate local", lambda: curate("local")),
        ("dedup local", lambda: run_dedup([str(tmp / "raw")], tmp / "dlocal", cfg)),
    ]
    for name, fn in local_jobs:
        timed(name, fn)
    t = time.perf_counter()
    init_ray(RayOptions(num_cpus=args.cpus))
    startup = time.perf_counter() - t
    timed("curate ray", lambda: curate("ray", RayExecutor(RayOptions())))
    timed("dedup ray", lambda: run_dedup_ray([str(tmp / "raw")], tmp / "dray", cfg))
    import ray

    ray.shutdown()
    for name, fn in local_jobs:  # again, warm, after Ray is gone: the best local time counts
        shutil.rmtree(tmp / ("local" if name.startswith("curate") else "dlocal"))
        timed(name, fn)
    identical = {"curate": same_tree(tmp / "local", tmp / "ray"), "dedup": same_tree(tmp / "dlocal", tmp / "dray")}
    for job in ("curate", "dedup"):
        local, on_ray = times[f"{job} local"], times[f"{job} ray"]
        rows.append(
            {
                "job": job,
                "docs": n,
                "tasks/segment": info["shards"],
                "local docs/s": round(n / local),
                "ray docs/s": round(n / on_ray),
                "ray / local": round(local / on_ray, 2),
                "ray docs/s with start-up": round(n / (on_ray + startup)),
                "identical": identical[job],
            }
        )
    print_table(rows, title=f"Ray vs local executor, {args.cpus} CPUs (Ray start-up {startup:.1f}s)")


if __name__ == "__main__":
    main()
