"""Predict a downstream task metric at a larger budget: the OLMo ladder's two steps.

Step 1 (loss from compute): the parametric law L(N, D) = E + A/N^alpha + B/D^beta of `fit.py`,
fitted on the runs of every budget but the largest. Step 2 (metric from loss): a sigmoid
    metric(L) = a / (1 + exp(-k (L - L0))) + b
fitted on the same runs' (final loss, final task metric) pairs (Bhagia et al. 2024, "Establishing
Task Scaling Laws via Compute-Efficient Model Ladders", arXiv:2412.04403, with the task loss
replaced by the held-out LM loss). The held-out largest budget is then predicted run by run
(metric(L(N, D))) and compared with what its runs scored; the headline is the run with the lowest
predicted loss there (the compute-optimal one) against its observed metric.

The sweep records task metrics in results.csv as TASK/METRIC columns (`eval/TASK/METRIC` of each
run's last in-loop evaluation, `eval.tasks` in the sweep's overrides or base config).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from scipy.optimize import curve_fit

from framework.scaling.fit import FitError, fit_parametric, group_budgets


def read_metric(path: str | Path, metric: str) -> dict[str, np.ndarray]:
    """N, D, C, loss and the metric column of a sweep's results.csv (rows missing any are skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FitError(f"results file not found: {path}")
    with path.open(newline="") as fh:
        reader = csv.DictReader(line for line in fh if not line.startswith("#"))
        header = reader.fieldnames or []
        if metric not in header:
            found = [c for c in header if "/" in c]
            raise FitError(
                f"{path}: no column {metric!r}; task metrics found: {', '.join(found) or 'none'} "
                "(set eval.tasks in the sweep's overrides or base config so each run records them)"
            )
        rows = []
        for row in reader:
            try:
                n, d, loss, m = (float(row[k]) for k in ("N", "D", "loss", metric))
                c = float(row["C"]) if row.get("C") not in (None, "") else 6.0 * n * d
            except (TypeError, ValueError, KeyError):
                continue
            if all(math.isfinite(v) for v in (n, d, loss, m, c)) and min(n, d, loss, c) > 0:
                rows.append((n, d, c, loss, m))
    if not rows:
        raise FitError(f"{path}: no rows with N, D, loss and {metric}")
    arr = np.array(rows, dtype=np.float64)
    return {"N": arr[:, 0], "D": arr[:, 1], "C": arr[:, 2], "loss": arr[:, 3], "metric": arr[:, 4]}


def sigmoid(L, a, k, L0, b):
    return a / (1.0 + np.exp(-k * (np.asarray(L, float) - L0))) + b


def fit_sigmoid(loss: np.ndarray, metric: np.ndarray) -> dict:
    """Least-squares sigmoid of metric in loss; several starts, best residual kept (deterministic)."""
    if len(loss) < 4:
        raise FitError(f"the sigmoid has 4 free parameters and needs at least 4 runs, got {len(loss)}")
    lo, hi = float(metric.min()), float(metric.max())
    span = max(hi - lo, 1e-6)
    width = max(float(np.ptp(loss)), 1e-3)
    best = None
    for k0 in (-4.0 / width, -1.0 / width, -10.0 / width):
        for L0 in np.quantile(loss, [0.25, 0.5, 0.75]):
            p0 = [span * 2, k0, float(L0), lo - span / 2]
            try:
                params, _ = curve_fit(sigmoid, loss, metric, p0=p0, maxfev=20000)
            except (RuntimeError, ValueError):
                continue
            sse = float(np.sum((sigmoid(loss, *params) - metric) ** 2))
            if best is None or sse < best[1] - 1e-15:
                best = (params, sse)
    if best is None:
        raise FitError("the sigmoid fit did not converge from any start")
    a, k, L0, b = (float(x) for x in best[0])
    return {"a": a, "k": k, "L0": L0, "b": b, "sse": best[1], "n_points": len(loss)}


def two_step_heldout(data: dict[str, np.ndarray], top_k: int | None = 128) -> dict:
    """Fit both steps on every budget but the largest; predict the largest budget's runs."""
    labels = group_budgets(data["C"])
    last = labels == labels.max()
    if labels.max() < 1 or (~last).sum() < 5:
        raise FitError("the two-step prediction needs at least 2 budgets and 5 runs outside the largest")
    law = fit_parametric(data["N"][~last], data["D"][~last], data["loss"][~last], top_k=top_k)
    sig = fit_sigmoid(data["loss"][~last], data["metric"][~last])
    params = [sig[k] for k in ("a", "k", "L0", "b")]
    pred_loss = law.loss(data["N"][last], data["D"][last])
    pred_metric = sigmoid(pred_loss, *params)
    runs = [
        {
            "N": float(n),
            "D": float(d),
            "predicted_loss": float(pl),
            "observed_loss": float(ol),
            "predicted_metric": float(pm),
            "observed_metric": float(om),
            "metric_from_observed_loss": float(sigmoid(ol, *params)),
        }
        for n, d, pl, ol, pm, om in zip(
            data["N"][last], data["D"][last], pred_loss, data["loss"][last], pred_metric, data["metric"][last]
        )
    ]
    head = min(runs, key=lambda r: r["predicted_loss"])
    return {
        "budget": float(np.exp(np.mean(np.log(data["C"][last])))),
        "fit_runs": int((~last).sum()),
        "step1_loss_law": {k: law.to_dict()[k] for k in ("E", "A", "B", "alpha", "beta", "objective")},
        "step2_sigmoid": sig,
        "predicted_metric": head["predicted_metric"],
        "observed_metric": head["observed_metric"],
        "absolute_error": abs(head["predicted_metric"] - head["observed_metric"]),
        "mean_absolute_error": float(np.mean([abs(r["predicted_metric"] - r["observed_metric"]) for r in runs])),
        "runs": runs,
    }
