"""Parallel tokenization into a Megatron indexed dataset: `anvil data tokenize ... --output-prefix PREFIX`.

Shape (like Megatron-LM's preprocess_data, with order kept and resume added):
- the main process reads documents source by source (one source = one input shard) and cuts them
  into batches that never straddle two sources;
- `--workers N` processes each encode a whole batch (`Tokenizer.encode_batch`) and return one flat
  token array plus the document lengths; `Pool.imap` hands results back in submission order, so
  the writer sees documents in input order whatever N is (the bytes are identical for any N);
- the writer appends the end-of-document token and writes each source to its own part
  (`PREFIX.parts/NNNNN.{bin,idx}` through megatron-core's `IndexedDatasetBuilder`) with a
  `.done.json` marker that also records the size and checksum of the part's files; a rerun skips
  sources whose marker matches (same file size, mtime and tokenizer) and whose part files still
  verify (a missing, truncated or changed part is redone, with a warning), so an interrupted job
  resumes by input shard;
- finally the parts are concatenated into `PREFIX.bin/.idx` (`IndexedDatasetBuilder.add_index`)
  and `PREFIX.json` records counts, vocabulary, dtype, the tokenizer's hash and the size and
  checksum of `PREFIX.bin/.idx` (`anvil data verify PREFIX` checks them).
Every file is written under a `.tmp` name and renamed when complete, so a full disk or an I/O
error (raised naming the file) leaves no half-written part or prefix under its final name.
Token ids are uint16 when the vocabulary fits (<= 65536), int32 otherwise.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from data_pipeline.executors.integrity import check_files, record_files
from framework.data.shards import file_sha256, write_sidecar

BATCH_DOCS = 256


@dataclass
class Source:
    """One input shard: a name, an identity that changes when its content does, and a reader."""

    name: str
    identity: dict
    open: Callable[..., Iterable]  # open(on_reject) yields objects with `.text` (Documents)


@dataclass
class TokenizeStats:
    documents: int = 0
    tokens: int = 0
    bytes: int = 0
    skipped_empty: int = 0
    rejected: dict = field(default_factory=dict)
    sources_done: int = 0
    sources_resumed: int = 0
    seconds: float = 0.0
    encode_cpu_s: float = 0.0  # CPU time of encoding, summed over workers
    max_token_id: int = 0
    per_source: list = field(default_factory=list)


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32


# ---- worker side -------------------------------------------------------------------------------
_TOK = None


def _init_worker(tokenizer_path: str) -> None:
    global _TOK
    # One worker = one core: the tokenizers library would otherwise start a thread per core in
    # every worker (N workers x cores threads), which is slower than N single-threaded workers.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from data_pipeline.tokens.tokenizer import load_tokenizer

    _TOK = load_tokenizer(tokenizer_path)


def _encode(job: tuple) -> tuple[int, np.ndarray, np.ndarray, dict | None, float]:
    """Encode one batch; return (source index, flat ids, per-document lengths, end-of-source info,
    CPU seconds spent)."""
    src, texts, dtype, tail = job
    cpu = time.process_time()
    ids = [e.ids for e in _TOK.encode_batch(texts, add_special_tokens=False)]
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=int(lengths.sum()))
    return src, flat, lengths, tail, time.process_time() - cpu


# ---- main side ---------------------------------------------------------------------------------
def _batches(
    sources: Sequence[Source], todo: set[int], dtype: str, batch_docs: int, parts_dir: Path
) -> Iterator[tuple]:
    for i, source in enumerate(sources):
        if i not in todo:
            continue
        batch: list[str] = []
        skipped = nbytes = 0
        rejected: dict[str, int] = {}
        reject_file = parts_dir / f"{i:05d}.rejected.jsonl"
        reject_file.unlink(missing_ok=True)

        def on_reject(rec: dict) -> None:
            rejected[rec["reason"]] = rejected.get(rec["reason"], 0) + 1
            with open(reject_file, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")

        for doc in source.open(on_reject):
            text = doc.text if hasattr(doc, "text") else str(doc)
            if not text:
                skipped += 1
                continue
            nbytes += len(text.encode("utf-8"))
            batch.append(text)
            if len(batch) == batch_docs:
                yield i, batch, dtype, None
                batch = []
        # The last batch of a source (possibly empty) tells the writer the source is complete.
        yield i, batch, dtype, {"skipped_empty": skipped, "bytes": nbytes, "rejected": rejected}


def _publish(tmp_base: str, base: str) -> None:
    """Rename a finished `X.tmp.bin/.idx` pair to `base.bin/.idx` (.idx last: it is read first)."""
    os.replace(tmp_base + ".bin", base + ".bin")
    os.replace(tmp_base + ".idx", base + ".idx")


def _discard(tmp_base: str) -> None:
    for ext in (".bin", ".idx"):
        Path(tmp_base + ext).unlink(missing_ok=True)


class _PartWriter:
    def __init__(self, parts_dir: Path, index: int, dtype, eod: int, identity: dict):
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

        self.base = parts_dir / f"{index:05d}"
        self.tmp_base = str(self.base) + ".tmp"
        self.builder = IndexedDatasetBuilder(self.tmp_base + ".bin", dtype=dtype)
        self.eod, self.dtype, self.identity = eod, dtype, identity
        self.documents = self.tokens = self.max_id = 0

    def add(self, flat: np.ndarray, lengths: np.ndarray) -> None:
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        eod = np.array([self.eod], dtype=self.dtype)
        for k in range(len(lengths)):
            doc = np.concatenate([flat[offsets[k] : offsets[k + 1]], eod])
            self.builder.add_document(doc, [len(doc)])
        self.documents += len(lengths)
        self.tokens += int(lengths.sum()) + len(lengths)
        if len(flat):
            self.max_id = max(self.max_id, int(flat.max()))

    def close(self, tail: dict) -> dict:
        self.builder.finalize(self.tmp_base + ".idx")
        _publish(self.tmp_base, str(self.base))
        produced = [Path(str(self.base) + ext) for ext in (".bin", ".idx", ".rejected.jsonl")]
        marker = {
            "identity": self.identity,
            "documents": self.documents,
            "tokens": self.tokens,
            "max_token_id": max(self.max_id, self.eod),
            **tail,
            "files": record_files(produced, self.base.parent),
        }
        tmp = Path(str(self.base) + ".done.json.tmp")
        tmp.write_text(json.dumps(marker, sort_keys=True))
        os.replace(tmp, str(self.base) + ".done.json")  # the marker is the commit point
        return marker

    def abort(self) -> None:
        """A failed write: close and drop the unfinished part (never raises)."""
        try:
            self.builder.data_file.close()
        except OSError:
            pass
        _discard(self.tmp_base)


def rejected_path(output_prefix: str) -> Path:
    """Unreadable records of `anvil data tokenize` go to `rejected/PREFIXNAME.jsonl` beside the prefix."""
    return Path(output_prefix).parent / "rejected" / f"{Path(output_prefix).name}.jsonl"


def _collect_rejected(parts_dir: Path, n_sources: int, output_prefix: str) -> None:
    files = [parts_dir / f"{i:05d}.rejected.jsonl" for i in range(n_sources)]
    files = [f for f in files if f.is_file()]
    target = rejected_path(output_prefix)
    target.unlink(missing_ok=True)
    if files:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as out:
                for f in files:
                    out.write(f.read_text(encoding="utf-8"))
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, target)


def _load_marker(parts_dir: Path, index: int, identity: dict) -> dict | None:
    """The source's marker when it matches `identity` and its part files verify, else None."""
    path = parts_dir / f"{index:05d}.done.json"
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text())
    except ValueError:
        marker = {}
    if marker.get("identity") != identity:
        return None
    problem = check_files(marker.get("files", {}), parts_dir)
    if problem:
        from framework.runtime import get_logger

        get_logger("data").warning("tokenize: part %05d (%s): %s; redoing it", index, identity.get("name"), problem)
        path.unlink()
        return None
    return marker


