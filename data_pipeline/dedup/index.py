"""The on-disk dedup index: settings, per-shard scans, and the store that later batches extend.

Shared by `anvil data dedup` (api.py) and the `minhash_dedup` pipeline stage (step.py):

* `scan_shard(docs, shard_dir, cfg)`: signatures, band keys and id hashes of one shard of documents,
  and (exact verification, the default) each document's sorted unique shingle hashes
  (`shingles.u64`, 8 bytes per distinct n-gram, with their counts) - a pure function of the shard;
  runs in parallel workers.
* `Store`: signatures, shingle sets, band runs (already merged), ids and the cluster partition of
  every document deduplicated so far, changed only by an atomic commit (so an interrupted batch
  never damages it).
* reduce.py turns scanned shards into clusters, adding them to a store.

A one-shot run is a reduce into an empty store; `--incremental-store` keeps the store, and a new
batch reduced into it gives exactly the clusters of a one-shot run on the union (old documents
come first in input order; pairs between two old documents were verified before and are skipped).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from data_pipeline.dedup import lsh
from data_pipeline.dedup.clusters import parse_keep
from data_pipeline.dedup.minhash import MinHasher
from data_pipeline.dedup.resume import atomic, fault, write_json
from data_pipeline.document import Document

U64 = np.uint64


@dataclass
class MinhashSettings:
    """The MinHash LSH algorithm's settings: one object shared by `anvil data dedup` (DedupConfig
    adds how the standalone command runs) and the `minhash_dedup` recipe step (its Params)."""

    threshold: float = 0.8  # Jaccard similarity of word n-gram sets above which documents are duplicates
    num_perm: int = 128  # MinHash permutations per signature
    ngram: int = 5  # words per shingle
    seed: int = 1  # permutation seed (signatures are comparable only with the same seed)
    # Weights of datasketch's (bands, rows) optimiser. Candidates are verified, so false positives
    # only cost a check: the default favours recall (16x8: 95% of pairs at J=0.8 become candidates,
    # against 40% for datasketch's default 9x13).
    fp_weight: float = 0.05  # weight of false positives in the (bands, rows) choice
    fn_weight: float = 0.95  # weight of false negatives in the (bands, rows) choice
    keep: str = "first"  # first | longest | field:NAME
    exact_verify: bool = True  # decide candidates on exact n-gram Jaccard (sets kept on disk); false: MinHash estimate
    dedupe_ids: bool = False  # drop later documents with a repeated id instead of failing
    memory_budget: str = "1GB"  # the reduce's external sort stays within this
    bands: int = 0  # 0: bands x rows from datasketch's optimiser
    rows: int = 0  # rows per band (with bands)

    def check(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.num_perm < 2 or self.ngram < 1:
            raise ValueError("num_perm >= 2 and ngram >= 1 are required")
        if (self.bands or self.rows) and (self.bands < 1 or self.rows < 1 or self.bands * self.rows > self.num_perm):
            raise ValueError(
                f"bands x rows must be positive and fit in num_perm={self.num_perm}, got {self.bands}x{self.rows}"
            )
        parse_keep(self.keep)
        parse_size(self.memory_budget)


@dataclass
class DedupConfig(MinhashSettings):
    """`anvil data dedup`: the algorithm's settings plus how the standalone command runs."""

    workers: int = 1  # scan processes
    shard_docs: int = 1024  # documents per scan shard (standalone command)

    def check(self) -> None:
        super().check()
        if self.workers < 1 or self.shard_docs < 1:
            raise ValueError("workers >= 1 and shard_docs >= 1 are required")

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
        return {
            "num_perm": self.num_perm,
            "ngram": self.ngram,
            "seed": self.seed,
            "bands": b,
            "rows": r,
            "threshold": self.threshold,
            "exact_verify": self.exact_verify,
            "keep": self.keep,
        }


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
def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr)


