"""`anvil ladder`'s statistics on synthetic run results: ranking, p_correct, intervals, stability,
the repetition-aware prediction, and the ladder config's errors."""

import json
import math

import numpy as np
import pytest

from framework.configtree import ConfigError
from framework.scaling.fit import FitError, ParametricFit, effective_data, fit_parametric
from framework.scaling.ladder import LadderConfig
from framework.scaling.ladder_stats import (
    CorpusRuns,
    analyse,
    bootstrap_predictions,
    compute_levels,
    decide,
    interval,
    p_correct,
    predict,
    rank,
    stable_from,
)

LAW = dict(E=2.0, A=40.0, B=60.0, alpha=0.3, beta=0.3)


def _runs(name: str, shift: float, noise: float, seed: int, budgets=(1e12, 4e12, 1.6e13), unique=0.0) -> CorpusRuns:
    """An isoFLOP grid (3 sizes per budget) with losses from LAW + shift and Gaussian noise."""
    rng = np.random.default_rng(seed)
    N, D, C = [], [], []
    for c in budgets:
        n_opt = math.sqrt(c / 120)
        for f in (0.3, 1.0, 3.0):
            N.append(n_opt * f)
            D.append(c / (6 * n_opt * f))
            C.append(c)
    N, D = np.array(N), np.array(D)
    d_eff = effective_data(D, unique) if unique else D
    loss = LAW["E"] + shift + LAW["A"] / N ** LAW["alpha"] + LAW["B"] / d_eff ** LAW["beta"]
    return CorpusRuns(name, N, D, loss + rng.normal(0, noise, len(N)), np.array(C), unique)


def test_rank_puts_lowest_first_nan_last_and_breaks_ties_by_name():
    assert rank({"b": 2.0, "a": 3.0, "c": float("nan"), "d": 2.0}) == ["b", "d", "a", "c"]


def test_p_correct_counts_resamples_with_the_same_order_and_failed_ones_as_wrong():
    samples = {"a": np.array([1.0, 3.0, 1.0, np.nan, 1.0]), "b": np.array([2.0, 2.0, 1.5, 2.0, 1.0])}
    # resample 0 and 2 keep a < b; 1 swaps; 3 failed; 4 is a tie (not the ranking)
    assert p_correct(samples, ["a", "b"]) == pytest.approx(2 / 5)
    assert p_correct(samples, ["b", "a"]) == pytest.approx(1 / 5)
    three = {"a": np.array([1, 1]), "b": np.array([2, 3]), "c": np.array([3, 2])}
    assert p_correct(three, ["a", "b", "c"]) == 0.5


def test_interval_is_a_percentile_interval_of_the_finite_values():
    lo, hi = interval(np.r_[np.arange(101.0), np.nan], 0.9)
    assert (lo, hi) == (pytest.approx(5.0), pytest.approx(95.0))
    assert all(math.isnan(v) for v in interval(np.array([np.nan]), 0.9))


def test_stable_from_is_the_first_level_of_the_final_run_of_equal_rankings():
    levels = [
        {"max_flops": 1.0, "ranking": ["a", "b"]},
        {"max_flops": 2.0, "ranking": ["b", "a"]},
        {"max_flops": 3.0},  # too few runs: not a ranking
        {"max_flops": 4.0, "ranking": ["a", "b"]},
        {"max_flops": 5.0, "ranking": ["a", "b"]},
    ]
    assert stable_from(levels, ["a", "b"]) == 4.0
    assert stable_from(levels[:2], ["a", "b"]) is None
    assert stable_from([levels[0]], ["a", "b"]) == 1.0


def test_results_are_plain_json_even_for_a_degenerate_law():
    from framework.scaling.ladder_stats import _plain

    out = _plain({"G": complex(1, 2), "x": [np.float64(1.5), np.int64(2)], "p": np.float32(0.5)})
    assert math.isnan(out["G"]) and out["x"] == [1.5, 2] and type(out["x"][0]) is float and out["p"] == 0.5
    json.dumps(out)


def test_compute_levels_group_budgets():
    a = CorpusRuns("a", [1, 1, 1], [1, 1, 1], [1, 1, 1], [1e10, 1.02e10, 3e10])
    assert compute_levels([a]) == [1.02e10, 3e10]


