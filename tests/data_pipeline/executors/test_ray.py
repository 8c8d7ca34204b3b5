"""The Ray executor against the local one on the sample corpus: byte-identical curation and dedup
output (through the CLI), a worker killed mid-task is retried, a task that keeps failing stops the
job naming its input shard with the traceback, and the local executor finishes what Ray left.
One local Ray runtime (2 CPUs) serves the whole module: it takes ~15-25 s to start here."""

from __future__ import annotations

import logging
import os
import shutil

import pytest

from data_pipeline.dedup.api import run_dedup
from data_pipeline.executors import RayExecutor
from data_pipeline.executors.ray import CRASH_ENV, RayOptions, TaskFailed, init_ray, run_dedup_ray
from launch.cli import main
from tests.data_pipeline.executors.common import (
    DEMO,
    assert_same_output,
    curate,
    dedup_config,
    dedup_local,
    make_corpus,
    overrides,
)

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    raw = make_corpus(root, limit=240, shard_docs=60)  # 4 input files -> 4 tasks per segment
    curate(raw, root / "local")
    dedup_local(raw, root / "local-dedup")
    return root, raw


@pytest.fixture(scope="module")
def crash_dir(work):
    """Starts the module's Ray runtime; its workers inherit CRASH_ENV (the test crash hook)."""
    folder = work[0] / "crash"
    folder.mkdir()
    os.environ[CRASH_ENV] = str(folder)
    init_ray(RayOptions(num_cpus=2))
    yield folder
    ray.shutdown()
    os.environ.pop(CRASH_ENV, None)


@pytest.fixture
def retry_log():
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("anvil.data")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def test_cli_curation_on_ray_matches_local(work, crash_dir):
    root, raw = work
    assert main(["data", "run", str(DEMO), *overrides(raw, root / "ray"), "--executor", "ray"]) == 0
    assert_same_output(root / "local", root / "ray")


def test_worker_killed_mid_task_is_retried(work, crash_dir, retry_log):
    root, raw = work
    for key in ("seg0-00001", "seg2-00003"):  # a filter task and a minhash_dedup task
        (crash_dir / key).touch()
    curate(raw, root / "ray-crash", RayExecutor(RayOptions(retries=1)))
    assert not list(crash_dir.iterdir()), "the crash hook did not fire"
    retried = [r.getMessage() for r in retry_log if "retrying" in r.getMessage()]
    assert len(retried) == 2 and all("input shard" in m for m in retried), retried
    assert_same_output(root / "local", root / "ray-crash")


def test_failing_task_stops_job_naming_shard_then_local_resumes(work, crash_dir):
    root, raw = work
    out = root / "ray-fail"
    (crash_dir / "seg0-00002").write_text("raise")
    with pytest.raises(TaskFailed) as info:
        curate(raw, out, RayExecutor(RayOptions(retries=0)))
    msg = str(info.value)
    assert "input shard 2" in msg and "sample-00002.jsonl" in msg, msg
    assert "Traceback" in msg and "injected failure" in msg, msg
    assert not (out / "stats.json").exists()
    curate(raw, out)  # the local executor resumes from the Ray run's markers
    assert_same_output(root / "local", out)


def test_cli_dedup_on_ray_matches_local_after_crashes(work, crash_dir, retry_log):
    root, raw = work
    (crash_dir / "scan-00002").touch()  # a signature task dies after its first shard
    (crash_dir / "band-003").touch()  # a band task dies after writing its pairs, before its marker
    cfg = dedup_config()
    argv = [
        "data",
        "dedup",
        str(raw),
        "--output",
        str(root / "ray-dedup"),
        "--threshold",
        str(cfg.threshold),
        "--memory-budget",
        cfg.memory_budget,
        "--executor",
        "ray",
        "--retries",
        "1",
    ]
    assert main(argv) == 0
    assert not list(crash_dir.iterdir())
    retried = [r.getMessage() for r in retry_log if "retrying" in r.getMessage()]
    assert any("dedup scan of input" in m for m in retried) and any("dedup band 3" in m for m in retried), retried
    assert (root / "local-dedup" / "duplicates.jsonl").read_text().count("\n") > 0
    assert_same_output(root / "local-dedup", root / "ray-dedup")