def write_shard_meta(shard_dir: Path, docs: Sequence[Document], cfg: DedupConfig) -> None:
    """Ids, provenance, lengths and keep-rule values of a shard (cheap; the reader's process)."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    _, field = parse_keep(cfg.keep)
    with atomic(shard_dir / "ids.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps([d.id, where(d)], ensure_ascii=False) + "\n")
    with atomic(shard_dir / "meta.npz") as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            length=np.array([len(d.text) for d in docs], dtype=np.int64),
            field=np.array([field_value(d, field) for d in docs], dtype=np.float64),
            idhash=np.array([id_hash(d.id) for d in docs], dtype=U64),
        )


def sorted_sets(flat: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each document's hashes sorted, repeats dropped: (flat, count per document)."""
    if not len(flat):
        return flat, counts
    parts = [np.sort(h) for h in np.split(flat, np.cumsum(counts)[:-1])]
    out = np.concatenate(parts)
    first = np.ones(len(out), dtype=bool)
    first[1:] = out[1:] != out[:-1]
    starts = np.cumsum(counts) - counts
    first[starts[counts > 0]] = True  # a document's first hash, whatever the previous one ends with
    doc = np.repeat(np.arange(len(counts)), counts)
    return out[first], np.bincount(doc[first], minlength=len(counts)).astype(counts.dtype)