def tokenize_sources(
    sources: Sequence[Source],
    tokenizer_path: str,
    output_prefix: str,
    workers: int = 1,
    batch_docs: int = BATCH_DOCS,
    progress: bool | None = None,
    keep_parts: bool = False,
) -> TokenizeStats:
    """Tokenize `sources` in order into `output_prefix`.{bin,idx,json}; resumable per source."""
    from data_pipeline.tokens.tokenizer import load_tokenizer, special_ids
    from framework.runtime import progress as progress_bar

    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if not sources:
        raise ValueError("no input files to tokenize")
    start = time.perf_counter()
    tok = load_tokenizer(tokenizer_path)
    eod, pad = special_ids(tok)
    vocab = tok.get_vocab_size(with_added_tokens=True)
    dtype = token_dtype(vocab)
    tok_hash = file_sha256(tokenizer_path)
    out = Path(output_prefix)
    out.parent.mkdir(parents=True, exist_ok=True)
    parts_dir = Path(str(output_prefix) + ".parts")
    parts_dir.mkdir(exist_ok=True)

    stats = TokenizeStats()
    markers: dict[int, dict] = {}
    for i, s in enumerate(sources):
        s.identity = {**s.identity, "tokenizer_sha256": tok_hash, "name": s.name}
        marker = _load_marker(parts_dir, i, s.identity)
        if marker is not None:
            markers[i] = marker
            stats.sources_resumed += 1
    todo = {i for i in range(len(sources)) if i not in markers}

    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    jobs = _batches(sources, todo, np.dtype(dtype).name, batch_docs, parts_dir)
    pool = None
    if workers == 1:
        _init_worker(tokenizer_path)
        results: Iterator = map(_encode, jobs)
    else:
        import multiprocessing as mp

        # forkserver: workers fork from a clean single-threaded server that preloaded only this
        # module, so they start in milliseconds and never re-run the caller's heavy imports.
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["data_pipeline.tokens.tokenize", "tokenizers"])
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(str(tokenizer_path),))
        results = pool.imap(_encode, jobs, chunksize=1)
    writer: _PartWriter | None = None
    # megatron-core's import leaves a large heap of long-lived objects; freezing them keeps Python's
    # periodic full collections (and add_index's gc.collect per part) from rescanning them (measured:
    # ~1 s per collection on this corpus, 30% of a 4 MB run).
    gc.freeze()
    try:
        for src, flat, lengths, tail, cpu in progress_bar(results, desc="tokenize", unit="batch", enabled=progress):
            stats.encode_cpu_s += cpu
            if writer is None:
                writer = _PartWriter(parts_dir, src, dtype, eod, sources[src].identity)
            writer.add(flat, lengths)
            if tail is not None:
                markers[src] = writer.close(tail)
                writer = None
    except BaseException as exc:
        if writer is not None:
            writer.abort()
            if isinstance(exc, OSError) and not exc.filename:  # disk full: name the part
                exc.filename = str(writer.base) + ".bin"
        raise
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        gc.unfreeze()

    stats.documents = sum(m["documents"] for m in markers.values())
    stats.tokens = sum(m["tokens"] for m in markers.values())
    stats.bytes = sum(m["bytes"] for m in markers.values())
    stats.skipped_empty = sum(m["skipped_empty"] for m in markers.values())
    for m in markers.values():
        for reason, n in m["rejected"].items():
            stats.rejected[reason] = stats.rejected.get(reason, 0) + n
    _collect_rejected(parts_dir, len(sources), output_prefix)
    if stats.documents == 0:
        raise ValueError(
            f"no documents to tokenize in {len(sources)} input(s) ({stats.skipped_empty} empty documents skipped)"
        )
    # Concatenate the parts in input order; megatron's builder copies .bin and shifts the index.
    tmp_prefix = str(output_prefix) + ".tmp"
    final = IndexedDatasetBuilder(tmp_prefix + ".bin", dtype=dtype)
    gc.freeze()
    try:
        for i in range(len(sources)):
            if markers[i]["documents"]:
                final.add_index(str(parts_dir / f"{i:05d}"))
        final.finalize(tmp_prefix + ".idx")
    except BaseException as exc:
        try:
            final.data_file.close()
        except OSError:
            pass
        _discard(tmp_prefix)
        if isinstance(exc, OSError) and not exc.filename:
            exc.filename = str(output_prefix) + ".bin"
        raise
    finally:
        gc.unfreeze()
    _publish(tmp_prefix, str(output_prefix))
    stats.sources_done = len(todo)
    stats.max_token_id = max(m["max_token_id"] for m in markers.values())
    stats.per_source = [
        {
            "name": sources[i].name,
            "documents": markers[i]["documents"],
            "tokens": markers[i]["tokens"],
            "bytes": markers[i]["bytes"],
        }
        for i in range(len(sources))
    ]
    stats.seconds = time.perf_counter() - start
    write_sidecar(
        str(output_prefix),
        {
            "documents": stats.documents,
            "tokens": stats.tokens,
            "vocab_size": vocab,
            "dtype": np.dtype(dtype).name,
            "eod_id": eod,
            "pad_id": pad,
            "max_token_id": stats.max_token_id,
            "tokenizer": os.path.basename(str(tokenizer_path)),
            "tokenizer_sha256": tok_hash,
            "bytes": stats.bytes,
            "inputs": stats.per_source,
            "skipped": {"empty": stats.skipped_empty, **stats.rejected},
            # keyed by extension, so a prefix copied under another name still verifies
            "files": {
                ext: record_files([Path(str(output_prefix) + ext)], out.parent)[out.name + ext]
                for ext in (".bin", ".idx")
            },
        },
    )
    if not keep_parts:
        shutil.rmtree(parts_dir, ignore_errors=True)
    return stats
