"""Inputs of benchmarks/dedup.py: a real 5,000-document corpus, the same text with planted edits,
and a synthetic corpus with planted families.

Real: text extracted (through Anvil's own HTML reader) from the Debian handbook in 26 locales
(untranslated pages are near-copies of the English ones), the Python and Django documentation,
plus the `copyright` files of installed Debian packages (many near-identical licence texts).
Install them first with `bash benchmarks/install_real_inputs.sh`. The extracted corpus is
cached under benchmarks/.cache/ (extraction runs at ~30 pages/s; the cache makes reruns instant).

Planted (`planted_corpus`): two thirds real documents, one third variants of some of them with
one planted edit each (data_pipeline/dedup/synthetic.plant_families: word substitutions,
insertions and deletions, reordered paragraphs, boilerplate headers/footers, truncations, each at
four levels), shuffled, in 4 files. Without the real inputs it falls back to Anvil's built-in
sample corpus (stdlib docstrings, package READMEs and licences) and says so in its label.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".cache"
SOURCES = [
    "/usr/share/doc/debian-handbook/html",
    "/usr/share/doc/python3.11/html",
    "/usr/share/doc/python-django-doc/html",
]


def real_corpus(num_docs: int = 5000) -> Path:
    """JSONL of `num_docs` real documents (built once, then cached)."""
    sys.path.insert(0, str(ROOT))
    from data_pipeline.io import read_documents

    out = CACHE / f"dedup-real-{num_docs}.jsonl"
    if out.exists():
        return out
    missing = [s for s in SOURCES if not Path(s).is_dir()]
    if missing:
        raise SystemExit(f"real inputs missing ({missing[0]}): run bash benchmarks/install_real_inputs.sh")
    CACHE.mkdir(parents=True, exist_ok=True)
    copyrights = sorted(Path("/usr/share/doc").glob("*/copyright"))
    html = [p for s in SOURCES for p in sorted(Path(s).rglob("*.html"))]
    budget_html = num_docs - min(len(copyrights), num_docs // 7)
    n = 0
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for path in copyrights[: num_docs - budget_html]:
            text = path.read_text(encoding="utf-8", errors="replace")
            if text.strip():
                f.write(json.dumps({"id": f"copyright:{path.parent.name}", "text": text}, ensure_ascii=False) + "\n")
                n += 1
        for path in html:
            if n >= num_docs:
                break
            for doc in read_documents(path):
                if len(doc.text) >= 200:
                    f.write(json.dumps({"id": str(path), "text": doc.text}, ensure_ascii=False) + "\n")
                    n += 1
    tmp.replace(out)
    return out


def planted_corpus(num_docs: int = 5400, seed: int = 17, files: int = 4) -> tuple[Path, list, str]:
    """(folder of `files` JSONL files, [(doc id, base id, edit, level)], source label); cached."""
    sys.path.insert(0, str(ROOT))
    from data_pipeline.dedup.synthetic import plant_families

    num_real = num_docs - num_docs // 3
    try:
        src, label = real_corpus(max(5000, num_real)), "real documents (benchmarks/dedup_inputs.py)"
    except SystemExit as exc:
        src, label = None, f"Anvil's sample corpus (data_pipeline/sample.py; {exc})"
    folder = CACHE / (f"dedup-planted-{num_docs}-s{seed}" + ("" if src else "-sample"))
    meta = folder / "planted.json"
    if meta.exists():
        rec = json.loads(meta.read_text())
        return folder, rec["planted"], rec["source"]
    if src is not None:
        docs = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines()[:num_real]]
    else:
        from data_pipeline.sample import iter_sample_documents

        docs = [{"id": d.id, "text": d.text} for d in iter_sample_documents(num_real)]
    out, planted = plant_families(docs, num_docs - len(docs), seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    q = -(-len(out) // files)
    for k in range(files):
        with open(folder / f"part-{k}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in out[k * q : (k + 1) * q])
    rows = [[p.doc_id, p.base, p.edit, p.level] for p in planted]
    label = f"{label}: {len(docs)} documents + {len(planted)} planted variants"
    meta.write_text(json.dumps({"source": label, "planted": rows}))
    return folder, rows, label


if __name__ == "__main__":
    print(real_corpus(int(sys.argv[1]) if len(sys.argv) > 1 else 5000))
