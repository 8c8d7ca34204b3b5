"""Run a planned sweep through `anvil train`, resumably, and collect results.csv.

Each planned run is one subprocess `anvil train BASE_CONFIG key=value...` (or `anvil launch ...`
with several processes per run) with its own run folder under OUTPUT_DIR/runs/NAME. A finished
run leaves OUTPUT_DIR/runs/NAME/sweep_result.json (its final loss); a rerun of the sweep skips
those, and `anvil train` itself resumes an interrupted run from its latest checkpoint, so killing
the sweep at any moment and running the same command again finishes it without redoing work.
results.csv is rebuilt from the result markers after every run (plan order), so it is never half
written. The final loss is the mean of the last K validation losses in RUN_DIR/metrics.jsonl;
with in-loop evaluation (`eval.tasks` / `eval.datasets` in the overrides or base config) the last
evaluation's metrics become TASK/METRIC columns next to it (for `anvil sweep fit --metric`).
On Slurm, `write_slurm_array` writes one array task per run, each calling
`anvil sweep run SWEEP.yaml --index I`; a final `anvil sweep run` collects the results.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from framework.runtime import get_logger, print_table
from framework.scaling.config import SweepConfig
from framework.scaling.plan import plan, run_overrides, write_plan

log = get_logger("anvil.sweep")
RESULT_FILE = "sweep_result.json"
RESULT_COLUMNS = [
    "name",
    "N",
    "D",
    "loss",
    "C",
    "C_model",
    "budget",
    "n_layers",
    "d_model",
    "n_heads",
    "steps",
    "lr",
    "val_evals",
    "wall_s",
    "global_batch_size",
    "seq_len",
    "batch_tokens",
    "beta2",
    "rule",
    "unique_tokens",
]
# Plan columns a result marker repeats (older markers may lack the later ones): all but the outcomes.
MARKER_KEYS = tuple(c for c in RESULT_COLUMNS if c not in ("loss", "val_evals", "wall_s"))


def final_loss(metrics_path: Path, k: int, steps: int) -> tuple[float, int]:
    """Mean of the last `k` validation losses (one per step; a resumed run's repeated steps count
    once, the later line wins). Raises ValueError when the run did not reach `steps`."""
    vals: dict[int, float] = {}
    last_step, bad = 0, 0
    with metrics_path.open() as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad += 1  # a line cut by a kill; the trainer rewrites from its checkpoint
                continue
            step = int(rec.get("step", 0))
            last_step = max(last_step, step)
            if rec.get("val_loss") is not None:
                vals[step] = float(rec["val_loss"])
    if last_step < steps:
        raise ValueError(f"{metrics_path}: reached step {last_step} of {steps}")
    if not vals:
        raise ValueError(f"{metrics_path}: no validation losses (val_loss lines)")
    last = [vals[s] for s in sorted(vals)][-k:]
    return sum(last) / len(last), len(last)


def final_task_metrics(metrics_path: Path) -> dict[str, float]:
    """{"TASK/METRIC": value} of the run's last in-loop evaluation (`eval/TASK/METRIC` lines;
    empty without eval.tasks / eval.datasets). Standard errors and timings are left out."""
    last: dict[str, float] = {}
    with metrics_path.open() as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            found = {
                k[len("eval/") :]: float(v)
                for k, v in rec.items()
                if k.startswith("eval/") and k != "eval/seconds" and "stderr" not in k and isinstance(v, (int, float))
            }
            if found:
                last = found
    return last


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_command(cfg: SweepConfig, row: dict, run_dir: Path, port: int | None = None) -> list[str]:
    """The run's `anvil train` (or `anvil launch`, on rendezvous port `port` if given) command."""
    overrides = run_overrides(row, cfg, str(run_dir))
    overrides += [
        f"logging.wandb={str(cfg.run.wandb).lower()}",
        f"logging.wandb_project={cfg.run.wandb_project}",
        f"logging.wandb_group={cfg.name}",
    ]
    if cfg.run.launcher == "local":
        return [sys.executable, "-m", "launch.cli", "train", cfg.base_config, *overrides]
    return [
        sys.executable,
        "-m",
        "launch.cli",
        "launch",
        "--nproc-per-node",
        str(cfg.run.nproc_per_node),
        *(["--master-port", str(port)] if port else []),
        cfg.base_config,
        *overrides,
    ]


