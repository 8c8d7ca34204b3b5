"""Benchmark: Anvil's four heuristic filters against DataTrove 0.10's, same documents, same run.

    .venv/bin/python -P benchmarks/datatrove_compat.py [--docs 1500] [--repeats 1] [--input DOCS.jsonl]
                                                       [--write-fixture]

The one benchmark of the four heuristic filters. DataTrove 0.10's GopherRepetitionFilter,
GopherQualityFilter, C4QualityFilter and FineWebQualityFilter (English, spaCy word tokens) and
Anvil's `gopher_repetition`, `gopher_quality`, `c4` and `fineweb` steps, once with
`compat: datatrove` and once with the default (paper-faithful) rules:

* Speed: the four chained (repetition, quality, C4, FineWeb, as in a recipe) over every document,
  each tool and mode in a process of its own, one after the other; the figure is the wall-clock
  time of the whole process (interpreter start, imports, spaCy, reading the corpus), the issue's
  target being ">= 10x DataTrove's four filters". CPU and wall seconds of the loop alone are kept
  in the results file. With `--repeats N`, the median of N processes.
* Agreement: keep/drop and keep/drop plus the rule that fired, of each filter alone and of the
  chain, Anvil against DataTrove (Anvil's reason names map to DataTrove's through
  `quality.DATATROVE_REASONS`). The chain's decisions come from the timed runs; each filter alone
  runs afterwards, untimed, all four on a fresh copy of every document in one process per tool and
  mode (DataTrove's spaCy words computed once per document there: its filters never modify them).

Input: real documentation pages (Debian handbook, Python and Django manuals through Anvil's HTML
reader, licence and copyright files, man pages rendered by mandoc), installed by
benchmarks/install_real_inputs.sh, extracted once and cached in the benchmark cache; without them
the project's sample corpus (`anvil data sample`), labelled so. benchmarks/curation_steps.py reads
the same corpus (`load_corpus`).

DataTrove runs in its own environment, benchmarks/.venv-peers (`make bench` creates it from
benchmarks/requirements-peers.txt), never in Anvil's: this file re-executes itself there with
`--peer`, which imports nothing of Anvil. Without that environment the DataTrove rows say "not
measured" and Anvil is still measured. Results: benchmarks/results/datatrove_compat.json.
`--write-fixture` also writes tests/data_pipeline/steps/golden/datatrove_decisions.jsonl.gz (the
checked-in one came from `--docs 3000`).

Environment (shared with the dedup benchmarks):
  ANVIL_BENCH_CACHE      folder replacing benchmarks/.cache (extracted inputs, never results)
  ANVIL_BENCH_REAL_ROOT  prefix put before every real-input path: point it at an empty folder to
                         check the sample-corpus fallback
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
# benchmarks/ itself must not be on the path: benchmarks/tokenize.py would shadow the stdlib module
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

PEERS = HERE / ".venv-peers"
PEERS_MISSING = "DataTrove not measured: benchmarks/.venv-peers missing (make bench creates it)"
CACHE = Path(os.environ.get("ANVIL_BENCH_CACHE") or HERE / ".cache")
FALLBACK = "sample corpus (fallback: real inputs not installed: run benchmarks/install_real_inputs.sh as root)"
DEFAULT_DOCS = 1500
FILTERS = ["gopher_repetition", "gopher_quality", "c4", "fineweb"]
CHAIN = "+".join(FILTERS)
MODES = {"compat": {"compat": "datatrove"}, "default": {}}  # Anvil's two modes and their step params
HTML_SOURCES = {
    "debian-handbook": "/usr/share/doc/debian-handbook/html/en-US",
    "python-docs": "/usr/share/doc/python3.11/html",
    "django-docs": "/usr/share/doc/python-django-doc/html",
}
LICENCE_DIRS = ["/usr/share/common-licenses"]
MAN_DIRS = ["/usr/share/man/man1", "/usr/share/man/man5", "/usr/share/man/man8"]
OVERSTRIKE = re.compile(".\x08")  # mandoc -T utf8 writes bold as c<BS>c, underline as _<BS>c
# Sources whose text may be shipped in the test fixture (permissive licences): Python docs (PSF
# licence), Django docs (BSD) and the licence texts themselves (verbatim copying allowed).
FIXTURE_SOURCES = ("python-docs", "django-docs", "licence")


def real_path(path: str) -> Path:
    """Where a real input lies: `path` itself, or under ANVIL_BENCH_REAL_ROOT when that is set."""
    prefix = os.environ.get("ANVIL_BENCH_REAL_ROOT")
    return Path(prefix + path) if prefix else Path(path)


# --- DataTrove's side (runs in benchmarks/.venv-peers; imports nothing of Anvil) ------------------


def peer_main(kind: str, input_path: str, output_path: str) -> None:
    """kind "chain": the four chained, timed, [filter, reason] or None per document; kind "each":
    every filter alone on every document, untimed, {filter: [...]}."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.utils.text import split_into_words

    make = {
        "gopher_repetition": GopherRepetitionFilter,
        "gopher_quality": GopherQualityFilter,
        "c4": C4QualityFilter,
        "fineweb": FineWebQualityFilter,
    }
    texts = [json.loads(line)["text"] for line in open(input_path, encoding="utf-8")]
    filters = [make[n]() for n in FILTERS]
    split_into_words("load spaCy before the clock starts", "en")

    def decide(name, f, doc):
        res = f.filter(doc)
        ok, reason = res if isinstance(res, tuple) else (res, None)
        return None if ok else [name, reason]

    if kind == "each":
        _share_spacy_words()
        each = {
            n: [decide(n, f, Document(text=t, id=str(i))) for i, t in enumerate(texts)]
            for n, f in zip(FILTERS, filters)
        }
        Path(output_path).write_text(json.dumps({"decisions": each}))
        return
    decisions = []
    t, w = time.process_time(), time.perf_counter()
    for i, text in enumerate(texts):
        doc = Document(text=text, id=str(i))
        decision = None
        for name, f in zip(FILTERS, filters):
            decision = decide(name, f, doc)
            if decision:
                break
        decisions.append(decision)
    out = {"cpu_s": time.process_time() - t, "wall_s": time.perf_counter() - w, "decisions": decisions}
    Path(output_path).write_text(json.dumps(out))


