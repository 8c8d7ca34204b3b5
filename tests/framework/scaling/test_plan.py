"""The sweep planner: shapes, parameter counts that agree with the model, isoFLOP rows, valid overrides."""

import csv

import pytest

from framework.config import ModelConfig, load_run_config
from framework.configtree import ConfigError
from framework.scaling.config import FamilyConfig, SweepConfig, load_sweep
from framework.scaling.plan import Shape, flops_per_token, non_embedding_params, plan, run_overrides, write_plan

ROOT = __import__("pathlib").Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_counts_match_the_model(arch):
    from framework.model.presets import count_params
    from framework.model.transformer import Transformer

    fam = FamilyConfig(arch=arch, head_dim=16, vocab_size=384, seq_len=64)
    for L, d in [(1, 32), (2, 48), (3, 80)]:
        shape = Shape(L, d, d // 16)
        cfg = ModelConfig(arch=arch, n_layers=L, d_model=d, n_heads=d // 16, vocab_size=384, seq_len=64)
        size = count_params(cfg)
        assert non_embedding_params(shape, fam) == size.non_embedding
        assert flops_per_token(shape, fam) == size.flops_per_token
        assert non_embedding_params(shape, fam) == Transformer(cfg).num_params(non_embedding=True)


def test_isoflop_plan_rows():
    cfg = SweepConfig(name="t", family=FamilyConfig(min_layers=1, max_layers=8, aspect_ratio=32, head_dim=16))
    cfg.grid.budgets = [1e11, 1e12]
    cfg.grid.sizes_per_budget = 4
    cfg.grid.min_steps = 1
    rows, dropped = plan(cfg)
    assert dropped == 0 and len(rows) == 8
    for budget in (1e11, 1e12):
        sub = [r for r in rows if r["budget"] == budget]
        assert len({r["N"] for r in sub}) == 4  # four distinct sizes per budget
        for r in sub:
            assert r["C"] == pytest.approx(budget, rel=0.05)  # 6 N D on budget (steps are whole)
            assert r["D"] == r["steps"] * cfg.rules.global_batch_size * cfg.family.seq_len
    assert len({r["name"] for r in rows}) == len(rows)
    cfg.grid.flops = "model"
    for r in plan(cfg)[0]:
        assert r["C_model"] == pytest.approx(r["budget"], rel=0.05)  # the model's own count on budget


def test_lr_rule_and_overrides_are_valid_training_configs():
    cfg = load_sweep(str(ROOT / "configs" / "sweeps" / "cpu_tiny.yaml"))
    rows, _ = plan(cfg)
    assert len({r["budget"] for r in rows}) >= 3 and len(rows) >= 12
    for row in rows:
        run = load_run_config(str(ROOT / cfg.base_config), run_overrides(row, cfg, "/tmp/x"))
        assert (run.model.n_layers, run.model.d_model, run.train.steps) == (
            row["n_layers"],
            row["d_model"],
            row["steps"],
        )
        assert run.train.lr == pytest.approx(cfg.rules.lr * (cfg.rules.lr_base_width / row["d_model"]) ** 0.5, rel=1e-5)
        run.check_layout(1)


def test_plan_is_deterministic_and_written(tmp_path):
    cfg = load_sweep(str(ROOT / "configs" / "sweeps" / "cpu_tiny.yaml"))
    write_plan(plan(cfg)[0], tmp_path / "a.csv")
    write_plan(plan(cfg)[0], tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    header = next(csv.reader((tmp_path / "a.csv").open()))
    assert {"name", "N", "D", "C", "steps", "lr", "n_layers", "d_model"} <= set(header)


def test_bad_sweep_configs_name_the_key(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("grid:\n  budgets: []\n")
    with pytest.raises(ConfigError, match="grid.budgets"):
        load_sweep(str(bad))
    bad.write_text("grid:\n  budgets: [1e12]\nfamily:\n  shapes: [[2, 50]]\n")
    with pytest.raises(ConfigError, match="family.shapes"):
        load_sweep(str(bad))
    bad.write_text("grid:\n  budgets: [1e12]\nrules:\n  learning_rate: 1\n")
    with pytest.raises(ConfigError, match="rules.learning_rate.*valid keys"):
        load_sweep(str(bad))
    bad.write_text("grid:\n  budgets: [1.0e3]\n")
    with pytest.raises(ConfigError, match="min_steps"):
        plan(load_sweep(str(bad)))
