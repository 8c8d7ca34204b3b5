"""Grid placement: every budget's sizes bracket the predicted optimum, so approach 2 finds a minimum at each."""

import json

import numpy as np
import pytest

from framework.configtree import ConfigError
from framework.scaling.config import FamilyConfig, SweepConfig, load_sweep
from framework.scaling.fit import fit_isoflop
from framework.scaling.plan import bracket_sizes, placement_report, plan

ROOT = __import__("pathlib").Path(__file__).resolve().parents[3]
LAW = {"E": 1.8, "A": 400.0, "B": 1200.0, "alpha": 0.34, "beta": 0.28}  # the "true" law of the tests


def _law_fit() -> dict:
    al, be = LAW["alpha"], LAW["beta"]
    return LAW | {"a": be / (al + be), "G": (al * LAW["A"] / (be * LAW["B"])) ** (1 / (al + be))}


def _ladder_cfg(tmp_path=None, **grid) -> SweepConfig:
    # explicit ladder, 1.3-1.7x steps from 4K to 2.3M non-embedding parameters
    shapes = [[L, d] for d in (16, 32, 48, 64, 96, 128, 192) for L in (1, 2, 3, 4)]
    cfg = SweepConfig(name="p", family=FamilyConfig(head_dim=16, seq_len=64, shapes=shapes))
    cfg.grid.min_steps = 1
    cfg.rules.global_batch_size = cfg.rules.micro_batch_size = 1
    for k, v in grid.items():
        setattr(cfg.grid, k, v)
    return cfg


@pytest.mark.parametrize("k", [4, 5, 6])
def test_bracket_puts_at_least_two_sizes_each_side(k):
    counts = [int(1000 * 1.45**i) for i in range(16)]
    for n_opt in np.geomspace(3000, 1.5e5, 23):
        picked = [counts[i] for i in bracket_sizes(counts, float(n_opt), k, 8.0)]
        assert len(set(picked)) == k
        assert sum(n < n_opt for n in picked) >= 2 and sum(n > n_opt for n in picked) >= 2, (n_opt, picked)


def test_each_budget_of_the_shipped_and_prior_planned_sweeps_is_bracketed(tmp_path):
    for shipped in ("demo.yaml", "cpu_heldout.yaml"):  # both placed from a prior fit in configs/sweeps/priors
        rows, _ = plan(load_sweep(str(ROOT / "configs" / "sweeps" / shipped)))
        report = placement_report(rows, 2)
        assert len(report) == 3 and all(p["below"] >= 2 and p["above"] >= 2 for p in report), (shipped, report)
    # a prior fit moves the centre: N_opt = G (C/6)^a
    (tmp_path / "fit.json").write_text(json.dumps(_law_fit()))
    cfg = _ladder_cfg(budgets=[1e11, 1e12, 1e13, 1e14], prior_fit=str(tmp_path / "fit.json"))
    rows, _ = plan(cfg)
    fit = _law_fit()
    for p in placement_report(rows, 2):
        assert p["n_opt"] == pytest.approx(fit["G"] * (p["budget"] / 6) ** fit["a"], rel=1e-5)
        assert p["below"] >= 2 and p["above"] >= 2, p


def test_approach2_finds_an_interior_minimum_at_every_budget(tmp_path):
    """Losses from a known law at the planned (N, D): with bracket placement from the law's prior
    every isoFLOP parabola has its vertex inside the sampled sizes; the old span placement around
    D/N = 20 misses budgets of the same sweep (this law's optimum sits at 160-225 tokens per parameter)."""
    (tmp_path / "fit.json").write_text(json.dumps(_law_fit()))
    budgets = [3e10, 1e11, 3e11, 1e12]

    def skipped(cfg):
        rows, _ = plan(cfg)
        N, D, C = (np.array([r[k] for r in rows], float) for k in ("N", "D", "budget"))
        loss = LAW["E"] + LAW["A"] / N ** LAW["alpha"] + LAW["B"] / D ** LAW["beta"]
        return fit_isoflop(C, N=N, loss=loss).skipped_budgets

    assert skipped(_ladder_cfg(budgets=budgets, prior_fit=str(tmp_path / "fit.json"))) == 0
    assert skipped(_ladder_cfg(budgets=budgets, placement="span", size_span=4.0)) > 0


def test_short_ladder_is_reported_and_bad_prior_named(tmp_path):
    cfg = _ladder_cfg(budgets=[1e9])  # optimum below the smallest shape
    report = placement_report(plan(cfg)[0], 2)
    assert report[0]["below"] < 2 and not report[0]["ok"]
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="grid.prior_fit"):
        plan(_ladder_cfg(budgets=[1e11], prior_fit=str(tmp_path / "bad.json")))
    with pytest.raises(ConfigError, match="grid.prior_fit.*not found"):
        plan(_ladder_cfg(budgets=[1e11], prior_fit=str(tmp_path / "none.json")))


def test_plan_cli_prints_the_placement(tmp_path, capsys):
    from launch.cli import main

    assert (
        main(["sweep", "plan", str(ROOT / "configs" / "sweeps" / "demo.yaml"), "--output", str(tmp_path / "plan.csv")])
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("2 sizes below, 2 above") == 3 and "WARNING" not in out
    assert (
        main(
            [
                "sweep",
                "plan",
                str(ROOT / "configs" / "sweeps" / "demo.yaml"),
                "grid.prior_fit=null",
                "grid.tokens_per_param=2",
                "--output",
                str(tmp_path / "plan2.csv"),
            ]
        )
        == 0
    )
    assert "WARNING: fewer than grid.min_each_side=2" in capsys.readouterr().out
