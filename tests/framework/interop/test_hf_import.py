"""`anvil import hf` writes the step-0 checkpoint in one process (no engine, no process group), and
`anvil train` resumes from it under any layout: the first logged loss at 1 process ZeRO-0 and at
2 ranks ZeRO-3 equals the Hugging Face model's own loss on the same batch (a wrong, missing or
re-initialised weight would move it far more than the 1e-4 tolerance)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from framework.checkpoint import store
from framework.interop.hf_export import ExportError
from tests.framework.interop.hf_fixtures import tiny_llama_folder

ROOT = Path(__file__).resolve().parents[3]
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "ANVIL_COLLECTIVE_TIMEOUT_S": "60",
    "PYTHONPATH": str(ROOT),
}
ANVIL = [sys.executable, "-m", "launch.cli"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "-m", "launch.cli"]
SETTINGS = [
    "model.seq_len=32",
    "train.micro_batch_size=2",
    "train.global_batch_size=4",
    "train.steps=1",
    "train.log_interval=1",
    "train.eval_iters=1",
    "train.checkpoint_interval=1",
]


def _run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in ENV.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def _cli(args: list[str]) -> int:
    from launch.cli import main

    return main(args)


def _tokenize(run: Path, prefix: Path) -> Path:
    from data_pipeline.document import Document
    from data_pipeline.tokens.tokenize import Source, tokenize_sources

    docs = [Document(id=str(i), text=f"def function_{i}(x):\n    return x * {i} + {i * i}\n" * 12) for i in range(40)]
    tokenize_sources(
        [Source("docs", {"n": 40}, lambda on_reject=None: iter(docs))],
        str(run / "tokenizer.json"),
        str(prefix),
        progress=False,
    )
    return prefix


def _first_loss(run: Path) -> float:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return next(r["loss"] for r in lines if r.get("step") == 1 and "loss" in r)


def _hf_loss(hf: Path, run: Path, overrides: list[str]) -> float:
    """The transformers model's mean next-token loss on the trainer's first global batch."""
    from transformers import AutoModelForCausalLM

    from framework.config import load_run_config
    from framework.training.data import TrainingData

    cfg = load_run_config(str(run / "config.yaml"), overrides)
    batches = TrainingData(cfg, 0, 1).train_micro_batches(0)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.shape == (cfg.train.global_batch_size, cfg.model.seq_len)
    model = AutoModelForCausalLM.from_pretrained(str(hf), dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(input_ids=x).logits
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)).item()


def test_import_writes_one_layout_free_shard_and_resumes_at_zero0_and_zero3(tmp_path, capsys):
    hf = tiny_llama_folder(tmp_path / "llama", init_std=0.3)
    run = tmp_path / "run"
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    # parallel.zero_stage=3 goes into config.yaml only: nothing of the layout is in the checkpoint
    assert (
        _cli(["import", "hf", "--model", str(hf), "--output", str(run), cache, "parallel.zero_stage=3", *SETTINGS]) == 0
    )
    assert "imported" in capsys.readouterr().out
    ckpt = run / "checkpoints" / "step_00000000"
    assert (run / "checkpoints" / "latest").read_text().strip() == ckpt.name
    assert sorted(p.name for p in ckpt.iterdir()) == ["anvil.json", "config.yaml", "shards"]
    assert [p.name for p in (ckpt / "shards").iterdir()] == ["rank_00000.safetensors"]
    meta = store.read_meta(ckpt)
    assert meta["adam_step"] == 0 and meta["tensors"] == "anvil-sharded/1" and meta["step"] == 0
    assert meta["imported_from"] == str(hf.resolve()) and "world_size" not in meta
    with store.tensors(ckpt) as reader:
        assert {k for _, k in reader.keys()} == {"fp32"} and reader.check_complete() == []
        weights, _ = store.load_weights(ckpt)
        assert set(weights) == set(reader.names())
    from framework.interop.hf_import import read_hf_weights

    src = read_hf_weights(hf)
    assert torch.equal(weights["blocks.1.attn.k_proj.weight"], src["model.layers.1.self_attn.k_proj.weight"])
    assert torch.equal(weights["head.weight"], src["lm_head.weight"])
    assert _cli(["checkpoint", "verify", str(run)]) == 0

    prefix = _tokenize(run, tmp_path / "tok" / "docs")
    data = [f"data.paths=[{prefix}]"]
    zero3 = tmp_path / "zero3"
    shutil.copytree(run, zero3)
    one = _run(ANVIL + ["train", str(run / "config.yaml"), *data, "parallel.zero_stage=0"])
    assert "resumed from" in one.stdout + one.stderr
    two = _run(TORCHRUN + ["train", str(zero3 / "config.yaml"), f"run_dir={zero3}", *data])
    assert "resumed from" in two.stdout + two.stderr
    assert json.loads((zero3 / "checkpoints" / "step_00000001" / "anvil.json").read_text())["zero_stage"] == 3

    expected = _hf_loss(hf, run, data)
    vocab = json.loads((hf / "config.json").read_text())["vocab_size"]
    assert abs(expected - math.log(vocab)) > 1.0  # far from a near-uniform (freshly initialised) model's loss
    assert abs(_first_loss(run) - expected) < 1e-4, (_first_loss(run), expected)
    assert abs(_first_loss(zero3) - expected) < 1e-4, (_first_loss(zero3), expected)


def test_import_under_torchrun_rank0_writes_then_trains_at_tp2(tmp_path):
    """The README's torchrun form still works: every rank checks the config, rank 0 writes."""
    hf = tiny_llama_folder(tmp_path / "llama", vocab_size=336, init_std=0.3)  # padded past the tokenizer
    run = tmp_path / "run"
    proc = _run(
        TORCHRUN
        + [
            "import",
            "hf",
            "--model",
            str(hf),
            "--output",
            str(run),
            "parallel.tensor=2",
            f"data.cache_dir={tmp_path / 'cache'}",
            *SETTINGS,
        ]
    )
    assert proc.stdout.count("imported") == 1
    assert [p.name for p in (run / "checkpoints" / "step_00000000" / "shards").iterdir()] == ["rank_00000.safetensors"]
    prefix = _tokenize(run, tmp_path / "tok" / "docs")
    data = [f"data.paths=[{prefix}]"]
    _run(TORCHRUN + ["train", str(run / "config.yaml"), *data])
    assert abs(_first_loss(run) - _hf_loss(hf, run, data)) < 1e-4


