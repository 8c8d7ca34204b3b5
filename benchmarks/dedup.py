"""Near-duplicate removal: Anvil vs a datasketch pipeline vs DataTrove, and a 1M-document memory run.

    python benchmarks/dedup.py [--real-docs 5000] [--synthetic 1000000] [--budget 1GB] [--skip-datatrove]

Every tool runs end to end as its own process (imports, reading JSONL, writing results) on the
same input with the same settings (128 permutations, word 5-grams, threshold 0.8); wall time,
peak RSS (the process tree, sampled every 50 ms) and CPU time are measured from outside.
* anvil: `anvil data dedup --workers 1|2`.
* datasketch: `MinHash.bulk` over the same shingles + `MinHashLSH(0.8)`; documents in input order
  are queried, then inserted if no earlier kept document matched (the usual streaming pipeline).
* datatrove (benchmarks/.venv-peers, if present): its four MinHash stages, tasks=2, 64-bit
  hashes, default 14x8 buckets, cluster ids saved so its clusters can be scored.
Quality: pair and document precision/recall against exact Jaccard >= 0.8 on word 5-grams
(data_pipeline/dedup/evaluate.py). Then a synthetic corpus with planted families (known edit
rates) is deduplicated under `--budget`, reporting peak RSS and how many planted members were found.
"""

from __future__ import annotations

import os
import sys

# benchmarks/tokenize.py shadows the stdlib module: keep this folder off the import path.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PY = sys.executable
PEERS_PY = ROOT / "benchmarks" / ".venv-peers" / "bin" / "python"
CACHE = ROOT / "benchmarks" / ".cache"


