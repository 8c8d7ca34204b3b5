"""Near-duplicate removal: Anvil vs a datasketch pipeline vs DataTrove on real text with planted
edits, the real corpus as it is, and a synthetic memory run.

    python -P benchmarks/dedup.py [--planted-docs 5400] [--real [--real-datatrove]] [--real-docs 5000]
        [--synthetic 300000] [--budget 1GB] [--repeats 1] [--skip-datatrove]

Every tool runs end to end as its own process (imports, reading JSONL, writing results) on the
same input with the same settings (128 permutations, word 5-grams, threshold 0.8), one at a time;
wall time and peak RSS (the process tree, sampled every 50 ms) are measured from outside, CPU time
from the children's rusage (or the tree's last sampled CPU times, if larger), with the load average
before and after each run.
* anvil: `anvil data dedup --workers 2` (exact verification, the default), the same with
  `--no-exact-verify` (MinHash estimate), and `--workers 1` (its output must be the same bytes).
* datasketch: `MinHash.bulk` over the same shingles + `MinHashLSH(0.8)`; documents in input order
  are queried, then inserted if no earlier kept document matched (the usual streaming pipeline).
* DataTrove 0.10 (benchmarks/.venv-peers, which `make bench` creates; without it a row says
  "not measured"): its four MinHash stages, tasks=2, 64-bit hashes, 14x8 buckets, cluster ids
  saved so its clusters can be scored (benchmarks/dedup_peers.py).
Quality: pair and document precision/recall against exact Jaccard >= 0.8 on word 5-grams
(data_pipeline/dedup/evaluate.py), on the planted corpus (benchmarks/dedup_inputs.py, 5,400
documents) also per edit type. With --real, the unedited real corpus (3,852 documents) too: Anvil
and datasketch (~45 s more), DataTrove only with --real-datatrove (~2 minutes more). Then a
synthetic corpus with planted families (known edit rates) is deduplicated under --budget: peak
RSS, planted members found. Without the real inputs the sample corpus stands in, labelled.
Defaults take ~5.5 minutes on an idle 2-core machine with a cold cache (~570 CPU seconds: extracting
the real corpus ~175, DataTrove ~215); `--synthetic 1000000` is the 1M-document memory run.
Results: benchmarks/results/dedup.json (rows for the README's performance table).
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
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from benchmarks.common import Recorder, load_average, row  # noqa: E402
from benchmarks.dedup_inputs import CACHE, planted_corpus, real_corpus, RealInputsMissing  # noqa: E402

ROOT = Path(HERE).parent
PY = sys.executable
PEERS_PY = ROOT / "benchmarks" / ".venv-peers" / "bin" / "python"
NO_PEERS = "DataTrove not measured: benchmarks/.venv-peers missing (make bench creates it)"
ANVIL_W2 = "anvil --workers 2"
DATASKETCH = "datasketch MinHash.bulk + MinHashLSH"
DATATROVE = "datatrove MinHash 4 stages (tasks=2)"
TARGET = ">= 3x datasketch, >= 15x DataTrove at doc P >= 0.97, R >= 0.95"


class PeerFailed(Exception):
    pass


def measure(cmd: list[str]) -> dict:
    """Run a command: wall seconds, CPU seconds (rusage of children) and peak RSS of its process tree (MB)."""
    import psutil

    before, ru = load_average(), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak, done = [0], threading.Event()
    seen: dict[int, float] = {}  # last CPU seconds seen per process of the tree

    def poll():
        p = psutil.Process(proc.pid)
        while not done.is_set():
            rss = 0
            try:
                for c in [p] + p.children(recursive=True):
                    with c.oneshot():
                        rss += c.memory_info().rss
                        t = c.cpu_times()
                        seen[c.pid] = t.user + t.system
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
    ru2 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise PeerFailed(f"{' '.join(cmd[:4])} ... exited {proc.returncode}:\n{out.decode()[-3000:]}")
    return {
        "wall_s": wall,
        # rusage misses processes nobody waited for (DataTrove's pool workers): the larger of the two
        "cpu_s": max((ru2.ru_utime - ru.ru_utime) + (ru2.ru_stime - ru.ru_stime), sum(seen.values())),
        "peak_rss_mb": peak[0] / 2**20,
        "load_before": before,
        "load_after": load_average(),
    }


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

    docs = list(iter_documents([str(folder)]))
    return [d.id for d in docs], [d.text for d in docs]


def cluster_labels(ids: list[str], clusters: dict):
    """DataTrove's {id: cluster id} (missing or -1: singleton) as labels and near-duplicate flags."""
    import numpy as np

    names: dict = {}
    label = np.array(
        [names.setdefault(clusters.get(i, -1) if clusters.get(i, -1) != -1 else ("s", i), len(names)) for i in ids]
    )
    return label, np.array([clusters.get(i, -1) != -1 for i in ids])


