"""`anvil plan` and `anvil checkpoint convert|info`: output, exit codes, one-line errors."""
import json
from pathlib import Path

import pytest
import torch

from launch.cli import main

ROOT = Path(__file__).resolve().parents[3]


def test_plan_recommends_a_layout_for_70b_on_64_devices(capsys):
    assert main(["plan", str(ROOT / "configs/models/70b.yaml"), "train.precision=bf16", "train.micro_batch_size=1",
                 "train.global_batch_size=512", "--world-size", "64", "--fitting-only"]) == 0
    out = capsys.readouterr().out
    assert "recommended: parallel.tensor=" in out and "Korthikanti" in out


def test_plan_says_when_nothing_fits(capsys):
    assert main(["plan", str(ROOT / "configs/models/70b.yaml"), "--world-size", "2", "--device-memory", "24GB"]) == 1
    assert "no layout fits" in capsys.readouterr().out


def test_plan_bad_input_is_one_line():
    with pytest.raises(SystemExit, match="--device-memory"):
        main(["plan", str(ROOT / "configs/models/1m.yaml"), "--world-size", "2", "--device-memory", "lots"])
    with pytest.raises(SystemExit, match="--world-size must be positive"):
        main(["plan", str(ROOT / "configs/models/1m.yaml"), "--world-size", "0"])


def _fake_checkpoint(folder: Path, with_optimizer: bool) -> Path:
    from safetensors.torch import save_file

    ckpt = folder / "checkpoints" / "step_00000004"
    (ckpt / "ds").mkdir(parents=True)
    save_file({"head.weight": torch.ones(2, 2)}, str(ckpt / "model.safetensors"))
    if with_optimizer:
        save_file({"exp_avg.head.weight": torch.zeros(2, 2)}, str(ckpt / "optimizer.safetensors"),
                  metadata={"format": "anvil-universal/1", "adam_step": "4"})
    meta = {"format": "anvil-checkpoint/1", "step": 4, "consumed_samples": 32, "dp_size": 2, "zero_stage": 1,
            "config": {"parallel": {"tensor": 2, "pipeline": 1}}}
    (ckpt / "anvil.json").write_text(json.dumps(meta))
    (folder / "checkpoints" / "latest").write_text("step_00000004\n")
    return ckpt


def test_convert_writes_a_layout_free_checkpoint(tmp_path, capsys):
    _fake_checkpoint(tmp_path / "run", with_optimizer=True)
    out = tmp_path / "new" / "checkpoints" / "step_00000004"
    assert main(["checkpoint", "convert", str(tmp_path / "run"), "--output", str(out), "--publish"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["anvil.json", "model.safetensors", "optimizer.safetensors"]
    assert (out.parent / "latest").read_text().strip() == out.name
    assert json.loads((out / "anvil.json").read_text())["step"] == 4
    assert main(["checkpoint", "info", str(out)]) == 0
    assert "layout-free" in capsys.readouterr().out


def test_convert_refuses_missing_optimizer_state_unless_weights_only(tmp_path):
    _fake_checkpoint(tmp_path / "run", with_optimizer=False)
    with pytest.raises(SystemExit, match="optimizer.safetensors: missing"):
        main(["checkpoint", "convert", str(tmp_path / "run"), "--output", str(tmp_path / "out")])
    assert main(["checkpoint", "convert", str(tmp_path / "run"), "--output", str(tmp_path / "out"), "--weights-only"]) == 0
    # the weights-only copy still carries universal optimizer state (weights, zero moments, step 0)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "out" / "optimizer.safetensors"), framework="pt") as f:
        assert f.metadata()["adam_step"] == "0"
        assert torch.equal(f.get_tensor("fp32.head.weight"), torch.ones(2, 2))
        assert torch.equal(f.get_tensor("exp_avg_sq.head.weight"), torch.zeros(2, 2))
