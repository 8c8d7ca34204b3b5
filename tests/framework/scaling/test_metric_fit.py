"""Task metrics in sweeps: results.csv columns from in-loop evaluations, and the two-step
(loss from N, D; metric from loss) prediction of the largest budget, on planted laws."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from framework.scaling.fit import FitError
from framework.scaling.metric_fit import fit_sigmoid, read_metric, sigmoid, two_step_heldout
from framework.scaling.run import final_task_metrics

LAW = dict(E=1.8, A=400.0, B=600.0, alpha=0.34, beta=0.28)
SIG = dict(a=0.7, k=-3.0, L0=3.2, b=0.25)  # 0.25 chance at high loss, up to 0.95


def _planted_csv(path: Path, noise: float = 0.0, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    for C in (1e15, 4e15, 1.6e16, 6.4e16):
        for N in np.geomspace(2e6, 6e7, 5) * (C / 1e15) ** 0.5 / 4:
            D = C / (6 * N)
            L = LAW["E"] + LAW["A"] / N ** LAW["alpha"] + LAW["B"] / D ** LAW["beta"]
            m = sigmoid(L, **SIG) + noise * rng.standard_normal()
            rows.append({"name": f"r{len(rows)}", "N": N, "D": D, "C": C, "loss": L, "anvil_mc/acc": m})
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_two_step_recovers_planted_metric_at_held_out_budget(tmp_path):
    out = two_step_heldout(read_metric(_planted_csv(tmp_path / "r.csv"), "anvil_mc/acc"))
    assert out["fit_runs"] == 15 and len(out["runs"]) == 5
    assert out["absolute_error"] < 0.005 and out["mean_absolute_error"] < 0.005
    noisy = two_step_heldout(read_metric(_planted_csv(tmp_path / "n.csv", noise=0.005), "anvil_mc/acc"))
    assert noisy["absolute_error"] < 0.03


def test_sigmoid_fit_and_errors(tmp_path):
    L = np.linspace(2.5, 4.5, 12)
    got = fit_sigmoid(L, sigmoid(L, **SIG))
    assert got["sse"] < 1e-10
    assert sigmoid(3.0, got["a"], got["k"], got["L0"], got["b"]) == pytest.approx(sigmoid(3.0, **SIG), abs=1e-5)
    with pytest.raises(FitError, match="at least 4 runs"):
        fit_sigmoid(L[:3], L[:3])
    with pytest.raises(FitError, match="no column 'x/acc'; task metrics found: anvil_mc/acc"):
        read_metric(_planted_csv(tmp_path / "r.csv"), "x/acc")


def test_final_task_metrics_from_metrics_jsonl(tmp_path):
    lines = [
        {"step": 5, "loss": 3.0},
        {"step": 5, "eval/anvil_mc/acc": 0.3, "eval/anvil_mc/acc_stderr": 0.1, "eval/seconds": 2.0},
        "not json",
        {"step": 10, "eval/anvil_mc/acc": 0.4, "eval/web/loss": 3.1, "eval/seconds": 2.0},
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    assert final_task_metrics(path) == {"anvil_mc/acc": 0.4, "web/loss": 3.1}


def test_sweep_fit_metric_cli(tmp_path, capsys):
    from launch.cli import main

    results = _planted_csv(tmp_path / "results.csv")
    out = tmp_path / "m.json"
    assert main(["sweep", "fit", str(results), "--metric", "anvil_mc/acc", "--output", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["metric"] == "anvil_mc/acc" and abs(got["predicted_metric"] - got["observed_metric"]) < 0.005
    assert "held out C=6.4e+16: predicted anvil_mc/acc" in capsys.readouterr().out
