"""`anvil --help` and every subcommand's `--help` work, fast, without importing torch."""

import subprocess
import sys
from pathlib import Path

import pytest

from launch.cli import build_parser, discover, main

ROOT = Path(__file__).resolve().parents[2]


def test_top_level_help_is_fast_and_light():
    code = (
        "import sys, launch.cli as c; c.build_parser().format_help(); "
        "print('torch' in sys.modules, 'deepspeed' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"], "anvil --help must not import torch/deepspeed"


@pytest.mark.parametrize("path", sorted({c.path for c in discover()}))
def test_every_subcommand_has_help(path, capsys):
    with pytest.raises(SystemExit) as info:
        main([*path, "--help"])
    assert info.value.code == 0
    assert "usage: anvil " + " ".join(path) in capsys.readouterr().out


def test_unknown_subcommand_fails(capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["no-such-command"])
    assert info.value.code == 2
