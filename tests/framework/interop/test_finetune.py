"""LoRA fine-tuning: really distributed, 1 rank == 2 ranks (DDP vs ZeRO-3), only adapters train,
held-out loss goes down, and the merged model is base + scale * B @ A exactly where adapted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.framework.interop.hf_fixtures import sample_jsonl, tiny_llama_folder

ROOT = Path(__file__).resolve().parents[3]
ANVIL = [sys.executable, "-m", "launch.cli"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "-m", "launch.cli"]
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "ANVIL_COLLECTIVE_TIMEOUT_S": "60",
    "PYTHONPATH": str(ROOT),
}
ARGS = [
    "finetune",
    "--steps",
    "12",
    "--seq-len",
    "64",
    "--lr",
    "3e-3",
    "--lora-rank",
    "4",
    "--micro-batch-size",
    "2",
    "--global-batch-size",
    "4",
    "log_interval=4",
]


def _run(cmd: list[str], timeout: float = 240) -> None:
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ft")
    base = tiny_llama_folder(tmp / "base")
    data = sample_jsonl(tmp / "data.jsonl", limit=150)
    common = ARGS + ["--model", str(base), "--data", str(data)]
    _run(ANVIL + common + ["--output", str(tmp / "one")])
    _run(TORCHRUN + common + ["--output", str(tmp / "two"), "--zero-stage", "3"])
    load = lambda name: json.loads((tmp / name / "finetune.json").read_text())  # noqa: E731
    return tmp, base, load("one"), load("two")


def test_two_ranks_really_distributed_and_agree_with_one(runs):
    tmp, _, one, two = runs
    assert one["world_size"] == 1 and one["accumulation_steps"] == 2
    assert two["world_size"] == 2 and two["zero_stage"] == 3 and two["accumulation_steps"] == 1
    assert [r["rank"] for r in two["ranks"]] == [0, 1]
    assert all(r["micro_batches"] == 12 for r in two["ranks"]) and one["ranks"][0]["micro_batches"] == 24
    # Each rank trained on its own half of the same global batch the single process used.
    b0, b1 = (r["first_step_blocks"] for r in two["ranks"])
    assert not set(b0) & set(b1) and sorted(b0 + b1) == sorted(one["ranks"][0]["first_step_blocks"])
    l1 = [json.loads(x)["loss"] for x in (tmp / "one" / "metrics.jsonl").read_text().splitlines()]
    l2 = [json.loads(x)["loss"] for x in (tmp / "two" / "metrics.jsonl").read_text().splitlines()]
    assert len(l1) == len(l2) == 12
    assert max(abs(a - b) for a, b in zip(l1, l2)) < 1e-5, (l1, l2)
    assert abs(one["final_eval_loss"] - two["final_eval_loss"]) < 1e-5


def test_held_out_loss_goes_down(runs):
    _, _, one, two = runs
    for s in (one, two):
        assert s["final_eval_loss"] < s["initial_eval_loss"] - 0.01, s


def test_only_adapter_weights_train(runs):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig

    tmp, base, one, two = runs
    cfg = AutoConfig.from_pretrained(base)
    head = cfg.hidden_size // cfg.num_attention_heads
    q = o = cfg.hidden_size
    kv = cfg.num_key_value_heads * head
    r = 4
    expected = cfg.num_hidden_layers * r * ((q + q) + 2 * (q + kv) + (q + o))
    assert one["trainable_params"] == two["trainable_params"] == expected
    adapter = load_file(tmp / "one" / "adapter" / "adapter_model.safetensors")
    assert sum(t.numel() for t in adapter.values()) == expected
    assert all("lora_" in k for k in adapter)

    base_sd = load_file(base / "model.safetensors")
    merged = load_file(tmp / "one" / "merged" / "model.safetensors")
    merged2 = load_file(tmp / "two" / "merged" / "model.safetensors")
    assert set(merged) == set(base_sd)
    scale = 16.0 / r
    changed = 0
    for name, w in base_sd.items():
        module = name.rsplit(".", 1)[0]
        a_key = next((k for k in adapter if f"{module}.lora_A" in k), None)
        if a_key is None:
            assert torch.equal(merged[name], w), f"{name} changed but has no adapter"
            continue
        b = adapter[a_key.replace("lora_A", "lora_B")]
        torch.testing.assert_close(merged[name], w + scale * b @ adapter[a_key], atol=1e-6, rtol=0)
        changed += 1
        assert (merged[name] - merged2[name]).abs().max() < 1e-5
    assert changed == 4 * cfg.num_hidden_layers


def test_bad_batch_layout_fails_with_key(tmp_path):
    base = tmp_path / "m"
    base.mkdir()
    (base / "config.json").write_text("{}")
    proc = subprocess.run(
        ANVIL
        + [
            "finetune",
            "--model",
            str(base),
            "--data",
            "x.jsonl",
            "--micro-batch-size",
            "3",
            "--global-batch-size",
            "8",
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "global_batch_size" in proc.stderr, proc.stderr[-2000:]
