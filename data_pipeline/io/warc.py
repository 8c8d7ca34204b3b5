"""WARC/WET records through FastWARC (fast, C++) or warcio (lenient), record for record the same.

`warc_records(path, limit)` yields one `WarcRecord` per record of a .warc/.wet file (gzipped or
not) with what the readers need: type, byte offset (of the record, or of its gzip member), id,
URL, date, the HTTP Content-Type of responses, and, for conversion records and HTML responses, the
first `limit` bytes of the payload decoded as warcio's `content_stream()` does (chunked transfer
encoding and gzip/deflate/br content encoding undone).

FastWARC reads several times faster than warcio, but it accepts less: it refuses records that
warcio reads with a warning (a wrong Content-Length, odd chunking) and it takes a header cut off
by the end of the file for a record. So FastWARC reads a file while it can; on the first record
it raises on or that misses a mandatory header, warcio reopens the file and continues from that
record (HTTP headers are parsed by warcio's parser in both cases) (the records already delivered are skipped by offset), so every document is the same
whichever library read it (tests/data_pipeline/test_warc.py). Set `backend="warcio"` to read with
warcio only (benchmarks/extract.py compares the two).

One difference remains, in FastWARC's favour: a WARC gzipped as one stream instead of one gzip
member per record is read by FastWARC, while warcio refuses it (truncated_file when warcio reads
it alone).

A record shorter than its Content-Length (a file cut off in the middle of it) comes with
`truncated=True` from both libraries; warcio's own errors (garbage, a header cut off) raise
`WarcError` with the offset where reading stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HTML_TYPES = ("text/html", "application/xhtml+xml")
HTTP_SCHEMES = ("http:", "https:")  # as warcio: only these records carry HTTP headers


@dataclass(slots=True)
class WarcRecord:
    rtype: str
    offset: int
    rec_id: str
    url: str
    date: str
    ctype: str = ""  # HTTP Content-Type of a response ('' when none)
    payload: bytes | None = None  # conversion records and HTML responses only
    truncated: bool = False


class WarcError(Exception):
    def __init__(self, offset: int, detail: str):
        super().__init__(detail)
        self.offset = offset


class _FastWarcRefused(Exception):
    pass


def is_html(ctype: str) -> bool:
    return ctype.split(";")[0].strip().lower() in HTML_TYPES


def have_fastwarc() -> bool:
    try:
        import fastwarc.warc  # noqa: F401
    except ImportError:
        return False
    return True


def warc_records(path: str | Path, limit: int, backend: str = "auto") -> Iterator[WarcRecord]:
    """backend: auto (FastWARC if installed, warcio for what it refuses) | fastwarc | warcio."""
    if backend not in ("auto", "fastwarc", "warcio"):
        raise ValueError(f"backend: expected auto, fastwarc or warcio, got {backend!r}")
    done = -1
    if backend != "warcio" and (backend == "fastwarc" or have_fastwarc()):
        state = {"done": -1}
        try:
            yield from _fastwarc(Path(path), limit, state)
            return
        except _FastWarcRefused as exc:
            from framework.runtime import get_logger

            done = state["done"]
            get_logger("data").debug(
                "%s: FastWARC stopped after offset %d (%s); warcio reads the rest", path, done, exc
            )
    yield from _warcio(Path(path), limit, after=done)


def _decoded(stream, get_header, limit: int) -> bytes:
    """The payload as warcio's ArcWarcRecord.content_stream() decodes it (its own readers)."""
    encoding = get_header("content-encoding")
    chunked = get_header("transfer-encoding") == "chunked"
    if not encoding and not chunked:
        return stream.read(limit)
    from warcio.bufferedreaders import BufferedReader, ChunkedDataReader

    if encoding:
        encoding = encoding.lower()
        if encoding not in BufferedReader.get_supported_decompressors():
            encoding = None
    if chunked:
        return ChunkedDataReader(stream, decomp_type=encoding).read(limit)
    if encoding:
        return BufferedReader(stream, decomp_type=encoding).read(limit)
    return stream.read(limit)


def _fastwarc(path: Path, limit: int, state: dict) -> Iterator[WarcRecord]:
    from fastwarc.warc import ArchiveIterator
    from warcio.recordloader import ArcWarcRecordLoader

    # HTTP headers are parsed by warcio's parser (as its ArchiveIterator configures it) on
    # FastWARC's payload stream: FastWARC's own parser reads odd headers (\r\r\n line ends)
    # differently, and headers are a few hundred bytes: the speed is in framing and gunzipping.
    parse_http = ArcWarcRecordLoader(verify_http=False).http_parser.parse

    try:
        records = iter(ArchiveIterator(str(path), parse_http=False, auto_decode="none", fsspec_args=False))
    except Exception as exc:  # noqa: BLE001 - FastWARC raises OSError/ValueError variants
        raise _FastWarcRefused(str(exc)) from None
    while True:
        try:
            r = next(records, None)
            if r is None:
                return
            headers = r.headers
            rtype = headers.get("WARC-Type")
            if rtype is None or headers.get("Content-Length") is None:
                raise _FastWarcRefused("record without WARC-Type or Content-Length")
            rec = WarcRecord(
                rtype,
                r.stream_pos,
                (headers.get("WARC-Record-ID") or "").strip("<>"),
                headers.get("WARC-Target-URI") or "",
                headers.get("WARC-Date") or "",
            )
            if rtype == "conversion":
                rec.payload = r.reader.read(limit)
            elif rtype == "response" and r.content_length > 0 and rec.url.startswith(HTTP_SCHEMES):
                http = parse_http(r.reader)
                rec.ctype = (http.get_header("Content-Type") or "") if http else ""
                if is_html(rec.ctype):
                    rec.payload = _decoded(r.reader, http.get_header, limit)
            r.reader.consume()
            rec.truncated = r.reader.tell() < r.content_length
        except _FastWarcRefused:
            raise
        except Exception as exc:  # noqa: BLE001 - malformed record: warcio takes over from here
            raise _FastWarcRefused(f"{type(exc).__name__}: {exc}") from None
        yield rec
        state["done"] = rec.offset


def _warcio(path: Path, limit: int, after: int = -1) -> Iterator[WarcRecord]:
    """warcio's reading; records at offsets <= `after` (already delivered by FastWARC) are skipped."""
    from warcio.archiveiterator import ArchiveIterator

    position = 0
    with open(path, "rb") as fh:
        it = ArchiveIterator(fh)
        try:
            for record in it:
                headers = record.rec_headers
                rec = WarcRecord(
                    record.rec_type,
                    -1,
                    (headers.get_header("WARC-Record-ID") or "").strip("<>"),
                    headers.get_header("WARC-Target-URI") or "",
                    headers.get_header("WARC-Date") or "",
                )
                if rec.rtype == "conversion":
                    rec.payload = record.content_stream().read(limit)
                elif rec.rtype == "response":
                    http = record.http_headers
                    rec.ctype = (http.get_header("Content-Type") or "") if http else ""
                    if is_html(rec.ctype):
                        rec.payload = _decoded(record.raw_stream, http.get_header, limit)
                rec.offset = it.get_record_offset()  # reads the rest of the record: warcio needs it for the offset
                position = max(0, rec.offset + it.get_record_length())  # warcio's offsets in a one-stream gzip are < 0
                rec.truncated = getattr(record.raw_stream, "limit", 0) > 0
                if rec.offset > after:
                    yield rec
        except Exception as exc:  # noqa: BLE001 - warcio/gzip raise many kinds on garbage and cut files
            raise WarcError(position, f"{type(exc).__name__}: {exc}"[:200]) from None
