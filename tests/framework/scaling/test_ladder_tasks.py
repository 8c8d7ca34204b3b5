"""Task scores in `anvil ladder`: one checkpoint's metrics through the harness, and the per-corpus
summary (score at the largest compute, sigmoid-of-loss prediction at the target, ranking)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from framework.configtree import ConfigError
from framework.scaling.ladder_tasks import check_tasks, score_tasks, summarise
from framework.scaling.metric_fit import sigmoid

ROOT = Path(__file__).resolve().parents[3]
SIG = (-0.6, 3.0, 4.0, 0.85)  # accuracy falls from 0.85 towards 0.25 as the loss grows past 4


def _rows(shift: float, metric_noise: float = 0.0, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for c in (1e10, 3e10, 1e11):
        for n in (1e4, 2e4, 4e4):
            loss = 3.2 + shift + 0.5 * np.log10(1e11 / c) + 0.1 * np.log2(4e4 / n)  # 3.2 .. 3.9 (+ shift)
            acc = float(sigmoid(loss, *SIG) + rng.normal(0, metric_noise))
            rows.append(
                {
                    "C": c,
                    "loss": loss,
                    "metrics": {"t/acc": acc, "t/ppl": 10 * loss},
                    "higher_is_better": {"t/acc": True, "t/ppl": False},
                }
            )
    return rows


def test_summary_predicts_through_each_corpus_sigmoid_and_ranks_by_direction():
    rows = {"good": _rows(0.0), "bad": _rows(0.3)}
    pred = {"good": 3.4, "bad": 3.7}
    interval = {"good": [3.3, 3.5], "bad": [3.6, 3.8]}
    out = summarise(rows, pred, interval)
    acc = out["t/acc"]
    assert acc["higher_is_better"] and acc["ranking"] == ["good", "bad"]
    good = acc["corpora"]["good"]
    assert good["runs"] == 9 and good["largest_compute"] == 1e11
    top = [r["metrics"]["t/acc"] for r in rows["good"] if r["C"] == 1e11]
    assert good["at_largest_compute"] == pytest.approx(np.mean(top))
    assert good["predicted"] == pytest.approx(sigmoid(3.4, *SIG), abs=1e-3)  # the planted sigmoid is recovered
    lo, hi = good["interval"]
    assert lo <= good["predicted"] <= hi and lo == pytest.approx(sigmoid(3.5, *SIG), abs=1e-3)  # ends map to ends
    assert good["extrapolated"] is False and acc["corpora"]["bad"]["extrapolated"] is False
    # lower is better: the corpus with the lower predicted perplexity-like metric ranks first
    assert out["t/ppl"]["higher_is_better"] is False and out["t/ppl"]["ranking"] == ["good", "bad"]


def test_summary_says_why_when_no_prediction_exists():
    rows = {"a": _rows(0.0)[:3], "b": _rows(0.1)}
    out = summarise(rows, {"a": 3.4, "b": None}, {"a": [3.3, 3.5], "b": [None, None]})["t/acc"]
    assert out["corpora"]["a"]["predicted"] is None and "at least 4 runs" in out["corpora"]["a"]["note"]
    assert out["corpora"]["b"]["predicted"] is None and "no predicted loss" in out["corpora"]["b"]["note"]
    assert out["ranking"] == []
    low = summarise({"a": _rows(0.0)}, {"a": 3.0}, {"a": [2.9, 3.1]})["t/acc"]["corpora"]["a"]
    assert low["extrapolated"] is True  # below every loss the sigmoid saw


def test_unknown_task_is_a_config_error():
    with pytest.raises(ConfigError, match="config key 'tasks'"):
        check_tasks(["no_such_task_anywhere"], [str(ROOT / "configs" / "eval")])
    check_tasks([], [])  # nothing asked, nothing checked


def test_one_checkpoint_scores_the_shipped_task(tmp_path):
    from framework.eval.perplexity import load_scorer
    from tests.framework.interop.hf_fixtures import tiny_llama_folder

    scorer = load_scorer(tiny_llama_folder(tmp_path / "lm", seed=5))
    out = score_tasks(scorer, ["anvil_mc"], [str(ROOT / "configs" / "eval")], 8)
    assert set(out["metrics"]) == {"anvil_mc/acc", "anvil_mc/acc_norm"}  # no stderr columns
    assert all(0 <= v <= 1 for v in out["metrics"].values())
    assert out["higher_is_better"] == {"anvil_mc/acc": True, "anvil_mc/acc_norm": True}
