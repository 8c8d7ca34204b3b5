"""The dedup reduce: scanned shards -> clusters, as five named phases that each keep their work.

    reduce(store_dir, shard_dirs, cfg, work=DIR) -> {"rep", "excluded", "changed_old", "stats", ...}

1. `append_shards`: the shards' signatures and ids are appended (in order) to the store, and their
   band and id records are cut into sorted runs within the memory budget. Unit: a run group (the
   shards buffered until one flush), its marker covering the runs and the byte ranges it appended.
2. `find_duplicate_ids`: equal id hashes are neighbours in the merged id run. One unit.
3. `verify_bands` (named for its history; it proposes): per LSH band, merge the store's run with
   the new runs, bucket, and keep the band's candidate pairs as sorted runs (unit: a band;
   `map_bands` may run the bands elsewhere, e.g. one Ray task each).
4. `verify_pairs`: the bands' candidate runs are merged, so a pair proposed by several bands is
   decided once (verify.py: exact shingle Jaccard by default, else the signature estimate), in
   chunks sized by the memory budget (unit: a chunk).
5. `decide`: union the verified pairs, choose representatives, then commit the store.

Each unit writes its files under `work` and a marker (resume.py) last, so a reduce killed in any
phase and run again with the same shards, settings and store continues from its last finished unit
and returns the same decisions. The store itself only changes by appends that a rerun cuts back and
by the commit at the very end (index.Store).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from data_pipeline.dedup import lsh
from data_pipeline.dedup.clusters import UnionFind, cluster_sizes, representatives
from data_pipeline.dedup.index import (
    APPENDED,
    DedupConfig,
    DuplicateIdError,
    Store,
    append_file,
    merge_band,
    parse_size,
)
from data_pipeline.dedup.resume import (
    Tally,
    atomic,
    digest,
    fault,
    read_marker,
    same_digest,
    tag_of,
    write_json,
    write_marker,
)
from data_pipeline.dedup.verify import PairVerifier
from framework.runtime import get_logger, progress

log = get_logger("anvil.dedup")
LAYOUT = 2  # version of the work folder's units (2: bands propose, a verify phase decides)


@dataclass
class _Reduce:
    """What every phase needs: the store, the settings, where units go and their tag."""

    store: Store
    cfg: DedupConfig
    work: Path
    tag: str
    n_old: int
    tally: Tally
    fresh: bool = False  # the store is this run's own and dies with it (one-shot): sets stay in the shards

    @property
    def budget(self) -> int:
        return parse_size(self.cfg.memory_budget)

    @property
    def bands(self) -> int:
        return self.cfg.params[0]


@dataclass
class ShardMeta:
    """Per-document arrays of the old and new documents, read cheaply from the shards."""

    counts: list[int]
    length: np.ndarray
    field: np.ndarray
    ids_off: np.ndarray
    shingle_lens: np.ndarray | None
    no_words: int


def reduce(
    store_dir: Path,
    shard_dirs: Sequence[Path],
    cfg: DedupConfig,
    map_bands=None,
    work: Path | None = None,
    tally: Tally | None = None,
    fresh_store: bool = False,
) -> dict:
    """Add the scanned shards (in order) to the store and cluster; returns the decisions and stats.
    `work` keeps the units for a rerun (default: a folder in the store, removed when done).
    `fresh_store`: the store is this run's own (one-shot), so it is emptied when the units are stale.
    `map_bands(task, bands)` may run phase 3 elsewhere: it runs `task.run(j)` for every band j
    given and yields each j when finished; the partition does not depend on it."""
    t0 = time.perf_counter()
    tally = tally or Tally()
    own_work = work is None
    work = Path(work) if work is not None else Path(store_dir) / "reduce-work"
    if own_work:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    store = Store(store_dir, cfg)  # finishes an interrupted commit
    shards = [Path(s) for s in shard_dirs]
    request = {
        "shards": _shards_identity(shards),
        "cfg": dataclasses.asdict(cfg.resolved()) | {"workers": 0},
        "layout": LAYOUT,
    }
    saved = _read_json(work / "identity.json")
    if saved and store.last_batch == saved["tag"] and tag_of({**request, "store": saved["store"]}) == saved["tag"]:
        ctx = _Reduce(store, cfg, work, saved["tag"], saved["n_old"], tally)  # killed after the commit
        return _finish(ctx, decide(ctx, None, None), t0, own_work)
    before = None if fresh_store else [str(store.path.resolve()), store.n, store.batches, store.last_batch, store.sizes]
    tag = tag_of({**request, "store": before})
    if saved is None or saved["tag"] != tag:
        if saved is not None:
            log.info("dedup: the shards, settings or store changed since the interrupted run: reducing from the start")
        for p in work.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        shutil.rmtree(store.pending, ignore_errors=True)
        if fresh_store and (store.path / "state.json").exists():
            shutil.rmtree(store.path)
            store = Store(store_dir, cfg)
        write_json(work / "identity.json", {"tag": tag, "n_old": store.n, "store": before})
    ctx = _Reduce(store, cfg, work, tag, store.n, tally, fresh=fresh_store and store.n == 0)
    meta = shard_meta(ctx, shards)
    band_runs, id_runs, sizes = append_shards(ctx, shards, meta.counts)
    excluded = find_duplicate_ids(ctx, id_runs, meta)
    verify_bands(ctx, band_runs, map_bands)
    if ctx.fresh:  # the shards' own set files; a kept store holds every set in one file
        set_files = [(s / "shingles.u64", m) for s, m in zip(shards, meta.counts)]
    else:
        set_files = [(store.path / "shingles.u64", len(meta.length))]
    verify_pairs(ctx, meta.shingle_lens, set_files)
    return _finish(
        ctx, decide(ctx, meta, sizes, sorted_runs=(ctx.bands + 1) * len(id_runs), excluded=excluded), t0, own_work
    )


def _finish(ctx: _Reduce, result: dict, t0: float, own_work: bool) -> dict:
    if own_work:
        shutil.rmtree(ctx.work, ignore_errors=True)
    result["stats"]["reduce_s"] = round(time.perf_counter() - t0, 3)
    return result


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _shards_identity(shards: list[Path]) -> list:
    out = []
    for s in shards:
        done = _read_json(s / "done.json") or {}
        out.append([s.name, (s / "scan.json").read_text(), done.get("tag")])
    return out


# ------------------------------------------------------------------------------ 0. shard metadata
def shard_meta(ctx: _Reduce, shards: list[Path]) -> ShardMeta:
    """Lengths, keep-rule values, id offsets and shingle counts of old + new documents."""
    store, exact = ctx.store, ctx.cfg.exact_verify
    ids_off = [store.load("ids.off", np.int64)]
    ids_size = store.sizes["ids.jsonl"]
    length, field = [store.load("length", np.int64)], [store.load("field", np.float64)]
    sh_lens = [store.load("shingles.len", np.int64)] if exact else []
    counts, no_words = [], 0
    for shard in shards:
        scan = json.loads((shard / "scan.json").read_text())
        m = scan["docs"]
        no_words += scan["no_words"]
        meta = np.load(shard / "meta.npz")
        if len(meta["length"]) != m:
            raise ValueError(f"{shard}: scan and metadata disagree ({m} vs {len(meta['length'])} documents)")
        raw = np.frombuffer((shard / "ids.jsonl").read_bytes(), dtype=np.uint8)
        ids_off.append(ids_size + np.concatenate([[0], np.flatnonzero(raw == 10) + 1])[:m].astype(np.int64))
        ids_size += len(raw)
        length.append(meta["length"])
        field.append(meta["field"])
        if exact:
            sh_lens.append(np.load(shard / "shingles.len.npy"))
        counts.append(m)
    return ShardMeta(
        counts,
        np.concatenate(length),
        np.concatenate(field),
        np.concatenate(ids_off),
        np.concatenate(sh_lens) if exact else None,
        no_words,
    )


# ------------------------------------------------------------------- 1. append shards, sorted runs
def run_groups(counts: list[int], bands: int, budget: int) -> list[list[int]]:
    """Shards buffered together before one flush into sorted runs (flushing sorts a copy)."""
    record_budget = max(budget // 3, 1 << 15)
    groups, cur, buffered = [], [], 0
    for i, m in enumerate(counts):
        cur.append(i)
        buffered += m * (bands + 1) * lsh.RECORD_BYTES
        if buffered >= record_budget:
            groups.append(cur)
            cur, buffered = [], 0
    return groups + ([cur] if cur else [])


def append_shards(ctx: _Reduce, shards: list[Path], counts: list[int]):
    """Phase 1; returns the band runs per band, the id runs and the appended files' sizes."""
    b = ctx.bands
    # a one-shot run's store is thrown away: its sets are read from the shards, not copied
    names = [n for n in APPENDED if n != "shingles.u64" or (ctx.cfg.exact_verify and not ctx.fresh)]
    sizes = {n: ctx.store.sizes[n] for n in names}
    band_runs: list[list[Path]] = [[] for _ in range(b)]
    id_runs: list[Path] = []
    redo, first = False, ctx.n_old
    groups = run_groups(counts, b, ctx.budget)
    for g, members in enumerate(progress(groups, total=len(groups), desc="dedup: index", unit="group")):
        runs = [ctx.work / "runs" / f"band{j}-run{g}" for j in range(b)] + [ctx.work / "runs" / f"ids-run{g}"]
        marker = ctx.work / f"append-{g:05d}.json"
        what = f"run group {g} (shards {shards[members[0]].name}..{shards[members[-1]].name})"
        rec = None if redo else read_marker(marker, ctx.tag, what)
        if rec is not None and _ranges_ok(ctx.store, rec["store"], sizes, what):
            sizes = {n: end for n, (_, end, _) in rec["store"].items()}
            ctx.tally.add("append", True)
        else:
            redo = True  # appends are sequential: every later group is redone too
            marker.unlink(missing_ok=True)
            ctx.store.truncate(sizes)
            ranges = _append_group(ctx, [shards[i] for i in members], first, runs, sizes)
            fault(f"append:{g}")
            write_marker(marker, ctx.tag, [Path(f"{r}{s}") for r in runs for s in (".keys", ".docs")], store=ranges)
            sizes = {n: end for n, (_, end, _) in ranges.items()}
            ctx.tally.add("append", False)
        for j in range(b):
            band_runs[j].append(runs[j])
        id_runs.append(runs[b])
        first += sum(counts[i] for i in members)
    ctx.store.truncate(sizes)
    return band_runs, id_runs, sizes


