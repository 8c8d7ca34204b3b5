"""Benchmark: Anvil's four heuristic filters vs DataTrove 0.10's, on the same real documents.

    .venv/bin/python benchmarks/curation.py [--docs 2000] [--repeats 3]

Input: HTML documentation pages installed by benchmarks/install_real_inputs.sh (Python,
Django and PostgreSQL manuals), turned into text once with Anvil's `extract` step (trafilatura) and
cached in benchmarks/.cache/. Extraction is not timed: both tools run Gopher repetition, Gopher
quality, C4 and FineWeb (each alone, and the four chained as in a recipe) on the same texts, in one
process. Speeds are documents per CPU-second of that process (`time.process_time`, all threads
counted): the machine is shared, and wall time there measures the neighbours. DataTrove runs in its
own environment, benchmarks/.venv-peers (created here on first use:
`pip install "datatrove==0.10.*" spacy orjson regex`), never in Anvil's. Prints docs/s, MB/s, the ratio,
and how often the two tools agree on keep/drop.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
# benchmarks/ itself must not be on the path: benchmarks/tokenize.py would shadow the stdlib module
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))
PEERS = HERE / ".venv-peers"
HTML_ROOTS = [
    "/usr/share/doc/python3.11/html",
    "/usr/share/doc/python-django-doc/html",
    "/usr/share/doc/postgresql-doc-15/html",
]
FILTERS = ["gopher_repetition", "gopher_quality", "c4", "fineweb"]

PEER_SCRIPT = r'''
import json, sys, time
from datatrove.data import Document
from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter, C4QualityFilter, FineWebQualityFilter
texts = [json.loads(l)["text"] for l in open(sys.argv[1])]
repeats = int(sys.argv[2])
make = {"gopher_repetition": GopherRepetitionFilter, "gopher_quality": GopherQualityFilter,
        "c4": C4QualityFilter, "fineweb": FineWebQualityFilter}
def ok(r):
    return r is True or (isinstance(r, tuple) and r[0] is True)
def run(names, texts=texts):
    filters = [make[n]() for n in names]
    kept = []
    t = time.process_time()
    for i, text in enumerate(texts):
        doc = Document(text=text, id=str(i))
        keep = True
        for f in filters:
            if not ok(f.filter(doc)):
                keep = False
                break
        kept.append(keep)
    return time.process_time() - t, kept
run(["gopher_quality"], texts[:20])  # load spaCy outside the timings
out = {}
for names in [[n] for n in ["gopher_repetition", "gopher_quality", "c4", "fineweb"]] + [["gopher_repetition", "gopher_quality", "c4", "fineweb"]]:
    runs = [run(names) for _ in range(repeats)]
    out["+".join(names)] = {"seconds": sorted(r[0] for r in runs)[len(runs) // 2], "kept": runs[0][1]}
print(json.dumps(out))
'''


def ensure_peers() -> Path:
    py = PEERS / "bin" / "python"
    if not py.exists():
        print(f"creating {PEERS} (DataTrove 0.10 + spaCy + orjson) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEERS)], check=True)
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "datatrove==0.10.*", "spacy", "orjson", "regex"], check=True
        )
    return py


def build_input(n_docs: int) -> Path:
    for have in sorted(HERE.glob(".cache/curation-docs-*.jsonl"), key=lambda p: int(p.stem.rsplit("-", 1)[1])):
        if int(have.stem.rsplit("-", 1)[1]) >= n_docs:  # a larger extraction: use its first n_docs
            cache = HERE / ".cache" / f"input-{n_docs}.jsonl"
            with open(have) as src, open(cache, "w") as dst:
                dst.writelines(line for _, line in zip(range(n_docs), src))
            return cache
    cache = HERE / ".cache" / f"curation-docs-{n_docs}.jsonl"
    from data_pipeline.document import Document
    from data_pipeline.io.readers import decode_html
    from data_pipeline.steps.extract import Extract

    pages = sorted(p for root in HTML_ROOTS if Path(root).is_dir() for p in Path(root).rglob("*.html"))
    if not pages:
        raise SystemExit(
            "benchmarks/curation.py: no real inputs; run `bash benchmarks/install_real_inputs.sh` "
            "(needs root and the Debian registry)"
        )
    step = Extract()
    cache.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(cache.with_suffix(".tmp"), "w") as fh:
        for page in pages:
            html = decode_html(page.read_bytes())
            if html is None:
                continue
            text, _ = step.extract_text(Document(str(page), html, {"content_type": "text/html"}))
            if text:
                fh.write(json.dumps({"id": str(page), "text": text}) + "\n")
                written += 1
                if written >= n_docs:
                    break
    cache.with_suffix(".tmp").replace(cache)
    return cache


def run_anvil(texts: list[str], names: list[str], repeats: int) -> tuple[float, list[bool]]:
    from data_pipeline.document import Document
    from data_pipeline.steps.base import build_step

    runs = []
    for _ in range(repeats):
        steps = [build_step(n, {}) for n in names]
        docs = [Document(str(i), t) for i, t in enumerate(texts)]
        t0 = time.process_time()
        it = iter(docs)
        for s in steps:
            it = s.run(it)
        kept_ids = {d.id for d in it}
        runs.append(time.process_time() - t0)
    return sorted(runs)[len(runs) // 2], [str(i) in kept_ids for i in range(len(texts))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3, help="median of this many runs")
    ap.add_argument("--rerun-peer", action="store_true", help="measure DataTrove again even if cached")
    args = ap.parse_args()
    path = build_input(args.docs)
    texts = [json.loads(line)["text"] for line in open(path)]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"input: {len(texts)} documents, {mb:.1f} MB of text extracted from {', '.join(HTML_ROOTS)}")
    peer_cache = HERE / ".cache" / f"datatrove-{len(texts)}-{args.repeats}.json"
    if peer_cache.exists() and not args.rerun_peer:
        dt = json.loads(peer_cache.read_text())
        print(f"DataTrove timings reused from {peer_cache} (--rerun-peer to measure again)")
    else:
        peer = subprocess.run(
            [str(ensure_peers()), "-c", PEER_SCRIPT, str(path), str(args.repeats)],
            capture_output=True,
            text=True,
            cwd=HERE.parent,
        )
        if peer.returncode != 0:
            raise SystemExit(f"benchmarks/curation.py: DataTrove run failed:\n{peer.stderr[-3000:]}")
        dt = json.loads(peer.stdout.strip().splitlines()[-1])
        peer_cache.write_text(json.dumps(dt))
    from framework.runtime import print_table

    rows = []
    for names in [[n] for n in FILTERS] + [FILTERS]:
        key = "+".join(names)
        secs, kept = run_anvil(texts, names, args.repeats)
        peer_secs, peer_kept = dt[key]["seconds"], dt[key]["kept"]
        agree = sum(a == b for a, b in zip(kept, peer_kept)) / len(texts)
        rows.append(
            {
                "filters": "all four" if len(names) > 1 else key,
                "anvil docs/s": round(len(texts) / secs),
                "anvil MB/s": round(mb / secs, 2),
                "datatrove docs/s": round(len(texts) / peer_secs),
                "datatrove MB/s": round(mb / peer_secs, 3),
                "speed-up": f"{peer_secs / secs:.1f}x",
                "kept anvil/dt": f"{sum(kept)}/{sum(peer_kept)}",
                "agree": f"{agree:.1%}",
            }
        )
    print_table(
        rows, title=f"heuristic filters, 1 process, per CPU-second, median of {args.repeats} (target: all four >= 10x)"
    )


if __name__ == "__main__":
    main()