def test_prediction_pays_for_repetition_only_when_the_target_would_repeat_the_corpus():
    fit = ParametricFit(objective=0.0, n_points=0, **LAW)
    C = 1e18
    free = predict(fit, C)
    assert free == pytest.approx(fit.loss(fit.n_opt(C), fit.d_opt(C)))
    assert predict(fit, C, unique_tokens=fit.d_opt(C) * 10, r_star=15.4) == pytest.approx(free)
    small = predict(fit, C, unique_tokens=fit.d_opt(C) / 100, r_star=15.4)
    assert small > free + 0.01  # a hundredth of the optimal tokens: ~100 epochs, worth much less
    # the constrained optimum is the best over N: no size on a fine grid beats it
    n = np.geomspace(fit.n_opt(C) / 100, fit.n_opt(C) * 1e4, 2000)
    U = fit.d_opt(C) / 100
    assert small <= fit.loss(n, effective_data(C / (6 * n), U)).min() + 1e-9
    assert predict(fit, C, unique_tokens=U, r_star=None) == pytest.approx(free)  # repetition off


def test_analyse_ranks_a_worse_corpus_last_with_high_confidence_and_covers_the_truth():
    good, bad = _runs("good", 0.0, 0.005, 1), _runs("bad", 0.08, 0.005, 2)
    target = 1e14
    cache: dict = {}
    res = analyse([bad, good], target, n_boot=20, seed=0, top_k=8, cache=cache)
    assert res["ranking"] == ["good", "bad"]
    assert res["p_correct"] >= 0.9
    truth = ParametricFit(objective=0.0, n_points=0, **LAW)
    lo, hi = res["interval"]["good"]
    assert lo <= res["predicted_loss"]["good"] <= hi
    assert res["predicted_loss"]["good"] == pytest.approx(predict(truth, target), rel=0.02)
    assert res["predicted_loss"]["bad"] - res["predicted_loss"]["good"] == pytest.approx(0.08, abs=0.03)
    levels = res["by_compute"]
    assert [e["max_flops"] for e in levels] == [1e12, 4e12, 1.6e13]
    assert "ranking" not in levels[0] and levels[0]["runs"] == {"bad": 3, "good": 3}  # too few to fit
    assert levels[1]["runs"] == {"bad": 6, "good": 6} and levels[-1]["p_correct"] == res["p_correct"]
    assert res["stable_from_flops"] in (4e12, 1.6e13)
    assert set(res["fits"]["good"]) >= {"E", "A", "B", "alpha", "beta", "a", "b", "G", "approach2"}
    # a rerun over the same runs takes every fit from the cache (two levels were fitted)
    assert len(cache) == 2
    json.dumps(cache)  # plain JSON (the ladder keeps it in OUTPUT/analysis_cache.json)
    again = analyse([bad, good], target, n_boot=20, seed=0, top_k=8, cache=cache)
    assert again["interval"] == res["interval"] and len(cache) == 2


def test_p_correct_is_low_when_the_corpora_are_the_same_up_to_noise():
    a, b = _runs("a", 0.0, 0.03, 3), _runs("b", 0.0, 0.03, 4)
    res = decide([a, b], 1e14, n_boot=16, seed=0, top_k=8)
    assert 0.2 <= res["p_correct"] <= 0.8  # a coin flip, not a confident decision
    assert res["interval"]["a"][0] < res["predicted_loss"]["b"] < res["interval"]["a"][1]


def test_bootstrap_is_paired_over_run_keys_and_deterministic():
    a = _runs("a", 0.0, 0.03, 3)
    # b: the same runs, every loss 0.05 higher. Resampling the corpora independently would swap them
    # often (each fit's extrapolation spreads ~0.3); paired resamples fit the same runs for both.
    b = CorpusRuns("b", a.N, a.D, a.loss + 0.05, a.C)
    fits = {r.name: fit_parametric(r.N, r.D, r.loss, top_k=8) for r in (a, b)}
    one = bootstrap_predictions([a, b], fits, 1e14, 8, seed=5)
    assert p_correct(one, ["a", "b"]) == 1.0
    assert np.nanstd(one["a"]) > 0.02  # the resamples do differ
    two = bootstrap_predictions([a, b], fits, 1e14, 8, seed=5)
    assert np.array_equal(one["a"], two["a"], equal_nan=True)
    alone = bootstrap_predictions([a], fits, 1e14, 8, seed=5)
    assert np.array_equal(alone["a"], one["a"], equal_nan=True)  # the draws depend on the run keys only
    # a corpus holding few of the drawn keys (its other runs failed) predicts nothing for that resample
    few = CorpusRuns("few", a.N[:5], a.D[:5], a.loss[:5], a.C[:5], keys=a.keys[:5])
    fits["few"] = fit_parametric(few.N, few.D, few.loss, top_k=8)
    assert np.isnan(bootstrap_predictions([a, few], fits, 1e14, 8, seed=5)["few"]).sum() >= 4


