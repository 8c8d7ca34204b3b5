"""Tokenization into Megatron shards: megatron reads them back exactly, order is independent of
--workers, runs resume by input shard, sidecar counts, bad input is counted or refused clearly."""

import json

import numpy as np
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from data_pipeline.tokens.inputs import input_sources
from framework.data.shards import PrefixError, file_sha256, inspect_prefix, read_sidecar
from data_pipeline.tokens.tokenize import Source, rejected_path, tokenize_sources
from data_pipeline.tokens.tokenizer import load_tokenizer
from launch.cli import main
from tests.data_pipeline.tokens.conftest import write_jsonl


def test_megatron_reads_back_the_same_tokens_and_text(corpus, tokenizer_path, prefix):
    tok = load_tokenizer(tokenizer_path)
    texts = [t for t in corpus[1] if t.strip()]  # the whitespace-only document is rejected on read
    ds = IndexedDataset(prefix)
    assert len(ds) == len(texts)
    for i, text in enumerate(texts):
        ids = ds[i]
        assert ids.dtype == np.uint16 and ids[-1] == 0  # end-of-document appended
        assert ids[:-1].tolist() == tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids[:-1].tolist(), skip_special_tokens=False) == text


def test_sidecar_and_rejected_records(corpus, tokenizer_path, prefix):
    meta = read_sidecar(prefix)
    info = inspect_prefix(prefix)
    assert meta["documents"] == info.documents == len(corpus[1]) - 1
    assert meta["tokens"] == info.tokens and meta["dtype"] == "uint16"
    assert meta["vocab_size"] == 384 and meta["eod_id"] == 0 and meta["pad_id"] == 1
    assert meta["tokenizer_sha256"] == file_sha256(tokenizer_path)
    assert meta["skipped"] == {"empty": 0, "empty_text": 1}
    assert [s["documents"] for s in meta["inputs"]] == [85, 80, 80]
    rejected = [json.loads(line) for line in rejected_path(prefix).read_text().splitlines()]
    assert rejected == [
        {"line": 84, "reason": "empty_text", "source": str(corpus[0] / "shard-0.jsonl"), "step": "read", "id": "d83"}
    ]


def test_output_is_identical_for_any_worker_count(corpus, tokenizer_path, prefix, tmp_path):
    out = tmp_path / "w2"
    tokenize_sources(input_sources([str(corpus[0])]), str(tokenizer_path), str(out), workers=2, batch_docs=7)
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"w2{ext}").read_bytes() == open(prefix + ext, "rb").read()


def test_interrupted_run_resumes_by_input_shard(corpus, tokenizer_path, prefix, tmp_path):
    state = {"fail": True}

    def reader(path):
        def open_(on_reject=None):
            from data_pipeline.io.readers import read_documents

            for k, doc in enumerate(read_documents(path, on_reject)):
                if state["fail"] and path.name == "shard-2.jsonl" and k == 5:
                    raise KeyboardInterrupt  # the job is killed in the middle of the last shard
                yield doc

        return open_

    def sources():
        return [
            Source(s.name, dict(s.identity), reader(corpus[0] / s.name.split("/")[-1]))
            for s in input_sources([str(corpus[0])])
        ]

    out = str(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        tokenize_sources(sources(), str(tokenizer_path), out, batch_docs=4)
    assert sorted(p.name for p in (tmp_path / "resumed.parts").glob("*.done.json")) == [
        "00000.done.json",
        "00001.done.json",
    ]
    state["fail"] = False
    stats = tokenize_sources(sources(), str(tokenizer_path), out, batch_docs=4)
    assert (stats.sources_resumed, stats.sources_done) == (2, 1)
    for ext in (".bin", ".idx"):
        assert open(out + ext, "rb").read() == open(prefix + ext, "rb").read()
    assert read_sidecar(out)["documents"] == read_sidecar(prefix)["documents"]
    assert not (tmp_path / "resumed.parts").exists()


def test_int32_when_vocabulary_exceeds_uint16(tmp_path):
    from data_pipeline.tokens.tokenizer import train_tokenizer

    tok, _ = train_tokenizer(["some text here"], 70000, tmp_path / "big.json")
    write_jsonl(tmp_path / "in.jsonl", ["hello world", "more text"])
    tokenize_sources(input_sources([str(tmp_path / "in.jsonl")]), str(tmp_path / "big.json"), str(tmp_path / "big"))
    assert inspect_prefix(tmp_path / "big").dtype == np.int32
    assert read_sidecar(str(tmp_path / "big"))["dtype"] == "int32"


def test_bad_input_fails_clearly(tmp_path, tokenizer_path, prefix, capsys):
    (tmp_path / "empty.jsonl").write_text("")
    write_jsonl(tmp_path / "blank.jsonl", ["", "  "])
    for name in ("empty.jsonl", "blank.jsonl"):
        with pytest.raises(SystemExit, match=r"anvil data tokenize: no documents to tokenize"):
            main(
                [
                    "data",
                    "tokenize",
                    str(tmp_path / name),
                    "--tokenizer",
                    str(tokenizer_path),
                    "--output-prefix",
                    str(tmp_path / "out"),
                ]
            )
    with pytest.raises(SystemExit, match="tokenizer .*missing.json: file not found"):
        main(
            [
                "data",
                "tokenize",
                str(tmp_path / "blank.jsonl"),
                "--tokenizer",
                str(tmp_path / "missing.json"),
                "--output-prefix",
                str(tmp_path / "out"),
            ]
        )
    with pytest.raises(SystemExit, match="anvil data tokenize: input not found: .*nothing-here"):
        main(
            [
                "data",
                "tokenize",
                str(tmp_path / "nothing-here"),
                "--tokenizer",
                str(tokenizer_path),
                "--output-prefix",
                str(tmp_path / "out"),
            ]
        )
    with pytest.raises(SystemExit, match="--workers must be >= 1"):
        main(
            [
                "data",
                "tokenize",
                str(tmp_path / "blank.jsonl"),
                "--tokenizer",
                str(tokenizer_path),
                "--output-prefix",
                str(tmp_path / "out"),
                "--workers",
                "0",
            ]
        )
    # A truncated index is refused with both byte counts; a truncated .bin too.
    for ext, cut in ((".idx", 40), (".bin", 2)):
        bad = tmp_path / f"trunc{ext[1:]}"
        for e in (".bin", ".idx"):
            (tmp_path / f"trunc{ext[1:]}{e}").write_bytes(open(prefix + e, "rb").read())
        data = open(prefix + ext, "rb").read()
        (tmp_path / f"trunc{ext[1:]}{ext}").write_bytes(data[:-cut])
        with pytest.raises(PrefixError, match="truncated"):
            inspect_prefix(bad)


def test_cli_round_trip(corpus, tmp_path, capsys):
    assert (
        main(["tokenizer", "train", str(corpus[0]), "--vocab-size", "260", "--output", str(tmp_path / "tok.json")]) == 0
    )
    assert load_tokenizer(tmp_path / "tok.json").get_vocab_size() == 384
    assert (
        main(
            [
                "data",
                "tokenize",
                str(corpus[0] / "shard-1.jsonl"),
                "--tokenizer",
                str(tmp_path / "tok.json"),
                "--output-prefix",
                str(tmp_path / "p"),
                "--workers",
                "1",
            ]
        )
        == 0
    )
    assert len(IndexedDataset(str(tmp_path / "p"))) == 80
    assert "documents" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="anvil tokenizer train: --vocab-size must be at least 258"):
        main(["tokenizer", "train", str(corpus[0]), "--vocab-size", "10", "--output", str(tmp_path / "x.json")])
