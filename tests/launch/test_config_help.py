"""`--help-config` lists every key the loader accepts, each with its type, default and a help line."""

import subprocess
import sys
from pathlib import Path

import pytest

from framework.config import RunConfig
from framework.configtree import ConfigError, build, describe, field_help
from framework.scaling.config import SweepConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("what", ["train", "sweep", "recipe"])
def test_every_key_has_a_type_default_and_help(what):
    from launch.config_help import recipe_config_rows

    rows = {"train": lambda: describe(RunConfig), "sweep": lambda: describe(SweepConfig), "recipe": recipe_config_rows}[
        what
    ]()
    missing = [key for key, _, _, text in rows if not text]
    assert not missing, f"config keys without a help line (add a comment after the default): {missing}"
    keys = [key for key, *_ in rows]
    assert len(keys) == len(set(keys)) > 20


def test_train_help_config_prints_one_line_per_key_without_a_config_file():
    out = subprocess.run(
        [sys.executable, "-m", "launch.cli", "train", "--help-config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == len(describe(RunConfig))
    lr = next(line for line in lines if line.startswith("train.lr "))
    assert lr.split()[1:4] == ["float", "default:", "0.001"] and " - " in lr
    # The same listing with a config file given (the contract's form).
    again = subprocess.run(
        [sys.executable, "-m", "launch.cli", "train", "configs/train/tiny.yaml", "--help-config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert again.returncode == 0 and again.stdout == out.stdout


def test_help_from_metadata_wins_over_the_comment_and_unknown_keys_still_suggest():
    from dataclasses import dataclass, field

    @dataclass
    class Section:
        width: int = 8  # the comment
        depth: int = field(default=2, metadata={"help": "from metadata"})  # ignored comment

    assert field_help(Section) == {"width": "the comment", "depth": "from metadata"}
    with pytest.raises(ConfigError, match="did you mean 'width'"):
        build(Section, {"widht": 3})


def test_data_run_help_config_lists_every_step_parameter():
    out = subprocess.run(
        [sys.executable, "-m", "launch.cli", "data", "run", "--help-config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    keys = [line.split()[0] for line in out.stdout.splitlines()]
    assert {
        "input",
        "output",
        "steps.minhash_dedup.threshold",
        "steps.extract.engine",
        "steps.url_filter.allow_domains",
        "steps.decontaminate.ngram",
    } <= set(keys)