def test_dedup_on_ray_stopped_in_the_band_phase_resumes(work, crash_dir):
    """The job stops (band 5 fails, no retries); the same call continues from the finished units."""
    root, raw = work
    out = root / "ray-dedup-resume"
    (crash_dir / "band-005").write_text("raise")
    with pytest.raises(TaskFailed, match="dedup band 5"):
        run_dedup_ray([str(raw)], out, dedup_config(), opts=RayOptions(retries=0))
    stats = run_dedup_ray([str(raw)], out, dedup_config(), opts=RayOptions(retries=0))
    r = stats["resume"]
    assert r["scan"]["done"] == 0 and r["scan"]["reused"] >= 4, r  # one shard or more per file
    assert r["append"]["done"] == 0 and r["ids"] == {"reused": 1, "done": 0}, r
    assert 1 <= r["bands"]["done"] < stats["bands"], r
    assert_same_output(root / "local-dedup", out)


def test_incremental_dedup_on_ray_matches_local(work, crash_dir):
    root, raw = work
    files = sorted(str(p) for p in raw.glob("*.jsonl"))
    for name, fn in (
        ("local", lambda i, o, s: run_dedup(i, o, dedup_config(), incremental_store=s)),
        ("ray", lambda i, o, s: run_dedup_ray(i, o, dedup_config(), s)),
    ):
        fn(files[:2], root / f"inc-{name}-1", root / f"inc-{name}-store")
        fn(files[2:], root / f"inc-{name}-2", root / f"inc-{name}-store")
    for batch in (1, 2):
        assert_same_output(root / f"inc-local-{batch}", root / f"inc-ray-{batch}")


def test_memory_budget_no_node_can_hold_is_refused(work, crash_dir):
    root, raw = work
    cfg = dedup_config()
    cfg.memory_budget = "100TB"
    with pytest.raises(ValueError, match="more than the largest Ray node offers"):
        run_dedup_ray([str(raw)], root / "ray-dedup-huge", cfg)


def test_dedup_on_ray_gives_up_after_retries(work, crash_dir):
    root, raw = work
    (crash_dir / "scan-00000").write_text("raise")
    with pytest.raises(TaskFailed, match="sample-00000.jsonl"):
        run_dedup_ray([str(raw)], root / "ray-dedup-fail", dedup_config(), opts=RayOptions(retries=0))
    shutil.rmtree(root / "ray-dedup-fail")


@pytest.mark.parametrize(
    "argv, reason",
    [
        (["--ray-address", "auto"], "--ray-address needs --executor ray"),
        (["--dry-run"], "--dry-run needs --executor slurm"),
        (["--executor", "ray", "--retries", "-1"], "--retries must be >= 0"),
    ],
)
def test_cli_rejects_flags_that_do_not_fit(tmp_path, argv, reason):
    with pytest.raises(SystemExit, match=reason):
        main(["data", "dedup", str(tmp_path), "--output", str(tmp_path / "o"), *argv])


def test_unreachable_ray_address_fails_fast():
    import socket
    import time

    from data_pipeline.executors.ray import _check_reachable

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.perf_counter()
    with pytest.raises(SystemExit, match="no Ray head answers"):
        _check_reachable(f"127.0.0.1:{port}")
    assert time.perf_counter() - t < 10
    _check_reachable("auto")  # left to Ray


def _kept_and_rejected(out):
    return {
        str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.jsonl.zst")) if ".anvil" not in p.parts
    }


def test_damaged_part_is_verified_and_redone_on_ray(work, crash_dir):
    """Markers are shared with the local executor: Ray verifies them the same way before reuse."""
    root, raw = work
    out = root / "ray-damaged"
    shutil.copytree(root / "local", out)
    part = out / "part-00001.jsonl.zst"
    part.write_bytes(part.read_bytes()[:-5])
    curate(raw, out, RayExecutor(RayOptions(retries=0)))
    assert _kept_and_rejected(out) == _kept_and_rejected(root / "local")
