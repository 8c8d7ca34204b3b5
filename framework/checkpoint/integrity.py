"""Checksums of checkpoint files: computed while the files are written, verified before a resume.

A checkpoint is trusted only as far as its bytes still match what training wrote: a bit flipped
on a disk or in a copy, or a file cut short by a full disk or an interrupted `rsync`, must not be
resumed from silently. Every file of a checkpoint gets a record `{"size": N, ALGO: hex}` in
`anvil.json` (`integrity.files`, keyed by the path inside the checkpoint folder), and `anvil.json`
itself carries a checksum of its own canonical JSON (`integrity.metadata`).

The checksum is xxHash's XXH3-64 when the `xxhash` package is importable (about 10 GB/s on one
core, so verifying costs about one sequential read of the checkpoint), else BLAKE2b-64 from the
standard library (about 0.4 GB/s). Each record names its algorithm, so a checkpoint verifies
wherever that algorithm is available. Shards are hashed while they are streamed to disk
(`HashingWriter`), so saving reads nothing back.

    rec = file_record(path)                   # {"size": 123, "xxh3_64": "9f3c..."}
    problem = check_file(path, rec)           # None, or "PATH: 100 bytes, 123 recorded (truncated ...)"
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from framework.checksums import default_algorithm as algorithm
from framework.checksums import file_record, hasher

ALGORITHMS = ("xxh3_64", "blake2b_64")  # what checkpoint records use


class HashingWriter:
    """A binary file opened for writing that hashes and counts what goes through `write`."""

    def __init__(self, f, algo: str | None = None):
        self.f, self.algo = f, algo or algorithm()
        self._h, self.size = hasher(self.algo), 0

    def write(self, data) -> int:
        view = memoryview(data)
        self._h.update(view)
        self.size += view.nbytes
        return self.f.write(view)

    def __getattr__(self, name):  # flush, fileno, ... of the underlying file
        return getattr(self.f, name)

    def record(self) -> dict:
        return {"size": self.size, self.algo: self._h.hexdigest()}


def bytes_record(data: bytes, algo: str | None = None) -> dict:
    algo = algo or algorithm()
    h = hasher(algo)
    h.update(data)
    return {"size": len(data), algo: h.hexdigest()}


def write_bytes(path: str | os.PathLike, data: bytes) -> dict:
    """Write `data` to `path`; return its record."""
    Path(path).write_bytes(data)
    return bytes_record(data)


def _algo_of(rec: dict) -> str:
    algo = next((a for a in ALGORITHMS if a in rec), None)
    if algo is None:
        raise ValueError(f"no known checksum in record {rec} (expected one of {ALGORITHMS})")
    return algo


def check_size(path: Path, rec: dict) -> str | None:
    """None when `path` exists with the recorded size (a stat: no data read)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return f"{path}: missing"
    if size != rec["size"]:
        how = "truncated" if size < rec["size"] else "longer than written"
        return f"{path}: {size} bytes, {rec['size']} recorded ({how})"
    return None


def check_file(path: str | os.PathLike, rec: dict) -> str | None:
    """None when `path` matches its record, else one line naming the file and the mismatch."""
    path = Path(path)
    problem = check_size(path, rec)
    if problem is not None:
        return problem
    algo = _algo_of(rec)
    try:
        got = file_record(path, algo)[algo]
    except (RuntimeError, OSError) as exc:  # RuntimeError: xxhash missing here, the content cannot be checked
        return f"{path}: {exc}"
    if got != rec[algo]:
        return f"{path}: {algo} checksum {got}, {rec[algo]} recorded (the file was changed or corrupted)"
    return None


def _canonical(meta: dict) -> bytes:
    inner = dict(meta.get("integrity") or {})
    inner.pop("metadata", None)
    return json.dumps({**meta, "integrity": inner}, sort_keys=True, separators=(",", ":")).encode()


def seal(meta: dict, files: dict) -> dict:
    """`meta` with `integrity` = the file records and a checksum of the resulting metadata."""
    out = {**meta, "integrity": {"files": dict(sorted(files.items()))}}
    rec = bytes_record(_canonical(out))
    rec.pop("size")
    out["integrity"]["metadata"] = rec
    return out


def check_metadata(meta: dict, where: str) -> str | None:
    """None when `meta` (as read from anvil.json) matches its own recorded checksum."""
    rec = (meta.get("integrity") or {}).get("metadata")
    if not rec:
        return f"{where}: integrity section without a metadata checksum"
    algo = _algo_of(rec)
    try:
        got = bytes_record(_canonical(meta), algo)[algo]
    except RuntimeError as exc:
        return f"{where}: {exc}"
    if got != rec[algo]:
        return f"{where}: {algo} checksum {got}, {rec[algo]} recorded (the metadata was changed or corrupted)"
    return None