def read_dups(path: Path) -> dict:
    return {r["id"]: r["duplicate_of"] for r in map(json.loads, path.read_text().splitlines())}


# ------------------------------------------------------------------------------------ comparison
def tools(folder: Path, work: Path, datatrove: bool) -> list[tuple[str, list[str], Path]]:
    anvil = str(Path(PY).parent / "anvil")

    def run(name: str, out: str, *flags: str):
        return name, [anvil, "data", "dedup", str(folder), "--output", str(work / out), *flags], work / out

    runs = [
        run(ANVIL_W2, "anvil2", "--workers", "2"),
        run("anvil --workers 2 --no-exact-verify", "anvil2-estimate", "--workers", "2", "--no-exact-verify"),
        run("anvil --workers 1", "anvil1", "--workers", "1"),
        (
            DATASKETCH,
            [PY, "-P", __file__, "--datasketch-run", str(folder), str(work / "datasketch")],
            work / "datasketch",
        ),
    ]
    if datatrove:
        peers = [str(PEERS_PY), "-P", str(ROOT / "benchmarks" / "dedup_peers.py"), str(folder), str(work / "datatrove")]
        runs.append((DATATROVE, peers, work / "datatrove"))
    return runs


def compare(folder: Path, work: Path, args, datatrove: bool, planted=None) -> dict:
    """Run every tool on `folder` (round-robin when --repeats > 1; the fastest run is kept) and
    score it against exact Jaccard >= 0.8. A peer that fails is recorded, not fatal."""
    import numpy as np

    from data_pipeline.dedup.evaluate import labels_from_duplicates, score, score_planted, true_pairs

    ids, texts = load_texts(folder)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    t0 = time.perf_counter()
    truth, _, cand = true_pairs(texts, 0.8, 5)
    print(
        f"  {len(ids)} documents, {mb:.1f} MB; {len(truth)} pairs with exact Jaccard >= 0.8 "
        f"({cand} candidates checked in {time.perf_counter() - t0:.0f}s)",
        flush=True,
    )
    runs = tools(folder, work, datatrove)
    best: dict[str, dict] = {}
    walls: dict[str, list] = {name: [] for name, _, _ in runs}
    failed: dict[str, str] = {}
    for _ in range(args.repeats):
        for name, cmd, out in runs:
            if name in failed:
                continue
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            try:
                m = measure(cmd)
            except PeerFailed as exc:
                if name.startswith("anvil"):
                    raise SystemExit(str(exc))  # Anvil failing is a bug, not a missing peer
                failed[name] = str(exc)[-600:]
                print(f"    {name}: FAILED, not measured\n{exc}", flush=True)
                continue
            walls[name].append(
                {k: round(m[k], 3) if k == "wall_s" else m[k] for k in ("wall_s", "load_before", "load_after")}
            )
            if name not in best or m["wall_s"] < best[name]["wall_s"]:
                best[name] = m
            print(
                f"    {name}: {m['wall_s']:.2f}s wall, {m['cpu_s']:.1f}s CPU "
                f"(load {m['load_before'][0]} -> {m['load_after'][0]})",
                flush=True,
            )
    index = {d: i for i, d in enumerate(ids)}
    plant = [(index[v], index[b], e) for v, b, e, _ in planted] if planted else None
    result = {"docs": len(ids), "mb": round(mb, 1), "true_pairs": len(truth), "tools": {}, "failed": failed}
    for name, _, out in runs:
        if name not in best:
            continue
        if name == DATATROVE:
            label, flagged = cluster_labels(ids, json.loads((out / "clusters.json").read_text()))
        else:
            label, flagged = labels_from_duplicates(ids, read_dups(out / "duplicates.jsonl"))
        m = best[name]
        rec = {
            "wall_s": round(m["wall_s"], 3),
            "cpu_s": round(m["cpu_s"], 2),
            "peak_rss_mb": round(m["peak_rss_mb"]),
            "runs": walls[name],
            **score(len(ids), truth, label, flagged),
        }
        if plant:
            rec["per_edit"] = score_planted(truth, np.asarray(label), np.asarray(flagged), plant)
        result["tools"][name] = rec
    same = (work / "anvil1" / "duplicates.jsonl").read_bytes() == (work / "anvil2" / "duplicates.jsonl").read_bytes()
    result["anvil_workers_1_2_same_output"] = same
    return result