def scan_texts(texts: Sequence[str], shard_dir: Path, cfg: DedupConfig) -> int:
    """Signatures and band keys of a shard (the expensive part; runs in workers)."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    hasher = MinHasher(cfg.num_perm, cfg.ngram, cfg.seed)
    flat, counts = hasher.hash_batch(texts)
    if cfg.exact_verify:  # the sets verify.py intersects; the signature of a set is that of its list
        flat, counts = sorted_sets(flat, counts)
        with atomic(shard_dir / "shingles.u64") as tmp:
            flat.astype("<u8").tofile(tmp)
        _save_npy(shard_dir / "shingles.len.npy", counts.astype(np.int64))
    sig = hasher.signatures_from_flat(flat, counts)
    b, r = cfg.params
    with atomic(shard_dir / "sig.u64") as tmp:
        sig.astype("<u8").tofile(tmp)
    with atomic(shard_dir / "bands.u64") as tmp:
        lsh.band_keys(sig, b, r).astype("<u8").tofile(tmp)
    empty = int((counts == 0).sum())
    write_json(shard_dir / "scan.json", {"docs": len(texts), "no_words": empty})
    return len(texts)


def scan_shard(docs: Sequence[Document], shard_dir: Path, cfg: DedupConfig) -> int:
    write_shard_meta(shard_dir, docs, cfg)
    return scan_texts([d.text for d in docs], shard_dir, cfg)


# --------------------------------------------------------------------------------------- store
APPENDED = ("signatures.u64", "ids.jsonl", "shingles.u64")  # grown in place by each batch


class Store:
    """A folder of appendable arrays describing every document deduplicated so far.

    A batch changes a store in two ways: it appends to the APPENDED files (state.json records their
    committed sizes, so a batch that died half-way is cut off by `truncate`), and it stages every
    other new file in `pending/`, then commits: `pending/commit.json` lists the files to move and
    the new state (the commit point), the files are renamed into place, state.json is written last.
    Opening a store whose commit was interrupted finishes it (roll forward)."""

    def __init__(self, path: Path, cfg: DedupConfig):
        self.path, self.cfg = Path(path), cfg
        self.path.mkdir(parents=True, exist_ok=True)
        self.pending = self.path / "pending"
        if (self.pending / "commit.json").exists():
            self._apply(json.loads((self.pending / "commit.json").read_text()))
        state_file = self.path / "state.json"
        if state_file.exists():
            state = json.loads(state_file.read_text())
            if state["identity"] != cfg.identity():
                diff = {
                    k: (state["identity"].get(k), v) for k, v in cfg.identity().items() if state["identity"].get(k) != v
                }
                hint = (
                    "; it was built with exact_verify false (the default before exact verification): "
                    "pass --no-exact-verify (step: exact_verify: false) to extend it"
                    if "exact_verify" in diff and not state["identity"].get("exact_verify")
                    else ""
                )
                raise ValueError(
                    f"{self.path}: incremental store was built with other settings (stored, requested): {diff}{hint}"
                )
            self.n, self.batches = state["n"], state["batches"]
            self.last_batch = state.get("last_batch")
            # stores written before sizes were recorded: trust the files as they are
            self.sizes = state.get("sizes") or {name: self._size(name) for name in APPENDED}
        else:
            self.n, self.batches, self.last_batch = 0, 0, None
            self.sizes = {name: 0 for name in APPENDED}

    def _size(self, name: str) -> int:
        f = self.path / name
        return f.stat().st_size if f.exists() else 0

    def load(self, name: str, dtype, default_len: int = 0) -> np.ndarray:
        f = self.path / f"{name}.npy"
        return np.load(f) if f.exists() else np.zeros(default_len, dtype=dtype)

    def load_staged(self, name: str, dtype) -> np.ndarray:
        """The version staged by the batch being reduced, else the committed one."""
        f = self.pending / f"{name}.npy"
        return np.load(f) if f.exists() else self.load(name, dtype)

    def stage(self, name: str, arr: np.ndarray) -> None:
        self.pending.mkdir(exist_ok=True)
        _save_npy(self.pending / f"{name}.npy", arr)

    def truncate(self, sizes: dict[str, int]) -> None:
        """Cut the appended files back to `sizes` (dropping what an interrupted batch appended)."""
        for name, size in sizes.items():
            f = self.path / name
            have = self._size(name)
            if have < size:
                raise ValueError(f"{f}: {have} bytes, but {size} were recorded; the store is damaged")
            if have > size:
                os.truncate(f, size)

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

    def ids(self, docs: Iterable[int], offsets: np.ndarray | None = None) -> dict[int, tuple[str, str]]:
        """{doc: (id, where)} read from ids.jsonl through the offsets index (the committed one
        unless `offsets` is given)."""
        if offsets is None:
            offsets = np.load(self.path / "ids.off.npy", mmap_mode="r")
        out = {}
        with open(self.path / "ids.jsonl", "rb") as f:
            for d in sorted(set(int(x) for x in docs)):
                f.seek(int(offsets[d]))
                out[d] = tuple(json.loads(f.readline()))
        return out

    def commit(self, n: int, sizes: dict[str, int], token: str) -> None:
        """Publish the batch: everything staged in pending/, the new size and appended lengths."""
        self.pending.mkdir(exist_ok=True)
        moves = sorted(
            p.name for p in self.pending.iterdir() if p.name != "commit.json" and not p.name.endswith(".tmp")
        )
        state = {
            "n": n,
            "batches": self.batches + 1,
            "identity": self.cfg.identity(),
            "sizes": sizes,
            "last_batch": token,
        }
        write_json(self.pending / "commit.json", {"move": moves, "state": state})
        fault("commit")
        self._apply({"move": moves, "state": state})

    def _apply(self, journal: dict) -> None:
        for name in journal["move"]:
            src = self.pending / name
            if src.exists():
                src.replace(self.path / name)
        write_json(self.path / "state.json", journal["state"])
        shutil.rmtree(self.pending, ignore_errors=True)
        state = journal["state"]
        self.n, self.batches, self.last_batch, self.sizes = (
            state["n"],
            state["batches"],
            state["last_batch"],
            state["sizes"],
        )


def append_file(dst: Path, src: Path) -> None:
    with open(dst, "ab") as out, open(src, "rb") as inp:
        while chunk := inp.read(1 << 22):
            out.write(chunk)


# -------------------------------------------------------------------------------------- reduce
def merge_band(store: Store, name: str, new_runs: list[Path], budget: int, scratch: Path):
    """Merge the store's run `name` with the new runs into `pending/NAME` (committed with the
    batch; the store's own run and the new runs are left as they are); yield the merged blocks."""
    old = store.path / name
    runs = ([old] if Path(f"{old}.keys").exists() else []) + list(new_runs)
    store.pending.mkdir(exist_ok=True)
    scratch.mkdir(parents=True, exist_ok=True)
    with lsh.RunWriter(store.pending / name) as w:
        for keys, docs in lsh.merge_all(runs, budget, scratch):
            w.append(keys, docs)
            yield keys, docs
