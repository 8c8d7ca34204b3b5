"""Benchmark: the web recipe with Resiliparse vs trafilatura extraction, FastWARC vs warcio reading.

    .venv/bin/python -P benchmarks/extract.py [--pages N] [--repeats 1] [--read-repeats 3]

Input: real HTML, the Python 3.11 documentation (530 pages, 50 MB) installed by
benchmarks/install_real_inputs.sh, packed once into a gzipped WARC of HTTP responses in the
benchmark cache (benchmarks/.cache, or ANVIL_BENCH_CACHE; ANVIL_BENCH_REAL_ROOT moves the real
inputs, see benchmarks/dedup_inputs.py). Without it the script falls back to the repository's sample
corpus (data_pipeline/sample.py: standard-library docstrings) wrapped in one generic HTML template,
and says so in the input label: not real web pages, so its quality figures mean little.
About 3 minutes on an idle 2-core machine (trafilatura's recipe run and its quality pass are most of it).

Measured, in this order:
1. Whole process, one worker: `anvil data run configs/data/web.yaml` (trafilatura) and
   `configs/data/web_fast.yaml` (Resiliparse) as subprocesses, `--workers 1`, alternating, median
   of `--repeats` (default 1): wall seconds, CPU seconds (the child's rusage), pages/s, text bytes kept, and
   `stats.json`'s per-step CPU seconds.
2. Reading WARC files, FastWARC vs warcio, CPU seconds, median of `--read-repeats`: records only and
   whole documents, on the benchmark WARC and on the real crawl of install_real_inputs.sh when
   present; and a check that both give the same documents.
3. Extraction quality on every page, engines side by side: text kept, boilerplate lines left (a
   line, stripped, found on >= 5% of the pages), how many of trafilatura's words (per page, as
   multisets) Resiliparse also keeps and the reverse, and py3langid agreement (the `language`
   step's classifier).

Targets (issue 23): web recipe with Resiliparse >= 5x faster than with trafilatura, >= 150 pages/s
on one worker, keeping >= 80% of trafilatura's text bytes. The machine is shared: the load average
before and after goes into the result. Writes benchmarks/results/extract.json (rows for the README's
performance table).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
# benchmarks/ itself must not be on the path: benchmarks/tokenize.py would shadow the stdlib module
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402

from benchmarks.common import Recorder, row  # noqa: E402
from benchmarks.dedup_inputs import CACHE, FALLBACK, real_path  # noqa: E402

HTML_ROOT = real_path("/usr/share/doc/python3.11/html")
CRAWL = real_path(Path.home() / ".cache" / "anvil-real-inputs" / "warc" / "iana.warc.gz")  # install_real_inputs.sh
TARGET_SPEED = ">= 5x faster than trafilatura, >= 150 pages/s on one worker"
TARGET_KEPT = ">= 80% of trafilatura's text bytes kept"
RECIPES = {
    "trafilatura": ROOT / "configs" / "data" / "web.yaml",
    "resiliparse": ROOT / "configs" / "data" / "web_fast.yaml",
}
BOILERPLATE_SHARE = 0.05
WORD = re.compile(r"\w+")
TEMPLATE = (
    "<html><head><title>{title}</title></head><body><nav><a href='/'>Home</a> | <a href='/docs'>Docs</a>"
    " | <a href='/about'>About</a></nav><main><h1>{title}</h1>{body}</main><footer>Copyright Example "
    "Org. All rights reserved. Privacy policy.</footer></body></html>"
)


def _write_warc(path: Path, pages: list[tuple[str, bytes]]) -> None:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        for url, body in pages:
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
            writer.write_record(
                writer.create_warc_record(
                    url, "response", payload=io.BytesIO(body), length=len(body), http_headers=headers
                )
            )
    tmp.replace(path)


def build_input(limit: int | None) -> tuple[Path, str, int]:
    """(WARC path, label, pages)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    files = sorted(HTML_ROOT.rglob("*.html")) if HTML_ROOT.is_dir() else []
    if files:
        files = files[:limit] if limit else files
        path = CACHE / f"extract-pydocs-{len(files)}.warc.gz"
        if not path.exists():
            _write_warc(
                path, [(f"https://docs.python.org/3.11/{f.relative_to(HTML_ROOT)}", f.read_bytes()) for f in files]
            )
        size = sum(f.stat().st_size for f in files)
        return (
            path,
            f"real: Python 3.11 documentation, {len(files)} HTML pages, {size / 1e6:.1f} MB ({HTML_ROOT})",
            len(files),
        )
    print(
        f"{HTML_ROOT} not found (benchmarks/install_real_inputs.sh installs it): "
        "falling back to the sample corpus in a generic HTML template",
        flush=True,
    )
    import html

    from data_pipeline.sample import iter_sample_documents

    docs = list(iter_sample_documents(limit or 530))
    path = CACHE / f"extract-sample-{len(docs)}.warc.gz"
    if not path.exists():
        pages = [
            (
                f"https://example.org/{i}",
                TEMPLATE.format(
                    title=html.escape(d.id), body="".join(f"<p>{html.escape(p)}</p>" for p in d.text.split("\n\n"))
                ).encode(),
            )
            for i, d in enumerate(docs)
        ]
        _write_warc(path, pages)
    return (
        path,
        f"{FALLBACK}: {len(docs)} documents in a generic HTML template (NOT real web pages)",
        len(docs),
    )