# --------------------------------------------------------------------------------- rows (README)
def targets(t: dict, datatrove_note: str | None) -> dict:
    """The issue's target for `anvil --workers 2` (exact verification on), from this run's numbers."""
    a = t[ANVIL_W2]
    out = {"doc_precision": a["doc_precision"], "doc_recall": a["doc_recall"]}
    met = {"doc_precision >= 0.97": a["doc_precision"] >= 0.97, "doc_recall >= 0.95": a["doc_recall"] >= 0.95}
    if DATASKETCH in t:
        out["x_datasketch"] = t[DATASKETCH]["wall_s"] / a["wall_s"]
        met["x_datasketch >= 3"] = out["x_datasketch"] >= 3
    if DATATROVE in t:
        out["x_datatrove"] = t[DATATROVE]["wall_s"] / a["wall_s"]
        met["x_datatrove >= 15"] = out["x_datatrove"] >= 15
    # every part must have been measured for the target to count as met
    complete = DATASKETCH in t and DATATROVE in t
    return {**out, "met": met, "all_met": complete and all(met.values()), "not_measured": datatrove_note}


def pr(r: dict) -> str:
    return f"P {r['doc_precision']:.3f} / R {r['doc_recall']:.3f}"


def planted_rows(p: dict, tg: dict) -> list[dict]:
    t = p["tools"]
    a = t[ANVIL_W2]
    peers, ratios = [], []
    for name, short in ((DATASKETCH, "datasketch"), (DATATROVE, "DataTrove")):
        if name in t:
            peers.append(f"{short} {t[name]['wall_s']:.1f} s")
            ratios.append(f"{t[name]['wall_s'] / a['wall_s']:.1f}x {short}")
        else:
            peers.append(
                p["failed"].get(name, "")[:80]
                or ((tg["not_measured"] or NO_PEERS) if name == DATATROVE else f"{short} not measured")
            )
    source = "real text" if p["real_inputs"] else "sample corpus, fallback"
    what = f"MinHash dedup, {p['docs']:,} docs with planted edits ({source}), --workers 2"
    rows = [
        row(
            what,
            "wall s, whole process",
            f"{a['wall_s']:.2f} s ({pr(a)})",
            "; ".join(peers),
            ", ".join(ratios),
            TARGET,
            tg["all_met"],
        ),
        row(
            "MinHash dedup quality vs exact Jaccard >= 0.8 (same run)",
            "document precision / recall",
            pr(a),
            "; ".join(
                f"{'DataTrove' if n == DATATROVE else 'datasketch'} {pr(t[n])}"
                for n in (DATASKETCH, DATATROVE)
                if n in t
            ),
            "",
            "doc P >= 0.97, R >= 0.95",
            a["doc_precision"] >= 0.97 and a["doc_recall"] >= 0.95,
        ),
    ]
    edits = a.get("per_edit", {})
    if edits:

        def per(r):
            return ", ".join(f"{e} {v['doc_precision']:.2f}/{v['doc_recall']:.2f}" for e, v in r["per_edit"].items())

        rows.append(
            row(
                "MinHash dedup per planted edit type (Anvil, --workers 2)",
                "document P/R per edit type",
                per(a),
                f"datasketch: {per(t[DATASKETCH])}" if DATASKETCH in t else "",
            )
        )
    return rows