class _Child:
    """One running `anvil train` subprocess: its output appended to LOG, a wall-clock limit, and
    termination that never leaves an orphaned trainer."""

    def __init__(self, cmd: list[str], log_path: Path, timeout_s: float, threads: int = 0):
        env = dict(os.environ)
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        env.setdefault("WANDB_MODE", "offline")
        env.setdefault("WANDB_SILENT", "true")
        self.out = log_path.open("a")
        self.out.write(f"\n$ {shlex.join(cmd)}\n")
        self.out.flush()
        self.start = time.perf_counter()
        self.timeout_s = timeout_s
        self.rc: int | None = None
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.STDOUT, env=env)

    def poll(self) -> int | None:
        """The exit code once finished (124 after the time limit), None while it runs."""
        if self.rc is None:
            self.rc = self.proc.poll()
            if self.rc is None and self.timeout_s and time.perf_counter() - self.start > self.timeout_s:
                self.stop()
                self.rc = 124
            if self.rc is not None:
                self.wall = time.perf_counter() - self.start
                self.out.close()
        return self.rc

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def collect_results(cfg: SweepConfig, rows: list[dict]) -> list[dict]:
    """Rewrite OUTPUT_DIR/results.csv from the result markers of finished runs (plan order)."""
    out_dir = Path(cfg.out_dir)
    done = []
    for row in rows:
        marker = out_dir / "runs" / row["name"] / RESULT_FILE
        if marker.is_file():
            done.append(json.loads(marker.read_text()))
    tasks = sorted({k for rec in done for k in rec.get("metrics", {})})  # TASK/METRIC columns
    tmp = out_dir / f"results.csv.{os.getpid()}.tmp"  # Slurm array tasks may collect at the same time
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=RESULT_COLUMNS + tasks)
        writer.writeheader()
        for rec in done:
            writer.writerow({**{k: rec.get(k) for k in RESULT_COLUMNS}, **rec.get("metrics", {})})
    os.replace(tmp, out_dir / "results.csv")
    return done


def _finished(run_dir: Path, row: dict) -> bool:
    """A result marker for exactly this planned run; a marker from a different plan is an error
    (resuming a run under changed settings would mix two experiments)."""
    marker = run_dir / RESULT_FILE
    if not marker.is_file():
        return False
    rec = json.loads(marker.read_text())
    changed = [k for k in ("N", "D", "steps", "lr") if rec.get(k) != row[k]]
    changed += [k for k in ("global_batch_size", "beta2") if k in rec and rec[k] != row[k]]
    if changed:
        raise SystemExit(
            f"anvil sweep run: {marker} was made by a different plan ({', '.join(changed)} changed); "
            "delete that run folder or set a new output_dir"
        )
    return True


def _record(cfg: SweepConfig, rows: list[dict], row: dict, rc: int, wall: float, run_dir: Path) -> float | None:
    """Write a finished run's result marker and rebuild results.csv; None (logged) if it failed."""
    try:
        if rc != 0:
            raise ValueError(f"anvil train exited with {rc} (see {run_dir / 'sweep.log'})")
        loss, evals = final_loss(run_dir / "metrics.jsonl", cfg.run.final_evals, row["steps"])
    except (ValueError, OSError) as exc:
        log.error("%s failed: %s", row["name"], exc)
        return None
    rec = {k: row[k] for k in MARKER_KEYS}
    rec.update(loss=loss, val_evals=evals, wall_s=round(wall, 1), metrics=final_task_metrics(run_dir / "metrics.jsonl"))
    (run_dir / RESULT_FILE).write_text(json.dumps(rec, indent=1))
    collect_results(cfg, rows)
    return loss


def _eta(timings: list[tuple[float, float]], flops_left: list[float], jobs: int = 1) -> str:
    """Remaining time from the runs done so far: wall = startup + FLOPs / rate, fitted once two
    runs of different sizes are done (tiny runs are dominated by startup)."""
    if not timings:
        return "?"
    import numpy as np

    f, w = np.array(timings, dtype=float).T
    start, per_flop = 0.0, w.sum() / f.sum()
    if len(timings) >= 2 and np.ptp(f) > 0:
        per_flop, start = np.polyfit(f, w, 1)
        if per_flop <= 0 or start < 0:
            start, per_flop = 0.0, w.sum() / f.sum()
    return f"{(len(flops_left) * start + per_flop * sum(flops_left)) / jobs / 60:.1f} min"


