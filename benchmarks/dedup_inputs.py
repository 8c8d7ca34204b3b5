"""Inputs of benchmarks/dedup.py and benchmarks/dedup_resume.py (and the paths extract.py shares):
a real corpus of up to 5,000 documents (3,704 from today's packages), the same text with planted edits, and the fallback when the real
inputs are not installed.

Real: text extracted (through Anvil's own HTML reader) from the Debian handbook in 26 locales
(untranslated pages are near-copies of the English ones), the Python and Django documentation,
plus the `copyright` files of installed Debian packages (many near-identical licence texts).
Install them first with `bash benchmarks/install_real_inputs.sh` (as root). The extracted corpus is
cached in the benchmark cache (4,524 pages, 187 MB of HTML: ~80 s with the two processes it uses
on an idle 2-core machine; reruns are instant), and dedup.py and dedup_resume.py share it.

Planted (`planted_corpus`): two thirds real documents, one third variants of some of them with
one planted edit each (data_pipeline/dedup/synthetic.plant_families: word substitutions,
insertions and deletions, reordered paragraphs, boilerplate headers/footers, truncations, each at
four levels), shuffled, in 4 files. Without the real inputs it falls back to Anvil's built-in
sample corpus (stdlib docstrings, package READMEs and licences) and says so in its label.

Environment:
  ANVIL_BENCH_CACHE      folder replacing benchmarks/.cache (extracted inputs, never results)
  ANVIL_BENCH_REAL_ROOT  prefix put before every real-input path (/usr/share/doc/..., the crawl in
                         ~/.cache/anvil-real-inputs): point it at an empty folder to check the fallback
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("ANVIL_BENCH_CACHE") or ROOT / "benchmarks" / ".cache")
FALLBACK = "sample corpus (fallback: real inputs not installed: run benchmarks/install_real_inputs.sh as root)"
SOURCES = [
    "/usr/share/doc/debian-handbook/html",
    "/usr/share/doc/python3.11/html",
    "/usr/share/doc/python-django-doc/html",
]


class RealInputsMissing(Exception):
    """The real inputs of install_real_inputs.sh are not there (the caller falls back, labelled)."""


def real_path(path: str | Path) -> Path:
    """Where a real input lies: `path` itself, or under ANVIL_BENCH_REAL_ROOT when that is set."""
    prefix = os.environ.get("ANVIL_BENCH_REAL_ROOT")
    return Path(prefix + str(path)) if prefix else Path(path)


def real_corpus(num_docs: int = 5000) -> Path:
    """JSONL of up to `num_docs` real documents (built once, then cached); RealInputsMissing without them."""
    missing = [s for s in SOURCES if not real_path(s).is_dir()]
    if missing:
        raise RealInputsMissing(f"{real_path(missing[0])} not found")
    out = CACHE / f"dedup-real-{num_docs}.jsonl"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    copyrights = sorted(real_path("/usr/share/doc").glob("*/copyright"))
    html = [p for s in SOURCES for p in sorted(real_path(s).rglob("*.html"))]
    budget_html = num_docs - min(len(copyrights), num_docs // 7)
    n = 0
    tmp = out.with_suffix(".tmp")
    print(f"extracting the real corpus into {out} (once; ~80 s on 2 idle cores)", flush=True)
    with open(tmp, "w", encoding="utf-8") as f:
        for path in copyrights[: num_docs - budget_html]:
            text = path.read_text(encoding="utf-8", errors="replace")
            if text.strip():
                f.write(json.dumps({"id": f"copyright:{path.parent.name}", "text": text}, ensure_ascii=False) + "\n")
                n += 1
        # two processes extract, pages come back in order: the same file as one process writes
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            for path, texts in zip(html, pool.imap(_extract, html, chunksize=8)):
                for text in texts:
                    if n < num_docs:
                        f.write(json.dumps({"id": str(path), "text": text}, ensure_ascii=False) + "\n")
                        n += 1
                if n >= num_docs:
                    pool.terminate()
                    break
    tmp.replace(out)
    return out


_EXTRACTOR = []


def _extract(path: Path) -> list[str]:
    """The text (if >= 200 characters) Anvil's HTML reader finds in one page, with no per-page
    timeout: on a loaded machine the default 5 s would drop the longest pages, so the corpus
    would depend on the load."""
    sys.path.insert(0, str(ROOT))
    from data_pipeline.io import read_documents

    if not _EXTRACTOR:
        from data_pipeline.io.html import ExtractSettings, HtmlExtractor

        _EXTRACTOR.append(HtmlExtractor(ExtractSettings(timeout_s=0)))
    texts = []
    for doc in read_documents(path, raw_html=True):
        text, _ = _EXTRACTOR[0].extract(doc.text, None)
        if text and len(text) >= 200:
            texts.append(text)
    return texts


def sample_corpus(num_docs: int) -> Path:
    """JSONL of up to `num_docs` documents of Anvil's sample corpus (the fallback), cached."""
    sys.path.insert(0, str(ROOT))
    from data_pipeline.sample import iter_sample_documents

    out = CACHE / f"dedup-sample-{num_docs}.jsonl"
    if not out.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for d in iter_sample_documents(num_docs):
                f.write(json.dumps({"id": d.id, "text": d.text}, ensure_ascii=False) + "\n")
        tmp.replace(out)
    return out


def corpus(num_docs: int = 5000) -> tuple[Path, str, bool]:
    """(JSONL, label, real?): the real corpus, or the labelled sample-corpus fallback."""
    try:
        path = real_corpus(num_docs)
        n = sum(1 for _ in open(path, encoding="utf-8"))
        return path, f"real documents (benchmarks/dedup_inputs.py): {n} documents", True
    except RealInputsMissing as exc:
        print(f"real inputs missing ({exc}): using Anvil's sample corpus instead", flush=True)
        path = sample_corpus(num_docs)
        n = sum(1 for _ in open(path, encoding="utf-8"))
        return path, f"{FALLBACK}: {n} documents", False


def planted_corpus(num_docs: int = 5400, seed: int = 17, files: int = 4) -> tuple[Path, list, str, bool]:
    """(folder of `files` JSONL files, [(doc id, base id, edit, level)], label, real?); cached."""
    sys.path.insert(0, str(ROOT))
    from data_pipeline.dedup.synthetic import plant_families

    num_real = num_docs - num_docs // 3
    src, label, real = corpus(max(5000, num_real))
    folder = CACHE / (f"dedup-planted-{num_docs}-s{seed}" + ("" if real else "-sample"))
    meta = folder / "planted.json"
    if meta.exists():
        rec = json.loads(meta.read_text())
        return folder, rec["planted"], rec["source"], real
    with open(src, encoding="utf-8") as fh:
        docs = [json.loads(line) for _, line in zip(range(num_real), fh)]
    # one variant per two documents, as in the full-size corpus (the sample corpus has fewer documents)
    out, planted = plant_families(docs, min(num_docs - len(docs), len(docs) // 2), seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    q = -(-len(out) // files)
    for k in range(files):
        with open(folder / f"part-{k}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in out[k * q : (k + 1) * q])
    rows = [[p.doc_id, p.base, p.edit, p.level] for p in planted]
    label = (label.split(":")[0] if real else FALLBACK) + f": {len(docs)} documents + {len(planted)} planted variants"
    meta.write_text(json.dumps({"source": label, "planted": rows}))
    return folder, rows, label, real


if __name__ == "__main__":
    print(corpus(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)[1])