def _share_spacy_words() -> None:
    """The untimed per-filter run: each DataTrove filter module's split_into_words remembers its
    last answer, so the filters of one document share one spaCy pass (they only read the list)."""
    import datatrove.pipeline.filters.fineweb_quality_filter as fw
    import datatrove.pipeline.filters.gopher_quality_filter as gq
    import datatrove.pipeline.filters.gopher_repetition_filter as gr

    original, last = gq.split_into_words, {}

    def remembered(*args, **kwargs):
        key = (args, tuple(sorted(kwargs.items())))
        if key not in last:
            last.clear()
            last[key] = original(*args, **kwargs)
        return last[key]

    for module in (fw, gq, gr):
        module.split_into_words = remembered


# --- Anvil's side ---------------------------------------------------------------------------------


def anvil_main(kind: str, mode: str, input_path: str, output_path: str) -> None:
    """Anvil's steps in `mode` (compat/default), kind "chain" (timed) or "each" (untimed), as peer_main."""
    from data_pipeline.document import Document
    from data_pipeline.steps.base import build_step

    texts = [json.loads(line)["text"] for line in open(input_path, encoding="utf-8")]
    if kind == "each":
        each = {}
        for name in FILTERS:
            each[name] = _anvil_decisions([build_step(name, dict(MODES[mode]))], texts, Document)
        Path(output_path).write_text(json.dumps({"decisions": each}))
        return
    steps = [build_step(n, dict(MODES[mode])) for n in FILTERS]
    t, w = time.process_time(), time.perf_counter()
    decisions = _anvil_decisions(steps, texts, Document)
    out = {"cpu_s": time.process_time() - t, "wall_s": time.perf_counter() - w, "decisions": decisions}
    Path(output_path).write_text(json.dumps(out))


def _anvil_decisions(steps, texts, document) -> list:
    decisions: list = [None] * len(texts)
    for step in steps:
        step.on_drop = lambda doc, step_name, reason, extra: decisions.__setitem__(int(doc.id), [step_name, reason])
    it = iter([document(str(i), t) for i, t in enumerate(texts)])
    for step in steps:
        it = step.run(it)
    for _ in it:
        pass
    return decisions


# --- inputs (shared with benchmarks/curation_steps.py) --------------------------------------------