def _terminate_on_sigterm() -> None:
    """SIGTERM (kill, Slurm preemption) unwinds like Ctrl-C, so the running trainer is stopped too."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        pass


def _launch(cfg: SweepConfig, row: dict, out_dir: Path, position: str, eta: str) -> _Child:
    log.info(
        "[%s] %s: N=%s D=%s steps=%d lr=%g (sweep ETA %s)",
        position,
        row["name"],
        f"{row['N']:,}",
        f"{row['D']:,}",
        row["steps"],
        row["lr"],
        eta,
    )
    run_dir = out_dir / "runs" / row["name"]
    run_dir.mkdir(parents=True, exist_ok=True)
    # several `anvil launch` at once would all rendezvous on the default port
    port = _free_port() if cfg.run.launcher == "anvil-launch" and cfg.run.jobs > 1 else None
    cmd = train_command(cfg, row, run_dir, port)
    return _Child(cmd, run_dir / "sweep.log", cfg.run.timeout_s, cfg.run.threads)


def _run_pending(cfg: SweepConfig, rows: list[dict], pending: list[tuple[int, dict]], out_dir: Path):
    """Run `pending` in plan order, `run.jobs` subprocesses at a time (each run is its own process
    with its own seed and data order, so running several at once changes no number); returns
    (failed run names, summary rows). Stops starting runs after `run.max_failures` in a row."""
    timings: list[tuple[float, float]] = []  # (model FLOPs, wall seconds) of runs done now
    failed: list[str] = []
    summary_rows: list[dict] = []
    queue, running = list(pending), []  # running: (position, row, child)
    consecutive, started = 0, 0
    try:
        while queue or running:
            while queue and len(running) < cfg.run.jobs:
                started += 1
                _, row = queue.pop(0)
                eta = _eta(timings, [r["C_model"] for _, r in [(0, row), *queue]], cfg.run.jobs)
                running.append((started, row, _launch(cfg, row, out_dir, f"{started}/{len(pending)}", eta)))
            time.sleep(0.1)
            for item in [r for r in running if r[2].poll() is not None]:
                running.remove(item)
                n, row, child = item
                wall = child.wall
                timings.append((row["C_model"], wall))
                loss = _record(cfg, rows, row, child.rc, wall, out_dir / "runs" / row["name"])
                if loss is None:
                    failed.append(row["name"])
                    consecutive += 1
                    if consecutive >= cfg.run.max_failures and queue:
                        log.error("%d consecutive failures: starting no further runs", consecutive)
                        queue.clear()
                    continue
                consecutive = 0
                summary_rows.append(
                    {
                        "run": row["name"],
                        "N": f"{row['N']:,}",
                        "D": f"{row['D']:,}",
                        "loss": f"{loss:.4f}",
                        "wall_s": f"{wall:.0f}",
                    }
                )
                log.info("[%d/%d] %s: final loss %.4f in %.0f s", n, len(pending), row["name"], loss, wall)
    except BaseException:  # KeyboardInterrupt / SIGTERM: do not leave orphaned trainers
        for _, _, child in running:
            child.stop()
        raise
    return failed, summary_rows


def run_sweep(cfg: SweepConfig, index: int | None = None, dry_run: bool = False) -> dict:
    """Run every unfinished planned run (or only plan row `index`); returns a summary."""
    _terminate_on_sigterm()
    rows, dropped = plan(cfg)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_plan(rows, out_dir / "plan.csv")
    todo = [(i, r) for i, r in enumerate(rows) if index is None or i == index]
    if index is not None and not todo:
        raise SystemExit(f"anvil sweep run: --index {index} is outside the plan (0..{len(rows) - 1})")
    if dry_run:
        for i, row in todo:
            print(shlex.join(train_command(cfg, row, out_dir / "runs" / row["name"])))
        return {"planned": len(rows), "dropped": dropped}
    pending = [(i, r) for i, r in todo if not _finished(out_dir / "runs" / r["name"], r)]
    skipped = len(todo) - len(pending)
    if skipped:
        log.info("%d of %d runs already finished: skipped", skipped, len(todo))
    failed, summary_rows = _run_pending(cfg, rows, pending, out_dir)
    done = collect_results(cfg, rows)
    print_table(summary_rows, title=f"anvil sweep run: {cfg.name} ({len(done)}/{len(rows)} runs finished)")
    return {
        "planned": len(rows),
        "dropped": dropped,
        "finished": len(done),
        "skipped": skipped,
        "failed": failed,
        "results": str(out_dir / "results.csv"),
    }


def write_slurm_array(cfg: SweepConfig, sweep_path: str, n_runs: int, overrides: list[str] | None = None) -> Path:
    """An sbatch script with one array task per planned run (each resumable on requeue).

    The submitting command's `key=value` overrides are repeated in every task, so the tasks plan
    exactly the sweep that was submitted."""
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=anvil-sweep-{cfg.name}",
        f"#SBATCH --array=0-{n_runs - 1}",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --time={cfg.run.slurm_time}",
        f"#SBATCH --output={out_dir}/slurm-%A_%a.out",
        "#SBATCH --requeue",
    ]
    if cfg.run.slurm_partition:
        lines.append(f"#SBATCH --partition={cfg.run.slurm_partition}")
    lines += [
        "set -euo pipefail",
        f"cd {shlex.quote(os.getcwd())}",
        " ".join(
            [
                "anvil sweep run",
                shlex.quote(sweep_path),
                *map(shlex.quote, overrides or []),
                '--index "$SLURM_ARRAY_TASK_ID"',
            ]
        ),
    ]
    path = out_dir / "sweep.sbatch"
    path.write_text("\n".join(lines) + "\n")
    return path