def run_recipe(engine: str, warc: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "launch.cli",
        "data",
        "run",
        str(RECIPES[engine]),
        f"input={warc}",
        f"output={out}",
        "--workers",
        "1",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        cmd,
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    stats = json.loads((out / "stats.json").read_text())
    steps = {s["name"]: s for s in stats["steps"]}
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "pages": steps["read"]["docs_out"],
        "docs_out": stats["docs_out"],
        "text_bytes_kept": stats["bytes_out"],
        "text_bytes_extracted": steps["extract"]["bytes_out"],
        "step_seconds": {name: s["seconds"] for name, s in steps.items()},
    }


def median_run(runs: list[dict]) -> dict:
    best = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
    out = dict(best)
    out["wall_s_all"] = [round(r["wall_s"], 2) for r in runs]
    out["cpu_s"] = statistics.median(r["cpu_s"] for r in runs)
    out["pages_per_s"] = best["pages"] / best["wall_s"]
    out["pages_per_cpu_s"] = best["pages"] / out["cpu_s"]
    out["step_seconds"] = {k: statistics.median(r["step_seconds"][k] for r in runs) for k in best["step_seconds"]}
    return out


def reading(warc: Path, repeats: int) -> dict:
    """CPU seconds to read `warc` with each backend: records only (framing, gunzip, HTTP headers,
    payload: data_pipeline.io.warc) and whole documents (read_documents: + decoding to text). The
    benchmark WARC has 530 large records; the real crawl from install_real_inputs.sh (iana.warc.gz,
    343 records of every kind, read 20 times per measurement) shows the per-record costs."""
    from data_pipeline.io.readers import read_documents
    from data_pipeline.io.warc import have_fastwarc, warc_records

    backends = ["fastwarc", "warcio"] if have_fastwarc() else ["warcio"]
    inputs = {"benchmark_warc": (warc, 1)}
    if CRAWL.is_file():
        inputs["real_crawl_iana"] = (CRAWL, 20)
    result: dict = {}
    for name, (path, loops) in inputs.items():
        entry, docs = {"file": str(path), "bytes": path.stat().st_size, "loops": loops}, {}
        for backend in backends:
            for level in ("records", "documents"):
                times = []
                for _ in range(repeats):
                    start = time.process_time()
                    for _ in range(loops):
                        if level == "records":
                            n = sum(1 for _ in warc_records(path, 10 << 20, backend))
                        else:
                            got = [
                                (d.id, d.offset, d.text, d.metadata)
                                for d in read_documents(path, raw_html=True, warc_backend=backend)
                            ]
                            n = len(got)
                    times.append(time.process_time() - start)
                sec = statistics.median(times)
                entry[f"{backend}_{level}"] = {"cpu_s": sec, "per_cpu_s": n * loops / sec, "count": n}
            docs[backend] = got
        if len(backends) == 2:
            entry["same_documents"] = docs["fastwarc"] == docs["warcio"]
            for level in ("records", "documents"):
                entry[f"speedup_{level}"] = entry[f"warcio_{level}"]["cpu_s"] / entry[f"fastwarc_{level}"]["cpu_s"]
        result[name] = entry
    return result


