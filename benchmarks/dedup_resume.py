"""What resumable dedup costs: markers and checksums against the dedup code before them.

    python -P benchmarks/dedup_resume.py [--docs 5000] [--files 8] [--repeats 2] [--before REV]

Same input (the real corpus of benchmarks/dedup_inputs.py, shared with benchmarks/dedup.py's cache,
split into --files files), same settings, each run its own process, alternating: `before` is
data_pipeline/dedup/ as of REV (default: the last revision before markers, read with `git show`)
over the current tree, `after` the current code, both `exact_verify=False` (the same work: the code
before markers verified candidates in pure Python, off by default). Reports wall and CPU seconds (best of --repeats),
the seconds the current code spent computing checksums (resume.digest, timed inside the process),
and a rerun after a kill just before the output (every unit reused, only verified). Without the
real inputs (benchmarks/install_real_inputs.sh) Anvil's sample corpus is used, labelled; without
git or REV (an archive, a shallow clone) the before/after comparison is reported as not measured.
About 1 minute on an idle 2-core machine once the corpus is cached.
Results: benchmarks/results/dedup_resume.json (rows for the README's performance table).
"""

from __future__ import annotations

import os
import sys

# benchmarks/tokenize.py shadows the stdlib module: keep this folder off the import path.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.path.insert(0, os.path.dirname(HERE))

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from benchmarks.common import Recorder, row  # noqa: E402
from benchmarks.dedup_inputs import CACHE, corpus  # noqa: E402

ROOT = Path(HERE).parent
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
    # estimate mode on both sides: the code before markers verified pairs in pure Python (not its default)
    stats = run_dedup([sys.argv[1]], sys.argv[2], DedupConfig(memory_budget="256MB", exact_verify=False))
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


class NotMeasured(Exception):
    pass


