"""Streaming readers: files, folders and globs of JSONL / Parquet / WARC / WET / HTML -> Documents.

Stable API used across Anvil (curation, dedup, tokenizer):

    expand_inputs(inputs) -> list[Path]
        Files, folders (searched recursively, hidden paths skipped) and globs, de-duplicated and
        sorted by their string form, so the shard order (and every result that depends on it) is
        the same on any machine. Folders and globs keep only supported files; a file named
        explicitly must be supported. The output folder of `anvil data run` yields only its kept
        shards (not rejected/ or report.html).

    read_documents(path, on_reject=None, strict=False, *, raw_html=False, max_doc_bytes=..., skipped=None,
                   warc_backend="auto") -> Iterator[Document]
        One file, streamed record by record (never the whole file in memory). Every record that
        cannot be read becomes a call `on_reject({"source": str(path), "line": N | "offset": N,
        "step": "read", "reason": REASON, ...})` and is skipped; with `strict=True` the first one
        raises `ReadError` naming the file and line/offset instead. `line` is 1-based (JSONL),
        `offset` is a byte offset (WARC/WET) or a 0-based row (Parquet).

    iter_documents(inputs, on_reject=None, strict=False, **kw) -> Iterator[Document]
        `read_documents` over every file of `expand_inputs(inputs)`, in order.

Formats (README "Curation"): `.jsonl`, `.jsonl.gz`, `.jsonl.zst` (`{"id", "text",
...}`; other keys become metadata), `.parquet` (columns `id`, `text`, others as metadata),
`.warc`/`.warc.gz` (HTTP responses with an HTML content type; revisit/request/metadata records are
skipped and counted in `skipped`), `.wet`/`.wet.gz` (conversion records), `.html`/`.htm` (one page
per file). WARC/WET files are read with FastWARC, warcio taking over for what FastWARC refuses
(`warc_backend="warcio"`: warcio only; the documents are the same, see data_pipeline/io/warc.py);
a record cut off by the end of the file is rejected as truncated_file. HTML is turned into text by
`data_pipeline.io.html` (the `extract` step's default engine) unless `raw_html=True`, in which case the document carries the HTML and `metadata["content_type"] = "text/html"` so that the
pipeline's `extract` step (with the recipe's settings) does it.

Reject reasons: truncated_file, invalid_json, not_an_object, missing_text, text_not_string,
invalid_utf8, empty_text, too_large, binary_payload, unreadable_file, missing_text_column.
Documents without an id get `"<file name>:<line|offset|row>"`.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import json
import zlib
from pathlib import Path
from typing import Callable, Iterator

from data_pipeline.document import Document
from data_pipeline.io.html import HTML_TYPES

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")
WARC_SUFFIXES = (".warc", ".warc.gz", ".wet", ".wet.gz")
HTML_SUFFIXES = (".html", ".htm")
SUPPORTED_SUFFIXES = JSONL_SUFFIXES + (".parquet",) + WARC_SUFFIXES + HTML_SUFFIXES
DEFAULT_MAX_DOC_BYTES = 10 * 1024 * 1024  # a record larger than this is rejected as too_large
RejectFn = Callable[[dict], None]


class ReadError(ValueError):
    """A record could not be read in strict mode: the message names file and line/offset."""


def is_supported(path: str | Path) -> bool:
    return str(path).lower().endswith(SUPPORTED_SUFFIXES)


def expand_inputs(inputs: list[str] | str | Path | list[Path]) -> list[Path]:
    """Files, folders and globs -> sorted, de-duplicated list of supported files.

    Raises FileNotFoundError naming the input that matched nothing, and ValueError for an
    explicitly named file with an unsupported extension.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    found: set[Path] = set()
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            matches = _folder_files(path)
        elif path.is_file():
            if not is_supported(path):
                raise ValueError(f"{path}: unsupported input format; expected one of {', '.join(SUPPORTED_SUFFIXES)}")
            matches = [path]
        elif glob.has_magic(text):
            matches = []
            for m in glob.glob(text, recursive=True):
                p = Path(m)
                if p.is_dir():
                    matches += _folder_files(p)
                elif is_supported(p):
                    matches.append(p)
        else:
            raise FileNotFoundError(f"input not found: {text}")
        if not matches:
            raise FileNotFoundError(f"input {text}: no supported files ({', '.join(SUPPORTED_SUFFIXES)})")
        found.update(matches)
    return sorted(found, key=str)


