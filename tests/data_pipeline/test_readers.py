"""Readers and writers: every format, input expansion, provenance, strict mode, deterministic bytes."""

from __future__ import annotations

import json

import pytest

from data_pipeline.document import Document
from data_pipeline.io import JsonlZstWriter, ReadError, ShardedWriter, expand_inputs, iter_documents, read_documents
from tests.data_pipeline.corpus import real_docs, to_html, write_jsonl_gz, write_parquet, write_warc


def test_formats_and_provenance(tmp_path):
    docs = real_docs()[:6]
    write_jsonl_gz(tmp_path / "a.jsonl.gz", [{"id": d.id, "text": d.text, "kind": "x"} for d in docs[:2]])
    write_parquet(tmp_path / "b.parquet", [{"id": d.id, "text": d.text} for d in docs[2:4]])
    with JsonlZstWriter(tmp_path / "c.jsonl.zst") as w:
        for d in docs[4:]:
            w.write(d)
    write_warc(
        tmp_path / "d.warc.gz", [(f"http://example.org/{i}", to_html(d.text, d.id)) for i, d in enumerate(docs[:2])]
    )
    skipped: dict = {}
    got = list(iter_documents(tmp_path, skipped=skipped))
    assert [d.source.rsplit("/", 1)[1] for d in got] == ["a.jsonl.gz"] * 2 + ["b.parquet"] * 2 + ["c.jsonl.zst"] * 2 + [
        "d.warc.gz"
    ] * 2
    assert [d.offset for d in got[:6]] == [1, 2, 0, 1, 1, 2]
    assert got[0].metadata == {"kind": "x"} and got[0].text == docs[0].text
    assert got[6].metadata["url"] == "http://example.org/0" and got[6].offset > 0
    assert docs[0].text.split("\n")[0][:40] in got[6].text  # extracted, not HTML
    raw = list(read_documents(tmp_path / "d.warc.gz", raw_html=True))
    assert raw[0].metadata["content_type"] == "text/html" and "<article>" in raw[0].text


def test_warc_skips_and_rejects(tmp_path):
    page = to_html(real_docs()[0].text)
    path = write_warc(tmp_path / "x.warc", [("http://e.org/a", page)], binary_html=True)
    rejects, skipped = [], {}
    docs = list(read_documents(path, rejects.append, raw_html=True, skipped=skipped))
    assert len(docs) == 1
    assert skipped == {"request": 1, "revisit": 1, "non_html": 1}
    assert [r["reason"] for r in rejects] == ["binary_payload"] and rejects[0]["step"] == "read"
    assert "offset" in rejects[0] and rejects[0]["source"] == str(path)


def test_expand_inputs(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.jsonl", "a.jsonl", "sub/c.jsonl.gz", "notes.txt"):
        (tmp_path / name).write_text("")
    assert [p.name for p in expand_inputs(str(tmp_path))] == ["a.jsonl", "b.jsonl", "c.jsonl.gz"]
    assert [p.name for p in expand_inputs([str(tmp_path / "*.jsonl"), str(tmp_path / "a.jsonl")])] == [
        "a.jsonl",
        "b.jsonl",
    ]
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        expand_inputs(str(tmp_path / "nothing-here"))
    with pytest.raises(ValueError, match="unsupported"):
        expand_inputs(str(tmp_path / "notes.txt"))


def test_strict_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "1", "text": "fine"}\n{"id": 2, "text": \n')
    assert [d.id for d in read_documents(path)] == ["1"]
    with pytest.raises(ReadError, match=r"bad\.jsonl: line 2: invalid_json"):
        list(read_documents(path, strict=True))


def test_writers_are_deterministic_and_atomic(tmp_path):
    docs = [Document(str(i), f"text {i} é", {"lang": "en"}) for i in range(5)]
    outs = []
    for run in ("r1", "r2"):
        with ShardedWriter(tmp_path / run, max_docs=2) as w:
            for d in docs:
                w.write(d)
        outs.append([p.read_bytes() for p in w.paths])
        assert [p.name for p in w.paths] == ["part-00000.jsonl.zst", "part-00001.jsonl.zst", "part-00002.jsonl.zst"]
    assert outs[0] == outs[1]
    back = list(iter_documents(tmp_path / "r1"))
    assert [(d.id, d.text, d.metadata) for d in back] == [(d.id, d.text, d.metadata) for d in docs]
    w = JsonlZstWriter(tmp_path / "partial.jsonl.zst")
    w.write(docs[0])
    assert not (tmp_path / "partial.jsonl.zst").exists()  # only published on close
    w.abort()
    assert not list(tmp_path.glob("partial*"))
    assert json.loads(json.dumps(docs[0].to_json())) == {"id": "0", "text": "text 0 é", "lang": "en"}


def test_wet_and_html_files(tmp_path):
    import io

    from warcio.warcwriter import WARCWriter

    text = real_docs()[1].text
    with open(tmp_path / "crawl.wet.gz", "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        body = text.encode("utf-8")
        writer.write_record(
            writer.create_warc_record(
                "http://e.org/t",
                "conversion",
                payload=io.BytesIO(body),
                length=len(body),
                warc_content_type="text/plain",
            )
        )
    (tmp_path / "page.html").write_text(to_html(real_docs()[2].text, "Title"))
    wet, page = list(iter_documents(tmp_path))
    assert wet.text == text and wet.metadata["url"] == "http://e.org/t"
    assert real_docs()[2].text.split("\n")[0][:40] in page.text and "<p>" not in page.text
