"""File checksums shared by everything that trusts files it wrote earlier: checkpoints
(framework/checkpoint/integrity.py), curation task markers (data_pipeline/executors/integrity.py)
and dedup's resume markers (data_pipeline/dedup/resume.py).

An algorithm is named `FAMILY_BITS`: xxHash's XXH3 (`xxh3_64`, `xxh3_128`; ~10 GB/s) when the
`xxhash` package is importable, else BLAKE2b from the standard library (`blake2b_64`,
`blake2b_128`). Records name their algorithm, so they verify anywhere that can compute it.
"""

from __future__ import annotations

import hashlib
import os

try:
    import xxhash as _xxhash
except ImportError:  # pragma: no cover - the fallback is exercised by tests that force it
    _xxhash = None

BLOCK = 1 << 23  # 8 MiB reads


def default_algorithm(bits: int = 64) -> str:
    return f"xxh3_{bits}" if _xxhash is not None else f"blake2b_{bits}"


def hasher(algo: str):
    """A fresh hash object (`update`, `hexdigest`) for `algo`."""
    family, _, bits = algo.partition("_")
    if family not in ("xxh3", "blake2b") or bits not in ("64", "128"):
        raise ValueError(f"unknown checksum algorithm {algo!r} (expected xxh3_64/128 or blake2b_64/128)")
    if family == "blake2b":
        return hashlib.blake2b(digest_size=int(bits) // 8)
    if _xxhash is None:
        raise RuntimeError(f"this record uses {algo} checksums; `pip install xxhash` to verify it")
    return _xxhash.xxh3_64() if bits == "64" else _xxhash.xxh3_128()


def file_record(path: str | os.PathLike, algo: str | None = None) -> dict:
    """`{"size": bytes, ALGO: hex}` of a file, read in blocks."""
    algo = algo or default_algorithm()
    h, size = hasher(algo), 0
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
            size += len(block)
    return {"size": size, algo: h.hexdigest()}