def _folder_files(folder: Path) -> list[Path]:
    """Supported files under `folder`, skipping hidden paths (.anvil/ work files). The output folder
    of `anvil data run` (stats.json + rejected/) yields only its kept shards, so `clean/` can be the
    input of the next command as is."""
    if (folder / "stats.json").is_file() and (folder / "rejected").is_dir():
        return sorted(p for p in folder.glob("*.jsonl.zst") if p.is_file())
    return [
        p
        for p in folder.rglob("*")
        if p.is_file() and is_supported(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]


def iter_documents(inputs, on_reject: RejectFn | None = None, strict: bool = False, **kwargs) -> Iterator[Document]:
    for path in expand_inputs(inputs):
        yield from read_documents(path, on_reject, strict, **kwargs)


def read_documents(
    path: str | Path,
    on_reject: RejectFn | None = None,
    strict: bool = False,
    *,
    raw_html: bool = False,
    max_doc_bytes: int = DEFAULT_MAX_DOC_BYTES,
    skipped: dict[str, int] | None = None,
    warc_backend: str = "auto",
) -> Iterator[Document]:
    """Stream the documents of one file (see the module docstring for formats and reasons)."""
    path = Path(path)
    reject = _Rejecter(path, on_reject, strict)
    name = str(path).lower()
    if name.endswith(JSONL_SUFFIXES):
        docs = _read_jsonl(path, reject, max_doc_bytes)
    elif name.endswith(".parquet"):
        docs = _read_parquet(path, reject, max_doc_bytes)
    elif name.endswith(WARC_SUFFIXES):
        docs = _read_warc(path, reject, max_doc_bytes, skipped if skipped is not None else {}, warc_backend)
    elif name.endswith(HTML_SUFFIXES):
        docs = _read_html_file(path, reject, max_doc_bytes)
    else:
        raise ValueError(f"{path}: unsupported input format; expected one of {', '.join(SUPPORTED_SUFFIXES)}")
    if raw_html:
        yield from docs
        return
    extractor = None
    for doc in docs:
        if doc.metadata.get("content_type") in HTML_TYPES:
            if extractor is None:
                from data_pipeline.io.html import HtmlExtractor  # lazy: trafilatura is slow to import

                extractor = HtmlExtractor()
            text, reason = extractor.extract(doc.text, doc.metadata.get("url"))
            if text is None:
                reject.record({"offset": doc.offset}, reason, id=doc.id)
                continue
            doc.text = text
            del doc.metadata["content_type"]
        yield doc


class _Rejecter:
    def __init__(self, path: Path, on_reject: RejectFn | None, strict: bool):
        self.source, self.on_reject, self.strict = str(path), on_reject, strict

    def record(self, where: dict, reason: str, **extra) -> None:
        rec = {"source": self.source, **where, "step": "read", "reason": reason, **extra}
        if self.strict:
            loc = ", ".join(f"{k} {v}" for k, v in where.items())
            raise ReadError(f"{self.source}: {loc}: {reason}" + (f" ({extra['detail']})" if "detail" in extra else ""))
        if self.on_reject is not None:
            self.on_reject(rec)


def _zst_lines(path: Path, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """Lines of a (multi-frame) .zst file; EOFError when the file ends inside a frame, which
    zstandard's stream_reader would silently accept as a short file."""
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    dobj, in_frame, pending = dctx.decompressobj(), False, []
    with open(path, "rb") as raw:
        while chunk := raw.read(chunk_size):
            while chunk:
                out = dobj.decompress(chunk)
                in_frame = True
                chunk = b""
                if dobj.eof:
                    chunk, dobj, in_frame = dobj.unused_data, dctx.decompressobj(), False
                if b"\n" not in out:
                    pending.append(out)
                    continue
                parts = out.split(b"\n")
                parts[0] = b"".join(pending) + parts[0]
                pending = [parts.pop()]
                for line in parts:
                    yield line + b"\n"
    if in_frame:
        raise EOFError("zstd data ended before the end of its frame")
    tail = b"".join(pending)
    if tail:
        yield tail


def _open_lines(path: Path):
    name = str(path).lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".zst"):
        return contextlib.closing(_zst_lines(path))
    return open(path, "rb")


def _text_problem(text, max_doc_bytes: int) -> str | None:
    if text is None:
        return "missing_text"
    if not isinstance(text, str):
        return "text_not_string"
    if len(text) > max_doc_bytes:
        return "too_large"
    try:
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates from "\ud800" escapes cannot be written back
        return "invalid_utf8"
    if size > max_doc_bytes:
        return "too_large"
    if not text.strip():
        return "empty_text"
    return None


def _read_jsonl(path: Path, reject: _Rejecter, max_doc_bytes: int) -> Iterator[Document]:
    line_no = 0
    try:
        with _open_lines(path) as fh:
            for raw in fh:
                line_no += 1
                if not raw.strip():
                    continue
                where = {"line": line_no}
                if len(raw) > max_doc_bytes + 1024:
                    reject.record(where, "too_large", detail=f"{len(raw)} bytes")
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    reject.record(where, "invalid_utf8", detail=str(exc)[:200])
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as exc:
                    reject.record(where, "invalid_json", detail=str(exc)[:200])
                    continue
                if not isinstance(rec, dict):
                    reject.record(where, "not_an_object")
                    continue
                doc_id = rec.pop("id", None)
                doc_id = str(doc_id) if doc_id is not None else f"{path.name}:{line_no}"
                text = rec.pop("text", None)
                problem = _text_problem(text, max_doc_bytes)
                if problem:
                    reject.record(where, problem, id=doc_id)
                    continue
                yield Document(id=doc_id, text=text, metadata=rec, source=str(path), offset=line_no)
    except ReadError:
        raise
    except (EOFError, OSError, zlib.error) as exc:
        reject.record({"line": line_no + 1}, "truncated_file", detail=str(exc)[:200])
    except Exception as exc:
        if type(exc).__name__ != "ZstdError":
            raise
        reject.record({"line": line_no + 1}, "truncated_file", detail=str(exc)[:200])


def _read_parquet(path: Path, reject: _Rejecter, max_doc_bytes: int) -> Iterator[Document]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid/OSError variants
        reject.record({"offset": 0}, "unreadable_file", detail=str(exc)[:200])
        return
    names = pf.schema_arrow.names
    if "text" not in names:
        reject.record({"offset": 0}, "missing_text_column", detail=f"columns: {names}")
        return
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=1024):
            for rec in batch.to_pylist():
                where = {"offset": row}
                doc_id = rec.pop("id", None)
                doc_id = str(doc_id) if doc_id is not None else f"{path.name}:{row}"
                text = rec.pop("text", None)
                problem = _text_problem(text, max_doc_bytes)
                if problem:
                    reject.record(where, problem, id=doc_id)
                else:
                    yield Document(id=doc_id, text=text, metadata=rec, source=str(path), offset=row)
                row += 1
    except ReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt row group ends the file, counted
        reject.record({"offset": row}, "truncated_file", detail=str(exc)[:200])


