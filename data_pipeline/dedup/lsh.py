"""LSH banding with bounded memory: band keys, sorted runs on disk, a blocked k-way merge, buckets.

Every document contributes one record `(key, doc)` per band, where `key` hashes the band's `r`
MinHash values to 64 bits and `doc` is the document's global index in input order. Records are
buffered up to a memory budget, sorted by (key, doc) and written as *runs* (raw uint64/int64 file pairs); a band's
runs are then merged block by block (`merge_runs`), so no more than the budget is ever in memory,
whatever the corpus size. Buckets are maximal groups of equal keys; `bucket_pairs` turns each into
candidate pairs (first document of the bucket, every other member), a star that only depends on
the bucket's members - never on how records were split into runs - which is why the result is the
same for any worker count and memory budget.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Iterator

import numpy as np

U64 = np.uint64
RECORD_BYTES = 16  # uint64 key + int64 doc index
MIN_BLOCK = 1024  # records read per run and refill during a merge


@functools.lru_cache(maxsize=64)
def optimal_params(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) from datasketch's optimiser (minimises weighted false-positive/negative area).
    Answers are memoised on disk: importing datasketch (scipy.integrate) costs more CPU than a
    small dedup job."""
    import json

    from data_pipeline.dedup.minhash import cache_dir

    key = f"{threshold!r},{num_perm},{fp_weight!r},{fn_weight!r}"
    path = cache_dir() / "lsh-params.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return tuple(known[key])
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(fp_weight, fn_weight))
    known[key] = [lsh.b, lsh.r]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=0))
        tmp.replace(path)
    except OSError:
        pass
    return lsh.b, lsh.r


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64 keys: each band's `rows` values hashed together (FNV-style, then mixed)."""
    n = sig.shape[0]
    view = sig[:, : bands * rows].reshape(n, bands, rows)
    with np.errstate(over="ignore"):
        key = np.full((n, bands), 0xCBF29CE484222325, dtype=U64)
        for j in range(rows):
            key = (key ^ view[:, :, j]) * U64(0x100000001B3)
        key ^= key >> U64(29)
        key *= U64(0xBF58476D1CE4E5B9)
        key ^= key >> U64(32)
    return key


