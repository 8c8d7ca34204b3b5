"""What resumable dedup costs: markers and checksums against the dedup code before them.

    python benchmarks/dedup_resume.py [--docs 5000] [--files 8] [--repeats 3] [--before REV]

Same input (the real corpus of benchmarks/dedup_inputs.py, split into --files files), same settings,
each run its own process, alternating: `before` is data_pipeline/dedup/ as of REV (default: the last
revision before markers) over the current tree, `after` the current code. Reports wall and CPU
seconds (best of --repeats), the seconds the current code spent computing checksums (resume.digest,
timed inside the process), and a rerun after a kill just before the output (every unit reused, only
verified). Without the
real inputs (benchmarks/install_real_inputs.sh) a synthetic corpus is used, and said so.
Results: benchmarks/results/dedup_resume.json.
"""

from __future__ import annotations

import os
import sys

# benchmarks/tokenize.py shadows the stdlib module: keep this folder off the import path.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import json
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BEFORE = "eacb4443c2fa65931b40ae3a756aeb75ecb94c17"  # data_pipeline/dedup/ as it was before resumable dedup

RUN = """
import json, sys, time
from data_pipeline.dedup.api import run_dedup
from data_pipeline.dedup.index import DedupConfig
spent = [0.0, 0]
try:
    from data_pipeline.dedup import resume, api, reduce, index
    original = resume.digest
    def timed(*a, **k):
        t = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            spent[0] += time.perf_counter() - t
            spent[1] += 1
    resume.digest = timed
    for mod in (api, reduce, index):
        if hasattr(mod, "digest"):
            mod.digest = timed
except ImportError:
    pass
t = time.perf_counter()
try:
    stats = run_dedup([sys.argv[1]], sys.argv[2], DedupConfig(memory_budget="256MB"))
except Exception as exc:
    print(json.dumps({"failed": repr(exc)}))
    sys.exit(0)
print(json.dumps({"wall": time.perf_counter() - t, "digest_s": spent[0], "digests": spent[1],
                  "resume": stats.get("resume"), "docs": stats["docs_in"]}))
"""