def _charset(content_type: str) -> str:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            return value.strip("\"' ").lower()
    return "utf-8"


def decode_html(payload: bytes, content_type: str = "") -> str | None:
    """Bytes of an HTML page -> str, or None when the payload is binary (NULs, undecodable)."""
    if b"\x00" in payload[:65536]:
        return None
    for enc in (_charset(content_type), "utf-8"):
        try:
            return payload.decode(enc)
        except (LookupError, UnicodeDecodeError):
            continue
    text = payload.decode("utf-8", errors="replace")
    if text.count("\ufffd") > 0.05 * max(len(text), 1):
        return None
    return text


def _read_warc(
    path: Path, reject: _Rejecter, max_doc_bytes: int, skipped: dict[str, int], backend: str = "auto"
) -> Iterator[Document]:
    """Records from data_pipeline.io.warc (FastWARC, warcio for what it refuses) -> Documents."""
    from data_pipeline.io.warc import WarcError, is_html, warc_records

    try:
        for rec in warc_records(path, max_doc_bytes + 1, backend):
            offset, rtype = rec.offset, rec.rtype
            if rtype != "conversion" and (rtype != "response" or not is_html(rec.ctype)):
                key = rtype if rtype != "response" else "non_html"
                skipped[key] = skipped.get(key, 0) + 1
                if rec.truncated:
                    reject.record({"offset": offset}, "truncated_file", id=rec.rec_id or f"{path.name}:{offset}")
                continue
            rec_id = rec.rec_id or f"{path.name}:{offset}"
            payload = rec.payload
            if rec.truncated:
                reject.record({"offset": offset}, "truncated_file", id=rec_id)
                continue
            if len(payload) > max_doc_bytes:
                reject.record({"offset": offset}, "too_large", id=rec_id)
                continue
            meta = {"url": rec.url, "date": rec.date}
            if rtype == "conversion":  # WET: text already extracted
                try:
                    text = payload.decode("utf-8")
                except UnicodeDecodeError:
                    reject.record({"offset": offset}, "invalid_utf8", id=rec_id)
                    continue
                problem = _text_problem(text, max_doc_bytes)
                if problem:
                    reject.record({"offset": offset}, problem, id=rec_id)
                    continue
                yield Document(id=rec_id, text=text, metadata=meta, source=str(path), offset=offset)
                continue
            html = decode_html(payload, rec.ctype)
            if html is None:
                reject.record({"offset": offset}, "binary_payload", id=rec_id)
                continue
            if not html.strip():
                reject.record({"offset": offset}, "empty_text", id=rec_id)
                continue
            meta["content_type"] = "text/html"
            yield Document(id=rec_id, text=html, metadata=meta, source=str(path), offset=offset)
    except WarcError as exc:
        reject.record({"offset": exc.offset}, "truncated_file", detail=str(exc))


def _read_html_file(path: Path, reject: _Rejecter, max_doc_bytes: int) -> Iterator[Document]:
    size = path.stat().st_size
    if size > max_doc_bytes:
        reject.record({"offset": 0}, "too_large", id=str(path))
        return
    html = decode_html(path.read_bytes())
    if html is None:
        reject.record({"offset": 0}, "binary_payload", id=str(path))
    elif not html.strip():
        reject.record({"offset": 0}, "empty_text", id=str(path))
    else:
        yield Document(id=str(path), text=html, metadata={"content_type": "text/html"}, source=str(path), offset=0)