def quality(warc: Path) -> dict:
    from data_pipeline.io.readers import read_documents
    from data_pipeline.steps.extract import Extract
    from data_pipeline.steps.language import identifier

    pages = list(read_documents(warc, raw_html=True))
    texts, speed = {}, {}
    for engine in RECIPES:
        ex = Extract(Extract.Params(engine=engine))
        start = time.process_time()
        texts[engine] = [ex.extract_text(d)[0] or "" for d in pages]
        speed[engine] = len(pages) / (time.process_time() - start)
    classify = identifier().classify
    out: dict = {"pages": len(pages), "extract_only_pages_per_cpu_s": speed}
    langs = {}
    for engine, tx in texts.items():
        lines = [[ln.strip() for ln in t.splitlines() if ln.strip()] for t in tx]
        on_pages = Counter(ln for page in lines for ln in set(page))
        common = {ln for ln, n in on_pages.items() if n >= BOILERPLATE_SHARE * len(pages)}
        boiler = sum(len(ln.encode()) for page in lines for ln in page if ln in common)
        total = sum(len(t.encode()) for t in tx)
        langs[engine] = [classify(t[:20_000]) for t in tx]
        out[engine] = {
            "pages_with_text": sum(1 for t in tx if t.strip()),
            "text_bytes": total,
            "median_chars_per_page": statistics.median(len(t) for t in tx),
            "boilerplate_lines_distinct": len(common),
            "boilerplate_bytes": boiler,
            "boilerplate_share": boiler / max(total, 1),
            "boilerplate_examples": sorted(common, key=lambda ln: -on_pages[ln])[:8],
            "lang_en_kept": sum(1 for lang, p in langs[engine] if lang == "en" and p >= 0.65),
        }
    a, b = langs["trafilatura"], langs["resiliparse"]
    both = [i for i, (x, y) in enumerate(zip(texts["trafilatura"], texts["resiliparse"])) if x.strip() and y.strip()]
    out["lang_agreement"] = sum(1 for i in both if a[i][0] == b[i][0]) / max(len(both), 1)
    shared = words_t = words_r = 0
    for x, y in zip(texts["trafilatura"], texts["resiliparse"]):
        bag_t, bag_r = Counter(WORD.findall(x.lower())), Counter(WORD.findall(y.lower()))
        shared += sum((bag_t & bag_r).values())
        words_t += sum(bag_t.values())
        words_r += sum(bag_r.values())
    out["trafilatura_words_also_in_resiliparse"] = shared / max(words_t, 1)  # per page, as multisets
    out["resiliparse_words_also_in_trafilatura"] = shared / max(words_r, 1)
    return out


def rows_of(result: dict) -> list[dict]:
    """The performance-table lines: recipe speed, text kept, WARC reading."""
    res, tra = result["recipe"]["resiliparse"], result["recipe"]["trafilatura"]
    what = f"Web recipe, Resiliparse vs trafilatura, {res['pages']} pages, --workers 1"
    met = result["speedup_wall"] >= 5 and res["pages_per_s"] >= 150
    rows = [
        row(
            what,
            "wall s, whole process",
            f"{res['wall_s']:.1f} s ({res['pages_per_s']:.1f} pages/s)",
            f"trafilatura {tra['wall_s']:.1f} s ({tra['pages_per_s']:.1f} pages/s)",
            f"{result['speedup_wall']:.1f}x",
            TARGET_SPEED,
            met,
        ),
        row(
            "Web recipe, text kept: Resiliparse / trafilatura",
            "text bytes after the recipe's filters",
            f"{res['text_bytes_kept'] / 1e6:.2f} MB ({res['docs_out']} pages)",
            f"trafilatura {tra['text_bytes_kept'] / 1e6:.2f} MB ({tra['docs_out']} pages)",
            f"{result['text_bytes_kept_ratio']:.0%}",
            TARGET_KEPT,
            result["text_bytes_kept_ratio"] >= 0.8,
        ),
    ]
    rd = result["reading"].get("real_crawl_iana") or result["reading"]["benchmark_warc"]
    if "same_documents" in rd:
        f, w = rd["fastwarc_records"], rd["warcio_records"]
        name = f"{'real crawl' if 'real_crawl_iana' in result['reading'] else 'benchmark WARC'}, {f['count']} records"
        rows.append(
            row(
                f"Reading WARC records, FastWARC vs warcio ({name})",
                "records per CPU-s (in-process)",
                f"{f['per_cpu_s']:,.0f}/CPU-s",
                f"warcio {w['per_cpu_s']:,.0f}/CPU-s",
                f"{rd['speedup_records']:.1f}x (documents {rd['speedup_documents']:.1f}x)",
            )
        )
    return rows


