"""Writers: kept documents as sharded `.jsonl.zst`, dropped ones as `rejected/` JSON lines.

Bytes are deterministic (fixed zstd level, single-threaded compression, no timestamps, compact
JSON with keys in document order) so the same documents always give the same files, and every file
appears atomically: it is written as `NAME.tmp` and renamed on `close()`; a crash leaves only
`.tmp` files that the next run overwrites.

    with ShardedWriter(folder, prefix="part", max_docs=100_000) as w:   # part-00000.jsonl.zst ...
        for doc in docs: w.write(doc)
    w.paths  # the shards written, in order

    with JsonlZstWriter(path) as w: w.write(doc)   # one file
    with RejectedWriter(path, include_text=False) as r: r.write_drop(doc, step, reason); r.write_record(dict)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from data_pipeline.document import Document

ZSTD_LEVEL = 3


def dumps_document(doc: Document) -> str:
    return json.dumps(doc.to_json(), ensure_ascii=False, separators=(",", ":"))


class _CommitOnSuccess:
    """`with writer:` closes (publishes) on success and aborts (removes) on an exception."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


class _AtomicZstLines(_CommitOnSuccess):
    """Text lines to `path` (zstd-compressed when it ends in .zst), published by rename on close."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self._raw = open(self.tmp, "wb")
        self._zst = str(self.path).endswith(".zst")
        if self._zst:
            import zstandard

            cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=0, write_checksum=True)
            self._out = cctx.stream_writer(self._raw, closefd=False)
        else:
            self._out = self._raw
        self.count = 0
        self.bytes = 0
        self._closed = False

    def write_line(self, line: str) -> None:
        data = line.encode("utf-8") + b"\n"
        try:
            self._out.write(data)
        except OSError as exc:  # disk full, I/O error: name the file (the caller aborts)
            exc.filename = exc.filename or str(self.path)
            raise
        self.count += 1
        self.bytes += len(data)

    def close(self) -> Path:
        if not self._closed:
            try:
                if self._zst:
                    self._out.close()
                self._raw.flush()
                os.fsync(self._raw.fileno())
                self._raw.close()
            except OSError as exc:
                self.abort()
                exc.filename = exc.filename or str(self.path)
                raise
            os.replace(self.tmp, self.path)
            self._closed = True
        return self.path

    def abort(self) -> None:
        """Drop the half-written file (never raises: it runs while another error propagates)."""
        if not self._closed:
            self._closed = True
            try:
                self._raw.close()
            except OSError:
                pass
            self.tmp.unlink(missing_ok=True)


class JsonlZstWriter(_AtomicZstLines):
    """Documents as JSON lines in one file (`.jsonl.zst`, or plain `.jsonl`)."""

    def write(self, doc: Document) -> None:
        self.write_line(dumps_document(doc))


class RejectedWriter(_AtomicZstLines):
    """`rejected/` records: `{"id", "step", "reason"}` per dropped document (text behind a flag);
    reader failures arrive as ready-made dicts `{"source", "line"|"offset", "step": "read", "reason"}`."""

    def __init__(self, path: str | Path, include_text: bool = False):
        super().__init__(path)
        self.include_text = include_text

    def write_drop(self, doc: Document, step: str, reason: str, **extra) -> None:
        rec = {"id": doc.id, "step": step, "reason": reason, "source": doc.source, "offset": doc.offset}
        rec.update(extra)
        if self.include_text:
            rec["text"] = doc.text
        self.write_line(json.dumps(rec, ensure_ascii=False, separators=(",", ":")))

    def write_record(self, rec: dict) -> None:
        self.write_line(json.dumps(rec, ensure_ascii=False, separators=(",", ":")))


class ShardedWriter(_CommitOnSuccess):
    """Documents into `folder/{prefix}-{k:05d}.jsonl.zst`, a new shard every `max_docs` documents."""

    def __init__(self, folder: str | Path, prefix: str = "part", max_docs: int = 100_000):
        self.folder, self.prefix, self.max_docs = Path(folder), prefix, max_docs
        self.paths: list[Path] = []
        self._cur: JsonlZstWriter | None = None

    def write(self, doc: Document) -> None:
        if self._cur is None or self._cur.count >= self.max_docs:
            self._roll()
        self._cur.write(doc)

    def _roll(self) -> None:
        if self._cur is not None:
            self.paths.append(self._cur.close())
        self._cur = JsonlZstWriter(self.folder / f"{self.prefix}-{len(self.paths):05d}.jsonl.zst")

    def close(self) -> list[Path]:
        if self._cur is not None:
            self.paths.append(self._cur.close())
            self._cur = None
        return self.paths

    def abort(self) -> None:
        if self._cur is not None:
            self._cur.abort()
            self._cur = None
