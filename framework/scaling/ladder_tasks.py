"""Task scores for `anvil ladder`: the same downstream tasks for every corpus, next to the loss.

A ladder decides on held-out loss; teams also want to know what a corpus buys on tasks. With
`tasks: [...]` every run's final checkpoint also answers those lm-evaluation-harness tasks (the same
examples for every corpus, none of them trained on), and ladder.json says per task metric:
- what each corpus scored at the largest compute it trained (the mean over its runs there, every
  seed pooled; the corpora share the plan, so these runs are pairs), and
- what it should score at the target compute: the OLMo ladder's step 2 (Bhagia et al. 2024, as in
  `framework.scaling.metric_fit`), a sigmoid of the metric in held-out loss fitted on the corpus's
  own runs, applied to the corpus's predicted loss and to both ends of its interval (the sigmoid is
  monotone, so the ends map to ends). `extrapolated` says when the predicted loss lies below every
  loss the sigmoid was fitted on.
"""

from __future__ import annotations

import math

import numpy as np

from framework.configtree import ConfigError
from framework.scaling.fit import FitError
from framework.scaling.metric_fit import fit_sigmoid, sigmoid


def check_tasks(tasks: list[str], include_paths: list[str]) -> None:
    """Unknown tasks fail before any training, with the config key."""
    if not tasks:
        return
    from framework.eval.harness import TaskError, resolve_tasks

    try:
        resolve_tasks(tasks, include_paths or None)
    except TaskError as exc:
        raise ConfigError(f"config key 'tasks': {exc}") from None


def score_tasks(scorer, tasks: list[str], include_paths: list[str], limit: int) -> dict:
    """{"metrics": {TASK/METRIC: value}, "higher_is_better": {TASK/METRIC: bool}} of one checkpoint."""
    from framework.eval.harness import flat_metrics, run_tasks
    from framework.eval.lm_adapter import from_scorer

    out = run_tasks(from_scorer(scorer, 16), tasks, include_paths or None, limit or None) or {}
    metrics = {
        k.removeprefix("eval/"): v for k, v in flat_metrics(out).items() if "_stderr" not in k and math.isfinite(v)
    }
    higher = {}
    for key in metrics:
        task, name = key.split("/", 1)
        flags = out.get("higher_is_better", {}).get(task, {})
        base = next((m for m in flags if name == m or name.startswith(m + "_")), None)
        higher[key] = bool(flags.get(base, True))
    return {"metrics": metrics, "higher_is_better": higher}


def _at_target(loss: np.ndarray, metric: np.ndarray, predicted: float | None, interval) -> dict:
    if predicted is None or not math.isfinite(predicted):
        return {"predicted": None, "interval": None, "note": "no predicted loss at the target"}
    try:
        sig = fit_sigmoid(loss, metric)
    except FitError as exc:
        return {"predicted": None, "interval": None, "note": str(exc)}
    params = [sig[k] for k in ("a", "k", "L0", "b")]
    ends = [float(sigmoid(v, *params)) for v in (interval or []) if v is not None and math.isfinite(v)]
    return {
        "predicted": float(sigmoid(predicted, *params)),
        "interval": sorted(ends) if len(ends) == 2 else None,
        "extrapolated": bool(predicted < loss.min()),
        "sigmoid": sig,
    }


def summarise(rows: dict[str, list[dict]], predicted_loss: dict, interval: dict) -> dict:
    """ladder.json's "tasks": per TASK/METRIC, each corpus's score at its largest compute and its
    predicted score at the target, and the corpora ranked by that prediction (best first)."""
    higher: dict[str, bool] = {}
    for corpus_rows in rows.values():
        for r in corpus_rows:
            higher.update(r.get("higher_is_better", {}))
    out = {}
    for name in sorted({m for rs in rows.values() for r in rs for m in r.get("metrics", {})}):
        per = {}
        for corpus, corpus_rows in sorted(rows.items()):
            pts = [(r["loss"], r["metrics"][name], r["C"]) for r in corpus_rows if name in r.get("metrics", {})]
            if not pts:
                continue
            loss, metric, C = (np.array(x, dtype=float) for x in zip(*pts))
            top = C >= C.max() * (1 - 1e-6)
            per[corpus] = {
                "runs": len(pts),
                "largest_compute": float(C.max()),
                "at_largest_compute": float(metric[top].mean()),
            } | _at_target(loss, metric, predicted_loss.get(corpus), interval.get(corpus))
        up = higher.get(name, True)
        ranked = sorted((c for c in per if per[c]["predicted"] is not None), key=lambda c: per[c]["predicted"])
        out[name] = {"higher_is_better": up, "corpora": per, "ranking": ranked[::-1] if up else ranked}
    return out