def test_analyse_needs_five_runs_per_corpus():
    a = _runs("a", 0.0, 0.0, 1)
    short = CorpusRuns("short", a.N[:4], a.D[:4], a.loss[:4], a.C[:4])
    with pytest.raises(FitError, match="short has 4"):
        analyse([a, short], 1e14, n_boot=10)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"corpora": {"a": "x"}, "sweep": "s.yaml", "target_flops": 1e12}, "at least two corpora"),
        ({"corpora": {"a": "x", "b c": "y"}, "sweep": "s.yaml", "target_flops": 1e12}, "'b c' is not a usable"),
        ({"corpora": {"a": "x", "heldout": "y"}, "sweep": "s.yaml", "target_flops": 1e12}, "not a usable"),
        ({"corpora": {"a": "x", "b": 3}, "sweep": "s.yaml", "target_flops": 1e12}, "corpora.b"),
        ({"corpora": {"a": "x", "b": "y"}, "target_flops": 1e12}, "'sweep': required"),
        ({"corpora": {"a": "x", "b": "y"}, "sweep": "s.yaml"}, "'target_flops': required"),
        ({"corpora": {"a": "x", "b": "y"}, "sweep": "s.yaml", "target_flops": 1, "bootstrap": 3}, "bootstrap"),
        ({"corpora": {"a": "x", "b": "y"}, "sweep": "s.yaml", "target_flops": 1, "heldout_fraction": 0.9}, "heldout"),
    ],
)
def test_ladder_config_errors_name_the_key(data, message):
    from framework.configtree import build

    with pytest.raises(ConfigError, match=message):
        build(LadderConfig, data)


def test_each_corpus_and_seed_gets_the_same_sweep_on_its_own_tokens(tmp_path):
    from pathlib import Path

    from framework.configtree import build
    from framework.scaling.ladder import LadderData, corpus_sweeps, unfinished
    from framework.scaling.plan import plan
    from framework.scaling.run import RESULT_FILE

    root = Path(__file__).resolve().parents[3]
    cfg = build(
        LadderConfig,
        {
            "corpora": {"b": "x", "a": "y"},
            "sweep": str(root / "configs/sweeps/demo.yaml"),
            "sweep_overrides": ["grid.budgets=[2.0e10]"],
            "target_flops": 1e12,
            "output": str(tmp_path / "out"),
            "seeds": [1, 2],
        },
    )
    data = LadderData("tok.json", 512, {"a": "t/a", "b": "t/b"}, {"a": 1000, "b": 2000}, "t/heldout")
    specs = corpus_sweeps(cfg, data)
    assert [(s.corpus, s.seed) for s in specs] == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    a1 = specs[0]
    assert a1.path == tmp_path / "out" / "sweeps" / "a" / "seed-1" / "sweep.yaml"
    assert a1.config.family.vocab_size == 512 and a1.config.grid.unique_tokens == 1000 and a1.config.seed == 1
    assert f'data.paths=["{Path("t/a").resolve()}"]' in a1.config.overrides
    assert a1.config.grid.budgets == [2e10]  # the ladder's sweep_overrides reach every corpus
    rows = [plan(s.config)[0] for s in specs]
    assert all([(r["N"], r["D"]) for r in rs] == [(r["N"], r["D"]) for r in rows[0]] for rs in rows)
    assert unfinished(a1) == [r["name"] for r in rows[0]]
    # a finished run under a different sweep is refused instead of mixed into the ladder
    marker = a1.out_dir / "runs" / rows[0][0]["name"] / RESULT_FILE
    marker.parent.mkdir(parents=True)
    marker.write_text("{}")
    assert unfinished(a1) == [r["name"] for r in rows[0][1:]]
    corpus_sweeps(cfg, data)  # same sweep: fine
    cfg.sweep_overrides = ["grid.budgets=[4.0e10]"]
    with pytest.raises(ConfigError, match="holds finished runs of a different sweep"):
        corpus_sweeps(cfg, data)
