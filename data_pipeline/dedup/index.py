"""The on-disk dedup index: per-shard scans, and the reduce that turns them into clusters.

Two phases, shared by `anvil data dedup` (api.py) and the `minhash_dedup` pipeline stage (step.py):

* `scan_shard(docs, shard_dir, cfg)`: signatures, band keys and id hashes of one shard of documents
  (pure function of the shard; runs in parallel workers).
* `reduce(store, shard_dirs, cfg)`: appends the shards, in order, to a *store* folder and decides
  every document's representative. Band records go through sorted runs and a blocked merge
  (lsh.py) bounded by the memory budget; candidate pairs are verified against the full signatures
  (or exactly on shingles), then unioned (clusters.py).

A store holds everything needed to add later batches: signatures, band runs (already merged), ids,
the cluster partition. A one-shot run is a reduce into an empty store; `--incremental-store` keeps
the store, and a new batch reduced into it gives exactly the clusters of a one-shot run on the
union (old documents come first in input order; pairs between two old documents were verified
before and are skipped).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from data_pipeline.dedup import lsh
from data_pipeline.dedup.clusters import UnionFind, cluster_sizes, parse_keep, representatives
from data_pipeline.dedup.minhash import MinHasher, exact_jaccard, jaccard_estimate
from data_pipeline.document import Document
from framework.runtime import progress

U64 = np.uint64


@dataclass
class DedupConfig:
    threshold: float = 0.8
    num_perm: int = 128
    ngram: int = 5
    seed: int = 1
    # Weights of datasketch's (bands, rows) optimiser. Candidates are verified, so false positives
    # only cost a check: the default favours recall (16x8: 95% of pairs at J=0.8 become candidates,
    # against 40% for datasketch's default 9x13).
    fp_weight: float = 0.05
    fn_weight: float = 0.95
    keep: str = "first"             # first | longest | field:NAME
    exact_verify: bool = False      # verify candidates on exact shingle Jaccard
    dedupe_ids: bool = False        # drop later documents with a repeated id instead of failing
    memory_budget: str = "1GB"
    workers: int = 1
    shard_docs: int = 1024          # documents per scan shard (standalone command)
    bands: int = 0                  # 0: bands x rows from datasketch's optimiser
    rows: int = 0

    def check(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.num_perm < 2 or self.ngram < 1 or self.workers < 1 or self.shard_docs < 1:
            raise ValueError("num_perm >= 2, ngram >= 1, workers >= 1 and shard_docs >= 1 are required")
        if (self.bands or self.rows) and (self.bands < 1 or self.rows < 1 or self.bands * self.rows > self.num_perm):
            raise ValueError(f"bands x rows must be positive and fit in num_perm={self.num_perm}, "
                             f"got {self.bands}x{self.rows}")
        parse_keep(self.keep)
        parse_size(self.memory_budget)

    @property
    def params(self) -> tuple[int, int]:
        if self.bands and self.rows:
            return self.bands, self.rows
        return lsh.optimal_params(self.threshold, self.num_perm, self.fp_weight, self.fn_weight)

    def resolved(self) -> "DedupConfig":
        """A copy with bands x rows filled in (workers then never import datasketch/scipy)."""
        b, r = self.params
        return dataclasses.replace(self, bands=b, rows=r)

    def identity(self) -> dict:
        """Settings a store was built with; a later batch must use the same."""
        b, r = self.params
        return {"num_perm": self.num_perm, "ngram": self.ngram, "seed": self.seed, "bands": b, "rows": r,
                "threshold": self.threshold, "exact_verify": self.exact_verify, "keep": self.keep}


class DuplicateIdError(ValueError):
    pass


def parse_size(text: str | int) -> int:
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*", str(text).lower())
    if not m:
        raise ValueError(f"memory budget: expected a size like 512MB or 2GB, got {text!r}")
    unit = (m.group(2) or "b").rstrip("b").rstrip("i")
    value = int(float(m.group(1)) * 1024 ** " kmgt".index(unit or " "))
    if value < 1 << 16:
        raise ValueError(f"memory budget: at least 64KB, got {text!r}")
    return value


def id_hash(doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def where(doc: Document) -> str:
    kind = "line" if ".jsonl" in doc.source else "offset"
    return f"{doc.source} {kind} {doc.offset}"


def field_value(doc: Document, name: str | None) -> float:
    if name is None:
        return float("nan")
    try:
        return float(doc.metadata.get(name))
    except (TypeError, ValueError):
        return float("nan")


# ---------------------------------------------------------------------------------------- scan
def write_shard_meta(shard_dir: Path, docs: Sequence[Document], cfg: DedupConfig) -> None:
    """Ids, provenance, lengths and keep-rule values of a shard (cheap; the reader's process)."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    _, field = parse_keep(cfg.keep)
    with open(shard_dir / "ids.jsonl", "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps([d.id, where(d)], ensure_ascii=False) + "\n")
    np.savez(shard_dir / "meta.npz",
             length=np.array([len(d.text) for d in docs], dtype=np.int64),
             field=np.array([field_value(d, field) for d in docs], dtype=np.float64),
             idhash=np.array([id_hash(d.id) for d in docs], dtype=U64))


def scan_texts(texts: Sequence[str], shard_dir: Path, cfg: DedupConfig) -> int:
    """Signatures and band keys of a shard (the expensive part; runs in workers)."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    hasher = MinHasher(cfg.num_perm, cfg.ngram, cfg.seed)
    flat, counts = hasher.hash_batch(texts)
    sig = hasher.signatures_from_flat(flat, counts)
    b, r = cfg.params
    sig.astype("<u8").tofile(shard_dir / "sig.u64")
    lsh.band_keys(sig, b, r).astype("<u8").tofile(shard_dir / "bands.u64")
    if cfg.exact_verify:
        uniq = [np.unique(h) for h in np.split(flat, np.cumsum(counts)[:-1])] if len(texts) else []
        np.concatenate(uniq or [np.empty(0, U64)]).astype("<u8").tofile(shard_dir / "shingles.u64")
        np.save(shard_dir / "shingles.len.npy", np.array([len(u) for u in uniq], dtype=np.int64))
    empty = int((counts == 0).sum())
    (shard_dir / "scan.json").write_text(json.dumps({"docs": len(texts), "no_words": empty}))
    return len(texts)


def scan_shard(docs: Sequence[Document], shard_dir: Path, cfg: DedupConfig) -> int:
    write_shard_meta(shard_dir, docs, cfg)
    return scan_texts([d.text for d in docs], shard_dir, cfg)


# --------------------------------------------------------------------------------------- store
class Store:
    """A folder of appendable arrays describing every document deduplicated so far."""

    def __init__(self, path: Path, cfg: DedupConfig):
        self.path, self.cfg = Path(path), cfg
        self.path.mkdir(parents=True, exist_ok=True)
        state_file = self.path / "state.json"
        if state_file.exists():
            state = json.loads(state_file.read_text())
            if state["identity"] != cfg.identity():
                diff = {k: (state["identity"].get(k), v) for k, v in cfg.identity().items()
                        if state["identity"].get(k) != v}
                raise ValueError(f"{self.path}: incremental store was built with other settings "
                                 f"(stored, requested): {diff}")
            self.n, self.batches = state["n"], state["batches"]
        else:
            self.n, self.batches = 0, 0

    def load(self, name: str, dtype, default_len: int = 0) -> np.ndarray:
        f = self.path / f"{name}.npy"
        return np.load(f) if f.exists() else np.zeros(default_len, dtype=dtype)

    def save(self, name: str, arr: np.ndarray) -> None:
        np.save(self.path / f"{name}.npy", arr)

    def signature_rows(self, rows: np.ndarray) -> np.ndarray:
        """Signatures of ascending unique `rows`, read with pread over coalesced ranges. Not a memory
        map: the kernel maps the neighbours of every touched page (fault-around), which would put
        most of the file into this process's RSS."""
        width = self.cfg.num_perm
        out = np.empty((len(rows), width), dtype=U64)
        if not len(rows):
            return out
        breaks = np.flatnonzero(np.diff(rows) > 8) + 1
        starts, ends = np.concatenate([[0], breaks]), np.concatenate([breaks, [len(rows)]])
        fd = os.open(self.path / "signatures.u64", os.O_RDONLY)
        try:
            for s, e in zip(starts.tolist(), ends.tolist()):
                lo, hi = int(rows[s]), int(rows[e - 1]) + 1
                block = np.frombuffer(os.pread(fd, (hi - lo) * 8 * width, lo * 8 * width), dtype="<u8")
                out[s:e] = block.reshape(hi - lo, width)[rows[s:e] - lo]
        finally:
            os.close(fd)
        return out

    def ids(self, docs: Iterable[int]) -> dict[int, tuple[str, str]]:
        """{doc: (id, where)} read from ids.jsonl through the offsets index."""
        offsets = np.load(self.path / "ids.off.npy", mmap_mode="r")
        out = {}
        with open(self.path / "ids.jsonl", "rb") as f:
            for d in sorted(set(int(x) for x in docs)):
                f.seek(int(offsets[d]))
                out[d] = tuple(json.loads(f.readline()))
        return out

    def commit(self) -> None:
        state = {"n": self.n, "batches": self.batches, "identity": self.cfg.identity()}
        tmp = self.path / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.path / "state.json")


def _append_file(dst: Path, src: Path) -> None:
    with open(dst, "ab") as out, open(src, "rb") as inp:
        while chunk := inp.read(1 << 22):
            out.write(chunk)


# -------------------------------------------------------------------------------------- reduce
class _Verifier:
    """Checks candidate pairs in chunks and unions the ones that pass."""

    def __init__(self, store: Store, uf: UnionFind, cfg: DedupConfig, budget: int, stats: dict):
        self.store, self.uf, self.cfg, self.stats = store, uf, cfg, stats
        # a chunk gathers at most 2 signature rows per pair, copied out of the memory map: 1/8 of
        # the budget for the copies and 1/8 for the mapped pages they come from
        self.chunk = max(256, budget // (8 * 2 * 8 * cfg.num_perm))
        self.a: list[np.ndarray] = []
        self.b: list[np.ndarray] = []
        self.pending = 0
        if cfg.exact_verify:
            lens = store.load("shingles.len", np.int64)
            self.sh_off = np.concatenate([[0], np.cumsum(lens)])

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        if len(a):
            self.a.append(a)
            self.b.append(b)
            self.pending += len(a)
            if self.pending >= self.chunk:
                self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        a, b = np.concatenate(self.a), np.concatenate(self.b)
        self.a, self.b, self.pending = [], [], 0
        self.stats["candidate_pairs"] += len(a)
        if self.cfg.exact_verify:
            ok = self._exact(a, b)
        else:
            rows, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
            got = self.store.signature_rows(rows)
            ok = jaccard_estimate(got[inv[: len(a)]], got[inv[len(a):]]) >= self.cfg.threshold
        self.stats["verified_pairs"] += int(ok.sum())
        self.uf.union_pairs(a[ok], b[ok])

    def _exact(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        off = self.sh_off
        fd = os.open(self.store.path / "shingles.u64", os.O_RDONLY)

        def read(x: int) -> np.ndarray:
            return np.frombuffer(os.pread(fd, int(off[x + 1] - off[x]) * 8, int(off[x]) * 8), dtype="<u8")

        try:
            return np.array([exact_jaccard(read(x), read(y)) >= self.cfg.threshold
                             for x, y in zip(a.tolist(), b.tolist())], dtype=bool)
        finally:
            os.close(fd)


def _merge_band(store: Store, name: str, new_runs: list[Path], budget: int, scratch: Path):
    """Merge the store's run `name` with the new runs; write the merged run back; yield blocks."""
    old = store.path / name
    runs = ([old] if Path(f"{old}.keys").exists() else []) + new_runs
    merged = scratch / f"{name}.merged"
    with lsh.RunWriter(merged) as w:
        for keys, docs in lsh.merge_all(runs, budget, scratch):
            w.append(keys, docs)
            yield keys, docs
    for suffix in (".keys", ".docs"):
        Path(f"{merged}{suffix}").replace(f"{old}{suffix}")
    lsh.remove_runs(new_runs)


def reduce(store_dir: Path, shard_dirs: Sequence[Path], cfg: DedupConfig, map_bands=None) -> dict:
    """Add the scanned shards (in order) to the store and cluster; returns the decisions and stats.
    `map_bands(store, band_runs, excluded, n_old, budget)` may do step 3 elsewhere (one Ray task per
    band), yielding each band's verified pairs and counts; the partition does not depend on it."""
    t0 = time.perf_counter()
    budget = parse_size(cfg.memory_budget)
    store = Store(store_dir, cfg)
    b, r = cfg.params
    n_old = store.n
    scratch = store.path / "scratch"
    scratch.mkdir(exist_ok=True)
    stats = {"bands": b, "rows": r, "candidate_pairs": 0, "verified_pairs": 0, "sorted_runs": 0,
             "no_words": 0, "duplicate_ids": 0}

    # 1. append shards to the store; band and id records go to sorted runs within the budget
    counts, length, field, idhash_parts = [], [store.load("length", np.int64)], [store.load("field", np.float64)], []
    band_runs: list[list[Path]] = [[] for _ in range(b)]
    id_runs: list[Path] = []
    buf_keys: list[np.ndarray] = []
    buf_docs: list[np.ndarray] = []
    buf_ids: list[tuple[np.ndarray, np.ndarray]] = []
    buffered = 0
    record_budget = max(budget // 3, 1 << 15)     # flushing sorts a copy of the buffer
    ids_off = [np.load(store.path / "ids.off.npy")] if (store.path / "ids.off.npy").exists() else []
    ids_size = (store.path / "ids.jsonl").stat().st_size if (store.path / "ids.jsonl").exists() else 0
    sh_lens = [store.load("shingles.len", np.int64)] if cfg.exact_verify else []

    def flush_records():
        nonlocal buf_keys, buf_docs, buf_ids, buffered
        if not buf_keys:
            return
        keys, docs = np.concatenate(buf_keys), np.concatenate(buf_docs)
        for j in range(b):
            band_runs[j].append(lsh.write_run(scratch / f"band{j}-run{len(band_runs[j])}", keys[:, j], docs))
        ik, idd = np.concatenate([k for k, _ in buf_ids]), np.concatenate([d for _, d in buf_ids])
        id_runs.append(lsh.write_run(scratch / f"ids-run{len(id_runs)}", ik, idd))
        stats["sorted_runs"] += b + 1
        buf_keys, buf_docs, buf_ids, buffered = [], [], [], 0

    n = n_old
    for shard in progress(shard_dirs, total=len(shard_dirs), desc="dedup: index", unit="shard"):
        shard = Path(shard)
        scan = json.loads((shard / "scan.json").read_text())
        m = scan["docs"]
        stats["no_words"] += scan["no_words"]
        meta = np.load(shard / "meta.npz")
        if len(meta["length"]) != m:
            raise ValueError(f"{shard}: scan and metadata disagree ({m} vs {len(meta['length'])} documents)")
        _append_file(store.path / "signatures.u64", shard / "sig.u64")
        raw = np.frombuffer((shard / "ids.jsonl").read_bytes(), dtype=np.uint8)
        line_ends = np.flatnonzero(raw == 10) + 1
        ids_off.append(ids_size + np.concatenate([[0], line_ends])[:m].astype(np.int64))
        ids_size += len(raw)
        _append_file(store.path / "ids.jsonl", shard / "ids.jsonl")
        if cfg.exact_verify:
            _append_file(store.path / "shingles.u64", shard / "shingles.u64")
            sh_lens.append(np.load(shard / "shingles.len.npy"))
        length.append(meta["length"])
        field.append(meta["field"])
        docs = np.arange(n, n + m, dtype=np.int64)
        buf_keys.append(np.fromfile(shard / "bands.u64", dtype="<u8").reshape(m, b))
        buf_docs.append(docs)
        buf_ids.append((meta["idhash"], docs))
        buffered += m * (b + 1) * lsh.RECORD_BYTES
        n += m
        counts.append(m)
        if buffered >= record_budget:
            flush_records()
    flush_records()
    store.n = n
    np.save(store.path / "ids.off.npy", np.concatenate(ids_off) if ids_off else np.zeros(0, np.int64))
    length, field = np.concatenate(length), np.concatenate(field)
    if cfg.exact_verify:
        store.save("shingles.len", np.concatenate(sh_lens))
    merge_budget = max(budget // 4, 1 << 15)

    # 2. duplicate ids: equal id hashes are neighbours in the merged id run
    excluded = np.concatenate([store.load("excluded", bool), np.zeros(n - n_old, dtype=bool)])
    suspects = []
    for keys, docs in _merge_band(store, "idhash", id_runs, merge_budget, scratch):
        a, c = lsh.bucket_pairs(keys, docs)
        new = c >= n_old
        suspects.append(np.stack([a[new], c[new]], axis=1))
    suspects = np.concatenate(suspects) if suspects else np.empty((0, 2), np.int64)
    if len(suspects):
        names = store.ids(suspects.ravel())
        for first, later in suspects.tolist():
            if names[first][0] != names[later][0] or excluded[later]:
                continue
            if not cfg.dedupe_ids:
                raise DuplicateIdError(
                    f"duplicate id {names[later][0]!r}: {names[first][1]} and {names[later][1]} "
                    f"(pass --dedupe-ids to keep the first and drop the others)")
            excluded[later] = True
    stats["duplicate_ids"] = int(excluded[n_old:].sum())

    # 3. bands: merge, bucket, verify, union
    uf = UnionFind(n_old, store.load("root", np.int64))
    uf.grow(n)
    verifier = _Verifier(store, uf, cfg, budget, stats)
    if map_bands is not None:      # executors/ray.py: one task per band; verified pairs unioned here
        for a, c, counts in map_bands(store, band_runs, excluded, n_old, budget):
            uf.union_pairs(a, c)
            for k, v in counts.items():
                stats[k] += v
    else:
        for j in progress(range(b), total=b, desc="dedup: bands", unit="band"):
            for keys, docs in _merge_band(store, f"band{j}", band_runs[j], merge_budget, scratch):
                alive = ~excluded[docs]
                a, c = lsh.bucket_pairs(keys[alive], docs[alive])
                new = c >= n_old           # a < c, so a pair of two old documents has c < n_old
                verifier.add(a[new], c[new])
    verifier.flush()

    # 4. representatives, decisions, what changed for documents of earlier batches
    root = uf.root
    _, name = parse_keep(cfg.keep)
    rep = representatives(root, cfg.keep, length, field)
    old_rep = store.load("rep", np.int64)
    changed = np.flatnonzero(old_rep != rep[:n_old]) if n_old else np.empty(0, np.int64)
    alive = ~excluded
    stats["cluster_sizes"] = cluster_sizes(root, alive)
    store.save("root", root)
    store.save("rep", rep)
    store.save("excluded", excluded)
    store.save("length", length)
    store.save("field", field)
    store.batches += 1
    store.commit()
    for p in scratch.iterdir():
        p.unlink()
    scratch.rmdir()
    stats["reduce_s"] = round(time.perf_counter() - t0, 3)
    return {"n_old": n_old, "n": n, "rep": rep, "excluded": excluded, "changed_old": changed,
            "stats": stats, "store": store}
