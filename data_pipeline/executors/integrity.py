"""Size + checksum records of the files a task produced, and their verification.

A finished task is trusted only as far as its files still match what it wrote: the marker records
`{relative path: {"size": N, ALGO: hex}}` for each file, and a rerun (or `anvil data verify`)
re-reads them. A file that is missing, shorter or longer than recorded, or whose checksum differs
(a bit flip, an overwrite) makes the task count as not done. Checksums come from
`framework.checksums` (XXH3-64, or BLAKE2b-64 without the xxhash package; each record names its
algorithm).

    files = record_files([path, ...], root)      # -> {"part-00000.jsonl.zst": {"size": .., "xxh3_64": ..}}
    problem = check_files(files, root)           # None, or "part-00000.jsonl.zst: truncated (...)"
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from framework.checksums import default_algorithm, file_record


def checksum(path: str | os.PathLike, algo: str | None = None) -> str:
    algo = algo or default_algorithm()
    return file_record(path, algo)[algo]


def walk_files(paths: Iterable[Path]) -> list[Path]:
    """The regular files among `paths`, folders expanded recursively, sorted."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out += [f for f in p.rglob("*") if f.is_file()]
        elif p.is_file():
            out.append(p)
    return sorted(out)


def record_files(paths: Iterable[Path], root: Path) -> dict:
    """{path relative to root: {"size", ALGO}} for every file in `paths` (folders recursively)."""
    root = Path(root)
    return {f.relative_to(root).as_posix(): file_record(f) for f in walk_files(paths)}


def check_file(rel: str, rec: dict, root: Path) -> str | None:
    """None when `root/rel` matches its record, else one line saying how it does not."""
    path = Path(root) / rel
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return f"{path}: missing"
    if size != rec["size"]:
        what = "truncated" if size < rec["size"] else "longer than written"
        return f"{path}: {what} ({size} bytes, {rec['size']} recorded)"
    algo = next((k for k in rec if k != "size"), None)
    if algo is None:
        return None
    if checksum(path, algo) != rec[algo]:
        return f"{path}: changed (size as recorded but the {algo} checksum differs)"
    return None


def check_files(files: dict, root: Path, only=None) -> str | None:
    """The first problem among the recorded `files` (those accepted by `only(rel)`), or None."""
    for rel in sorted(files):
        if only is not None and not only(rel):
            continue
        problem = check_file(rel, files[rel], root)
        if problem:
            return problem
    return None
