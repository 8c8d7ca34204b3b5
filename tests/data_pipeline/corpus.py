"""Test inputs built from real text (the sample corpus): JSONL.gz, Parquet and WARC files."""

from __future__ import annotations

import functools
import gzip
import html
import io
import json
from pathlib import Path

from data_pipeline.document import Document
from data_pipeline.sample import iter_sample_documents

GERMAN = (
    "Die Stadt liegt am Ufer des Flusses und ist seit dem Mittelalter ein wichtiger Handelsplatz. "
    "Viele Menschen besuchen jedes Jahr die alte Kirche, das Rathaus und den Markt. Im Sommer finden "
    "auf dem Platz Konzerte statt, und die Cafés sind bis spät in die Nacht geöffnet. "
) * 3
LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, and the rest of the text goes on for a "
    "while so that the document has enough words to pass the other filters. "
) * 6


@functools.lru_cache(maxsize=1)
def real_docs(limit: int = 1000) -> tuple[Document, ...]:
    return tuple(iter_sample_documents(limit))


@functools.lru_cache(maxsize=1)
def good_prose() -> list[str]:
    """Real documents that pass the four heuristic filters (the 'must pass' cases)."""
    from data_pipeline.steps.base import build_step

    docs = [Document(d.id, d.text) for d in real_docs()]
    steps = [build_step(n, {}) for n in ("c4", "gopher_repetition", "gopher_quality", "fineweb")]
    it = iter(docs)
    for s in steps:
        it = s.run(it)
    out, seen = [], set()
    for doc in it:  # C4 ran first: every filter saw the final text
        lines = {line for line in doc.text.split("\n") if len(line) >= 10}
        if not lines & seen:  # the sample has natural near-duplicates; keep documents that share no line
            out.append(doc.text)
            seen |= lines
    return out


def write_jsonl_gz(path: Path, records: list[dict]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")
    return path


def write_parquet(path: Path, records: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def to_html(text: str, title: str = "page") -> str:
    paras = "".join(f"<p>{html.escape(p)}</p>" for p in text.split("\n\n") if p.strip())
    return (
        f"<html><head><title>{html.escape(title)}</title></head><body>"
        f"<nav><a href='/'>Home</a> | <a href='/about'>About</a></nav>"
        f"<article><h1>{html.escape(title)}</h1>{paras}</article>"
        f"<footer>Footer links</footer></body></html>"
    )


def write_warc(
    path: Path, pages: list[tuple[str, str]], *, revisit: bool = True, image: bool = True, binary_html: bool = False
) -> Path:
    """pages: (url, html). Adds a request record per page, optionally a revisit, an image and a
    binary payload served as text/html."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=str(path).endswith(".gz"))

        def response(url: str, body: bytes, ctype: str):
            headers = StatusAndHeaders("200 OK", [("Content-Type", ctype)], protocol="HTTP/1.1")
            writer.write_record(
                writer.create_warc_record(
                    url, "response", payload=io.BytesIO(body), length=len(body), http_headers=headers
                )
            )

        for url, page in pages:
            req = StatusAndHeaders("GET / HTTP/1.1", [("Host", "example.org")], is_http_request=True)
            writer.write_record(writer.create_warc_record(url, "request", http_headers=req))
            response(url, page.encode("utf-8"), "text/html; charset=utf-8")
        if revisit:
            writer.write_record(
                writer.create_revisit_record(pages[0][0], "sha1:AAAA", pages[0][0], "2024-01-01T00:00:00Z")
            )
        if image:
            response("http://example.org/logo.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "image/png")
        if binary_html:
            response("http://example.org/binary", b"\x00\x01\x02\xff" * 500, "text/html")
    return path


def without_timings(name: str, data: bytes) -> bytes:
    """A run's file with its CPU timings blanked: stats.json's `seconds` and report.html's `cpu`
    cells are the only bytes that differ between two runs of the same recipe."""
    import re

    if name.endswith("stats.json"):
        return re.sub(rb'"seconds": [0-9.e+-]+', b'"seconds": 0', data)
    if name.endswith("report.html"):
        return re.sub(rb'<(td|span) class="cpu">[^<]*</(td|span)>', b"", data)
    return data
