"""Deciding LSH candidate pairs: exact Jaccard of their shingle sets (the default), or the estimate.

LSH bands only propose pairs; a pair of documents is a near-duplicate when the Jaccard similarity
of their word n-gram sets is >= the threshold. With 128 permutations the MinHash estimate has a
standard deviation of about 0.035 at J = 0.8, so deciding on it loses pairs just above the
threshold and keeps some just below; the exact decision needs every document's set of shingle
hashes. The scan keeps them (index.scan_texts: each document's sorted unique uint64 hashes,
appended to the store's `shingles.u64`, 8 bytes per distinct shingle, on disk), and the reduce's
verify phase (reduce.verify_pairs) hands this module each distinct candidate pair once, in chunks
sized by the memory budget.

A chunk is decided without a Python loop over pairs:
1. Size bound: J <= min(|A|, |B|) / max(|A|, |B|), so pairs whose sizes differ too much (e.g. a
   page and a short truncation of it) are rejected before anything is read.
2. The remaining pairs' sets are read with a few coalesced `pread`s (not a memory map, whose
   fault-around would put most of the file into this process's RSS).
3. `intersection_sizes`: pairs are grouped by their first document (the "center"; a bucket's
   candidates are stars around its first document). Every center's hashes become keys
   `center_id << s | hash >> b`, already sorted because each set is sorted and centers ascend, so
   one `np.searchsorted` finds every other document's hash in its own center's set. The key
   drops the hash's low bits; the full hash is compared at the position found and, where several
   hashes of one set share the truncated key (rare), the run is walked - the count is exact.

`exact_pairs_reference` is the same decision with Python sets, for tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from data_pipeline.dedup.minhash import jaccard_estimate

U64 = np.uint64
_GAP = 1 << 18  # byte gap up to which neighbouring sets are read with one pread
_BLOCK = 1 << 14  # center hashes searched at once (128 KB of keys: L2-sized)


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Flat indices of the ranges [starts[i], starts[i] + lengths[i]) laid end to end."""
    lengths = lengths.astype(np.int64, copy=False)
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, np.int64)
    before = np.cumsum(lengths) - lengths
    return np.arange(total, dtype=np.int64) + np.repeat(starts.astype(np.int64) - before, lengths)


def intersection_sizes(
    flat: np.ndarray, off: np.ndarray, a: np.ndarray, c: np.ndarray, block: int = _BLOCK
) -> np.ndarray:
    """|S[a[i]] & S[c[i]]| for every pair, where set k is `flat[off[k]:off[k + 1]]`, sorted and
    without repeats (uint64). Vectorised (module docstring, step 3) over groups of pairs whose
    centers hold about `block` hashes together, so the searched keys stay in the CPU cache."""
    a, c = np.asarray(a, dtype=np.int64), np.asarray(c, dtype=np.int64)
    out = np.zeros(len(a), np.int64)
    if not len(a):
        return out
    order = np.argsort(a, kind="stable")
    a_s, c_s = a[order], c[order]
    centers, first = np.unique(a_s, return_index=True)
    clen = off[centers + 1] - off[centers]
    group = (np.cumsum(clen + 1) - clen - 1) // max(1, block)  # a center counts 1 + its hashes
    bounds = np.concatenate([first[np.flatnonzero(np.diff(group, prepend=-1))], [len(a_s)]])
    for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        out[order[s:e]] = _intersections(flat, off, a_s[s:e], c_s[s:e])
    return out


def _intersections(flat: np.ndarray, off: np.ndarray, a: np.ndarray, c: np.ndarray) -> np.ndarray:
    n = len(a)
    if n == 0:
        return np.zeros(0, np.int64)
    flat = flat.astype(U64, copy=False)
    centers, cid = np.unique(a, return_inverse=True)
    bits = max(1, (len(centers) - 1).bit_length())
    if bits > 40:
        raise ValueError(f"intersection_sizes: {len(centers)} centers in one chunk; split the pairs")
    b, s = U64(bits), U64(64 - bits)
    clen = off[centers + 1] - off[centers]
    cfull = flat[_ranges(off[centers], clen)]
    ck = (np.repeat(np.arange(len(centers), dtype=U64), clen) << s) | (cfull >> b)
    qlen = off[c + 1] - off[c]
    qfull = flat[_ranges(off[c], qlen)]
    qpair = np.repeat(np.arange(n, dtype=np.int64), qlen)
    q = (cid.astype(U64)[qpair] << s) | (qfull >> b)
    if len(ck) == 0 or len(q) == 0:
        return np.zeros(n, np.int64)
    pos = np.searchsorted(ck, q)
    np.minimum(pos, len(ck) - 1, out=pos)
    same = ck[pos] == q
    hit = same & (cfull[pos] == qfull)
    todo = np.flatnonzero(same & ~hit)  # the truncated key is shared: walk its run in `ck`
    step = 1
    while len(todo):
        p = pos[todo] + step
        inside = p < len(ck)
        todo, p = todo[inside], p[inside]
        more = ck[p] == q[todo]
        match = more & (cfull[p] == qfull[todo])
        hit[todo[match]] = True
        todo = todo[more & ~match]
        step += 1
    return np.bincount(qpair[hit], minlength=n)


