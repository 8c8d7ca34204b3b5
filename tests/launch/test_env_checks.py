"""Pre-launch checks fail early, all at once, with the key / path / port that is wrong."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from framework.config import RunConfig
from launch.env_checks import EnvCheckError, check_data_paths, check_port_free, check_run_dir_writable, run_checks
from launch.exits import EXIT_ENV_CHECK

ROOT = Path(__file__).resolve().parents[2]


def test_all_problems_are_reported_together(tmp_path):
    (tmp_path / "file").write_text("x")
    cfg = RunConfig()
    cfg.run_dir = str(tmp_path / "file" / "run")  # under a regular file: cannot be created
    cfg.data.paths = [str(tmp_path / "tok")]
    cfg.data.tokenizer = str(tmp_path / "tokenizer.json")
    cfg.train.global_batch_size, cfg.train.micro_batch_size = 8, 2
    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(EnvCheckError) as info:
            run_checks(cfg, world_size=3, node_rank=0, port=port)
    msg = str(info.value)
    assert "layout does not fit 3 processes" in msg and "train.global_batch_size" in msg
    assert "is not writable from node 0" in msg
    assert f"rendezvous port {port} is already in use" in msg
    assert "data.paths[0]" in msg and "tok.bin/.idx not found" in msg and "data.tokenizer" in msg


def test_checks_pass_on_a_good_setup(tmp_path):
    cfg = RunConfig()
    cfg.run_dir = str(tmp_path / "run")
    (tmp_path / "tok.bin").write_bytes(b"")
    (tmp_path / "tok.idx").write_bytes(b"")
    cfg.data.paths = [str(tmp_path / "tok")]
    run_checks(cfg, world_size=1, node_rank=0, port=None)
    assert check_run_dir_writable(cfg.run_dir) is None and check_data_paths(cfg) == []
    assert list((tmp_path / "run").iterdir()) == [], "the write probe is removed"
    with socket.socket() as s:
        s.bind(("", 0))
        free = s.getsockname()[1]
    assert check_port_free(free) is None


def test_only_node_0_checks_the_port(tmp_path):
    cfg = RunConfig()
    cfg.run_dir = str(tmp_path / "run")
    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert run_checks(cfg, world_size=1, node_rank=1, port=port) is None  # node 1 only connects
        with pytest.raises(EnvCheckError, match=f"rendezvous port {port} is already in use"):
            run_checks(cfg, world_size=1, node_rank=0, port=port)  # the same port on node 0 is refused


def test_cli_exits_3_before_starting_anything(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"run_dir: {tmp_path / 'run'}\ntrain:\n  global_batch_size: 2\n  micro_batch_size: 1\n")
    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen()
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "launch.cli",
                "launch",
                "--nproc-per-node",
                "2",
                "--master-port",
                str(busy.getsockname()[1]),
                str(cfg),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
    assert out.returncode == EXIT_ENV_CHECK, out.stderr
    assert "pre-launch check failed" in out.stderr and "already in use" in out.stderr
