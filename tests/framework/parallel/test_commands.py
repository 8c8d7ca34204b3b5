"""`anvil plan`: output, exit codes, one-line errors (checkpoint commands: tests/framework/checkpoint)."""

from pathlib import Path

import pytest

from launch.cli import main

ROOT = Path(__file__).resolve().parents[3]


def test_plan_recommends_a_layout_for_70b_on_64_devices(capsys):
    assert (
        main(
            [
                "plan",
                str(ROOT / "configs/models/70b.yaml"),
                "train.precision=bf16",
                "train.micro_batch_size=1",
                "train.global_batch_size=512",
                "--world-size",
                "64",
                "--fitting-only",
            ]
        )
        == 0
    )
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
