"""Hyperparameter rules against their papers, the plan's `rule` column, and `sweep fit --hparams`."""

import csv
import json
import math

import numpy as np
import pytest

from framework.config import load_run_config
from framework.configtree import ConfigError
from framework.scaling import hparams as hp
from framework.scaling.config import FamilyConfig, SweepConfig, load_sweep
from framework.scaling.plan import Shape, plan, rule_hparams, run_overrides, write_plan
from launch.cli import main

ROOT = __import__("pathlib").Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    "N, lr, batch_tokens, beta2",
    [
        # Porian et al. 2024 as OLMo-core's ladder uses it: at N = 108M the paper's constants themselves
        # (lr 0.0047, 160 sequences of 2048), and at 1B: 0.0047 (1e9/108e6)^(-1/3), 327680 (1e9/108e6)^(2/3).
        (108e6, 0.0047, 160 * 2048, 0.99),
        (1e9, 0.0022382, 1_444_888, 0.95),
    ],
)
def test_porian_rule_at_two_sizes(N, lr, batch_tokens, beta2):
    got_lr, got_batch = hp.porian(N)
    assert got_lr == pytest.approx(lr, rel=1e-4) and got_batch == pytest.approx(batch_tokens, rel=1e-4)
    assert hp.porian_beta2(got_batch) == beta2  # beta2 0.99 below 524,288 tokens per step, 0.95 above


@pytest.mark.parametrize(
    "n_layers, d_model, lr, batch_tokens",
    [
        # DeepSeek LLM's own models (Table 2 of arXiv:2401.02954), trained on D = 2T tokens with
        # sequences of 4096: 7B used lr 4.2e-4 and 2304 sequences, 67B lr 3.2e-4 and 4608 sequences.
        (30, 4096, 4.2e-4, 2304 * 4096),
        (95, 8192, 3.2e-4, 4608 * 4096),
    ],
)
def test_deepseek_rule_reproduces_the_papers_settings(n_layers, d_model, lr, batch_tokens):
    N = 12 * n_layers * d_model**2  # so that 6N is the paper's 72 L d^2
    C = hp.deepseek_compute(N, n_layers, d_model, 4096, 2e12)
    assert C == pytest.approx((72 * n_layers * d_model**2 + 6 * n_layers * 4096 * d_model) * 2e12)
    got_lr, got_batch = hp.deepseek(C)
    assert got_lr == pytest.approx(0.3118 * C**-0.1250) and got_batch == pytest.approx(0.2920 * C**0.3271)
    assert got_lr == pytest.approx(lr, rel=0.03)  # the paper rounded its choices (and 67B uses GQA)
    assert got_batch == pytest.approx(batch_tokens, rel=0.1)


def _cfg(**rules) -> SweepConfig:
    cfg = SweepConfig(
        name="t", family=FamilyConfig(min_layers=1, max_layers=8, aspect_ratio=32, head_dim=16, seq_len=64)
    )
    cfg.grid.budgets = [1e11, 1e12]
    cfg.grid.min_steps = 1
    for k, v in rules.items():
        setattr(cfg.rules, k, v)
    return cfg


def test_plan_rows_follow_the_rule_and_record_it(tmp_path):
    for name in ("porian", "deepseek"):
        cfg = _cfg(hparams=name, micro_batch_size=4)
        rows, _ = plan(cfg)
        for r in rows:
            shape = Shape(r["n_layers"], r["d_model"], r["n_heads"])
            want = (
                hp.porian(r["N"])
                if name == "porian"
                else hp.deepseek(
                    hp.deepseek_compute(r["N"], r["n_layers"], r["d_model"], 64, r["budget"] / (6 * r["N"]))
                )
            )
            assert r["rule"] == name and r["lr"] == pytest.approx(want[0], rel=1e-5)
            assert abs(r["batch_tokens"] - want[1]) <= 4 * 64  # whole sequences, then multiples of micro (4)
            assert r["global_batch_size"] % r["micro_batch_size"] == 0
            assert rule_hparams(cfg, shape, r["N"], r["budget"] / (6 * r["N"])).lr == pytest.approx(want[0])
        assert len({r["lr"] for r in rows}) > 1  # the law, not one constant
    porian_rows = plan(_cfg(hparams="porian"))[0]
    assert {r["beta2"] for r in porian_rows} == {0.99}  # tiny batches
    write_plan(porian_rows, tmp_path / "plan.csv")
    written = list(csv.DictReader((tmp_path / "plan.csv").open()))
    assert {"rule", "beta2", "batch_tokens", "n_opt"} <= set(written[0]) and written[0]["rule"] == "porian"
    # the overrides are a valid training config carrying the rule's beta2
    base = load_sweep(str(ROOT / "configs" / "sweeps" / "cpu_tiny.yaml"), ["rules.hparams=porian"])
    row = plan(base)[0][0]
    run = load_run_config(str(ROOT / base.base_config), run_overrides(row, base, "/tmp/x"))
    assert run.train.beta2 == 0.99 and run.train.lr == pytest.approx(row["lr"])
    assert run.train.global_batch_size == row["global_batch_size"]
    # the fixed rule leaves beta2 to the base config, as before
    assert all(r["beta2"] == "" and r["rule"] == "fixed" for r in plan(_cfg())[0])