def _read_html(job: tuple[str, str, str]) -> dict | None:
    from trafilatura.deduplication import LRU_TEST

    from data_pipeline.io import read_documents

    label, root, path = job
    # trafilatura's repeated-segment removal counts segments in one process-wide cache: emptied, each
    # page's text no longer depends on the pages this worker read before it (deterministic corpus)
    LRU_TEST.clear()
    text = "\n".join(doc.text for doc in read_documents(Path(path)) if doc.text.strip())
    return {"id": f"{label}:{Path(path).relative_to(root)}", "source": label, "text": text} if text else None


def _html_docs(want: int) -> list[dict]:
    """`want` pages spread over the HTML sources: each source's pages in a fixed shuffled order,
    read two at a time until enough have text (a source short of pages leaves its share to the next)."""
    import multiprocessing

    docs: list[dict] = []
    for i, (label, root) in enumerate(HTML_SOURCES.items()):
        share = (want - len(docs)) // (len(HTML_SOURCES) - i)
        root_path = real_path(root)
        pages = sorted(str(p) for p in root_path.rglob("*.html"))
        random.Random(label).shuffle(pages)
        got = 0
        with multiprocessing.get_context("fork").Pool(2) as pool:  # leaving it stops the pages still queued
            for doc in pool.imap(_read_html, [(label, str(root_path), p) for p in pages], chunksize=2):
                if doc and got < share:
                    docs.append(doc)
                    got += 1
                if got >= share:
                    break
    return docs


def _licence_docs(limit: int) -> list[dict]:
    paths = [p for d in LICENCE_DIRS for p in sorted(real_path(d).glob("*")) if p.is_file()]
    paths += sorted(real_path("/usr/share/doc").glob("*/copyright"))
    docs = []
    for path in paths:
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.strip() and len(docs) < limit:
            docs.append(
                {
                    "id": f"licence:{path.name if path.parent.name == 'common-licenses' else path.parent.name}",
                    "source": "licence",
                    "text": text,
                }
            )
    return docs


