"""Tokenization markers record the size and checksum of each part: a truncated or bit-flipped
part is redone by the rerun; a full disk leaves no part or prefix under its final name; `anvil
data verify PREFIX` checks the finished prefix against its sidecar."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import pytest

from data_pipeline.tokens.inputs import input_sources
from data_pipeline.tokens.tokenize import tokenize_sources
from launch.cli import main


def _run(corpus, tokenizer_path, out, **kw):
    return tokenize_sources(input_sources([str(corpus[0])]), str(tokenizer_path), str(out), batch_docs=16, **kw)


@pytest.fixture
def warnings_log():
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("anvil.data")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def test_damaged_parts_are_redone(corpus, tokenizer_path, prefix, tmp_path, warnings_log):
    out = tmp_path / "t"
    _run(corpus, tokenizer_path, out, keep_parts=True)
    parts = Path(str(out) + ".parts")
    marker = json.loads((parts / "00001.done.json").read_text())
    assert marker["files"]["00001.bin"]["size"] == (parts / "00001.bin").stat().st_size
    b0, b2 = parts / "00000.bin", parts / "00002.idx"
    b0.write_bytes(b0.read_bytes()[:-2])  # truncated
    data = bytearray(b2.read_bytes())
    data[-1] ^= 1  # a bit flipped
    b2.write_bytes(bytes(data))
    stats = _run(corpus, tokenizer_path, out)
    assert stats.sources_resumed == 1 and stats.sources_done == 2
    warned = " ".join(r.getMessage() for r in warnings_log)
    assert "00000.bin: truncated" in warned and "00002.idx: changed" in warned, warned
    for ext in (".bin", ".idx"):
        assert Path(str(out) + ext).read_bytes() == Path(prefix + ext).read_bytes()


def test_verify_prefix(prefix, tmp_path, capsys):
    import shutil

    assert main(["data", "verify", prefix]) == 0
    copy = tmp_path / "copy"
    for ext in (".bin", ".idx", ".json"):
        shutil.copy(prefix + ext, str(copy) + ext)
    data = bytearray(Path(str(copy) + ".bin").read_bytes())
    data[3] ^= 4
    Path(str(copy) + ".bin").write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["data", "verify", str(copy) + ".bin"]) == 1
    assert "copy.bin: changed" in capsys.readouterr().out


def test_disk_full_leaves_no_half_prefix_and_rerun_matches(corpus, tokenizer_path, prefix, tmp_path, monkeypatch):
    """The disk fills while the parts are concatenated: no PREFIX.bin appears, the rerun (space
    freed) reuses every part and writes the same bytes."""
    import megatron.core.datasets.indexed_dataset as idx

    out = tmp_path / "full"
    original = idx.IndexedDatasetBuilder.add_index
    calls = []

    def full(self, path_prefix):
        calls.append(path_prefix)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(out) + ".tmp.bin")
        return original(self, path_prefix)

    monkeypatch.setattr(idx.IndexedDatasetBuilder, "add_index", full)
    with pytest.raises(OSError, match="No space left"):
        _run(corpus, tokenizer_path, out)
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name != "rejected")
    assert leftovers == ["full.parts"], leftovers  # no PREFIX.bin/.idx/.json, no .tmp
    monkeypatch.setattr(idx.IndexedDatasetBuilder, "add_index", original)
    stats = _run(corpus, tokenizer_path, out)
    assert stats.sources_resumed == 3
    for ext in (".bin", ".idx"):
        assert Path(str(out) + ext).read_bytes() == Path(prefix + ext).read_bytes()