def split_corpus(src: Path, folder: Path, files: int) -> Path:
    if folder.exists():
        return folder
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    tmp = folder.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    per = -(-len(lines) // files)
    for k in range(files):
        (tmp / f"part-{k:02d}.jsonl").write_text("".join(lines[k * per : (k + 1) * per]), encoding="utf-8")
    tmp.replace(folder)
    return folder


def before_tree(rev: str, dest: Path) -> Path:
    """The current data_pipeline/framework/launch with data_pipeline/dedup/ as of `rev`."""
    for pkg in ("data_pipeline", "framework", "launch"):
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(dest / "data_pipeline" / "dedup")
    (dest / "data_pipeline" / "dedup").mkdir()
    names = subprocess.run(
        ["git", "ls-tree", "--name-only", rev, "data_pipeline/dedup/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in names:
        blob = subprocess.run(["git", "show", f"{rev}:{name}"], cwd=ROOT, capture_output=True, check=True).stdout
        (dest / name).write_bytes(blob)
    return dest


def run(tree: Path, inp: Path, out: Path, env_extra: dict | None = None) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(tree), **(env_extra or {})}
    proc = subprocess.run(
        [sys.executable, "-c", RUN, str(inp), str(out)], env=env, capture_output=True, text=True, cwd=tree
    )
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"run failed:\n{proc.stderr[-3000:]}")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    got["process_wall"] = wall
    got["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return got


def main() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("dedup_inputs", ROOT / "benchmarks" / "dedup_inputs.py")
    inputs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(inputs)
    CACHE, real_corpus = inputs.CACHE, inputs.real_corpus

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=5000)
    p.add_argument("--files", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--before",
        default=BEFORE,
        help="git revision of data_pipeline/dedup/ without markers (default: the last one before them)",
    )
    args = p.parse_args()
    try:
        inp = split_corpus(real_corpus(args.docs), CACHE / f"dedup-real-{args.docs}-{args.files}files", args.files)
        corpus = "real"
    except SystemExit as exc:  # real inputs not installed: a synthetic corpus instead, said so
        print(f"{exc}; using a synthetic corpus of {args.docs} documents instead")
        from data_pipeline.dedup.synthetic import write_corpus

        inp, corpus = CACHE / f"dedup-synthetic-{args.docs}-{args.files}files", "synthetic"
        if not inp.exists():
            write_corpus(
                inp,
                args.docs,
                docs_per_file=-(-args.docs // args.files),
                family_fraction=0.1,
                edit_rates=(0.0, 0.01, 0.15),
                words=(40, 400),
                seed=5,
            )
    mb = sum(f.stat().st_size for f in inp.glob("*.jsonl")) / 1e6
    with tempfile.TemporaryDirectory(prefix="anvil-resume-bench-") as tmpdir:
        tmp = Path(tmpdir)
        trees = {"before": before_tree(args.before, tmp / "before"), "after": ROOT}
        results: dict[str, list[dict]] = {"before": [], "after": []}
        for r in range(args.repeats):
            for name in ("before", "after") if r % 2 == 0 else ("after", "before"):
                out = tmp / f"out-{name}"
                shutil.rmtree(out, ignore_errors=True)
                results[name].append(run(trees[name], inp, out))
        same = all(
            (tmp / "out-before" / f).read_bytes() == (tmp / "out-after" / f).read_bytes()
            for f in ("duplicates.jsonl", "stats.json")
        )
        # a run killed just before writing the output, then the rerun (every unit verified and reused)
        out = tmp / "out-resume"
        shutil.rmtree(out, ignore_errors=True)
        killed = run(ROOT, inp, out, {"ANVIL_TEST_DEDUP_FAULT": "output"})
        rerun = run(ROOT, inp, out)
    best = {k: min(v, key=lambda x: x["process_wall"]) for k, v in results.items()}
    docs = best["after"]["docs"]
    print(
        f"input: {docs} documents, {mb:.1f} MB in {args.files} files; memory budget 256MB, 1 worker; "
        f"best of {args.repeats} alternating runs"
    )
    for k in ("before", "after"):
        b = best[k]
        walls = ", ".join(f"{x['process_wall']:.2f}" for x in results[k])
        cpu = min(x["cpu"] for x in results[k])
        print(f"  {k:6s}: wall {b['process_wall']:.2f} s (runs: {walls}), CPU {cpu:.2f} s (best)")
    a, b = best["after"], best["before"]
    print(
        f"  overhead: wall {100 * (a['process_wall'] / b['process_wall'] - 1):+.1f}%, "
        f"checksums {a['digest_s']:.3f} s over {a['digests']} files/ranges "
        f"({100 * a['digest_s'] / a['wall']:.1f}% of the dedup call's {a['wall']:.2f} s)"
    )
    print(f"  same output bytes before/after: {same}")
    print(f"  killed before the output ({killed.get('failed', 'finished?')[:60]}):")
    print(f"  rerun {rerun['process_wall']:.2f} s, of which checksum verification {rerun['digest_s']:.3f} s")
    print(f"  units: {rerun['resume']}")
    results_file = ROOT / "benchmarks" / "results" / "dedup_resume.json"
    results_file.parent.mkdir(exist_ok=True)
    results_file.write_text(
        json.dumps(
            {
                "corpus": corpus,
                "docs": docs,
                "mb": round(mb, 1),
                "files": args.files,
                "repeats": args.repeats,
                "before_rev": args.before,
                "same_output": same,
                "before": {
                    "wall_s": [round(x["process_wall"], 3) for x in results["before"]],
                    "cpu_s": [round(x["cpu"], 3) for x in results["before"]],
                },
                "after": {
                    "wall_s": [round(x["process_wall"], 3) for x in results["after"]],
                    "cpu_s": [round(x["cpu"], 3) for x in results["after"]],
                    "checksum_s": round(a["digest_s"], 4),
                    "checksums": a["digests"],
                },
                "resume_after_kill_before_output": {
                    "wall_s": round(rerun["process_wall"], 3),
                    "checksum_s": round(rerun["digest_s"], 4),
                    "units": rerun["resume"],
                },
            },
            indent=1,
        )
    )
    print(f"wrote {results_file}")


if __name__ == "__main__":
    main()
