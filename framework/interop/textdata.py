"""Text documents for fine-tuning and evaluation: read JSON Lines, tokenize, pack into blocks.

The framework never imports curation code, so this is the small reader the fine-tuner and the
perplexity scorer share: `.jsonl`, `.jsonl.gz` and `.jsonl.zst` files (or folders of them), one
`{"id": ..., "text": ...}` per line. Unreadable lines are skipped and counted, never fatal.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json")


@dataclass
class ReadStats:
    docs: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def list_files(paths: list[str] | str) -> list[Path]:
    files: list[Path] = []
    for p in [paths] if isinstance(paths, str) else paths:
        path = Path(p)
        if path.is_dir():
            files.extend(sorted(f for f in path.rglob("*") if f.is_file() and f.name.endswith(SUFFIXES)))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    if not files:
        raise FileNotFoundError(f"{paths}: no .jsonl / .jsonl.gz / .jsonl.zst files found")
    return files


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    if path.name.endswith(".zst"):
        import zstandard

        return io.TextIOWrapper(
            zstandard.ZstdDecompressor().stream_reader(open(path, "rb")), encoding="utf-8", errors="replace"
        )
    return open(path, encoding="utf-8", errors="replace")


def iter_documents(paths: list[str] | str, stats: ReadStats | None = None) -> Iterator[dict]:
    """Yield `{"id", "text", ...}` records in file order; bad lines are counted in `stats`."""
    stats = stats if stats is not None else ReadStats()
    for path in list_files(paths):
        with _open_text(path) as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    stats.skip("bad_json")
                    continue
                if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                    stats.skip("no_text")
                    continue
                rec.setdefault("id", f"{path.name}:{line_no}")
                stats.docs += 1
                yield rec


def is_held_out(doc_id: str, fraction: float) -> bool:
    """A stable split by id hash: the same document is held out whatever the order or world size."""
    h = int.from_bytes(hashlib.blake2b(str(doc_id).encode(), digest_size=8).digest(), "big")
    return h / 2**64 < fraction


def pack(token_lists: list[list[int]], block: int) -> list[list[int]]:
    """Concatenate documents (each already ending in EOS) and cut full blocks of `block` tokens."""
    flat = [t for toks in token_lists for t in toks]
    return [flat[i : i + block] for i in range(0, len(flat) - block + 1, block)]