def synthetic_row(s: dict) -> dict:
    from data_pipeline.dedup.index import parse_size

    budget_mb = parse_size(s["memory_budget"]) / 2**20
    return row(
        f"MinHash dedup, {s['docs']:,} synthetic docs ({s['mb']:.0f} MB), --workers 2 --memory-budget {s['memory_budget']}",
        "peak RSS MB, measured (process tree)",
        f"{s['peak_rss_mb']} MB; {s['wall_s']:.0f} s wall; {s['planted_found']}/{s['planted_near']} planted near-dups found",
        "",
        "",
        f"peak RSS <= --memory-budget ({budget_mb:.0f} MB)",
        s["peak_rss_mb"] <= budget_mb,
    )


# ------------------------------------------------------------------------------------ benchmarks
def planted_benchmark(args, datatrove: bool) -> dict:
    folder, planted, source, real = planted_corpus(args.planted_docs, seed=args.seed)
    print(f"planted corpus ({source}):", flush=True)
    result = compare(folder, CACHE / "dedup-bench-out" / "planted", args, datatrove, planted)
    result["source"], result["real_inputs"] = source, real
    return result


def real_benchmark(args, datatrove: bool) -> dict | None:
    try:
        src = real_corpus(args.real_docs)
    except RealInputsMissing as exc:
        print(f"real corpus skipped: {exc}", flush=True)
        return None
    folder = CACHE / f"dedup-real-{args.real_docs}-split"
    if not folder.exists():  # 4 files, so that DataTrove's tasks=2 has work for both tasks
        lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
        folder.mkdir(parents=True)
        q = (len(lines) + 3) // 4
        for k in range(4):
            (folder / f"part-{k}.jsonl").write_text("".join(lines[k * q : (k + 1) * q]), encoding="utf-8")
    print("real corpus, unedited:", flush=True)
    return compare(folder, CACHE / "dedup-bench-out" / "real", args, datatrove)


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