def _ranges_ok(store: Store, ranges: dict, sizes: dict, what: str) -> bool:
    """The bytes a finished group appended to the store are still there, unchanged."""
    for name, (start, end, check) in ranges.items():
        f = store.path / name
        have = f.stat().st_size if f.exists() else 0
        if start != sizes.get(name) or have < end or not same_digest(check, f, start, end):
            log.warning("dedup: redoing %s: what it appended to %s is missing or changed", what, f)
            return False
    return True


def _append_group(ctx: _Reduce, shards: list[Path], first: int, runs: list[Path], start: dict) -> dict:
    """Append the group's shards to the store (from the byte sizes `start`) and write its runs."""
    store, b = ctx.store, ctx.bands
    keys, docs, idhash = [], [], []
    n = first
    for shard in shards:
        m = json.loads((shard / "scan.json").read_text())["docs"]
        append_file(store.path / "signatures.u64", shard / "sig.u64")
        append_file(store.path / "ids.jsonl", shard / "ids.jsonl")
        if "shingles.u64" in start:
            append_file(store.path / "shingles.u64", shard / "shingles.u64")
        keys.append(np.fromfile(shard / "bands.u64", dtype="<u8").reshape(m, b))
        docs.append(np.arange(n, n + m, dtype=np.int64))
        idhash.append(np.load(shard / "meta.npz")["idhash"])
        n += m
    keys_all, docs_all = np.concatenate(keys), np.concatenate(docs)
    for j in range(b):
        lsh.write_run(runs[j], keys_all[:, j], docs_all)
    lsh.write_run(runs[b], np.concatenate(idhash), docs_all)
    ranges = {}
    for name in start:
        end = (store.path / name).stat().st_size
        ranges[name] = [start[name], end, digest(store.path / name, start[name], end)]
    return ranges


