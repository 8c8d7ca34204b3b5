"""Benchmark: `compat: datatrove` against DataTrove 0.10 itself, on the same real documents.

    .venv/bin/python benchmarks/datatrove_compat.py [--docs 3000] [--input DOCS.jsonl] [--write-fixture]

Runs DataTrove 0.10's four heuristic filters (GopherRepetitionFilter, GopherQualityFilter,
C4QualityFilter, FineWebQualityFilter; English, spaCy word tokens) and Anvil's `gopher_repetition`,
`gopher_quality`, `c4` and `fineweb` steps, once with `compat: datatrove` and once with the default
(paper-faithful) rules, on the same documents, and reports per filter how often Anvil agrees with
DataTrove on keep/drop and on keep/drop plus the rule that fired (Anvil's reason names map to
DataTrove's through `quality.DATATROVE_REASONS`). Each filter is run alone on every document, then
the four are chained (repetition, quality, C4, FineWeb, as benchmarks/curation.py does). Every
(tool, filters) pair runs in a process of its own, one after the other: speeds are the CPU seconds
(`time.process_time`) and wall seconds of the loop over the corpus (spaCy loaded before the clock
starts; Anvil's per-process token caches start empty) and the wall seconds of the whole process
(interpreter start, imports, reading the corpus). The machine's load average before and after is
recorded with them.

Input: 3,000 real documentation pages by default: the Debian administrator's handbook, Python and
Django manuals (HTML through Anvil's own reader), licence and copyright files and man pages
(rendered with mandoc), installed by benchmarks/install_real_inputs.sh and cached in
benchmarks/.cache/. Where they are not installed the project's sample corpus (`anvil data sample`:
standard-library docstrings, package READMEs and licences) is used instead, and labelled so.

DataTrove runs in its own environment, benchmarks/.venv-peers (datatrove 0.10, spaCy, nltk),
never in Anvil's: this file re-executes itself there with `--peer`, which imports nothing of Anvil.
Results: benchmarks/results/datatrove_compat.json. `--write-fixture` also writes the test fixture
tests/data_pipeline/steps/golden/datatrove_decisions.jsonl.gz (300 documents of permissively
licensed sources with DataTrove's decisions; see the README.md next to it).
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
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
# benchmarks/ itself must not be on the path: benchmarks/tokenize.py would shadow the stdlib module
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

PEERS = HERE / ".venv-peers"
CACHE = HERE / ".cache"
FILTERS = ["gopher_repetition", "gopher_quality", "c4", "fineweb"]
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


# --- DataTrove's side (runs in benchmarks/.venv-peers; imports nothing of Anvil) ------------------


def peer_main(input_path: str, output_path: str, names: list[str]) -> None:
    """DataTrove's filters `names`, chained, on every document: [filter, reason] or None (kept)."""
    from datatrove.data import Document
    from datatrove.utils.text import split_into_words
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    make = {
        "gopher_repetition": GopherRepetitionFilter,
        "gopher_quality": GopherQualityFilter,
        "c4": C4QualityFilter,
        "fineweb": FineWebQualityFilter,
    }
    texts = [json.loads(line)["text"] for line in open(input_path, encoding="utf-8")]
    filters = [make[n]() for n in names]
    split_into_words("load spaCy before the clock starts", "en")
    decisions = []
    t, w = time.process_time(), time.perf_counter()
    for i, text in enumerate(texts):
        doc = Document(text=text, id=str(i))
        decision = None
        for name, f in zip(names, filters):
            res = f.filter(doc)
            ok, reason = res if isinstance(res, tuple) else (res, None)
            if not ok:
                decision = [name, reason]
                break
        decisions.append(decision)
    out = {"cpu_s": time.process_time() - t, "wall_s": time.perf_counter() - w, "decisions": decisions}
    Path(output_path).write_text(json.dumps(out))


# --- inputs -----------------------------------------------------------------------------------------


def _html_docs(label: str, root: str):
    from data_pipeline.io import read_documents

    for path in sorted(Path(root).rglob("*.html")):
        for doc in read_documents(path):
            if doc.text.strip():
                yield {"id": f"{label}:{path.relative_to(root)}", "source": label, "text": doc.text}


