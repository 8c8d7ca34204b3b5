"""Checkpoint integrity: every file's size and checksum in anvil.json, verified before a resume;
a bit-flipped or truncated latest checkpoint is reported and the previous one used, never a silent
start from scratch; checkpoints without checksums (earlier versions) still load.

Checkpoints here are written by `store.write_full` (one process, no engine): the same sealing code
as training's `store.save`. The trainer's own fallback is tested in
tests/framework/training/test_rollback.py (one spawned training process for all scenarios).
"""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

import framework.checksums as checksums
from framework.checkpoint import integrity, store
from framework.checkpoint.sharded import Piece
from launch.cli import main

SHARD = "shards/rank_00000.safetensors"


MODEL = {"arch": "llama", "n_layers": 1, "d_model": 16, "n_heads": 2, "vocab_size": 32, "seq_len": 8}


def _write(root, step: int):
    """A weights-only checkpoint of a tiny model, as `anvil import hf` writes one."""
    from framework.config import ModelConfig
    from framework.configtree import build
    from framework.interop.hf_export import expected_shapes

    g = torch.Generator().manual_seed(step)
    items = [
        (Piece.full(name, "fp32", shape), torch.randn(shape, generator=g))
        for name, shape in expected_shapes(build(ModelConfig, MODEL, "model")).items()
    ]
    meta = {"step": step, "consumed_samples": 4 * step, "tokens": 64 * step, "config": {"model": MODEL}}
    return store.write_full(root, step, items, meta, "model: {}\n", keep=None)


@pytest.fixture
def root(tmp_path):
    for step in (2, 4, 6):
        _write(tmp_path / "checkpoints", step)
    return tmp_path / "checkpoints"


@pytest.fixture
def warnings():
    """Warnings of the `anvil` logger (it does not propagate to pytest's caplog)."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep(logging.WARNING)
    logging.getLogger("anvil").addHandler(handler)
    yield records
    logging.getLogger("anvil").removeHandler(handler)


def _flip(path, offset: int = -5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def test_every_file_is_recorded_and_verifies(root):
    meta = store.read_meta(root / "step_00000006")
    files = meta["integrity"]["files"]
    assert set(files) == {SHARD, "config.yaml"}
    for rel, rec in files.items():
        assert rec == integrity.file_record(root / "step_00000006" / rel)  # streamed while writing == re-read
    assert store.verify(root / "step_00000006") == []
    assert store.select_checkpoint(root) == root / "step_00000006"


@pytest.mark.parametrize("damage", ["bit flip in a shard", "truncated shard", "changed metadata value", "extra shard"])
def test_damaged_latest_falls_back_to_previous_with_warning(root, warnings, damage):
    latest = root / "step_00000006"
    if damage == "bit flip in a shard":
        _flip(latest / SHARD)  # in the tensor data: the safetensors header still parses
        expected = "rank_00000.safetensors: xxh3_64 checksum"
    elif damage == "truncated shard":
        data = (latest / SHARD).read_bytes()
        (latest / SHARD).write_bytes(data[:-64])
        expected = f"rank_00000.safetensors: {len(data) - 64} bytes, {len(data)} recorded (truncated)"
    elif damage == "changed metadata value":  # still valid JSON: only the metadata checksum sees it
        meta = json.loads((latest / "anvil.json").read_text())
        meta["consumed_samples"] += 1
        (latest / "anvil.json").write_text(json.dumps(meta))
        expected = "anvil.json: xxh3_64 checksum"
    else:
        shutil.copy(latest / SHARD, latest / "shards" / "rank_00001.safetensors")
        expected = "rank_00001.safetensors: a shard file the checkpoint does not record"
    assert store.select_checkpoint(root) == root / "step_00000004"
    assert any(expected in w and "falling back to the previous checkpoint" in w for w in warnings), warnings
    assert any("using" in w and "step_00000004" in w for w in warnings)


def test_no_usable_checkpoint_is_an_error_naming_the_files(root):
    _flip(root / "step_00000006" / SHARD)
    (root / "step_00000004" / "config.yaml").unlink()
    (root / "step_00000002" / "anvil.json").write_bytes(b"\xff{not json")
    with pytest.raises(store.CheckpointError) as err:
        store.select_checkpoint(root)
    msg = str(err.value)
    assert "no usable checkpoint" in msg and "rank_00000.safetensors: xxh3_64 checksum" in msg
    assert "step_00000004/config.yaml: missing" in msg and "step_00000002/anvil.json: unreadable" in msg
    shutil.rmtree(root.parent)
    root.mkdir(parents=True)
    assert store.select_checkpoint(root) is None  # no `latest`: a new run


def test_latest_naming_a_missing_folder_falls_back(root, warnings):
    shutil.rmtree(root / "step_00000006")
    assert store.select_checkpoint(root) == root / "step_00000004"
    assert any("step_00000006/anvil.json" in w for w in warnings)


def test_checkpoint_without_checksums_still_loads(root):
    ckpt = root / "step_00000006"
    meta = json.loads((ckpt / "anvil.json").read_text())
    del meta["integrity"]  # as written before checksums were recorded
    (ckpt / "anvil.json").write_text(json.dumps(meta))
    assert store.verify(ckpt) == [] and store.select_checkpoint(root) == ckpt
    weights, _ = store.load_weights(ckpt)
    assert "embed.tok.weight" in weights
    data = (ckpt / SHARD).read_bytes()
    (ckpt / SHARD).write_bytes(data[:-8])  # still caught: shorter than its safetensors header says
    assert "its header describes" in store.verify(ckpt)[0]


def test_blake2b_when_xxhash_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(checksums, "_xxhash", None)
    ckpt = _write(tmp_path, 1)
    rec = store.read_meta(ckpt)["integrity"]["files"][SHARD]
    assert set(rec) == {"size", "blake2b_64"} and store.verify(ckpt) == []
    _flip(ckpt / SHARD)
    assert "blake2b_64 checksum" in store.verify(ckpt)[0]
    monkeypatch.undo()
    assert "blake2b_64 checksum" in store.verify(ckpt)[0]  # verifiable with xxhash installed too


def test_cli_verify_checks_checksums(root, capsys):
    assert main(["checkpoint", "verify", str(root.parent)]) == 0
    assert "2 files match their xxh3_64 checksums" in capsys.readouterr().out
    _flip(root / "step_00000006" / SHARD)
    with pytest.raises(SystemExit, match=r"rank_00000\.safetensors: xxh3_64 checksum .* recorded"):
        main(["checkpoint", "verify", str(root.parent)])
