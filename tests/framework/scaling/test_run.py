"""The sweep runner: final-loss parsing, and a killed sweep that finishes on rerun without redoing runs."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from framework.scaling.run import RESULT_FILE, final_loss

ROOT = Path(__file__).resolve().parents[3]

MICRO = """name: micro
output_dir: {out}
base_config: {root}/configs/train/tiny.yaml
overrides: ["data.cache_dir={out}/cache"]
family: {{head_dim: 16, vocab_size: 384, seq_len: 32, shapes: [[1, 16], [1, 32]]}}
rules: {{global_batch_size: 4, micro_batch_size: 4, evals: 6, eval_iters: 1, checkpoints: 3}}
grid: {{kind: explicit, tokens: [7680], min_steps: 1}}
run: {{final_evals: 3, wandb: true, threads: 1}}
"""


def test_final_loss_is_mean_of_last_k_validation_losses(tmp_path):
    m = tmp_path / "metrics.jsonl"
    lines = [
        {"step": 10, "loss": 5.0},
        {"step": 10, "val_loss": 4.0},
        {"step": 20, "val_loss": 3.0},
        {"step": 30, "val_loss": 9.0},
        {"step": 30, "val_loss": 2.0},  # a resumed run repeats step 30
        {"step": 40, "loss": 1.0},
        {"step": 40, "val_loss": 1.0},
    ]
    m.write_text("\n".join(json.dumps(x) for x in lines) + "\n{\"step\": 4")  # a line cut by a kill
    assert final_loss(m, 3, 40) == (pytest.approx(2.0), 3)
    assert final_loss(m, 10, 40) == (pytest.approx(2.5), 4)
    with pytest.raises(ValueError, match="reached step 40 of 50"):
        final_loss(m, 3, 50)


def _sweep(path: Path, **kw):
    env = dict(os.environ, WANDB_MODE="offline", PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "launch.cli", "sweep", "run", str(path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


@pytest.mark.slow
def test_killed_sweep_resumes_without_redoing_finished_runs(tmp_path):
    out = tmp_path / "sweep"
    cfg = tmp_path / "micro.yaml"
    cfg.write_text(MICRO.format(out=out, root=ROOT))
    first, second = out / "runs" / "D7.7e03_L1_d16", out / "runs" / "D7.7e03_L1_d32"
    proc = _sweep(cfg, start_new_session=True)
    deadline = time.time() + 150
    # kill the whole sweep (runner and trainer) once run 1 is done and run 2 has a checkpoint
    while not ((first / RESULT_FILE).is_file() and (second / "checkpoints" / "latest").is_file()):
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "sweep did not reach run 2's first checkpoint in time"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (second / RESULT_FILE).exists()
    marker = (first / RESULT_FILE).read_bytes(), (first / RESULT_FILE).stat().st_mtime_ns
    metrics_first = (first / "metrics.jsonl").read_bytes()

    rerun = _sweep(cfg)
    log, _ = rerun.communicate(timeout=150)
    assert rerun.returncode == 0, log
    assert "1 of 2 runs already finished" in log
    assert ((first / RESULT_FILE).read_bytes(), (first / RESULT_FILE).stat().st_mtime_ns) == marker
    assert (first / "metrics.jsonl").read_bytes() == metrics_first  # run 1 was not touched
    assert "resumed from" in (second / "sweep.log").read_text()  # run 2 continued from its checkpoint
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["name"] for r in rows] == [first.name, second.name]
    for r in rows:
        assert float(r["loss"]) > 0 and int(r["val_evals"]) == 3 and int(r["D"]) == 7680
    assert len(list((out / "runs").glob("*/wandb"))) == 2  # every run logged to wandb (offline)


def test_results_come_from_markers_and_a_changed_plan_is_refused(tmp_path):
    from framework.scaling.config import load_sweep
    from framework.scaling.plan import plan
    from framework.scaling.run import collect_results, run_sweep

    cfg_path = tmp_path / "micro.yaml"
    cfg_path.write_text(MICRO.format(out=tmp_path / "sw", root=ROOT))
    cfg = load_sweep(str(cfg_path))
    rows, _ = plan(cfg)
    run_dir = tmp_path / "sw" / "runs" / rows[1]["name"]
    run_dir.mkdir(parents=True)
    rec = {k: rows[1][k] for k in ("name", "N", "D", "steps", "lr")} | {"loss": 3.5, "val_evals": 3}
    (run_dir / RESULT_FILE).write_text(json.dumps(rec | {"metrics": {"anvil_mc/acc": 0.375}}))
    done = collect_results(cfg, rows)
    assert [d["name"] for d in done] == [rows[1]["name"]]
    row = list(csv.DictReader((tmp_path / "sw" / "results.csv").open()))[0]
    assert row["loss"] == "3.5" and row["anvil_mc/acc"] == "0.375"  # task metrics next to the loss
    (run_dir / RESULT_FILE).write_text(json.dumps(rec | {"lr": 1.0}))
    with pytest.raises(SystemExit, match="different plan.*lr"):
        run_sweep(cfg, index=1)


FAKE_TRAIN = """
import json, sys, time
run_dir, steps, n, spans = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
start = time.time()
time.sleep(0.6)
if n == {fail_n}:
    sys.exit(3)