def test_fitted_rule_reads_hparams_json(tmp_path):
    law = {"lr": {"coef": 2.0, "exponent": -0.2}, "batch_tokens": {"coef": 0.5, "exponent": 0.4}}
    (tmp_path / "hp.json").write_text(json.dumps(law))
    cfg = _cfg(hparams="fitted", hparams_fit=str(tmp_path / "hp.json"), lr_multiplier=0.5)
    for r in plan(cfg)[0]:
        C = 6 * r["N"] * (r["budget"] / (6 * r["N"]))
        assert r["lr"] == pytest.approx(0.5 * 2.0 * C**-0.2, rel=1e-5) and r["rule"] == "fitted:hp.json"
    with pytest.raises(ConfigError, match="rules.hparams_fit"):
        plan(_cfg(hparams="fitted", hparams_fit=str(tmp_path / "missing.json")))
    bad = tmp_path / "s.yaml"
    bad.write_text("grid:\n  budgets: [1e12]\nrules:\n  hparams: fitted\n")
    with pytest.raises(ConfigError, match="rules.hparams_fit"):
        load_sweep(str(bad))


# The planted optimum: lr*(C) = 0.31 C^-0.125 and B*(C) = 0.29 C^0.327 tokens, with a loss bowl in
# (log lr, log B) around it at every budget; the grid is centred on a deliberately wrong guess.
PLANT = {"lr": (0.31, -0.125), "batch_tokens": (0.29, 0.327)}


def _grid_results(path, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    lines = ["name,C,lr,batch_tokens,loss"]
    for C in (1e17, 1e18, 1e19, 1e20):
        lr_opt, b_opt = PLANT["lr"][0] * C ** PLANT["lr"][1], PLANT["batch_tokens"][0] * C ** PLANT["batch_tokens"][1]
        lr_centre, b_centre = 0.1 * C**-0.11, 0.5 * C**0.31  # the rule being tuned: off by up to 1.7x
        for i in range(-6, 7):
            for j in range(-6, 7):
                lr, b = lr_centre * 2 ** (i / 3), b_centre * 2 ** (j / 3)
                x, y = math.log(lr / lr_opt), math.log(b / b_opt)
                loss = 3.0 - 0.1 * math.log10(C) + 0.04 * x * x + 0.02 * y * y + 0.01 * x * y
                lines.append(f"r{i}{j},{C},{lr},{b},{loss * math.exp(rng.normal(0, noise))}")
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("method, tol", [("quadratic", 1e-6), ("near-optimal", 0.03)])
def test_sweep_fit_hparams_recovers_a_planted_optimum(tmp_path, capsys, method, tol):
    _grid_results(tmp_path / "results.csv")
    out = tmp_path / "hparams.json"
    assert (
        main(
            [
                "sweep",
                "fit",
                str(tmp_path / "results.csv"),
                "--hparams",
                "--hparams-method",
                method,
                "--output",
                str(out),
            ]
        )
        == 0
    )
    fit = json.loads(out.read_text())
    for key, (coef, exponent) in PLANT.items():
        assert fit[key]["exponent"] == pytest.approx(exponent, abs=tol), key
        # the law at the middle of the range
        assert fit[key]["coef"] * 1e18 ** fit[key]["exponent"] == pytest.approx(
            coef * 1e18**exponent, rel=max(tol, 1e-6) * 5
        ), key
    assert len(fit["budgets"]) == 4 and fit["method"] == method and fit["tolerance"] == 0.0025
    assert "lr_opt(C)" in capsys.readouterr().out
    # the fitted law drives a plan
    cfg = _cfg(hparams="fitted", hparams_fit=str(out))
    assert plan(cfg)[0][0]["rule"] == "fitted:hparams.json"


def test_hparams_fit_with_noise_and_bad_input(tmp_path, capsys):
    _grid_results(tmp_path / "results.csv", noise=0.0005, seed=3)
    fit = hp.fit_hparams(
        *(
            np.array(c, dtype=float)
            for c in zip(
                *[
                    (float(r["C"]), float(r["lr"]), float(r["batch_tokens"]), float(r["loss"]))
                    for r in csv.DictReader((tmp_path / "results.csv").open())
                ]
            )
        ),
        method="quadratic",
    )
    assert fit["lr"]["exponent"] == pytest.approx(-0.125, abs=0.03)
    assert fit["batch_tokens"]["exponent"] == pytest.approx(0.327, abs=0.03)
    (tmp_path / "bad.csv").write_text("N,D,loss\n1,2,3\n")
    with pytest.raises(SystemExit, match="--hparams needs column.*lr"):
        main(["sweep", "fit", str(tmp_path / "bad.csv"), "--hparams", "--output", str(tmp_path / "x.json")])
    (tmp_path / "one.csv").write_text("C,lr,batch_tokens,loss\n1e18,1e-3,1e5,3.0\n1e18,2e-3,1e5,2.9\n")
    with pytest.raises(SystemExit, match="at least two budgets"):
        main(["sweep", "fit", str(tmp_path / "one.csv"), "--hparams", "--output", str(tmp_path / "x.json")])


def test_hparams_grid_plan(tmp_path):
    cfg = load_sweep(str(ROOT / "configs" / "sweeps" / "hparams_grid.yaml"))
    rows, dropped = plan(cfg)
    assert dropped == 0 and len(rows) == 3 * 3 * 3
    for budget in cfg.grid.budgets:
        sub = [r for r in rows if r["budget"] == budget]
        assert len({r["N"] for r in sub}) == 1  # one size per budget: the one nearest the predicted optimum
        assert len({(r["lr"], r["global_batch_size"]) for r in sub}) == 9
        assert all(r["C"] == pytest.approx(budget, rel=0.05) for r in sub)
    assert rows[0]["rule"] == "fixed lr x0.5 batch x0.5" and len({r["name"] for r in rows}) == len(rows)