def _man_docs(limit: int) -> list[dict]:
    pages = sorted(p for d in MAN_DIRS for p in real_path(d).glob("*.gz"))
    stride = max(1, len(pages) // max(limit, 1))
    env = dict(os.environ, MANWIDTH="80")
    docs = []
    for path in pages[::stride]:
        if len(docs) >= limit:
            break
        out = subprocess.run(["mandoc", "-T", "utf8", "-O", "width=80", str(path)], capture_output=True, env=env)
        if out.returncode == 0 and out.stdout.strip():
            text = OVERSTRIKE.sub("", out.stdout.decode("utf-8", errors="replace"))  # bold/underline marks
            docs.append({"id": f"man:{path.name}", "source": "man", "text": text})
    return docs


def real_inputs_missing() -> str | None:
    """Why the real inputs cannot be used (None: they can)."""
    import shutil

    for root in [*HTML_SOURCES.values(), *LICENCE_DIRS, MAN_DIRS[0]]:
        if not real_path(root).is_dir():
            return f"{real_path(root)} not found"
    return None if shutil.which("mandoc") else "mandoc not installed"


def real_corpus(n_docs: int) -> tuple[Path, str] | None:
    """JSONL of `n_docs` real documents, 45% HTML pages, 25% licences, 30% man pages (cached);
    None when the real inputs are not installed."""
    label = (
        f"{n_docs} real documentation pages: Debian handbook (en-US), Python 3.11 and Django manuals "
        "(HTML through Anvil's reader), licence/copyright files, man pages (mandoc)"
    )
    out = CACHE / f"curation-corpus-{n_docs}.jsonl"
    if out.exists():
        return out, label
    if real_inputs_missing():
        return None
    t = time.perf_counter()
    docs = _html_docs(n_docs * 9 // 20)
    docs += _licence_docs(n_docs // 4)
    docs += _man_docs(n_docs - len(docs))
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for doc in docs[:n_docs]:
            fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
    tmp.replace(out)
    print(
        f"extracted {min(len(docs), n_docs)} real documents into {out} in {time.perf_counter() - t:.0f} s", flush=True
    )
    return out, label


def sample_corpus(n_docs: int) -> tuple[Path, str]:
    """The fallback: `n_docs` documents of Anvil's sample corpus (rebuilt every time: it is the
    installation's own text)."""
    from data_pipeline.sample import iter_sample_documents

    out = CACHE / f"curation-sample-{n_docs}.jsonl"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for doc in iter_sample_documents(n_docs):
            fh.write(json.dumps({"id": doc.id, "source": "sample", "text": doc.text}, ensure_ascii=False) + "\n")
    return out, f"{FALLBACK}: {n_docs} documents of `anvil data sample`"


def load_corpus(n_docs: int) -> tuple[Path, str, bool]:
    """(JSONL path, input label, real?): the real documents, else the labelled sample corpus."""
    found = real_corpus(n_docs)
    if found:
        return found[0], found[1], True
    why = real_inputs_missing() or "real corpus could not be built"
    print(f"real inputs not usable ({why}): using the sample corpus", flush=True)
    path, label = sample_corpus(n_docs)
    return path, label, False


# --- the comparison -------------------------------------------------------------------------------


def peers_python() -> Path | None:
    py = PEERS / "bin" / "python"
    return py if py.exists() else None


def run_child(cmd: list[str], dst: Path) -> dict:
    """Run one measured process; its JSON plus process_wall_s (raises RuntimeError with its stderr)."""
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip()[-2000:] or f"exit {done.returncode}")
    return dict(json.loads(dst.read_text()), process_wall_s=wall)


def _median_run(cmds, tmp: Path, name: str, repeats: int) -> dict:
    runs = [run_child([*cmds, str(tmp / f"{name}-{r}.json")], tmp / f"{name}-{r}.json") for r in range(repeats)]
    runs.sort(key=lambda r: r["process_wall_s"])
    return dict(runs[len(runs) // 2], process_walls_s=[round(r["process_wall_s"], 2) for r in runs])


def measure(input_path: Path, tmp: Path, repeats: int, agreement_runs: bool = True) -> dict:
    """{"chain": {tool: run}, "each": {tool: {filter: decisions}}, "peer_error": str | None};
    tool: "default", "compat", "datatrove" (absent when it could not run)."""
    me = [sys.executable, "-P", __file__]
    out: dict = {"chain": {}, "each": {}, "peer_error": None}
    for mode in ("default", "compat"):
        out["chain"][mode] = _median_run([*me, "--anvil", "chain", mode, str(input_path)], tmp, f"a-{mode}", repeats)
        print(f"  Anvil {mode}: {out['chain'][mode]['process_wall_s']:.1f} s", flush=True)
    py = peers_python()
    if py is None:
        out["peer_error"] = PEERS_MISSING
    else:
        try:
            out["chain"]["datatrove"] = _median_run(
                [str(py), __file__, "--peer", "chain", str(input_path)], tmp, "dt", repeats
            )
            print(f"  DataTrove: {out['chain']['datatrove']['process_wall_s']:.1f} s", flush=True)
        except RuntimeError as exc:
            out["peer_error"] = f"DataTrove not measured: its run failed ({str(exc).splitlines()[-1]})"
            print(f"{out['peer_error']}\n{exc}", flush=True)
    if agreement_runs and "datatrove" in out["chain"]:
        out["each"] = _each_runs(me, py, input_path, tmp)
    return out


def _each_runs(me: list[str], py: Path, input_path: Path, tmp: Path) -> dict:
    """Every filter alone (untimed): DataTrove in the background, Anvil's two modes meanwhile."""
    dt_out = tmp / "dt-each.json"
    peer = subprocess.Popen(
        [str(py), __file__, "--peer", "each", str(input_path), str(dt_out)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    each = {}
    for mode in ("compat", "default"):
        dst = tmp / f"a-{mode}-each.json"
        each[mode] = run_child([*me, "--anvil", "each", mode, str(input_path), str(dst)], dst)["decisions"]
    _, err = peer.communicate()
    if peer.returncode != 0:
        print(f"DataTrove per-filter run failed: per-filter agreement not measured\n{err[-2000:]}", flush=True)
        return {}
    each["datatrove"] = json.loads(dt_out.read_text())["decisions"]
    print("  per-filter decisions recorded", flush=True)
    return each


def _as_datatrove(decision: list | None) -> str | None:
    """Anvil's [step, reason] -> "step:DataTrove's reason name" (None: kept)."""
    from data_pipeline.steps.quality import DATATROVE_REASONS

    if decision is None:
        return None
    step, reason = decision
    return f"{step}:{DATATROVE_REASONS[step].get(reason, reason)}"


def agreement(dt: list, anvil: list) -> dict:
    """How often Anvil's decisions (its reason names) agree with DataTrove's, per document."""
    n = len(dt)
    ref = [None if d is None else f"{d[0]}:{d[1]}" for d in dt]
    mine = [_as_datatrove(d) for d in anvil]
    return {
        "keep_drop": sum((a is None) == (b is None) for a, b in zip(ref, mine)) / n,
        "keep_drop_and_reason": sum(a == b for a, b in zip(ref, mine)) / n,
        "kept": {"anvil": sum(b is None for b in mine), "datatrove": sum(a is None for a in ref)},
        "disagreements": [[i, ref[i], mine[i]] for i in range(n) if ref[i] != mine[i]][:20],
    }


def agreements(runs: dict) -> dict:
    """{mode: {CHAIN or filter: agreement}} for the sets DataTrove was measured on."""
    out: dict = {}
    if "datatrove" not in runs["chain"]:
        return out
    dt_chain = runs["chain"]["datatrove"]["decisions"]
    for mode in ("compat", "default"):
        out[mode] = {CHAIN: agreement(dt_chain, runs["chain"][mode]["decisions"])}
        if runs["each"]:
            for name in FILTERS:
                out[mode][name] = agreement(runs["each"]["datatrove"][name], runs["each"][mode][name])
    return out


def speed_rows(runs: dict, n_docs: int, peer_error: str | None) -> list[dict]:
    from benchmarks.common import fmt_ratio, row

    rows = []
    dt = runs["chain"].get("datatrove")
    for mode, what in (("compat", "`compat: datatrove`"), ("default", "default (paper) rules")):
        mine = runs["chain"][mode]["process_wall_s"]
        anvil = f"{mine:.1f} s"
        if dt is None:
            rows.append(
                row(
                    f"4 heuristic filters chained, {what}, {n_docs:,} docs",
                    "wall s, whole process",
                    anvil,
                    peer_error,
                    "",
                    ">= 10x DataTrove's four filters",
                    None,
                )
            )
            continue
        theirs = dt["process_wall_s"]
        rows.append(
            row(
                f"4 heuristic filters chained, {what}, {n_docs:,} docs",
                "wall s, whole process",
                anvil,
                f"DataTrove 0.10: {theirs:.1f} s",
                fmt_ratio(mine, theirs),
                ">= 10x DataTrove's four filters",
                theirs / mine >= 10,
            )
        )
    return rows


def agreement_row(agree: dict, peer_error: str | None) -> dict:
    from benchmarks.common import row

    what = "keep/drop + reason agreement with DataTrove, `compat: datatrove`: chain; lowest single filter"
    quantity = "% of documents"
    if not agree:
        return row(what, quantity, "not measured", peer_error or "", "", ">= 99% of documents", None)
    compat = agree["compat"]
    chain = compat[CHAIN]["keep_drop_and_reason"]
    singles = {k: v["keep_drop_and_reason"] for k, v in compat.items() if k != CHAIN}
    anvil = f"chain {chain:.2%}"
    lowest = chain
    if singles:
        worst = min(singles, key=singles.get)
        lowest = min(chain, singles[worst])
        anvil += f"; lowest {worst} {singles[worst]:.2%}"
    default = agree["default"][CHAIN]["keep_drop_and_reason"]
    kept = compat[CHAIN]["kept"]
    peer = (
        f"DataTrove keeps {kept['datatrove']:,}, compat {kept['anvil']:,}, "
        f"default {agree['default'][CHAIN]['kept']['anvil']:,} (default agrees {default:.1%})"
    )
    return row(what, quantity, anvil, peer, "", ">= 99% of documents", lowest >= 0.99)


def _summary(runs: dict, agree: dict) -> dict:
    speed = {
        tool: {k: v if isinstance(v, list) else round(v, 2) for k, v in r.items() if k.endswith("_s")}
        for tool, r in runs["chain"].items()
    }
    return {
        "speed_chain": speed,
        "agreement": agree,
        "kept_chain": {tool: sum(d is None for d in r["decisions"]) for tool, r in runs["chain"].items()},
    }


def main() -> None:
    from benchmarks.common import Recorder

    rec = Recorder("datatrove_compat")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=DEFAULT_DOCS, help=f"documents in the corpus (default {DEFAULT_DOCS})")
    ap.add_argument("--repeats", type=int, default=1, help="timed processes per tool and mode, median (default 1)")
    ap.add_argument("--input", type=Path, help="a JSONL file of {id, source, text} to use instead (labelled as such)")
    ap.add_argument(
        "--write-fixture",
        action="store_true",
        help="also write tests/data_pipeline/steps/golden/datatrove_decisions.jsonl.gz",
    )
    ap.add_argument("--fixture-docs", type=int, default=300, help="documents in the fixture (default 300)")
    args = ap.parse_args()
    if args.docs < 1 or args.repeats < 1:
        ap.error("--docs and --repeats must be >= 1")
    if args.input:
        input_path, label = args.input, f"{args.input} (given with --input)"
    else:
        input_path, label, _ = load_corpus(args.docs)
    docs = [json.loads(line) for line in open(input_path, encoding="utf-8")]
    mb = sum(len(d["text"].encode()) for d in docs) / 1e6
    print(f"input: {label} ({len(docs)} documents, {mb:.1f} MB)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        runs = measure(input_path, Path(tmp), args.repeats)
    agree = agreements(runs)
    rows = [*speed_rows(runs, len(docs), runs["peer_error"]), agreement_row(agree, runs["peer_error"])]
    for r in rows:
        print(" | ".join(str(r[k]) for k in ("what", "quantity", "anvil", "peer", "ratio", "target", "met")))
    record = {
        "documents": len(docs),
        "sources": dict(sorted(Counter(d.get("source", "?") for d in docs).items())),
        "mb": round(mb, 2),
        "repeats": args.repeats,
        "peer_error": runs["peer_error"],
        **_summary(runs, agree),
    }
    rec.write(record, rows, label)
    if args.write_fixture:
        if not runs["each"]:
            raise SystemExit("--write-fixture needs DataTrove's per-filter decisions, which were not measured")
        write_fixture(docs, runs["each"], args.fixture_docs)


# --- the test fixture -----------------------------------------------------------------------------

FIXTURE = ROOT / "tests" / "data_pipeline" / "steps" / "golden" / "datatrove_decisions.jsonl.gz"
FIXTURE_MAX_CHARS = 8000


def write_fixture(docs: list[dict], each: dict, n_docs: int) -> None:
    """A few hundred of the documents (permissive sources, at most 8,000 characters each) with
    DataTrove's decision for each filter alone and Anvil's default-mode decision, rarest DataTrove
    outcomes first so that every rule that fired is represented."""
    dt = each["datatrove"]
    outcome = {}
    for i, doc in enumerate(docs):
        if doc.get("source") in FIXTURE_SOURCES and len(doc["text"]) <= FIXTURE_MAX_CHARS:
            outcome[i] = tuple(None if dt[f][i] is None else dt[f][i][1] for f in FILTERS)
    freq = Counter((f, v[f]) for v in outcome.values() for f in range(len(FILTERS)))
    rng = random.Random(0)
    order = sorted(outcome, key=lambda i: (min(freq[(f, outcome[i][f])] for f in range(len(FILTERS))), rng.random()))
    chosen = sorted(order[:n_docs])
    header = {
        "_header": {
            "what": "DataTrove 0.10.1 decisions (spaCy 3.8 English tokenizer) for each heuristic filter alone, "
            "and Anvil's default (paper) decisions; [filter, DataTrove reason] or null when kept",
            "source": "Python 3.11 documentation (PSF licence), Django documentation (BSD licence) and licence "
            "texts from /usr/share/common-licenses and /usr/share/doc/*/copyright, HTML extracted by Anvil's reader",
            "regenerate": ".venv/bin/python -P benchmarks/datatrove_compat.py --docs 3000 --write-fixture",
        }
    }
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(FIXTURE, "wt", encoding="utf-8", compresslevel=9) as fh:
        fh.write(json.dumps(header) + "\n")
        for i in chosen:
            line = {
                "id": docs[i]["id"],
                "text": docs[i]["text"],
                "datatrove": {f: dt[f][i] for f in FILTERS},
                "anvil_paper": {f: each["default"][f][i] for f in FILTERS},
            }
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    print(f"wrote {FIXTURE.relative_to(ROOT)} ({len(chosen)} documents, {FIXTURE.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--peer":  # KIND INPUT OUTPUT, in benchmarks/.venv-peers
        peer_main(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) > 1 and sys.argv[1] == "--anvil":  # KIND MODE INPUT OUTPUT
        anvil_main(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        main()