def test_import_refusals_are_one_line(tmp_path):
    hf = tiny_llama_folder(tmp_path / "llama", layers=1)
    run = tmp_path / "run"
    assert _cli(["import", "hf", "--model", str(hf), "--output", str(run)]) == 0
    with pytest.raises(SystemExit, match="already holds checkpoints"):
        _cli(["import", "hf", "--model", str(hf), "--output", str(run)])
    # layout constraints that hold whatever the data-parallel size: 4 query heads over 3 tensor ranks
    assert _cli(["import", "hf", "--model", str(hf), "--output", str(tmp_path / "tp3"), "parallel.tensor=3"]) == 2
    assert not (tmp_path / "tp3").exists()


def test_gpt2_positions_cut_to_a_shorter_seq_len():
    from framework.config import ModelConfig
    from framework.configtree import build
    from framework.interop.hf_import import fit_positions

    cfg = build(
        ModelConfig,
        {"arch": "gpt2", "n_layers": 1, "d_model": 8, "n_heads": 2, "vocab_size": 16, "seq_len": 4},
        "model",
    )
    pos = torch.arange(48.0).reshape(6, 8)
    cut = fit_positions({"embed.pos.weight": pos}, cfg, "hf/")["embed.pos.weight"]
    assert torch.equal(cut, pos[:4])
    longer = build(
        ModelConfig,
        {**{"arch": "gpt2", "n_layers": 1, "d_model": 8, "n_heads": 2, "vocab_size": 16}, "seq_len": 7},
        "model",
    )
    with pytest.raises(ExportError, match="model.seq_len.*6 learned positions"):
        fit_positions({"embed.pos.weight": pos}, longer, "hf/")