def synthetic_benchmark(args) -> dict:
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
    mb = sum(p.stat().st_size for p in folder.glob("*.jsonl")) / 1e6
    out = CACHE / "dedup-bench-out" / "synthetic"
    shutil.rmtree(out, ignore_errors=True)
    anvil = str(Path(PY).parent / "anvil")
    cmd = [
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
    try:
        m = measure(cmd)
    except PeerFailed as exc:
        raise SystemExit(str(exc))
    dups = read_dups(out / "duplicates.jsonl")
    stats = json.loads((out / "stats.json").read_text())
    near, far = planted_truth(folder)
    found = sum(1 for d, fam in near if dups.get(d, "").split("-v")[0] == fam)
    kept_far = sum(1 for d in far if d not in dups)
    unrelated_removed = sum(1 for d in dups if d.startswith("u"))
    print(
        f"synthetic: {found}/{len(near)} planted members with exact Jaccard >= 0.8 to their family base found, "
        f"{kept_far}/{len(far)} members below 0.5 kept, {unrelated_removed} unrelated documents removed; "
        f"{stats['sorted_runs']} sorted runs; {m['wall_s']:.1f}s wall, {m['cpu_s']:.1f}s CPU, "
        f"peak RSS {m['peak_rss_mb']:.0f} MB",
        flush=True,
    )
    return {
        "docs": args.synthetic,
        "mb": round(mb, 1),
        "workers": args.workers,
        "memory_budget": args.budget,
        "wall_s": round(m["wall_s"], 2),
        "cpu_s": round(m["cpu_s"], 1),
        "peak_rss_mb": round(m["peak_rss_mb"]),
        "load_before": m["load_before"],
        "load_after": m["load_after"],
        "sorted_runs": stats["sorted_runs"],
        "planted_found": found,
        "planted_near": len(near),
        "far_kept": kept_far,
        "far": len(far),
        "unrelated_removed": unrelated_removed,
    }


def table_rows(result: dict, title: str) -> list[dict]:
    base = result["tools"].get(DATASKETCH, {}).get("wall_s")
    return [
        {
            "corpus": title,
            "tool": name,
            "wall s": r["wall_s"],
            "CPU s": r["cpu_s"],
            "peak RSS MB": r["peak_rss_mb"],
            "x datasketch": round(base / r["wall_s"], 2) if base else "",
            "doc P": r["doc_precision"],
            "doc R": r["doc_recall"],
            "pair P": r["pair_precision"],
            "pair R": r["pair_recall"],
        }
        for name, r in result["tools"].items()
    ]


def main() -> None:
    rec = Recorder("dedup")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--planted-docs", type=int, default=5400, help="planted-edit corpus size (0: skip)")
    ap.add_argument("--seed", type=int, default=17, help="seed of the planted edits")
    ap.add_argument("--real-docs", type=int, default=5000, help="documents of the real corpus (at most)")
    ap.add_argument("--real", action="store_true", help="also the unedited real corpus: Anvil and datasketch")
    ap.add_argument("--real-datatrove", action="store_true", help="with --real: DataTrove too (~2 min)")
    ap.add_argument("--synthetic", type=int, default=300_000, help="synthetic memory-run size (0: skip)")
    ap.add_argument("--budget", default="1GB", help="--memory-budget of the synthetic run")
    ap.add_argument("--workers", type=int, default=2, help="workers of the synthetic run")
    ap.add_argument("--repeats", type=int, default=1, help="runs per tool (round-robin; the fastest is kept)")
    ap.add_argument("--skip-datatrove", action="store_true")
    ap.add_argument("--datasketch-run", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.datasketch_run:
        datasketch_run(*args.datasketch_run)
        return
    from framework.runtime import print_table

    datatrove = PEERS_PY.exists() and not args.skip_datatrove
    dt_note = None if datatrove else ("DataTrove not measured: --skip-datatrove" if args.skip_datatrove else NO_PEERS)
    if dt_note:
        print(dt_note, flush=True)
    record = {
        "settings": {"num_perm": 128, "ngram": 5, "threshold": 0.8, "repeats": args.repeats},
        "datatrove_not_measured": dt_note,
    }
    rows, table, label = [], [], "no corpus (--planted-docs 0)"
    if args.planted_docs:
        p = record["planted"] = planted_benchmark(args, datatrove)
        p["targets"] = targets(p["tools"], dt_note)
        label = p["source"]
        rows += planted_rows(p, p["targets"])
        table += table_rows(p, "planted")
    if args.real:
        r = real_benchmark(args, datatrove and args.real_datatrove)
        if r:
            record["real"] = r
            table += table_rows(r, "real")
    if args.synthetic:
        record["synthetic"] = synthetic_benchmark(args)
        rows.append(synthetic_row(record["synthetic"]))
        label += f"; synthetic corpus of {args.synthetic:,} documents (data_pipeline/dedup/synthetic.py)"
    print_table(table, title="near-duplicate removal, 128 permutations, word 5-grams, threshold 0.8")
    if "planted" in record:
        tg = record["planted"]["targets"]
        print(f"targets (planted corpus, {ANVIL_W2}): {json.dumps(tg)}")
    print_table(rows, title="rows")
    rec.write(record, rows, label)


if __name__ == "__main__":
    main()