def jaccard_from_sizes(la: np.ndarray, lc: np.ndarray, inter: np.ndarray) -> np.ndarray:
    """inter / |A u B| as float64, 0 where both sets are empty (as minhash.exact_jaccard)."""
    union = la + lc - inter
    out = np.zeros(len(union), dtype=np.float64)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def size_bound_ok(la: np.ndarray, lc: np.ndarray, threshold: float) -> np.ndarray:
    """Pairs whose Jaccard can reach `threshold` given the set sizes alone (J <= min/max). The
    float bound is >= the float Jaccard, so no pair the exact test would keep is dropped."""
    hi = np.maximum(la, lc)
    bound = np.zeros(len(hi), dtype=np.float64)
    np.divide(np.minimum(la, lc), hi, out=bound, where=hi > 0)
    return bound >= threshold


class SetReader:
    """Reads documents' shingle sets out of `shingles.u64` files: `files` lists (path, documents)
    in document order, each file holding its documents' sets back to back; `lens` the set sizes."""

    def __init__(self, files: list[tuple[Path, int]], lens: np.ndarray):
        counts = np.array([m for _, m in files], dtype=np.int64)
        if counts.sum() != len(lens):
            raise ValueError(f"shingle sets: {counts.sum()} documents in the files, {len(lens)} expected")
        self.paths = [Path(p) for p, _ in files]
        self.first = np.concatenate([[0], np.cumsum(counts)])  # first document of each file
        off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        self.lens = np.asarray(lens, dtype=np.int64)
        self.start = off[:-1] - np.repeat(off[self.first[:-1]], counts)  # in hashes, within its file

    def read(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(flat, local_off) of ascending unique `docs`: set i is flat[local_off[i]:local_off[i + 1]]."""
        local = np.concatenate([[0], np.cumsum(self.lens[docs])]).astype(np.int64)
        out = np.empty(int(local[-1]), dtype=U64)
        if not len(out):
            return out, local
        which = np.searchsorted(self.first, docs, side="right") - 1
        cuts = np.flatnonzero(np.diff(which)) + 1
        for s, e in zip(np.concatenate([[0], cuts]).tolist(), np.concatenate([cuts, [len(docs)]]).tolist()):
            self._read_file(self.paths[int(which[s])], docs[s:e], out[local[s] : local[e]])
        return out, local

    def _read_file(self, path: Path, docs: np.ndarray, out: np.ndarray) -> None:
        """Coalesced preads: neighbouring sets (gaps up to _GAP bytes) come in one read."""
        lo, lens = self.start[docs] * 8, self.lens[docs]
        hi = lo + lens * 8
        local = np.concatenate([[0], np.cumsum(lens)])
        breaks = np.flatnonzero(lo[1:] - hi[:-1] > _GAP) + 1
        starts, ends = np.concatenate([[0], breaks]), np.concatenate([breaks, [len(docs)]])
        fd = os.open(path, os.O_RDONLY)
        try:
            for s, e in zip(starts.tolist(), ends.tolist()):
                first, last = int(lo[s]), int(hi[e - 1])
                raw = os.pread(fd, last - first, first)
                if len(raw) != last - first:
                    raise ValueError(f"{path}: {len(raw)} bytes at offset {first}, {last - first} expected")
                block = np.frombuffer(raw, dtype="<u8")
                out[local[s] : local[e]] = block[_ranges((lo[s:e] - first) // 8, lens[s:e])]
        finally:
            os.close(fd)


class PairVerifier:
    """Decides chunks of distinct candidate pairs (a < c): exact Jaccard from the store's shingle
    sets when `cfg.exact_verify`, else the fraction of equal signature values."""

    def __init__(self, store, cfg, set_lens: np.ndarray | None = None, set_files: list | None = None):
        """`set_files`: (shingles.u64 file, documents) in document order (default: the store's)."""
        self.store, self.cfg = store, cfg
        self.exact = cfg.exact_verify
        if self.exact:
            self.lens = set_lens.astype(np.int64)
            self.sets = SetReader(set_files or [(store.path / "shingles.u64", len(self.lens))], self.lens)

    def costs(self, a: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Memory units of each pair (hashes touched, or 1 per pair for signatures)."""
        if self.exact:
            return self.lens[a] + self.lens[c] + 1
        return np.ones(len(a), dtype=np.int64)

    def chunk_limit(self, budget: int) -> int:
        """Units per chunk: the kernel keeps ~48 bytes per hash (keys, positions, flags); a
        signature chunk 2 rows of num_perm values per pair, read next to their file pages."""
        if self.exact:
            return max(1 << 14, budget // 256)
        return max(256, budget // (8 * 2 * 8 * self.cfg.num_perm))

    def __call__(self, a: np.ndarray, c: np.ndarray) -> np.ndarray:
        if not len(a):
            return np.zeros(0, dtype=bool)
        if not self.exact:
            rows, inv = np.unique(np.concatenate([a, c]), return_inverse=True)
            got = self.store.signature_rows(rows)
            return jaccard_estimate(got[inv[: len(a)]], got[inv[len(a) :]]) >= self.cfg.threshold
        t = self.cfg.threshold
        la, lc = self.lens[a], self.lens[c]
        ok = size_bound_ok(la, lc, t)
        idx = np.flatnonzero(ok)
        if len(idx):
            docs, inv = np.unique(np.concatenate([a[idx], c[idx]]), return_inverse=True)
            flat, off = self.sets.read(docs)
            inter = intersection_sizes(flat, off, inv[: len(idx)], inv[len(idx) :])
            ok[idx] = jaccard_from_sizes(la[idx], lc[idx], inter) >= t
        return ok


def exact_pairs_reference(sets: list, pairs, threshold: float) -> list[bool]:
    """The decision with Python sets: |A & B| / |A | B| >= threshold (0 for two empty sets)."""
    out = []
    for x, y in pairs:
        A, B = set(sets[x]), set(sets[y])
        union = len(A | B)
        out.append(union > 0 and len(A & B) / union >= threshold)
    return out