def before_tree(rev: str, dest: Path) -> Path:
    """The current data_pipeline/framework/launch with data_pipeline/dedup/ as of `rev`;
    NotMeasured when git or the revision is not there."""
    try:
        subprocess.run(["git", "cat-file", "-e", f"{rev}^{{commit}}"], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        raise NotMeasured(f"revision {rev[:10]} not available (no git, or not in this clone)") from None
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
        if tree != ROOT:  # the old code does not run over today's tree: reported, not fatal
            raise NotMeasured(f"the dedup in {tree} failed: {proc.stderr[-300:]}")
        raise SystemExit(f"run failed:\n{proc.stderr[-3000:]}")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    if "failed" in got and not env_extra:
        raise NotMeasured(f"the dedup in {tree} failed: {got['failed'][:300]}")
    got["process_wall"] = wall
    got["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return got


def compare(args, inp: Path, tmp: Path) -> dict:
    """`before` and `after`, alternating, --repeats each; NotMeasured without the before code."""
    trees = {"before": before_tree(args.before, tmp / "before"), "after": ROOT}
    results: dict[str, list[dict]] = {"before": [], "after": []}
    for r in range(args.repeats):
        for name in ("before", "after") if r % 2 == 0 else ("after", "before"):
            out = tmp / f"out-{name}"
            shutil.rmtree(out, ignore_errors=True)
            results[name].append(run(trees[name], inp, out))
            print(
                f"  {name}: {results[name][-1]['process_wall']:.2f} s wall, {results[name][-1]['cpu']:.2f} s CPU",
                flush=True,
            )
    # the decisions (stats.json gained fields since)
    same = (tmp / "out-before" / "duplicates.jsonl").read_bytes() == (
        tmp / "out-after" / "duplicates.jsonl"
    ).read_bytes()
    best = {k: min(v, key=lambda x: x["process_wall"]) for k, v in results.items()}
    return {"runs": results, "best": best, "same": same}


def main() -> None:
    rec = Recorder("dedup_resume")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=5000, help="documents of the corpus (at most)")
    p.add_argument("--files", type=int, default=8, help="input files the corpus is split into")
    p.add_argument("--repeats", type=int, default=2, help="runs of each side, alternating (the best is kept)")
    p.add_argument(
        "--before",
        default=BEFORE,
        help="git revision of data_pipeline/dedup/ without markers (default: the last one before them)",
    )
    args = p.parse_args()
    src, label, real = corpus(args.docs)
    inp = split_corpus(src, CACHE / (f"dedup-{'real' if real else 'sample'}-{args.docs}-{args.files}files"), args.files)
    mb = sum(f.stat().st_size for f in inp.glob("*.jsonl")) / 1e6
    print(
        f"input: {label}, {mb:.1f} MB in {args.files} files; memory budget 256MB, 1 worker, --no-exact-verify",
        flush=True,
    )
    record: dict = {"files": args.files, "mb": round(mb, 1), "repeats": args.repeats, "before_rev": args.before}
    with tempfile.TemporaryDirectory(prefix="anvil-resume-bench-") as tmpdir:
        tmp = Path(tmpdir)
        try:
            cmp = compare(args, inp, tmp)
        except NotMeasured as exc:
            cmp, record["not_measured"] = None, f"before/after not measured: {exc}"
            print(record["not_measured"], flush=True)
        # a run killed just before writing the output, then the rerun (every unit verified and reused)
        out = tmp / "out-resume"
        killed = run(ROOT, inp, out, {"ANVIL_TEST_DEDUP_FAULT": "output"})
        rerun = run(ROOT, inp, out)
        fresh = run(ROOT, inp, tmp / "out-fresh") if cmp is None else cmp["best"]["after"]
    rows = []
    docs = rerun["docs"]
    what = (
        f"Resumable dedup ({docs:,} docs, {mb:.0f} MB, 1 worker, --no-exact-verify): today's code (markers, "
        f"checksums) vs the code before markers ({args.before[:7]}, without later speed-ups either)"
    )
    if cmp:
        a, b = cmp["best"]["after"], cmp["best"]["before"]
        cpu = {k: min(x["cpu"] for x in v) for k, v in cmp["runs"].items()}
        over = 100 * (a["process_wall"] / b["process_wall"] - 1)
        print(
            f"  overhead: wall {over:+.1f}% (best of {args.repeats}), CPU {cpu['after']:.2f} s vs {cpu['before']:.2f} s; "
            f"checksums {a['digest_s']:.3f} s over {a['digests']} files/ranges "
            f"({100 * a['digest_s'] / a['wall']:.1f}% of the dedup call's {a['wall']:.2f} s); "
            f"same duplicates.jsonl before/after: {cmp['same']}"
        )
        rows.append(
            row(
                what,
                f"wall s, whole process (best of {args.repeats}, alternating)",
                f"{a['process_wall']:.2f} s (CPU {cpu['after']:.2f} s, checksums {a['digest_s']:.2f} s)",
                f"before markers {b['process_wall']:.2f} s (CPU {cpu['before']:.2f} s)",
                f"{over:+.1f}% wall",
            )
        )
        record.update(
            {
                "same_output": cmp["same"],
                "before": {
                    "wall_s": [round(x["process_wall"], 3) for x in cmp["runs"]["before"]],
                    "cpu_s": [round(x["cpu"], 3) for x in cmp["runs"]["before"]],
                },
                "after": {
                    "wall_s": [round(x["process_wall"], 3) for x in cmp["runs"]["after"]],
                    "cpu_s": [round(x["cpu"], 3) for x in cmp["runs"]["after"]],
                    "checksum_s": round(a["digest_s"], 4),
                    "checksums": a["digests"],
                },
            }
        )
    else:
        rows.append(
            row(
                what,
                "wall s, whole process",
                f"{fresh['process_wall']:.2f} s (checksums {fresh['digest_s']:.2f} s)",
                record["not_measured"],
            )
        )
    print(
        f"  killed before the output ({killed.get('failed', 'finished?')[:60]}): rerun {rerun['process_wall']:.2f} s, "
        f"of which checksum verification {rerun['digest_s']:.3f} s; units {rerun['resume']}"
    )
    rows.append(
        row(
            "Resumable dedup: rerun after a kill just before the output",
            "wall s, whole process",
            f"{rerun['process_wall']:.2f} s (all units verified, reused)",
            f"uninterrupted run {fresh['process_wall']:.2f} s",
            f"{fresh['process_wall'] / rerun['process_wall']:.1f}x less",
        )
    )
    record["resume_after_kill_before_output"] = {
        "wall_s": round(rerun["process_wall"], 3),
        "checksum_s": round(rerun["digest_s"], 4),
        "units": rerun["resume"],
    }
    from framework.runtime import print_table

    print_table(rows, title="rows")
    rec.write(record, rows, f"{label}, {args.files} files")


if __name__ == "__main__":
    main()
