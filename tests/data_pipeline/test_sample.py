"""The no-download sample corpus: real text, deterministic, unique ids, near-duplicate licences."""

import json

from data_pipeline.sample import iter_sample_documents, write_sample_corpus
from launch.cli import main


def test_sample_corpus_is_deterministic_and_real(tmp_path):
    a = write_sample_corpus(tmp_path / "a", limit=400, shard_docs=150)
    b = write_sample_corpus(tmp_path / "b", limit=400, shard_docs=150)
    assert a == b and a["documents"] == 400 and a["shards"] == 3
    lines = [json.loads(l) for f in sorted((tmp_path / "a").glob("*.jsonl")) for l in f.open()]
    assert len({d["id"] for d in lines}) == 400
    assert all(len(d["text"]) >= 200 for d in lines)


def test_sample_has_all_kinds_of_text():
    kinds = {d.metadata["kind"] for d in iter_sample_documents()}
    assert kinds == {"docstring", "readme", "license"}


def test_cli_sample(tmp_path, capsys):
    assert main(["data", "sample", "--output", str(tmp_path), "--limit", "10"]) == 0
    assert "wrote 10 documents" in capsys.readouterr().out


def test_sample_does_not_depend_on_what_was_imported():
    before = [(d.id, d.text) for d in iter_sample_documents()]
    import deepspeed  # noqa: F401 - libraries that monkeypatch stdlib functions at import time
    import megatron.core  # noqa: F401

    after = [(d.id, d.text) for d in iter_sample_documents()]
    assert before == after
