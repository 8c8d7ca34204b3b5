"""Two simulated nodes on this machine: `anvil launch --nnodes 2 --node-rank 0|1` rendezvous on
127.0.0.1 and train the tiny model; equal losses to one node, a killed rank named, restarts resume.

Each launch starts real torchrun process groups (seconds of start-up each), so these are few,
short (a handful of steps of the ~1M model) and marked slow.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from launch.exits import EXIT_RETRY
from tests.helpers.dist import free_port

ROOT = Path(__file__).resolve().parents[2]
ANVIL = str(Path(sys.executable).parent / "anvil")
STEPS, CKPT, TIMEOUT = 24, 8, 20.0
CACHE: dict[str, str] = {}  # the built-in corpus is tokenized once, by the first (one-node) run
pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def overrides(run_dir: Path, **extra) -> list[str]:
    base = {
        "run_dir": str(run_dir),
        "train.steps": STEPS,
        "train.log_interval": 1,
        "train.checkpoint_interval": CKPT,
        "train.eval_interval": 0,
        "train.eval_iters": 1,
        "train.micro_batch_size": 2,
        "train.global_batch_size": 8,
        "parallel.timeout_s": TIMEOUT,
        "logging.console": "false",
        "data.cache_dir": CACHE.get("dir", str(run_dir.parent / "cache")),
    }
    return [f"{k}={v}" for k, v in {**base, **extra}.items()]


def start(log: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [ANVIL, "launch", *args], cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def two_nodes(tmp: Path, run_dir: Path, nproc: int, *extra: str) -> list[subprocess.Popen]:
    port = str(free_port())
    return [
        start(
            tmp / f"node{r}.log",
            "--nnodes",
            "2",
            "--node-rank",
            str(r),
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            port,
            "--nproc-per-node",
            str(nproc),
            *extra,
            "configs/train/tiny.yaml",
            *overrides(run_dir),
        )
        for r in (0, 1)
    ]


def wait(procs: list[subprocess.Popen], timeout: float = 300) -> list[int]:
    try:
        return [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)


def losses(run_dir: Path) -> dict[int, float]:
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            out[rec["step"]] = rec["loss"]
    return out


def logs(tmp: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(tmp.glob("node*.log")))


def kill_rank_mid_run(procs: list[subprocess.Popen], run_dir: Path, node: int = 1) -> tuple[int, float]:
    """SIGKILL one training process of `node` once a checkpoint exists; return (its rank, time).

    Node 1, because node 0's agent hosts the rendezvous store: when node 0's torchrun exits, the
    other nodes' agents stop at once (torchrun's design), before their ranks could name anyone.
    """
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), "a launcher ended before the kill"
        done = losses(run_dir) if (run_dir / "metrics.jsonl").exists() else {}
        if done and max(done) > CKPT:
            break
        time.sleep(0.02)
    else:
        pytest.fail("training never got past the first checkpoint")
    assert max(done) < STEPS, "training finished before the kill; make STEPS larger"
    for child in psutil.Process(procs[node].pid).children(recursive=True):
        try:
            rank = child.environ().get("RANK")
            if rank is not None and "train" in child.cmdline():
                child.kill()
                return int(rank), time.monotonic()
        except psutil.NoSuchProcess:
            continue
    pytest.fail(f"no training process found under node {node}")


@pytest.fixture(scope="module")
def one_node(tmp_path_factory) -> dict[int, float]:
    """The reference: one node, 4 processes, same global batch."""
    tmp = tmp_path_factory.mktemp("one_node")
    run_dir = tmp / "run"
    CACHE["dir"] = str(tmp / "cache")
    # A long collective timeout here only: rank 0 tokenizes the corpus while the others wait.
    proc = start(
        tmp / "node0.log",
        "--nproc-per-node",
        "4",
        "--master-port",
        str(free_port()),
        "configs/train/tiny.yaml",
        *overrides(run_dir, **{"parallel.timeout_s": 300}),
    )
    assert wait([proc]) == [0], logs(tmp)
    ref = losses(run_dir)
    assert sorted(ref) == list(range(1, STEPS + 1))
    return ref


def test_two_nodes_of_two_match_one_node_of_four(one_node, tmp_path):
    run_dir = tmp_path / "run"
    codes = wait(two_nodes(tmp_path, run_dir, 2))
    assert codes == [0, 0], logs(tmp_path)
    got = losses(run_dir)
    assert sorted(got) == sorted(one_node)
    for step, loss in one_node.items():
        assert got[step] == pytest.approx(loss, rel=1e-5, abs=1e-6), f"step {step}"


def test_killed_rank_ends_the_job_within_twice_the_timeout_and_is_named(one_node, tmp_path):
    run_dir = tmp_path / "run"
    procs = two_nodes(tmp_path, run_dir, 1)
    rank, killed_at = kill_rank_mid_run(procs, run_dir)
    codes = wait(procs, timeout=4 * TIMEOUT)
    elapsed = time.monotonic() - killed_at
    assert elapsed < 2 * TIMEOUT, f"job took {elapsed:.1f} s to end after the kill\n{logs(tmp_path)}"
    assert codes == [EXIT_RETRY, EXIT_RETRY], logs(tmp_path)
    node0, node1 = ((tmp_path / f"node{i}.log").read_text().splitlines() for i in (0, 1))
    # The surviving node's ranks name the silent rank; each launcher's last line says why it stopped.
    assert any(f"anvil watchdog: rank {rank} (node 1" in line for line in node0), logs(tmp_path)
    assert "job failed (retryable)" in node0[-1] and f"rank {rank} (node 1" in node0[-1]
    assert f"rank {rank} (node 1, local rank" in node1[-1] and "SIGKILL" in node1[-1], logs(tmp_path)


def test_max_restarts_resumes_from_checkpoint_with_the_same_losses(one_node, tmp_path):
    run_dir = tmp_path / "run"
    procs = two_nodes(tmp_path, run_dir, 2, "--max-restarts", "1")
    kill_rank_mid_run(procs, run_dir)
    codes = wait(procs)
    assert codes == [0, 0], logs(tmp_path)
    assert "resumed from" in logs(tmp_path)
    got = losses(run_dir)
    assert sorted(got) == sorted(one_node)
    for step, loss in one_node.items():
        assert got[step] == pytest.approx(loss, rel=1e-5, abs=1e-6), f"step {step}"