def measure(cmd: list[str], env=None) -> dict:
    """Run a command; wall seconds, CPU seconds and peak RSS of its process tree (MB)."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    peak = [0]
    cpu: dict[int, float] = {}  # last CPU seconds seen per process of the tree
    done = threading.Event()

    def poll():
        p = psutil.Process(proc.pid)
        while not done.is_set():
            rss = 0
            try:
                for c in [p] + p.children(recursive=True):
                    with c.oneshot():
                        rss += c.memory_info().rss
                        t = c.cpu_times()
                        cpu[c.pid] = t.user + t.system
            except psutil.Error:
                pass
            peak[0] = max(peak[0], rss)
            time.sleep(0.05)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    done.set()
    th.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.decode()[-3000:]}")
    return {"wall_s": wall, "cpu_s": sum(cpu.values()), "peak_rss_mb": peak[0] / 2**20, "log": out.decode()}


# ----------------------------------------------------------------------------- datasketch baseline
def datasketch_run(inp: str, out: str) -> None:
    from datasketch import MinHash, MinHashLSH

    from data_pipeline.dedup.minhash import shingles
    from data_pipeline.io import iter_documents

    docs = list(iter_documents([inp]))
    sets = [shingles(d.text, 5) or [b""] for d in docs]
    mhs = MinHash.bulk(sets, num_perm=128)
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    with open(Path(out) / "duplicates.jsonl", "w") as f:
        for d, m in zip(docs, mhs):
            hits = lsh.query(m)
            if hits:
                f.write(json.dumps({"id": d.id, "duplicate_of": min(hits)}) + "\n")
            else:
                lsh.insert(d.id, m)


# --------------------------------------------------------------------------------------- scoring
def load_texts(folder: Path) -> tuple[list[str], list[str]]:
    from data_pipeline.io import iter_documents

    ids, texts = [], []
    for d in iter_documents([str(folder)]):
        ids.append(d.id)
        texts.append(d.text)
    return ids, texts


def scores(ids, truth, duplicate_of=None, clusters=None) -> dict:
    import numpy as np

    from data_pipeline.dedup.evaluate import labels_from_duplicates, score

    if clusters is not None:  # datatrove: {id: cluster id}; -1 / missing = singleton
        names = {}
        label = np.array(
            [names.setdefault(clusters.get(i, -1) if clusters.get(i, -1) != -1 else ("s", i), len(names)) for i in ids]
        )
        flagged = np.array([clusters.get(i, -1) != -1 for i in ids])
    else:
        label, flagged = labels_from_duplicates(ids, duplicate_of)
    return score(len(ids), truth, label, flagged)


def read_dups(path: Path) -> dict:
    return {r["id"]: r["duplicate_of"] for r in map(json.loads, path.read_text().splitlines())}


def real_benchmark(args, rows: list[dict]) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("dedup_inputs", ROOT / "benchmarks" / "dedup_inputs.py")
    inputs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(inputs)
    real_corpus = inputs.real_corpus
    from data_pipeline.dedup.evaluate import true_pairs

    src = real_corpus(args.real_docs)
    folder = CACHE / f"dedup-real-{args.real_docs}-split"
    if not folder.exists():  # 4 files, so that DataTrove's tasks=2 has work for both tasks
        lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
        folder.mkdir(parents=True)
        q = (len(lines) + 3) // 4
        for k in range(4):
            (folder / f"part-{k}.jsonl").write_text("".join(lines[k * q : (k + 1) * q]), encoding="utf-8")
    ids, texts = load_texts(folder)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    t0 = time.perf_counter()
    truth, _, cand = true_pairs(texts, 0.8, 5)
    print(
        f"real corpus: {len(ids)} documents, {mb:.1f} MB; {len(truth)} pairs with exact Jaccard >= 0.8 "
        f"({cand} candidates checked in {time.perf_counter() - t0:.0f}s)",
        flush=True,
    )
    work = CACHE / "dedup-bench-out"
    anvil = str(Path(PY).parent / "anvil")
    runs = [
        (
            f"anvil --workers {w}",
            [anvil, "data", "dedup", str(folder), "--output", str(work / f"anvil{w}"), "--workers", str(w)],
            work / f"anvil{w}",
        )
        for w in (1, 2)
    ]
    runs.append(
        (
            "datasketch MinHash.bulk + MinHashLSH",
            [PY, __file__, "--datasketch-run", str(folder), str(work / "datasketch")],
            work / "datasketch",
        )
    )
    if PEERS_PY.exists() and not args.skip_datatrove:
        runs.append(
            (
                "datatrove MinHash 4 stages (tasks=2)",
                [str(PEERS_PY), str(ROOT / "benchmarks" / "dedup_peers.py"), str(folder), str(work / "datatrove")],
                work / "datatrove",
            )
        )
    results = {}
    for name, cmd, out in runs:
        best = None
        for _ in range(args.repeats):
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            m = measure(cmd)
            best = m if best is None or m["wall_s"] < best["wall_s"] else best
        if name.startswith("datatrove"):
            q = scores(ids, truth, clusters=json.loads((out / "clusters.json").read_text()))
        else:
            q = scores(ids, truth, duplicate_of=read_dups(out / "duplicates.jsonl"))
        results[name] = (best, q)
        print(f"  {name}: {best['wall_s']:.1f}s", flush=True)
    base = results["datasketch MinHash.bulk + MinHashLSH"][0]["wall_s"]
    for name, (m, q) in results.items():
        rows.append(
            {
                "tool": name,
                "docs/s": round(len(ids) / m["wall_s"]),
                "MB/s": round(mb / m["wall_s"], 2),
                "x datasketch": round(base / m["wall_s"], 2),
                "wall s": round(m["wall_s"], 1),
                "CPU s": round(m["cpu_s"], 1),
                "peak RSS MB": round(m["peak_rss_mb"]),
                "pair P": q["pair_precision"],
                "pair R": q["pair_recall"],
                "doc P": q["doc_precision"],
                "doc R": q["doc_recall"],
            }
        )


def planted_truth(folder: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """Family members with exact Jaccard >= 0.8 to their base ((id, family)) and those below 0.5."""
    from data_pipeline.dedup.minhash import exact_jaccard, normalize, shingle_hashes

    bases, near, far = {}, [], []
    for f in sorted(folder.glob("*.jsonl")):
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                if not line.startswith('{"id": "f'):
                    continue
                rec = json.loads(line)
                fam, v = rec["id"].split("-v")
                sh = shingle_hashes(normalize(rec["text"]), 5)
                if v == "0":
                    bases[fam] = sh
                    continue
                j = exact_jaccard(bases[fam], sh)
                if j >= 0.8:
                    near.append((rec["id"], fam))
                elif j < 0.5:
                    far.append(rec["id"])
    return near, far


def synthetic_benchmark(args, rows: list[dict]) -> None:
    from data_pipeline.dedup.synthetic import write_corpus

    folder = CACHE / f"dedup-synthetic-{args.synthetic}"
    planted_file = folder / "planted.json"
    if not planted_file.exists():
        t0 = time.perf_counter()
        planted = write_corpus(
            folder, args.synthetic, family_fraction=0.1, edit_rates=(0.0, 0.005, 0.01, 0.15), words=(40, 120), seed=11
        )
        planted_file.write_text(json.dumps([[p.doc_id, p.family, p.edit_rate] for p in planted]))
        print(f"generated {args.synthetic} synthetic documents in {time.perf_counter() - t0:.0f}s", flush=True)
    planted = json.loads(planted_file.read_text())
    mb = sum(p.stat().st_size for p in folder.glob("*.jsonl")) / 1e6
    out = CACHE / "dedup-bench-out" / "synthetic"
    shutil.rmtree(out, ignore_errors=True)
    anvil = str(Path(PY).parent / "anvil")
    m = measure(
        [
            anvil,
            "data",
            "dedup",
            str(folder),
            "--output",
            str(out),
            "--workers",
            str(args.workers),
            "--memory-budget",
            args.budget,
        ]
    )
    dups = read_dups(out / "duplicates.jsonl")
    stats = json.loads((out / "stats.json").read_text())
    near, far = planted_truth(folder)
    found = sum(1 for d, fam in near if dups.get(d, "").split("-v")[0] == fam)
    kept_far = sum(1 for d in far if d not in dups)
    unrelated_removed = sum(1 for d in dups if d.startswith("u"))
    print(
        f"synthetic: {found}/{len(near)} planted members with exact Jaccard >= 0.8 to their family base found, "
        f"{kept_far}/{len(far)} members below 0.5 kept, {unrelated_removed} unrelated documents removed; "
        f"{stats['sorted_runs']} sorted runs; {m['wall_s']:.0f}s",
        flush=True,
    )
    rows.append(
        {
            "tool": f"anvil --workers {args.workers} --memory-budget {args.budget} ({args.synthetic:,} synthetic docs)",
            "docs/s": round(args.synthetic / m["wall_s"]),
            "MB/s": round(mb / m["wall_s"], 2),
            "x datasketch": "",
            "wall s": round(m["wall_s"], 1),
            "CPU s": round(m["cpu_s"], 1),
            "peak RSS MB": round(m["peak_rss_mb"]),
            "pair P": "",
            "pair R": "",
            "doc P": "",
            "doc R": f"planted {found / max(1, len(near)):.4f}",
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real-docs", type=int, default=5000)
    ap.add_argument("--synthetic", type=int, default=1_000_000, help="synthetic corpus size (0: skip)")
    ap.add_argument("--budget", default="1GB")
    ap.add_argument("--workers", type=int, default=2, help="workers of the synthetic run")
    ap.add_argument("--repeats", type=int, default=1, help="runs per tool on the real corpus (best is kept)")
    ap.add_argument("--skip-datatrove", action="store_true")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--datasketch-run", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.datasketch_run:
        datasketch_run(*args.datasketch_run)
        return
    rows: list[dict] = []
    if not args.skip_real:
        real_benchmark(args, rows)
    if args.synthetic:
        synthetic_benchmark(args, rows)
    from framework.runtime import print_table

    print_table(rows, title="near-duplicate removal, 128 permutations, word 5-grams, threshold 0.8")


if __name__ == "__main__":
    main()
