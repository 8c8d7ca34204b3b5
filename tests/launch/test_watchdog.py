"""The heartbeat watchdog names a silent or failed rank, quickly, over the real job store."""

import os
import time

from launch.exits import EXIT_FAILED, EXIT_RETRY
from framework.training.watchdog import (
    FAILED,
    PeerTracker,
    Verdict,
    Watchdog,
    is_comm_error,
    read_status,
    watched_ranks,
)
from tests.helpers.dist import run_distributed


def test_tracker_flags_silent_ranks_only_after_timeout():
    t = PeerTracker([1, 2, 3], timeout_s=5.0, start=0.0)
    t.update({1: "1:0", 2: "1:0", 3: None}, now=1.0)
    t.update({1: "2:1", 2: "1:0", 3: None}, now=4.0)
    assert t.silent(4.0) == []
    t.update({1: "3:2", 2: "1:0", 3: None}, now=6.5)
    assert t.silent(6.5) == [2, 3]  # 2 stopped at t=1; 3 never appeared since start
    t.update({1: "done", 2: "1:0", 3: f"{FAILED}:ValueError"}, now=30.0)
    assert t.silent(30.0) == [2] and t.failed() == [3]
    t.update({1: "done", 2: "2:1", 3: f"{FAILED}:ValueError"}, now=31.0)
    assert t.silent(33.0) == [] and t.silent(33.0, threshold=1.0) == [2]  # shorter once a collective failed


def test_watched_ranks_is_everyone_or_a_ring():
    assert watched_ranks(1, 4) == [0, 2, 3]
    ring = watched_ranks(1000, 1024)
    assert len(ring) == 128 and ring[0] == 1001 and ring[-1] == (1000 + 128) % 1024


def test_comm_errors_are_recognised():
    assert is_comm_error(RuntimeError("[../gloo/transport/tcp/pair.cc:534] Connection closed by peer"))
    assert not is_comm_error(ValueError("loss is nan"))
    assert Verdict("dead", [3], "").exit_code == EXIT_RETRY and Verdict("failed", [3], "").exit_code == EXIT_FAILED


def _freeze_one_rank(timeout_s: float, status_dir: str):
    """Rank 2 stops beating without saying goodbye (as if frozen); the others must name it."""
    import torch.distributed as dist

    os.environ["ANVIL_STATUS_DIR"] = status_dir
    os.environ["ANVIL_NODE_RANK"] = str(dist.get_rank() // 2)
    seen: list[Verdict] = []
    wd = Watchdog(timeout_s, interval_s=0.2, on_abort=seen.append).start()
    wd.beat(7)
    time.sleep(0.5)  # a couple of beats carry step 7
    dist.barrier()
    t0 = time.monotonic()
    if dist.get_rank() == 2:
        wd._stop.set()  # the thread dies silently, like a SIGSTOPped or killed process
        wd._thread.join()
    while dist.get_rank() != 2 and not seen and time.monotonic() - t0 < 4 * timeout_s:
        time.sleep(0.05)
    frozen = {"elapsed": time.monotonic() - t0, "verdict": seen[0].__dict__ if seen else None}

    # Same group, second watchdog: rank 1 fails with an exception; the others stop at once.
    failed: list[Verdict] = []
    dist.barrier()  # ranks 0 and 1 reach this after their verdicts, rank 2 at once
    wd = Watchdog(timeout_s, interval_s=0.2, on_abort=failed.append, prefix="test/failed").start()
    dist.barrier()
    t0 = time.monotonic()
    if dist.get_rank() == 1:
        wd._handle_exception(ValueError("loss is nan"))
        return frozen
    while not failed and time.monotonic() - t0 < 4 * timeout_s:
        time.sleep(0.05)
    wd.stop()
    return {**frozen, "failed": failed[0].__dict__ if failed else None, "failed_after": time.monotonic() - t0}


def test_silent_rank_is_named_within_the_timeout(tmp_path):
    timeout = 2.0
    results = run_distributed(_freeze_one_rank, 3, timeout, str(tmp_path), timeout=60)
    for rank in (0, 1):
        r = results[rank]
        assert r["verdict"] is not None, f"rank {rank} never noticed the silent rank"
        assert r["verdict"]["ranks"] == [2] and r["verdict"]["kind"] == "dead"
        assert "rank 2 (node 1, host" in r["verdict"]["message"] and "last step 7" in r["verdict"]["message"]
        assert timeout - 0.5 < r["elapsed"] < 2 * timeout  # last beat may precede the barrier by one interval
    assert results[0]["failed"]["kind"] == "failed" and results[0]["failed"]["ranks"] == [1], results[0]["failed"]
    assert "rank 1 (node 0" in results[0]["failed"]["message"]
    assert results[0]["failed_after"] < timeout / 2, "a failed peer must not wait for the timeout"
    records = read_status(str(tmp_path))
    by_rank = {r["rank"]: r for r in records}
    assert by_rank[1]["kind"] == "error" and by_rank[1]["exit_code"] == EXIT_FAILED  # its own exception
    assert by_rank[0]["kind"] == "failed" and by_rank[2]["kind"] == "failed"  # stopped by rank 1's failure
    assert "ValueError: loss is nan" in by_rank[1]["message"]
