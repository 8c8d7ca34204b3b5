"""WARC/WET reading: FastWARC and warcio give the same documents, rejections and skip counts, on
well-formed files and on cut-off or odd ones (where warcio takes over from FastWARC)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from data_pipeline.io import warc
from data_pipeline.io.readers import read_documents
from tests.data_pipeline.corpus import to_html, write_warc

pytest.importorskip("fastwarc")


def read(path: Path, backend: str):
    rejected, skipped = [], {}
    docs = [
        (d.id, d.offset, d.text, d.metadata, d.source)
        for d in read_documents(path, rejected.append, raw_html=True, skipped=skipped, warc_backend=backend)
    ]
    return docs, rejected, skipped


def same_either_way(path: Path):
    got = read(path, "auto")
    assert got == read(path, "warcio"), path.name
    return got


@pytest.fixture
def warcio_calls(monkeypatch):
    """The `after` offset of every warcio takeover (-1: warcio read the whole file)."""
    calls = []
    original = warc._warcio

    def spy(path, limit, after=-1):
        calls.append(after)
        yield from original(path, limit, after)

    monkeypatch.setattr(warc, "_warcio", spy)
    return calls


TEXTS = [
    f"Page {i} tells how the river town {i} grew around its market.\n\nIts library opens at {i} o'clock, "
    f"and the museum café serves {i} kinds of cake. " * 3
    for i in range(5)
]


def _pages(n: int = 4):
    return [(f"http://e.org/{i}", to_html(t, f"page {i}")) for i, t in enumerate(TEXTS[:n])]


def _wet(path: Path, texts: list[str]) -> Path:
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=str(path).endswith(".gz"))
        for i, text in enumerate(texts):
            body = text.encode()
            writer.write_record(
                writer.create_warc_record(
                    f"http://e.org/t{i}",
                    "conversion",
                    payload=io.BytesIO(body),
                    length=len(body),
                    warc_content_type="text/plain",
                )
            )
    return path


def test_sample_warc_and_wet_read_by_fastwarc_like_warcio(tmp_path, warcio_calls):
    files = [
        write_warc(tmp_path / "a.warc.gz", _pages(), binary_html=True),
        write_warc(tmp_path / "b.warc", _pages(3)),
        _wet(tmp_path / "c.wet.gz", TEXTS[:3] + ["", "\ud7ff ok"]),
    ]
    for path in files:
        warcio_calls.clear()
        docs, rejected, skipped = same_either_way(path)
        assert warcio_calls == [-1], "auto must read these files with FastWARC alone"
        assert docs
    docs, rejected, skipped = read(files[0], "auto")
    assert len(docs) == 4 and docs[0][3] == {
        "url": "http://e.org/0",
        "date": docs[0][3]["date"],
        "content_type": "text/html",
    }
    assert [r["reason"] for r in rejected] == ["binary_payload"]
    assert skipped == {"request": 4, "revisit": 1, "non_html": 1}
    docs, rejected, _ = read(files[2], "auto")
    assert [d[2] for d in docs] == TEXTS[:3] + ["\ud7ff ok"] and [r["reason"] for r in rejected] == ["empty_text"]


def test_cut_off_files_lose_only_the_cut_record(tmp_path, warcio_calls):
    plain = write_warc(tmp_path / "full.warc", _pages(), revisit=False, image=False).read_bytes()
    last = plain.rindex(b"WARC/1.0\r\nWARC-Type: response")
    cases = {
        "payload.warc": plain[: len(plain) - 300],  # inside the last page
        "header.warc": plain[: last + 40],
    }  # inside the last record's header
    member = write_warc(tmp_path / "m.warc.gz", _pages(), revisit=False, image=False).read_bytes()
    cases["members.warc.gz"] = member[: len(member) - 150]  # the last gzip member cut
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        warcio_calls.clear()
        docs, rejected, _ = same_either_way(tmp_path / name)
        assert [r["reason"] for r in rejected] == ["truncated_file"], name
        assert len(docs) == 3, name  # the three whole pages
        if name == "header.warc":
            assert warcio_calls[0] >= 0, "FastWARC took the cut header for a record; warcio must take over"
    assert rejected[0]["id"]  # the cut record is named


def test_odd_files_fall_back_to_warcio(tmp_path, warcio_calls):
    raw = write_warc(tmp_path / "ok.warc", _pages(), revisit=False, image=False).read_bytes()
    third = [m.start() for m in re.finditer(rb"WARC-Type: response", raw)][2]
    head = raw.index(b"HTTP/1.1 200 OK\r\n", third)
    end = raw.index(b"\r\n\r\n", head) + 4
    block = raw[head:end].replace(b"\r\n", b"\r\r\n")  # HTTP lines ending in \r\r\n
    length = re.compile(rb"Content-Length: (\d+)\r\n").search(raw, third)
    odd = (
        raw[: length.start()]
        + b"Content-Length: %d\r\n" % (int(length.group(1)) + len(block) - (end - head))
        + raw[length.end() : head]
        + block
        + raw[end:]
    )
    (tmp_path / "crlf.warc").write_bytes(odd)
    docs, rejected, _ = same_either_way(tmp_path / "crlf.warc")
    assert len(docs) == 4 and not rejected
    (tmp_path / "garbage.warc").write_bytes(raw + b"this is not a WARC record\r\n\r\n" * 3)
    warcio_calls.clear()
    docs, rejected, _ = same_either_way(tmp_path / "garbage.warc")
    assert len(docs) == 4 and [r["reason"] for r in rejected] == ["truncated_file"]
    assert warcio_calls[0] >= 0  # FastWARC read the four pages, warcio the rest
    assert rejected[0]["offset"] >= docs[-1][1]


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend"):
        list(warc.warc_records("x.warc", 10, "lxml"))
