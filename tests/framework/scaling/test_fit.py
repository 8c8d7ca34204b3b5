"""The fitters on generated data: known parameters come back, the same input gives the same bytes."""

import json

import numpy as np
import pytest

from framework.scaling.fit import (
    FitError,
    best_loss_at,
    fit_all,
    fit_isoflop,
    fit_parametric,
    group_budgets,
    read_results,
)

TRUE = {"E": 1.9, "A": 400.0, "B": 1500.0, "alpha": 0.35, "beta": 0.30}


def synthetic(noise: float = 0.003, seed: int = 0):
    """An isoFLOP grid (7 budgets x 9 sizes) from a known law, multiplicative log-normal noise."""
    rng = np.random.default_rng(seed)
    al, be = TRUE["alpha"], TRUE["beta"]
    G = (al * TRUE["A"] / (be * TRUE["B"])) ** (1 / (al + be))
    N, D, C = [], [], []
    for c in np.geomspace(1e18, 1e22, 7):
        n_opt = G * (c / 6) ** (be / (al + be))
        for n in np.geomspace(n_opt / 6, n_opt * 6, 9):  # each isoFLOP curve brackets its optimum
            N.append(n), D.append(c / (6 * n)), C.append(c)
    N, D, C = map(np.array, (N, D, C))
    L = TRUE["E"] + TRUE["A"] / N ** TRUE["alpha"] + TRUE["B"] / D ** TRUE["beta"]
    return N, D, C, L * np.exp(rng.normal(0, noise, len(L)))


def test_recovers_known_parameters_from_noisy_points():
    N, D, C, L = synthetic()
    fit = fit_parametric(N, D, L)
    assert fit.alpha == pytest.approx(TRUE["alpha"], abs=0.03)
    assert fit.beta == pytest.approx(TRUE["beta"], abs=0.03)
    assert fit.E == pytest.approx(TRUE["E"], abs=0.05)
    true_a = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])
    assert fit.a == pytest.approx(true_a, abs=0.02)
    # the predicted compute-optimal loss two decades past the data is within 1%
    true_best = min(
        TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / (1e24 / 6 / n) ** TRUE["beta"]
        for n in np.geomspace(1e8, 1e13, 4000)
    )
    assert best_loss_at(fit, 1e24) == pytest.approx(true_best, rel=0.01)
    # approach 2 on the same points finds the same allocation exponent
    iso = fit_isoflop(C, N=N, loss=L)
    assert iso.n_exponent == pytest.approx(true_a, abs=0.05)


def test_noise_free_points_are_fitted_exactly():
    N, D, C, L = synthetic(noise=0.0)
    fit = fit_parametric(N, D, L)
    assert fit.objective < 1e-9
    for k, v in TRUE.items():
        assert getattr(fit, k) == pytest.approx(v, rel=1e-3), k


def test_fit_is_deterministic_and_writes_contract_fields(tmp_path):
    N, D, C, L = synthetic(seed=1)
    path = tmp_path / "results.csv"
    lines = ["name,N,D,loss,C,notes"] + [f"r{i},{n},{d},{l},{c},x" for i, (n, d, l, c) in enumerate(zip(N, D, L, C))]
    path.write_text("\n".join(lines + ["bad,abc,1,2,3,x", "neg,-1,5,2,3,x"]) + "\n")
    points = read_results(path)
    assert points.skipped == 2 and len(points.N) == len(N)
    a = fit_all(points, bootstrap=3, seed=7)
    b = fit_all(read_results(path), bootstrap=3, seed=7)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    for key in ("E", "A", "B", "alpha", "beta", "a", "b", "G", "objective", "ci", "approach2"):
        assert key in a
    assert a["a"] + a["b"] == pytest.approx(1.0)
    assert a["ci"]["alpha"][0] <= a["alpha"] <= a["ci"]["alpha"][1] or a["ci"]["n_boot"] == 3
    assert a["approach2"]["parabola_in_log_N"]["N_opt"]["exponent"] == pytest.approx(a["a"], abs=0.08)


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(FitError, match="not found"):
        read_results(tmp_path / "missing.csv")
    p = tmp_path / "r.csv"
    p.write_text("N,tokens,loss\n1,2,3\n")
    with pytest.raises(FitError, match="missing column.*D"):
        read_results(p)
    p.write_text("N,D,loss\nx,y,z\n")
    with pytest.raises(FitError, match="no usable rows"):
        read_results(p)
    with pytest.raises(FitError, match="at least 5 points"):
        fit_parametric([1e6, 2e6], [1e9, 2e9], [3.0, 2.9])


def test_budget_grouping_tolerates_rounding():
    C = np.array([1e18, 1.02e18, 3e18, 2.97e18, 1e19])
    assert group_budgets(C).tolist() == [0, 0, 1, 1, 2]


def test_bootstrap_survives_a_fit_whose_E_underflowed_to_zero():
    """A law with no irreducible term (E = 0, as tiny CPU sweeps fit) used to crash the bootstrap
    (log(0) for the resamples' starting point)."""
    from framework.scaling.fit import bootstrap_parametric

    N, D, C, _ = synthetic()
    L = TRUE["A"] / N ** TRUE["alpha"] + TRUE["B"] / D ** TRUE["beta"]
    best = fit_parametric(N, D, L, top_k=16)
    best.E = 0.0
    ci = bootstrap_parametric(N, D, L, best, n_boot=2, top_starts=2)
    assert ci["E"][0] >= 0 and ci["n_boot"] == 2