# ------------------------------------------------------------------------------ 2. duplicate ids
def find_duplicate_ids(ctx: _Reduce, id_runs: list[Path], meta: ShardMeta) -> np.ndarray:
    """Phase 2: `excluded[doc]` marks later documents that repeat an earlier id (--dedupe-ids)."""
    marker, out = ctx.work / "ids.json", ctx.work / "excluded.npy"
    if read_marker(marker, ctx.tag, "the duplicate-id pass") is not None:
        ctx.tally.add("ids", True)
        return np.load(out)
    store, n_old = ctx.store, ctx.n_old
    n = len(meta.length)
    excluded = np.concatenate([store.load("excluded", bool), np.zeros(n - n_old, dtype=bool)])
    suspects = []
    for keys, docs in merge_band(store, "idhash", id_runs, max(ctx.budget // 4, 1 << 15), ctx.work / "scratch" / "ids"):
        a, c = lsh.bucket_pairs(keys, docs)
        new = c >= n_old
        suspects.append(np.stack([a[new], c[new]], axis=1))
    suspects = np.concatenate(suspects) if suspects else np.empty((0, 2), np.int64)
    if len(suspects):
        names = store.ids(suspects.ravel(), offsets=meta.ids_off)
        for first, later in suspects.tolist():
            if names[first][0] != names[later][0] or excluded[later]:
                continue
            if not ctx.cfg.dedupe_ids:
                raise DuplicateIdError(
                    f"duplicate id {names[later][0]!r}: {names[first][1]} and {names[later][1]} "
                    f"(pass --dedupe-ids to keep the first and drop the others)"
                )
            excluded[later] = True
    with atomic(out) as tmp, open(tmp, "wb") as f:
        np.save(f, excluded)
    fault("ids")
    write_marker(marker, ctx.tag, [out, store.pending / "idhash.keys", store.pending / "idhash.docs"])
    ctx.tally.add("ids", False)
    return excluded


# ------------------------------------------------------------------------------------- 3. bands
@dataclass
class BandTask:
    """One LSH band of phase 3, picklable (executors/ray.py runs one per Ray task): merge its runs,
    bucket them, keep the candidate pairs of new documents as runs WORK/cand-J-R sorted by (first
    document, member), within the memory budget; marker last."""

    store_path: str
    cfg: DedupConfig
    work: str
    tag: str
    n_old: int
    runs: dict

    def marker(self, j: int) -> Path:
        return Path(self.work) / f"band-{j:03d}.json"

    def candidate_runs(self, j: int, count: int) -> list[Path]:
        return [Path(self.work) / f"cand-{j:03d}-{r:03d}" for r in range(count)]

    def run(self, j: int, before_marker: Callable[[], None] | None = None) -> dict:
        store, work = Store(Path(self.store_path), self.cfg), Path(self.work)
        budget = parse_size(self.cfg.memory_budget)
        excluded = np.load(work / "excluded.npy")
        buffered, held, written = [], 0, 0
        flush_at = max(1 << 12, budget // (4 * lsh.RECORD_BYTES))

        def flush() -> None:
            nonlocal buffered, held, written
            a = np.concatenate([x for x, _ in buffered]) if buffered else np.empty(0, np.int64)
            c = np.concatenate([y for _, y in buffered]) if buffered else np.empty(0, np.int64)
            lsh.write_run(self.candidate_runs(j, written + 1)[-1], a.astype(np.uint64), c)
            buffered, held, written = [], 0, written + 1

        scratch = work / "scratch" / f"band{j}"
        for keys, docs in merge_band(
            store, f"band{j}", [Path(r) for r in self.runs[j]], max(budget // 4, 1 << 15), scratch
        ):
            alive = ~excluded[docs]
            a, c = lsh.bucket_pairs(keys[alive], docs[alive])
            new = c >= self.n_old  # a < c, so a pair of two old documents has c < n_old
            if new.any():
                buffered.append((a[new], c[new]))
                held += int(new.sum())
            if held >= flush_at:
                flush()
        if buffered or not written:
            flush()
        runs = self.candidate_runs(j, written)
        band_pairs = sum(lsh.run_length(r) for r in runs)
        fault(f"band:{j}")
        if before_marker is not None:
            before_marker()
        write_marker(
            self.marker(j),
            self.tag,
            [Path(f"{r}{s}") for r in runs for s in (".keys", ".docs")]
            + [store.pending / f"band{j}.keys", store.pending / f"band{j}.docs"],
            runs=written,
            counts={"band_pairs": band_pairs},
        )
        shutil.rmtree(scratch, ignore_errors=True)
        return {"band_pairs": band_pairs}


def verify_bands(ctx: _Reduce, band_runs: list[list[Path]], map_bands=None) -> None:
    """Phase 3: every band without a valid marker, here or through `map_bands`."""
    task = _band_task(ctx, band_runs)
    todo = [j for j in range(ctx.bands) if read_marker(task.marker(j), ctx.tag, f"band {j}") is None]
    ctx.tally.add("bands", True, ctx.bands - len(todo))
    ctx.tally.add("bands", False, len(todo))
    if map_bands is not None:
        for _ in map_bands(task, todo):
            pass
    else:
        for j in progress(todo, total=len(todo), desc="dedup: bands", unit="band"):
            task.run(j)


def _band_task(ctx: _Reduce, band_runs: list[list[Path]] | None = None) -> BandTask:
    return BandTask(
        str(ctx.store.path),
        ctx.cfg.resolved(),
        str(ctx.work),
        ctx.tag,
        ctx.n_old,
        {j: [str(r) for r in runs] for j, runs in enumerate(band_runs or [])},
    )


# ------------------------------------------------------------------------------------ 4. verify
def verify_pairs(ctx: _Reduce, set_lens: np.ndarray | None, set_files: list[tuple[Path, int]]) -> dict:
    """Phase 4: the bands' candidate runs merged in (first document, member) order, repeats
    dropped, every distinct pair decided once; chunks of at most `chunk_limit` units, each kept as
    WORK/verified-K.npy with a marker, and a summary marker WORK/verify.json at the end. The
    chunking is a function of the runs and the budget, so a rerun finds the same chunks."""
    summary = ctx.work / "verify.json"
    rec = read_marker(summary, ctx.tag, "the verify phase")
    if rec is not None:
        ctx.tally.add("verify", True, rec["chunks"])
        return rec
    task = _band_task(ctx)
    runs, band_pairs = [], 0
    for j in range(ctx.bands):
        band = json.loads(task.marker(j).read_text())
        runs += task.candidate_runs(j, band["runs"])
        band_pairs += band["counts"]["band_pairs"]
    verifier = PairVerifier(ctx.store, ctx.cfg, set_lens, set_files)
    counts = {"band_pairs": band_pairs, "candidate_pairs": 0, "verified_pairs": 0}
    files: list[Path] = []
    scratch = ctx.work / "scratch" / "verify"
    scratch.mkdir(parents=True, exist_ok=True)
    for k, (a, c) in enumerate(_chunks(runs, verifier, ctx.budget, scratch)):
        out, marker = ctx.work / f"verified-{k:05d}.npy", ctx.work / f"verify-{k:05d}.json"
        got = read_marker(marker, ctx.tag, f"verify chunk {k}")
        ctx.tally.add("verify", got is not None)
        if got is None:
            ok = verifier(a, c)
            with atomic(out) as tmp, open(tmp, "wb") as f:
                np.save(f, np.stack([a[ok], c[ok]]).astype(np.int64))
            fault(f"verify:{k}")
            got = write_marker(
                marker, ctx.tag, [out], counts={"candidate_pairs": len(a), "verified_pairs": int(ok.sum())}
            )
        for key, v in got["counts"].items():
            counts[key] += v
        files.append(out)
    shutil.rmtree(scratch, ignore_errors=True)
    log.info(
        "dedup: %d distinct candidate pairs (%d over all bands), %d verified",
        *(counts[k] for k in ("candidate_pairs", "band_pairs", "verified_pairs")),
    )
    return write_marker(summary, ctx.tag, files, chunks=len(files), counts=counts)


def _chunks(runs: list[Path], verifier: PairVerifier, budget: int, scratch: Path):
    """The distinct candidate pairs, merged from the bands' runs in (first document, member)
    order, as chunks of about `verifier.chunk_limit(budget)` units (at least one pair each)."""
    limit = verifier.chunk_limit(budget)
    held: list[tuple[np.ndarray, np.ndarray]] = []
    used = 0

    def take():
        nonlocal held, used
        chunk = np.concatenate([x for x, _ in held]), np.concatenate([y for _, y in held])
        held, used = [], 0
        return chunk

    for keys, docs in lsh.merge_all(runs, max(budget // 4, 1 << 15), scratch):
        a = keys.astype(np.int64)
        fresh = np.ones(len(a), dtype=bool)  # equal pairs have equal keys: never in two blocks
        fresh[1:] = (a[1:] != a[:-1]) | (docs[1:] != docs[:-1])
        a, c = a[fresh], docs[fresh]
        cost = np.cumsum(verifier.costs(a, c))
        start = 0
        while start < len(a):
            base = int(cost[start - 1]) if start else 0
            end = int(np.searchsorted(cost, base + limit - used, side="right"))
            if end == start:  # the next pair does not fit
                if used:
                    yield take()
                    continue
                end = start + 1  # a pair larger than a chunk goes alone
            held.append((a[start:end], c[start:end]))
            used += int(cost[end - 1]) - base
            start = end
            if used >= limit:
                yield take()
    if held:
        yield take()


# ----------------------------------------------------------------------------------- 5. decide
def decide(
    ctx: _Reduce, meta: ShardMeta | None, sizes: dict | None, sorted_runs: int = 0, excluded: np.ndarray | None = None
) -> dict:
    """Phase 5: the partition from the verified pairs, representatives, the store's commit.
    With `meta` None the commit already happened: only the kept decisions are read back."""
    store, work = ctx.store, ctx.work
    marker = work / "decide.json"
    rec = read_marker(marker, ctx.tag, "the decisions")
    if rec is None and meta is None:
        raise RuntimeError(
            f"{store.path}: this batch was committed to the store, but its decisions in "
            f"{work} are missing or damaged; restore the store from a backup"
        )
    if rec is None:
        rec = _union_and_choose(ctx, meta, excluded, sorted_runs)
        ctx.tally.add("decide", False)
    else:
        ctx.tally.add("decide", True)
    got = np.load(work / "decisions.npz")
    root, rep, changed, excluded = got["root"], got["rep"], got["changed"], got["excluded"]
    if meta is not None:  # the commit: stage the new arrays (band runs are staged already)
        for name, arr in (
            ("root", root),
            ("rep", rep),
            ("excluded", excluded),
            ("length", meta.length),
            ("field", meta.field),
            ("ids.off", meta.ids_off),
        ):
            store.stage(name, arr)
        if ctx.cfg.exact_verify:
            store.stage("shingles.len", meta.shingle_lens)
        store.commit(len(rep), {**store.sizes, **sizes}, ctx.tag)
    return {
        "n_old": rec["n_old"],
        "n": len(rep),
        "rep": rep,
        "excluded": excluded,
        "changed_old": changed,
        "stats": dict(rec["stats"]),
        "store": store,
    }


def _union_and_choose(ctx: _Reduce, meta: ShardMeta, excluded: np.ndarray, sorted_runs: int) -> dict:
    store, work, n_old, b = ctx.store, ctx.work, ctx.n_old, ctx.bands
    n = len(meta.length)
    uf = UnionFind(n_old, store.load("root", np.int64))
    uf.grow(n)
    verified = json.loads((work / "verify.json").read_text())
    stats = {
        "bands": b,
        "rows": ctx.cfg.params[1],
        **verified["counts"],
        "sorted_runs": sorted_runs,
        "no_words": meta.no_words,
        "duplicate_ids": int(excluded[n_old:].sum()),
    }
    held, count = [], 0
    for k in range(verified["chunks"]):
        held.append(np.load(work / f"verified-{k:05d}.npy"))
        count += held[-1].shape[1]
        if count >= ctx.budget // 64 or k + 1 == verified["chunks"]:  # union in budget-sized batches
            pairs = np.concatenate(held, axis=1)
            uf.union_pairs(pairs[0], pairs[1])
            held, count = [], 0
    root = uf.root
    rep = representatives(root, ctx.cfg.keep, meta.length, meta.field)
    old_rep = store.load("rep", np.int64)
    changed = np.flatnonzero(old_rep != rep[:n_old]) if n_old else np.empty(0, np.int64)
    stats["cluster_sizes"] = cluster_sizes(root, ~excluded)
    out = work / "decisions.npz"
    with atomic(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, root=root, rep=rep, changed=changed, excluded=excluded)
    fault("decide")
    return write_marker(work / "decide.json", ctx.tag, [out], stats=stats, n_old=n_old)