def sort_records(keys: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((docs, keys))
    return keys[order], docs[order]


def write_run(path: Path, keys: np.ndarray, docs: np.ndarray) -> Path:
    """Sort records and write them as one run: raw little-endian `PATH.keys` and `PATH.docs`."""
    keys, docs = sort_records(keys, docs)
    path.parent.mkdir(parents=True, exist_ok=True)
    with RunWriter(path) as w:
        w.append(keys, docs)
    return path


class RunWriter:
    """Appends sorted record blocks to a run file pair (the caller keeps them in order). The files
    are written as `PATH.keys.tmp` / `PATH.docs.tmp` and renamed into place when the `with` block
    ends without an exception, so a run that exists is a whole run."""

    def __init__(self, path: Path):
        self.path = path
        self._k = open(f"{path}.keys.tmp", "wb")
        self._d = open(f"{path}.docs.tmp", "wb")

    def append(self, keys: np.ndarray, docs: np.ndarray) -> None:
        self._k.write(np.ascontiguousarray(keys, dtype="<u8").tobytes())
        self._d.write(np.ascontiguousarray(docs, dtype="<i8").tobytes())

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self._k.close()
        self._d.close()
        for suffix in (".keys", ".docs"):
            tmp = Path(f"{self.path}{suffix}.tmp")
            if exc_type is None:
                tmp.replace(f"{self.path}{suffix}")
            else:
                tmp.unlink(missing_ok=True)


def run_length(path: Path) -> int:
    return Path(f"{path}.keys").stat().st_size // 8


class _RunReader:
    """Sequential block reader of one sorted run (plain reads, so nothing stays mapped)."""

    def __init__(self, path: Path, block: int):
        self.path, self.block, self.pos = path, block, 0
        self.n = run_length(path)

    def read(self, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        count = min(count or self.block, self.n - self.pos)
        keys = np.fromfile(f"{self.path}.keys", dtype="<u8", count=count, offset=8 * self.pos)
        docs = np.fromfile(f"{self.path}.docs", dtype="<i8", count=count, offset=8 * self.pos)
        self.pos += count
        return keys.astype(U64, copy=False), docs.astype(np.int64, copy=False)


def merge_runs(paths: list[Path], budget_bytes: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield the records of sorted runs as sorted (keys, docs) blocks; equal keys never straddle
    two blocks. Holds about `budget_bytes` of records."""
    if not paths:
        return
    block = max(MIN_BLOCK, budget_bytes // (RECORD_BYTES * 2 * len(paths)))
    readers = [_RunReader(p, block) for p in paths]
    heads = [r.read() for r in readers]
    while True:
        live = [i for i, h in enumerate(heads) if len(h[0])]
        if not live:
            return
        # A run's block ending at key K may continue with K: only keys < min(last keys) are final,
        # unless that run is exhausted.
        bound = None
        for i in live:
            if readers[i].pos < readers[i].n:
                last = heads[i][0][-1]
                bound = last if bound is None else min(bound, last)
        if bound is None:  # every run fully read
            keys = np.concatenate([heads[i][0] for i in live])
            docs = np.concatenate([heads[i][1] for i in live])
            heads = [(h[0][:0], h[1][:0]) for h in heads]
            yield sort_records(keys, docs)
            continue
        cut = [int(np.searchsorted(heads[i][0], bound, side="left")) for i in live]
        if sum(cut) == 0:
            # The bucket `bound` fills the whole block of some run: read more of those runs.
            for i in live:
                if readers[i].pos < readers[i].n and heads[i][0][-1] == bound:
                    more = readers[i].read(len(heads[i][0]))
                    heads[i] = (np.concatenate([heads[i][0], more[0]]), np.concatenate([heads[i][1], more[1]]))
            continue
        keys = np.concatenate([heads[i][0][:c] for i, c in zip(live, cut)])
        docs = np.concatenate([heads[i][1][:c] for i, c in zip(live, cut)])
        for i, c in zip(live, cut):
            rest = (heads[i][0][c:], heads[i][1][c:])
            if len(rest[0]) == 0 and readers[i].pos < readers[i].n:
                rest = readers[i].read()
            heads[i] = rest
        yield sort_records(keys, docs)


def merge_to_run(paths: list[Path], out: Path, budget_bytes: int) -> Path:
    """Merge several runs into one, streaming (used when there are too many runs to merge at once)."""
    with RunWriter(out) as w:
        for keys, docs in merge_runs(paths, budget_bytes):
            w.append(keys, docs)
    return out


def merge_all(paths: list[Path], budget_bytes: int, scratch: Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`merge_runs` with a bounded fan-in: while there are more runs than the budget can hold one
    block of each, merge them in groups first (multi-pass external merge)."""
    fan_in = max(2, budget_bytes // (RECORD_BYTES * 2 * MIN_BLOCK))
    level = 0
    while len(paths) > fan_in:
        merged = []
        for g in range(0, len(paths), fan_in):
            group = paths[g : g + fan_in]
            if len(group) == 1:
                merged.append(group[0])
                continue
            merged.append(merge_to_run(group, scratch / f"merge{level}-{g // fan_in}", budget_bytes))
            remove_runs([p for p in group if p.name.startswith("merge")])  # intermediates only
        paths, level = merged, level + 1
    yield from merge_runs(paths, budget_bytes)
    remove_runs([p for p in paths if p.name.startswith("merge")])


def bucket_pairs(keys: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs of sorted records: (first doc of the bucket, other member) per bucket."""
    if len(keys) < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    group = np.repeat(np.arange(len(starts)), np.diff(np.concatenate([starts, [len(keys)]])))
    first = docs[starts][group]
    member = np.ones(len(keys), dtype=bool)
    member[starts] = False
    return first[member], docs[member]


def remove_runs(paths: list[Path]) -> None:
    for p in paths:
        for suffix in (".keys", ".docs"):
            Path(f"{p}{suffix}").unlink(missing_ok=True)
