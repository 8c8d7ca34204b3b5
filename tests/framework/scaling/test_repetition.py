"""The data-constrained fit: Muennighoff et al.'s effective data, and a law recovered despite repeated epochs."""

import csv
import json
import math

import numpy as np
import pytest

from framework.scaling.fit import (
    FitError,
    effective_data,
    fit_parametric,
    read_results,
    with_repetition,
)
from launch.cli import main

TRUE = {"E": 1.9, "A": 400.0, "B": 1500.0, "alpha": 0.35, "beta": 0.30}


def test_effective_data_formula_at_two_points():
    U = 1e9
    # 4 epochs: R = 3, D' = U + U 15.4 (1 - e^(-3/15.4)) = 1e9 (1 + 15.4 x 0.17700) = 3.7258e9
    assert effective_data([4e9], [U])[0] == pytest.approx(U * (1 + 15.4 * (1 - math.exp(-3 / 15.4))), rel=1e-12)
    assert effective_data([4e9], [U])[0] == pytest.approx(3.7258e9, rel=1e-4)
    # 40 epochs: R = 39, D' = 1e9 (1 + 15.4 (1 - e^(-39/15.4))) = 15.18e9, far below the 40e9 seen
    assert effective_data([40e9], [U])[0] == pytest.approx(15.176e9, rel=1e-4)
    # one epoch or less, or an unknown corpus size (0): D itself
    assert effective_data([0.5e9, 1e9, 7e9], [U, U, 0.0]).tolist() == [0.5e9, 1e9, 7e9]
    with pytest.raises(FitError, match="R\\* must be positive"):
        effective_data([1.0], [1.0], r_star=0)


def _repeated_results(path):
    """A sweep on a 30M-token corpus: the larger budgets repeat it up to ~20 epochs, and the loss
    follows the true law in the effective data D' (noise-free, so the right model fits exactly)."""
    U = 3e7
    lines = ["name,N,D,loss,C,unique_tokens"]
    for c in np.geomspace(1e16, 1e19, 5):
        n_mid = 0.3 * (c / 6) ** 0.5
        for n in np.geomspace(n_mid / 5, n_mid * 5, 6):
            d = c / (6 * n)
            d_eff = effective_data([d], [U])[0]
            loss = TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / d_eff ** TRUE["beta"]
            lines.append(f"r,{n:.0f},{d:.0f},{loss:.8f},{c},{U:.0f}")
    path.write_text("\n".join(lines) + "\n")
    return U


def test_repetition_term_recovers_the_law_that_the_plain_fit_misses(tmp_path, capsys, monkeypatch):
    U = _repeated_results(tmp_path / "results.csv")
    points = read_results(tmp_path / "results.csv")
    assert points.U is not None and set(points.U.tolist()) == {U} and (points.D > U).sum() > 8
    plain = fit_parametric(points.N, points.D, points.loss, top_k=16)
    repeated, info = with_repetition(points, 15.4)
    aware = fit_parametric(repeated.N, repeated.D, repeated.loss, top_k=16)
    assert info["rows_repeated"] == int((points.D > U).sum()) and info["max_epochs"] > 10
    for k, v in TRUE.items():
        assert getattr(aware, k) == pytest.approx(v, rel=0.02), k
    assert abs(plain.beta - TRUE["beta"]) > 0.05  # repetition misleads the plain fit
    # through the CLI, for a results file without the column: --unique-tokens
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    (tmp_path / "no_u.csv").write_text(
        "N,D,loss,C\n" + "".join(f"{r['N']},{r['D']},{r['loss']},{r['C']}\n" for r in rows)
    )
    out = tmp_path / "fit.json"
    import framework.scaling.fit as fitmod

    full = fitmod.fit_parametric  # 8 starts instead of 128: this part checks the wiring, in seconds
    monkeypatch.setattr(fitmod, "fit_parametric", lambda *a, **kw: full(*a, **(kw | {"top_k": 8})))
    assert (
        main(
            [
                "sweep",
                "fit",
                str(tmp_path / "no_u.csv"),
                "--repetition",
                "--unique-tokens",
                str(U),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    fit = json.loads(out.read_text())
    assert fit["beta"] == pytest.approx(TRUE["beta"], rel=0.02) and fit["repetition"]["R_star"] == 15.4
    assert "repetition term: R* = 15.4" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unique-token count"):
        main(["sweep", "fit", str(tmp_path / "no_u.csv"), "--repetition", "--output", str(out)])
    with pytest.raises(SystemExit, match="need --repetition"):
        main(["sweep", "fit", str(tmp_path / "no_u.csv"), "--unique-tokens", "5", "--output", str(out)])
