"""`anvil data dedup` as a function: read, scan in parallel workers, reduce, write the outputs.

    run_dedup(inputs, output, cfg, incremental_store=None) -> stats

The reading process assigns every document its input-order index and cuts the stream into
shards of `cfg.shard_docs`; workers compute the shards' signatures and shingle sets
(index.scan_texts) while the reader goes on, at most two shards per worker in flight, so memory
stays bounded (with many input files, each worker reads whole files, the largest first). The
reduce then proposes candidate pairs, verifies each once (exact Jaccard by default, verify.py) and
clusters, and the documents (kept aside as JSON lines while reading, so WARC/HTML extraction is not
redone) are streamed once more into:

    OUTPUT/part-00000.jsonl.zst ...   kept documents
    OUTPUT/duplicates.jsonl           {"id", "duplicate_of"} per removed document (documents of
                                      earlier batches that an incremental batch re-clusters carry
                                      "earlier_batch": true)
    OUTPUT/rejected/rejected.jsonl    unreadable records and dropped duplicate ids
    OUTPUT/stats.json                 counts, LSH settings, cluster sizes
    OUTPUT/timings.json               wall-clock seconds of the scan and reduce phases

Until the output is written, OUTPUT/.dedup-work keeps every finished unit (scan shards, then the
reduce's units, reduce.py) with a marker recording its files' sizes and checksums (resume.py). The
same command after a kill, in any phase, verifies and reuses them and writes the same bytes as an
uninterrupted run; other inputs (sizes, mtimes) or settings start over.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

from data_pipeline.dedup.index import DedupConfig, scan_texts, write_shard_meta
from data_pipeline.dedup.reduce import reduce
from data_pipeline.dedup.resume import (
    Tally,
    atomic,
    fault,
    input_identity,
    read_marker,
    tag_of,
    write_json,
    write_marker,
)
from data_pipeline.document import Document
from framework.runtime import get_logger, print_table, progress

SHARD_MAX_CHARS = 8 << 20  # a shard is also cut after this many characters (bounds worker memory)
OUTPUT_SHARD_DOCS = 100_000

log = get_logger("anvil.dedup")


def _shards(docs, cfg: DedupConfig):
    batch: list[Document] = []
    chars = 0
    for doc in docs:
        batch.append(doc)
        chars += len(doc.text)
        if len(batch) >= cfg.shard_docs or chars >= SHARD_MAX_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def scan_identity(cfg: DedupConfig) -> dict:
    """The settings a scan shard depends on."""
    return {**cfg.identity(), "shard_docs": cfg.shard_docs, "shard_max_chars": SHARD_MAX_CHARS}


def scan_batch(batch: list[Document], shard: Path, cfg: DedupConfig, tag: str = "") -> None:
    """Everything per shard happens in the worker: the documents kept aside as JSON lines for the
    output (shard/docs.jsonl), ids/metadata, signatures and band keys; then the shard's marker
    (shard/done.json, resume.py) covering all of them."""
    from data_pipeline.io import dumps_document

    write_shard_meta(shard, batch, cfg)
    with atomic(shard / "docs.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(dumps_document(doc) + "\n" for doc in batch))
    scan_texts([d.text for d in batch], shard, cfg)
    fault(f"scan:{shard.name}")
    write_marker(
        shard / "done.json",
        tag,
        sorted(p for p in shard.iterdir() if p.name != "done.json" and not p.name.endswith(".tmp")),
        docs=len(batch),
    )


def shard_done(shard: Path, tag: str) -> bool:
    return read_marker(shard / "done.json", tag, f"scan shard {shard}") is not None


def scan_file(path: Path, file_index: int, work: Path, cfg: DedupConfig) -> tuple[list[Path], dict, list[dict]]:
    """Read and scan one input file in shards named (file, shard), so their order is input order.
    Resumable: shards with a valid marker are not scanned again, and a file whose marker (counts,
    rejected records, its shards) is valid is not even read."""
    from data_pipeline.io import read_documents

    tag = tag_of([input_identity([path]), scan_identity(cfg), file_index])
    marker = work / "scan" / f"file-{file_index:06d}.json"
    rec = read_marker(marker, tag, f"the scan of {path}")
    if rec is not None:
        shards = [work / "scan" / name for name in rec["shards"]]
        if all(shard_done(s, tag) for s in shards):
            return shards, {**rec["counts"], "shards_reused": len(shards)}, rec["rejects"]
    rejects: list[dict] = []
    shards, counts = [], {"docs_in": 0, "bytes_in": 0, "shards_reused": 0}
    for k, batch in enumerate(_shards(read_documents(path, on_reject=rejects.append), cfg)):
        shard = work / "scan" / f"shard-{file_index:06d}-{k:06d}"
        if shard_done(shard, tag):
            counts["shards_reused"] += 1
        else:
            scan_batch(batch, shard, cfg, tag)
        shards.append(shard)
        counts["docs_in"] += len(batch)
        counts["bytes_in"] += sum(len(d.text) for d in batch)
    write_marker(
        marker,
        tag,
        [s / "done.json" for s in shards],
        shards=[s.name for s in shards],
        counts={k: v for k, v in counts.items() if k != "shards_reused"},
        rejects=rejects,
    )
    return shards, counts, rejects


def scan_inputs(inputs: Sequence[str], work: Path, cfg: DedupConfig, rejected) -> tuple[list[Path], dict]:
    """Read every input in order, keep documents aside, and scan shards in `cfg.workers` processes.
    Shards finished by an interrupted run (valid marker) are skipped."""
    from data_pipeline.io import expand_inputs, read_documents

    files = expand_inputs(list(inputs))
    counts = {"files": len(files), "docs_in": 0, "bytes_in": 0, "rejected_read": 0, "shards_reused": 0}

    def on_reject(rec: dict) -> None:
        counts["rejected_read"] += 1
        rejected.write_record(rec)

    def docs():
        for path in files:
            yield from read_documents(path, on_reject=on_reject)

    shard_dirs: list[Path] = []
    pool = None
    if cfg.workers > 1:
        pool = ProcessPoolExecutor(cfg.workers, mp_context=mp.get_context("spawn"))
        pool.submit(int)  # start the workers while this process sets up
    cfg = cfg.resolved()
    pending: deque = deque()
    try:
        if pool is None or len(files) >= 2 * cfg.workers:
            # Workers read whole files themselves: the reading process is no bottleneck.
            run = pool.submit if pool is not None else (lambda fn, *a: _Done(fn(*a)))
            futures: list = [None] * len(files)
            for i in sorted(range(len(files)), key=lambda i: -_size(files[i])):  # largest first: balance
                futures[i] = run(scan_file, files[i], i, work, cfg)
            for fut in progress(futures, total=len(futures), desc="dedup: scan", unit="file"):
                shards, c, rejects = fut.result()
                shard_dirs += shards
                for key in ("docs_in", "bytes_in", "shards_reused"):
                    counts[key] += c[key]
                for rec in rejects:
                    on_reject(rec)
            return shard_dirs, counts
        # Few files: this process reads and hands shards to the workers.
        tag = tag_of([input_identity(files), scan_identity(cfg)])
        for k, batch in enumerate(progress(_shards(docs(), cfg), desc="dedup: scan", unit="shard")):
            counts["docs_in"] += len(batch)
            counts["bytes_in"] += sum(len(d.text) for d in batch)
            shard = work / "scan" / f"shard-{k:06d}"
            shard_dirs.append(shard)
            if shard_done(shard, tag):
                counts["shards_reused"] += 1
                continue
            pending.append(pool.submit(scan_batch, batch, shard, cfg, tag))
            while len(pending) >= 2 * cfg.workers:
                pending.popleft().result()
        while pending:
            pending.popleft().result()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return shard_dirs, counts


def _size(path) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0


class _Done:
    """A finished 'future' for the in-process path."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def run_dedup(
    inputs: Sequence[str],
    output: str | Path,
    cfg: DedupConfig,
    incremental_store: str | Path | None = None,
    scan=None,
    map_bands=None,
) -> dict:
    """`scan(inputs, work, cfg, rejected) -> (shard_dirs, counts)` replaces the local scan_inputs and
    `map_bands` the reduce's band loop (reduce.verify_bands) - the Ray and Slurm executors, executors/.
    Resumable: OUTPUT/.dedup-work keeps every finished unit with its marker until the output is
    written; the same command after a kill continues from there (stats["resume"] counts the units)."""
    from data_pipeline.io import JsonlZstWriter, RejectedWriter, expand_inputs

    cfg.check()
    t0 = time.perf_counter()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    work = output / ".dedup-work"
    identity = {"inputs": input_identity(expand_inputs(list(inputs))), "cfg": scan_identity(cfg.resolved())}
    saved = work / "identity.json"
    try:
        same = json.loads(saved.read_text()) == identity
    except (OSError, ValueError):
        same = False
    if work.exists() and not same:
        log.info("dedup: %s holds an interrupted run over other inputs or settings: starting over", work)
        shutil.rmtree(work)
    (work / "scan").mkdir(parents=True, exist_ok=True)
    write_json(saved, identity)
    tally = Tally()
    store_dir = Path(incremental_store) if incremental_store else work / "store"
    rejected = RejectedWriter(output / "rejected" / "rejected.jsonl")
    try:
        shard_dirs, counts = (scan or scan_inputs)(inputs, work, cfg, rejected)
        reused = counts.get("shards_reused", 0)
        tally.add("scan", True, reused)
        tally.add("scan", False, len(shard_dirs) - reused)
        t_scan = time.perf_counter() - t0
        result = reduce(
            store_dir,
            shard_dirs,
            cfg,
            map_bands=map_bands,
            work=work / "reduce",
            tally=tally,
            fresh_store=incremental_store is None,
        )
        t_reduce = time.perf_counter() - t0 - t_scan
        store, rep, excluded, n_old = result["store"], result["rep"], result["excluded"], result["n_old"]

        for old in output.glob("part-*.jsonl.zst"):
            old.unlink()
        kept = removed = in_shard = 0
        writer = None
        idx = n_old
        with open(output / "duplicates.jsonl.tmp", "w", encoding="utf-8") as dup:
            for k, shard in enumerate(shard_dirs):
                lines = (shard / "docs.jsonl").read_text(encoding="utf-8").splitlines()
                span = range(idx, idx + len(lines))
                need = [int(rep[i]) for i in span if rep[i] != i or excluded[i]] + [
                    i for i in span if rep[i] != i or excluded[i]
                ]
                names = store.ids(need) if need else {}
                keep_lines = []
                for i, line in zip(span, lines):
                    if excluded[i]:
                        rejected.write_record(
                            {
                                "id": names[i][0],
                                "step": "minhash_dedup",
                                "reason": "duplicate_id",
                                "source": names[i][1],
                            }
                        )
                    elif rep[i] != i:
                        dup.write(
                            json.dumps({"id": names[i][0], "duplicate_of": names[int(rep[i])][0]}, ensure_ascii=False)
                            + "\n"
                        )
                        removed += 1
                    else:
                        keep_lines.append(line)
                while keep_lines:  # whole blocks of lines per write: same bytes, far fewer calls
                    if writer is None or in_shard >= OUTPUT_SHARD_DOCS:
                        if writer is not None:
                            writer.close()
                        writer = JsonlZstWriter(output / f"part-{kept // OUTPUT_SHARD_DOCS:05d}.jsonl.zst")
                        in_shard = 0
                    take = keep_lines[: OUTPUT_SHARD_DOCS - in_shard]
                    keep_lines = keep_lines[len(take) :]
                    writer.write_line("\n".join(take))
                    kept += len(take)
                    in_shard += len(take)
                idx += len(lines)
            changed = [int(i) for i in result["changed_old"]]
            if changed:
                names = store.ids(changed + [int(rep[i]) for i in changed])
                for i in changed:
                    dup.write(
                        json.dumps(
                            {"id": names[i][0], "duplicate_of": names[int(rep[i])][0], "earlier_batch": True},
                            ensure_ascii=False,
                        )
                        + "\n"
                    )
        if writer is not None:
            writer.close()
        fault("output")
        (output / "duplicates.jsonl.tmp").replace(output / "duplicates.jsonl")
    except BaseException:
        rejected.abort()
        raise
    rejected.close()
    s = result["stats"]
    n_new = result["n"] - n_old
    stats = {
        "docs_in": counts["docs_in"],
        "docs_out": kept,
        "duplicates": removed,
        "duplicate_ids": s["duplicate_ids"],
        "rejected_read": counts["rejected_read"],
        "earlier_batch_changed": len(result["changed_old"]),
        "no_words": s["no_words"],
        "clusters": sum(s["cluster_sizes"].values()),
        "cluster_sizes": s["cluster_sizes"],
        "threshold": cfg.threshold,
        "num_perm": cfg.num_perm,
        "ngram": cfg.ngram,
        "bands": s["bands"],
        "rows": s["rows"],
        "keep": cfg.keep,
        "exact_verify": cfg.exact_verify,
        "band_pairs": s["band_pairs"],
        "candidate_pairs": s["candidate_pairs"],
        "verified_pairs": s["verified_pairs"],
        "sorted_runs": s["sorted_runs"],
        "memory_budget": cfg.memory_budget,
        "workers": cfg.workers,
        "store_docs": result["n"],
        "batch": store.batches,
        "steps": [
            {
                "name": "minhash_dedup",
                "docs_in": n_new,
                "docs_out": kept,
                "dropped": {k: v for k, v in (("duplicate", removed), ("duplicate_id", s["duplicate_ids"])) if v},
            }
        ],
    }
    # Wall-clock times go to their own file: stats.json is the same bytes for the same input and
    # settings, whatever the executor or the machine's load.
    write_json(output / "stats.json", stats)
    stats["seconds"] = {
        "scan": round(t_scan, 3),
        "reduce": round(t_reduce, 3),
        "total": round(time.perf_counter() - t0, 3),
    }
    write_json(output / "timings.json", stats["seconds"])
    shutil.rmtree(work, ignore_errors=True)
    stats["resume"] = tally.as_dict()
    tally.log()
    return stats


def summary_rows(stats: dict) -> list[dict]:
    return [
        {
            "docs in": stats["docs_in"],
            "kept": stats["docs_out"],
            "duplicates": stats["duplicates"],
            "clusters": stats["clusters"],
            "bands x rows": f"{stats['bands']}x{stats['rows']}",
            "pairs checked": stats["candidate_pairs"],
            "pairs kept": stats["verified_pairs"],
            "seconds": stats["seconds"]["total"],
        }
    ]


def print_summary(stats: dict) -> None:
    print_table(summary_rows(stats), title="anvil data dedup")