def _licence_docs():
    paths = [p for d in LICENCE_DIRS for p in sorted(Path(d).glob("*")) if p.is_file()]
    paths += sorted(Path("/usr/share/doc").glob("*/copyright"))
    for path in paths:
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            yield {"id": f"licence:{path}", "source": "licence", "text": text}


def _man_docs(limit: int):
    pages = sorted(p for d in MAN_DIRS for p in Path(d).glob("*.gz"))
    step = max(1, len(pages) // max(limit, 1))
    env = dict(os.environ, MANWIDTH="80")
    for path in pages[::step][:limit]:
        out = subprocess.run(["mandoc", "-T", "utf8", "-O", "width=80", str(path)], capture_output=True, env=env)
        if out.returncode != 0 or not out.stdout.strip():
            continue
        text = OVERSTRIKE.sub("", out.stdout.decode("utf-8", errors="replace"))  # bold/underline marks
        yield {"id": f"man:{path.name}", "source": "man", "text": text}


def real_corpus(n_docs: int) -> tuple[Path, str] | None:
    """JSONL of `n_docs` real documentation pages (cached), or None when they are not installed."""
    out = CACHE / f"datatrove-compat-{n_docs}.jsonl"
    label = (
        f"{n_docs} real documentation pages: Debian handbook (en-US), Python 3.11 and Django manuals "
        "(HTML through Anvil's reader), licence/copyright files, man pages (mandoc)"
    )
    if out.exists():
        return out, label
    import shutil

    if not all(Path(p).is_dir() for p in HTML_SOURCES.values()) or shutil.which("mandoc") is None:
        return None
    html_budget = n_docs * 9 // 20  # 45% HTML pages, 25% licences, 30% man pages
    lic_budget = n_docs // 4
    docs: list[dict] = []
    per_source = html_budget // len(HTML_SOURCES)
    for i, (name, root) in enumerate(HTML_SOURCES.items()):
        want = per_source if i < len(HTML_SOURCES) - 1 else html_budget - len(docs)
        pages = list(_take(_html_docs(name, root), 10**9))
        rng = random.Random(name)
        docs += rng.sample(pages, min(want, len(pages))) if len(pages) > want else pages
    docs += list(_take(_licence_docs(), lic_budget))
    docs += list(_take(_man_docs(n_docs - len(docs)), n_docs - len(docs)))
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for doc in docs[:n_docs]:
            fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return out, label


def _take(it, n):
    for i, x in enumerate(it):
        if i >= n:
            return
        yield x


def sample_corpus(n_docs: int) -> tuple[Path, str]:
    from data_pipeline.sample import iter_sample_documents

    out = CACHE / f"datatrove-compat-sample-{n_docs}.jsonl"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for doc in iter_sample_documents(n_docs):
            fh.write(json.dumps({"id": doc.id, "source": "sample", "text": doc.text}, ensure_ascii=False) + "\n")
    return out, f"SAMPLE CORPUS (real inputs not installed): {n_docs} documents of `anvil data sample`"


# --- Anvil's side -------------------------------------------------------------------------------------


def anvil_main(mode: str, names: list[str], input_path: str, output_path: str) -> None:
    """One mode, one set of filters, in a fresh process (token caches start cold, as in a run)."""
    from data_pipeline.document import Document
    from data_pipeline.steps.base import build_step

    texts = [json.loads(line)["text"] for line in open(input_path, encoding="utf-8")]
    steps = [build_step(n, {"compat": mode}) for n in names]
    decisions: list = [None] * len(texts)
    for step in steps:
        step.on_drop = lambda doc, step_name, reason, extra: decisions.__setitem__(int(doc.id), [step_name, reason])
    docs = [Document(str(i), t) for i, t in enumerate(texts)]
    t, w = time.process_time(), time.perf_counter()
    it = iter(docs)
    for step in steps:
        it = step.run(it)
    for _ in it:
        pass
    out = {"cpu_s": time.process_time() - t, "wall_s": time.perf_counter() - w, "decisions": decisions}
    Path(output_path).write_text(json.dumps(out))


# --- the comparison --------------------------------------------------------------------------------


def _run(cmd: list[str], what: str) -> float:
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"benchmarks/datatrove_compat.py: {what} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - t


def measure(input_path: Path, tmp: Path) -> dict:
    """DataTrove and Anvil (both modes), every filter alone and the four chained, each set in its
    own process; returns {tool: {set: {cpu_s, wall_s, process_wall_s, decisions}}}."""
    py = PEERS / "bin" / "python"
    if not py.exists():
        raise SystemExit(
            f"{py} is missing: create it with `python3 -m venv {PEERS} && {py} -m pip install "
            "'datatrove[processing]==0.10.*' spacy nltk orjson`"
        )
    sets = [[n] for n in FILTERS] + [FILTERS]
    out: dict = {"datatrove": {}, "anvil_datatrove": {}, "anvil_paper": {}}
    for names in sets:
        key = "+".join(names)
        dst = tmp / f"dt-{key}.json"
        wall = _run([str(py), __file__, "--peer", str(input_path), str(dst), ",".join(names)], f"DataTrove {key}")
        out["datatrove"][key] = dict(json.loads(dst.read_text()), process_wall_s=wall)
        for mode in ("datatrove", "paper"):
            dst = tmp / f"anvil-{mode}-{key}.json"
            cmd = [sys.executable, __file__, "--anvil", mode, ",".join(names), str(input_path), str(dst)]
            wall = _run(cmd, f"Anvil {mode} {key}")
            out[f"anvil_{mode}"][key] = dict(json.loads(dst.read_text()), process_wall_s=wall)
        print(f"  measured {key}", flush=True)
    return out


def _as_datatrove(decision: list | None) -> str | None:
    """Anvil's [step, reason] -> DataTrove's reason name (None: kept)."""
    from data_pipeline.steps.quality import DATATROVE_REASONS

    if decision is None:
        return None
    step, reason = decision
    return f"{step}:{DATATROVE_REASONS[step].get(reason, reason)}"


def agreement(dt: list, anvil: list) -> dict:
    n = len(dt)
    ref = [None if d is None else f"{d[0]}:{d[1]}" for d in dt]
    mine = [_as_datatrove(d) for d in anvil]
    keep = sum((a is None) == (b is None) for a, b in zip(ref, mine))
    same = sum(a == b for a, b in zip(ref, mine))
    return {
        "keep_drop": keep / n,
        "keep_drop_and_reason": same / n,
        "kept": [sum(b is None for b in mine), sum(a is None for a in ref)],
        "disagreements": [[i, ref[i], mine[i]] for i in range(n) if ref[i] != mine[i]][:20],
    }


def machine() -> dict:
    return {"cores": os.cpu_count(), "load_avg": list(os.getloadavg())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=3000, help="documents in the corpus (default 3000)")
    ap.add_argument(
        "--write-fixture",
        action="store_true",
        help="also write the test fixture tests/data_pipeline/steps/golden/datatrove_decisions.jsonl.gz",
    )
    ap.add_argument("--fixture-docs", type=int, default=300, help="documents in the fixture (default 300)")
    ap.add_argument("--input", type=Path, help="a JSONL file of {id, source, text} to use instead (labelled as such)")
    args = ap.parse_args()
    found = (args.input, f"{args.input} (given with --input)") if args.input else real_corpus(args.docs)
    input_path, label = found if found else sample_corpus(args.docs)
    if not found:
        print("real inputs not installed (bash benchmarks/install_real_inputs.sh): using the SAMPLE corpus")
    docs = [json.loads(line) for line in open(input_path, encoding="utf-8")]
    mb = sum(len(d["text"].encode()) for d in docs) / 1e6
    print(f"input: {label} ({len(docs)} documents, {mb:.1f} MB)", flush=True)
    import tempfile

    before = machine()
    with tempfile.TemporaryDirectory() as tmp:
        runs = measure(input_path, Path(tmp))
    result = {
        "input": label,
        "documents": len(docs),
        "sources": dict(sorted(Counter(d.get("source", "?") for d in docs).items())),
        "mb": round(mb, 2),
        "machine": {"before": before, "after": machine()},
        "agreement": {},
        "speed": {},
    }
    rows = []
    for key in runs["datatrove"]:
        dt = runs["datatrove"][key]
        result["agreement"][key] = {
            mode: agreement(dt["decisions"], runs[f"anvil_{mode}"][key]["decisions"]) for mode in ("datatrove", "paper")
        }
        result["speed"][key] = {
            tool: {k: round(v, 2) for k, v in runs[tool][key].items() if k.endswith("_s")} for tool in runs
        }
        agree = result["agreement"][key]
        speed = result["speed"][key]
        rows.append(
            {
                "filters": "all four" if "+" in key else key,
                "agree compat (keep / +reason)": f"{agree['datatrove']['keep_drop']:.2%} / "
                f"{agree['datatrove']['keep_drop_and_reason']:.2%}",
                "agree paper (keep / +reason)": f"{agree['paper']['keep_drop']:.2%} / "
                f"{agree['paper']['keep_drop_and_reason']:.2%}",
                "kept dt/compat/paper": f"{agree['datatrove']['kept'][1]}/{agree['datatrove']['kept'][0]}/"
                f"{agree['paper']['kept'][0]}",
                "CPU s dt/compat/paper": f"{speed['datatrove']['cpu_s']}/{speed['anvil_datatrove']['cpu_s']}/"
                f"{speed['anvil_paper']['cpu_s']}",
                "process wall s dt/compat/paper": f"{speed['datatrove']['process_wall_s']}/"
                f"{speed['anvil_datatrove']['process_wall_s']}/{speed['anvil_paper']['process_wall_s']}",
            }
        )
    from framework.runtime import print_table

    print_table(rows, title=f"Anvil vs DataTrove 0.10 on {label}")
    dest = HERE / "results" / "datatrove_compat.json"
    dest.parent.mkdir(exist_ok=True)
    dest.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {dest.relative_to(ROOT)}")
    if args.write_fixture:
        write_fixture(docs, runs, args.fixture_docs)


# --- the test fixture ------------------------------------------------------------------------------

FIXTURE = ROOT / "tests" / "data_pipeline" / "steps" / "golden" / "datatrove_decisions.jsonl.gz"
FIXTURE_MAX_CHARS = 8000


def write_fixture(docs: list[dict], runs: dict, n_docs: int) -> None:
    """A few hundred of the documents (permissive sources, at most 8,000 characters each) with
    DataTrove's decision for each filter alone and Anvil's default-mode decision, rarest DataTrove
    outcomes first so that every rule that fired is represented."""
    outcome = {}
    for i, doc in enumerate(docs):
        if doc["source"] in FIXTURE_SOURCES and len(doc["text"]) <= FIXTURE_MAX_CHARS:
            outcome[i] = tuple(
                None if runs["datatrove"][f]["decisions"][i] is None else runs["datatrove"][f]["decisions"][i][1]
                for f in FILTERS
            )
    freq = Counter(o for f_i in range(len(FILTERS)) for o in ((f_i, v[f_i]) for v in outcome.values()))
    rng = random.Random(0)
    order = sorted(outcome, key=lambda i: (min(freq[(f, outcome[i][f])] for f in range(len(FILTERS))), rng.random()))
    chosen = sorted(order[:n_docs])
    header = {
        "_header": {
            "what": "DataTrove 0.10.1 decisions (spaCy 3.8 English tokenizer) for each heuristic filter alone, "
            "and Anvil's default (paper) decisions; [filter, DataTrove reason] or null when kept",
            "source": "Python 3.11 documentation (PSF licence), Django documentation (BSD licence) and licence "
            "texts from /usr/share/common-licenses and /usr/share/doc/*/copyright, HTML extracted by Anvil's reader",
            "regenerate": ".venv/bin/python benchmarks/datatrove_compat.py --write-fixture",
        }
    }
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(FIXTURE, "wt", encoding="utf-8", compresslevel=9) as fh:
        fh.write(json.dumps(header) + "\n")
        for i in chosen:
            row = {
                "id": docs[i]["id"],
                "text": docs[i]["text"],
                "datatrove": {f: runs["datatrove"][f]["decisions"][i] for f in FILTERS},
                "anvil_paper": {f: runs["anvil_paper"][f]["decisions"][i] for f in FILTERS},
            }
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {FIXTURE.relative_to(ROOT)} ({len(chosen)} documents, {FIXTURE.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--peer":
        peer_main(sys.argv[2], sys.argv[3], sys.argv[4].split(","))
    elif len(sys.argv) > 1 and sys.argv[1] == "--anvil":
        anvil_main(sys.argv[2], sys.argv[3].split(","), sys.argv[4], sys.argv[5])
    else:
        main()
