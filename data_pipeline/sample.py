"""A sample corpus of real text that needs no download: `anvil data sample --output DIR`.

Sources, all present wherever Anvil is installed: module, class and function docstrings of the
Python standard library, and the README (package long description) and licence texts of the
installed packages. Licences and READMEs carry natural near-duplicates (MIT/BSD/Apache texts that
differ only in a copyright line), which is what dedup needs to find. Order is deterministic for a
given installation.
"""

from __future__ import annotations

import email
import hashlib
import ast
import json
import sys
import sysconfig
from pathlib import Path
from typing import Iterator

from data_pipeline.document import Document

_SKIP_MODULES = {
    "antigravity",
    "this",
    "idlelib",
    "tkinter",
    "turtle",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "venv",
    "test",
}
MIN_CHARS = 200


def _stdlib_sources() -> list[tuple[str, Path]]:
    """(module name, source file) for the public pure-Python modules of the standard library."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if (
            not parts
            or parts[0] in _SKIP_MODULES
            or parts[0] not in sys.stdlib_module_names
            or any(p.startswith("_") or p in ("test", "tests") for p in parts)
        ):
            continue
        found.append((".".join(parts), path))
    return found


def _public_definitions(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.AST]]:
    """Public classes and functions of a module, and the public methods of its classes."""
    for child in getattr(node, "body", []):
        if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and not child.name.startswith("_"):
            yield f"{prefix}.{child.name}", child
            if isinstance(child, ast.ClassDef):
                yield from _public_definitions(child, f"{prefix}.{child.name}")


def _stdlib_docs() -> Iterator[Document]:
    """Docstrings read from the source with `ast`: nothing is imported, so what other libraries
    monkeypatch at import time cannot change the corpus."""
    for name, path in _stdlib_sources():
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError, OSError):
            continue
        nodes = [(name, tree)] + sorted(_public_definitions(tree, name), key=lambda item: item[0])
        for qualname, node in nodes:
            doc = ast.get_docstring(node)
            if doc and len(doc) >= MIN_CHARS:
                yield Document(
                    id=f"stdlib:{qualname}",
                    text=doc,
                    metadata={"kind": "docstring"},
                    source=f"python-stdlib/{path.relative_to(path.parents[len(name.split('.')) - 1])}",
                )


def _package_docs() -> Iterator[Document]:
    roots = sorted({Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()})
    for root in roots:
        for info in sorted(root.glob("*.dist-info")):
            meta = info / "METADATA"
            if meta.is_file():
                msg = email.message_from_string(meta.read_text(errors="replace"))
                body = msg.get_payload()
                if isinstance(body, str) and len(body.strip()) >= MIN_CHARS:
                    yield Document(
                        id=f"readme:{info.name}", text=body.strip(), metadata={"kind": "readme"}, source=str(meta)
                    )
            for lic in sorted(info.rglob("*")):
                if lic.is_file() and lic.name.upper().startswith(("LICENSE", "LICENCE", "COPYING", "NOTICE")):
                    text = lic.read_text(errors="replace").strip()
                    if len(text) >= MIN_CHARS:
                        yield Document(
                            id=f"license:{info.name}/{lic.relative_to(info)}",
                            text=text,
                            metadata={"kind": "license"},
                            source=str(lic),
                        )


def iter_sample_documents(limit: int | None = None) -> Iterator[Document]:
    """Real documents, deterministic order, ids unique. `limit` caps the count."""
    seen: set[str] = set()
    count = 0
    for doc in _stdlib_docs_and_packages():
        if doc.id in seen:
            continue
        seen.add(doc.id)
        yield doc
        count += 1
        if limit is not None and count >= limit:
            return


def _stdlib_docs_and_packages() -> Iterator[Document]:
    yield from _stdlib_docs()
    yield from _package_docs()


def shuffle_words(doc: Document, fraction: float) -> Document:
    """A damaged copy for sanity checks (`anvil ladder`): with probability `fraction`, decided by a
    hash of the id, the document's words (whitespace-separated) are shuffled; deterministic."""
    h = int.from_bytes(hashlib.blake2b(doc.id.encode(), digest_size=8).digest(), "big")
    if h / 2.0**64 >= fraction:
        return doc
    import random

    words = doc.text.split()
    random.Random(h).shuffle(words)
    return Document(doc.id, " ".join(words), {**doc.metadata, "shuffled_words": True}, doc.source, doc.offset)


def write_sample_corpus(
    output: str | Path, limit: int | None = None, shard_docs: int = 2000, shuffle_fraction: float = 0.0
) -> dict:
    """Write the sample corpus as JSONL shards (`sample-00000.jsonl`, ...); return counts.
    `shuffle_fraction` > 0 writes a damaged copy (see `shuffle_words`)."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    docs = chars = shard = 0
    handle = None
    digest = hashlib.sha256()
    for doc in iter_sample_documents(limit):
        if shuffle_fraction > 0:
            doc = shuffle_words(doc, shuffle_fraction)
        if handle is None or docs % shard_docs == 0:
            if handle:
                handle.close()
            handle = open(out / f"sample-{shard:05d}.jsonl", "w", encoding="utf-8")
            shard += 1
        line = json.dumps(doc.to_json(), ensure_ascii=False)
        handle.write(line + "\n")
        digest.update(line.encode())
        docs += 1
        chars += len(doc.text)
    if handle:
        handle.close()
    return {"documents": docs, "characters": chars, "shards": shard, "sha256": digest.hexdigest()[:16]}