def main() -> None:
    rec = Recorder("extract")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=None, help="use the first N pages (default: all)")
    ap.add_argument("--repeats", type=int, default=1, help="recipe runs per engine; the median is reported")
    ap.add_argument("--read-repeats", type=int, default=3, help="WARC reading measurements; the median is reported")
    args = ap.parse_args()
    warc, label, _ = build_input(args.pages)
    print(f"input: {label}; {warc} ({warc.stat().st_size / 1e6:.1f} MB gzipped WARC)", flush=True)
    work = CACHE / "extract-runs"
    runs: dict[str, list] = {e: [] for e in RECIPES}
    for i in range(args.repeats):
        for engine in RECIPES if i % 2 == 0 else reversed(list(RECIPES)):
            runs[engine].append(run_recipe(engine, warc, work / engine))
            r = runs[engine][-1]
            print(f"  {engine}: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU", flush=True)
    recipe = {e: median_run(r) for e, r in runs.items()}
    shutil.rmtree(work, ignore_errors=True)
    res, tra = recipe["resiliparse"], recipe["trafilatura"]
    result = {
        "warc_bytes": warc.stat().st_size,
        "repeats": args.repeats,
        "recipe": recipe,
        "speedup_wall": tra["wall_s"] / res["wall_s"],
        "speedup_cpu": tra["cpu_s"] / res["cpu_s"],
        "text_bytes_kept_ratio": res["text_bytes_kept"] / max(tra["text_bytes_kept"], 1),
        "reading": reading(warc, args.read_repeats),
        "quality": quality(warc),
    }
    result["targets"] = {
        "speedup_5x": result["speedup_wall"] >= 5,
        "pages_per_s_150": res["pages_per_s"] >= 150,
        "text_bytes_80pct": result["text_bytes_kept_ratio"] >= 0.8,
    }

    print(f"\n{'web recipe, 1 worker':34} {'wall s':>8} {'CPU s':>8} {'pages/s':>8} {'pages/CPU-s':>11} {'MB kept':>8}")
    for engine, r in recipe.items():
        print(
            f"{engine:34} {r['wall_s']:8.2f} {r['cpu_s']:8.2f} {r['pages_per_s']:8.1f} {r['pages_per_cpu_s']:11.1f} "
            f"{r['text_bytes_kept'] / 1e6:8.2f}"
        )
    print(
        f"speed-up {result['speedup_wall']:.1f}x wall, {result['speedup_cpu']:.1f}x CPU; Resiliparse keeps "
        f"{result['text_bytes_kept_ratio']:.0%} of trafilatura's text bytes"
    )
    print("per-step CPU seconds (stats.json):")
    for name in tra["step_seconds"]:
        print(
            f"  {name:20} trafilatura {tra['step_seconds'][name]:7.2f}   resiliparse {res['step_seconds'][name]:7.2f}"
        )
    for name, rd in result["reading"].items():
        for key, v in rd.items():
            if isinstance(v, dict):
                print(f"read {name:16} {key:20} {v['cpu_s']:7.3f} CPU s  {v['per_cpu_s']:9.0f} per CPU-s")
        if "same_documents" in rd:
            print(
                f"read {name:16} FastWARC/warcio: records {rd['speedup_records']:.1f}x, documents "
                f"{rd['speedup_documents']:.1f}x; same documents: {rd['same_documents']}"
            )
    q = result["quality"]
    for engine in RECIPES:
        e = q[engine]
        print(
            f"{engine:12} text {e['text_bytes'] / 1e6:6.2f} MB, boilerplate {e['boilerplate_share']:.1%} "
            f"({e['boilerplate_lines_distinct']} distinct lines), English >= 0.65: {e['lang_en_kept']}/{q['pages']}"
        )
    print(
        f"language agreement {q['lang_agreement']:.1%}; words of trafilatura's text also in Resiliparse's: "
        f"{q['trafilatura_words_also_in_resiliparse']:.1%}, the reverse: {q['resiliparse_words_also_in_trafilatura']:.1%}"
    )
    print(f"targets: {result['targets']}")
    rows = rows_of(result)
    from framework.runtime import print_table

    print_table(rows, title="rows")
    rec.write(result, rows, label)


if __name__ == "__main__":
    main()
