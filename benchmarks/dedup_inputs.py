"""Inputs of benchmarks/dedup.py: a real 5,000-document corpus and a synthetic one with planted families.

Real: text extracted (through Anvil's own HTML reader) from the Debian handbook in 26 locales
(untranslated pages are near-copies of the English ones), the Python and Django documentation,
plus the `copyright` files of installed Debian packages (many near-identical licence texts).
Install them first with `bash benchmarks/install_real_inputs.sh`. The extracted corpus is
cached under benchmarks/.cache/ (extraction runs at ~30 pages/s; the cache makes reruns instant).
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


if __name__ == "__main__":
    print(real_corpus(int(sys.argv[1]) if len(sys.argv) > 1 else 5000))
