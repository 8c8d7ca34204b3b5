"""Pure pieces of the trainer: LR schedules, the stability monitor, metrics truncation on resume,
top-k / top-p filtering, and the CLI's early, one-line config errors."""

import json
import math

import pytest
import torch

from framework.config import TrainConfig
from framework.eval.generate import filter_logits
from framework.training.metrics import truncate_jsonl
from framework.training.schedules import lr_at
from framework.training.stability import StabilityMonitor, TrainingDiverged


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant", "wsd"])
def test_schedules_warm_up_then_decay_to_the_floor(schedule):
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1, schedule=schedule, wsd_decay_fraction=0.2)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a <= b + 1e-12 for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(b <= a + 1e-12 for a, b in zip(lrs[10:], lrs[11:]))  # never increases after warmup
    end = lr_at(100, cfg)
    assert end == pytest.approx(1.0 if schedule == "constant" else 0.1)
    if schedule == "wsd":
        assert lrs[80] == pytest.approx(1.0) and lrs[85] < 1.0  # stable, then the last 20% decays
    if schedule == "cosine":
        assert lrs[55] == pytest.approx(0.55)


def test_stability_counts_skips_stops_after_k_and_flags_spikes():
    mon = StabilityMonitor(max_consecutive_skips=3, window=20, zscore=4.0)
    for step in range(1, 21):
        out = mon.observe(step, 2.0 + 0.01 * (step % 3), True)
    assert out["skipped_steps"] == 0 and "loss_z" in out
    assert mon.observe(21, 9.0, True).get("spike") is True
    assert mon.observe(22, float("nan"), False)["skipped_steps"] == 1
    assert mon.observe(23, 2.0, True)["skipped_steps"] == 1  # a good step resets the streak only
    state = mon.state_dict()
    again = StabilityMonitor(3, 20, 4.0)
    again.load_state_dict(json.loads(json.dumps(state)))
    assert again.state_dict() == state
    mon.observe(24, float("nan"), False)
    mon.observe(25, float("nan"), False)
    with pytest.raises(TrainingDiverged, match="3 consecutive steps"):
        mon.observe(26, float("inf"), False)


def test_metrics_truncated_to_checkpoint_step_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "loss": 1.0}) for s in range(1, 8)] + ['{"step": 8, "lo']  # cut by a kill
    path.write_text("\n".join(lines))
    truncate_jsonl(path, 5)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3, 4, 5]


def test_top_k_and_top_p_filtering():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.8)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.81)).tolist() == [[False, False, False, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.1)).tolist() == [[False, True, True, True]]
    probs = filter_logits(logits, top_k=3, top_p=1.0).softmax(-1)
    assert math.isclose(float(probs.sum()), 1.0, rel_tol=1e-6)


def test_cli_rejects_bad_layout_and_keys_before_starting(tmp_path, capsys):
    from launch.cli import main

    for args, message in (
        (
            ["train.global_batch_size=6"],
            "global_batch_size': 6 is not divisible by micro_batch_size x data-parallel size = 4 x 1 = 4",
        ),
        (["parallel.zero=1"], "did you mean 'zero_stage'"),
        (["train.precision=fp8"], "'train.precision': expected one of"),
    ):
        assert main(["train", "configs/train/tiny.yaml", *args]) != 0
        assert message in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.yaml")]) != 0
    assert "config file not found" in capsys.readouterr().err
    assert main(["train", "configs/train/tiny.yaml", "train.steps=7", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "steps: 7" in out and "n_layers: 4" in out  # the preset came in through `base:`