with open(run_dir + "/metrics.jsonl", "w") as fh:
    fh.write(json.dumps({{"step": steps, "val_loss": 1000.0 / n}}) + "\\n")
with open(spans, "a") as fh:
    fh.write(f"{{start}} {{time.time()}}\\n")
"""


@pytest.mark.parametrize("jobs", [1, 2])
def test_jobs_run_side_by_side_and_results_keep_plan_order(tmp_path, monkeypatch, jobs):
    """run.jobs=2 keeps two runs going at once (measured from the runs' own clocks), a failed run
    is counted and reported, and results.csv lists the finished runs in plan order either way."""
    import framework.scaling.run as run
    from framework.scaling.config import load_sweep

    cfg_path = tmp_path / "micro.yaml"
    text = MICRO.format(out=tmp_path / "sw", root=ROOT)
    text = text.replace("shapes: [[1, 16], [1, 32]]", "shapes: [[1, 16], [1, 32], [1, 48], [2, 48], [3, 48]]")
    cfg_path.write_text(text.replace("threads: 1}", f"threads: 1, jobs: {jobs}}}"))
    cfg = load_sweep(str(cfg_path))
    rows, _ = run.plan(cfg)
    fail_n = rows[2]["N"]
    script, spans = tmp_path / "fake_train.py", tmp_path / "spans.txt"
    script.write_text(FAKE_TRAIN.format(fail_n=fail_n))
    monkeypatch.setattr(
        run,
        "train_command",
        lambda cfg, row, run_dir, port=None: [
            sys.executable,
            str(script),
            str(run_dir),
            str(row["steps"]),
            str(row["N"]),
            str(spans),
        ],
    )
    summary = run.run_sweep(cfg)
    assert summary["failed"] == [rows[2]["name"]] and summary["finished"] == 4
    got = list(csv.DictReader((tmp_path / "sw" / "results.csv").open()))
    assert [r["name"] for r in got] == [r["name"] for i, r in enumerate(rows) if i != 2]
    assert [float(r["loss"]) for r in got] == [pytest.approx(1000.0 / r["N"]) for i, r in enumerate(rows) if i != 2]
    intervals = [tuple(map(float, line.split())) for line in spans.read_text().splitlines()]
    overlapping = sum(1 for i, a in enumerate(intervals) for b in intervals[i + 1 :] if a[0] < b[1] and b[0] < a[1])
    assert (overlapping > 0) == (jobs > 1), intervals


def test_run_jobs_must_be_positive(tmp_path):
    from framework.configtree import ConfigError
    from framework.scaling.config import load_sweep

    cfg_path = tmp_path / "micro.yaml"
    cfg_path.write_text(MICRO.format(out=tmp_path / "sw", root=ROOT).replace("threads: 1}", "threads: 1, jobs: 0}"))
    with pytest.raises(ConfigError, match="run.jobs"):
        load_sweep(str(cfg_path))
