"""In-loop evaluation (`eval.tasks`, `eval.datasets`) through the real trainer.

One process trains the same tiny run twice, with and without in-loop evaluation: the training
losses must be identical, the metrics carry `eval/TASK/METRIC` and `eval/DOMAIN/loss` at the
interval and at the end, and the final task numbers equal the harness run on the saved checkpoint
(`anvil eval`'s path). Two ranks under ZeRO-3 (lockstep forwards, each rank scoring its shard of
the examples) give the same task numbers as one process on their checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.dist import run_distributed

ROOT = Path(__file__).resolve().parents[3]
CACHE = ROOT / ".cache" / "test_data"  # the built-in sample data, built once and shared (file-locked)
TASKS = str(ROOT / "configs" / "eval")
LIMIT = 12


def _overrides(run_dir: Path, *extra: str) -> list[str]:
    return [
        f"run_dir={run_dir}",
        f"data.cache_dir={CACHE}",
        "model.n_layers=1",
        "model.d_model=32",
        "model.seq_len=32",
        "train.micro_batch_size=2",
        "train.global_batch_size=4",
        "train.steps=6",
        "train.log_interval=1",
        "train.checkpoint_interval=6",
        "train.warmup_steps=2",
        "logging.console=false",
        *extra,
    ]


EVAL = ["eval.tasks=[anvil_mc]", f"eval.include_path={TASKS}", "eval.interval=3", f"eval.limit={LIMIT}"]


def _train(run_dir: Path, *extra: str, domains: bool = False) -> list[dict]:
    from framework.config import load_run_config
    from framework.training.trainer import train
    from launch.commands.train import use_builtin_data

    cfg = load_run_config(str(ROOT / "configs/train/tiny.yaml"), _overrides(run_dir, *extra))
    use_builtin_data(cfg)
    if domains:
        cfg.eval.datasets = {"sample": cfg.data.paths[0]}
        cfg.eval.max_tokens = 2048
    train(cfg)
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _checkpoint_scores(run_dir: Path) -> dict:
    """The harness on the saved checkpoint, one process: what `anvil eval --tasks` computes."""
    from framework.eval.harness import flat_metrics, run_tasks
    from framework.eval.lm_adapter import from_scorer
    from framework.eval.perplexity import load_scorer

    lm = from_scorer(load_scorer(run_dir), batch_size=5)
    return flat_metrics(run_tasks(lm, ["anvil_mc"], [TASKS], LIMIT))


def _one_process(base: str) -> dict:
    base = Path(base)
    plain = _train(base / "plain")
    evald = _train(base / "evald", *EVAL, domains=True)
    return {
        "plain": plain,
        "evald": evald,
        "checkpoint": _checkpoint_scores(base / "evald"),
        "z3_checkpoint": _checkpoint_scores(base / "z3"),
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("downstream")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "-m"]
    cmd = torchrun + [
        "launch.cli",
        "train",
        "configs/train/tiny.yaml",
        *_overrides(base / "z3", *EVAL, "parallel.zero_stage=3"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ANVIL_COLLECTIVE_TIMEOUT_S": "60", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    z3 = {"metrics": [json.loads(line) for line in (base / "z3" / "metrics.jsonl").read_text().splitlines()]}
    one = run_distributed(_one_process, 1, str(base), timeout=600)[0]  # also scores z3's checkpoint
    z3["checkpoint"] = one["z3_checkpoint"]
    return one, z3


def _losses(metrics: list[dict]) -> list[tuple]:
    return [(m["step"], m["loss"], m["grad_norm"]) for m in metrics if "loss" in m]


def test_in_loop_eval_leaves_training_losses_unchanged(runs):
    one, _ = runs
    assert len(_losses(one["plain"])) == 6
    assert _losses(one["evald"]) == _losses(one["plain"])  # exact: same floats
    val = [m["val_loss"] for m in one["plain"] if "val_loss" in m]
    assert val and val == [m["val_loss"] for m in one["evald"] if "val_loss" in m]


def test_in_loop_metrics_at_interval_and_equal_to_checkpoint_eval(runs):
    one, _ = runs
    evals = [m for m in one["evald"] if "eval/anvil_mc/acc" in m]
    assert [m["step"] for m in evals] == [3, 6]
    last = evals[-1]
    for key in ("eval/anvil_mc/acc", "eval/anvil_mc/acc_norm", "eval/anvil_mc/acc_stderr"):
        assert key in last and 0.0 <= last[key] <= 1.0
    assert last["eval/seconds"] > 0
    assert last["eval/sample/loss"] > 0 and last["eval/sample/perplexity"] == pytest.approx(
        2.718281828 ** last["eval/sample/loss"], rel=1e-6
    )
    assert evals[0]["eval/sample/loss"] != last["eval/sample/loss"]  # the live model, not a copy
    # the live model's numbers are the saved checkpoint's (same weights, other batching)
    assert last["eval/anvil_mc/acc"] == one["checkpoint"]["eval/anvil_mc/acc"]
    assert last["eval/anvil_mc/acc_norm"] == one["checkpoint"]["eval/anvil_mc/acc_norm"]


def test_two_ranks_zero3_in_loop_equals_one_process_on_its_checkpoint(runs):
    _, z3 = runs
    last = [m for m in z3["metrics"] if "eval/anvil_mc/acc" in m][-1]
    assert last["step"] == 6
    for key, value in z3["checkpoint"].items():
        assert last[key] == pytest.approx(value, abs=1e-12), key


def test_unsupported_layout_and_missing_task_fail_at_start(tmp_path):
    from framework.config import load_run_config
    from framework.configtree import ConfigError
    from framework.training.downstream import check_supported

    cfg = load_run_config(str(ROOT / "configs/train/tiny.yaml"), _overrides(tmp_path, *EVAL, "parallel.tensor=2"))
    with pytest.raises(ConfigError, match="parallel.tensor = parallel.pipeline = 1"):
        check_supported(cfg, "tok.json")
    cfg = load_run_config(str(ROOT / "configs/train/tiny.yaml"), _overrides(tmp_path, "eval.tasks=[no_such_task_xyz]"))
    cfg.eval.include_path = TASKS
    with pytest.raises(ConfigError, match="no_such_task_xyz"):
        check_supported(cfg, "tok.json")
    cfg = load_run_config(str(ROOT / "configs/train/tiny.yaml"), _overrides(tmp_path, "eval.datasets={web: /nope/x}"))
    with pytest.raises(ConfigError, match="eval.datasets.web"):
        check_supported(cfg, None)
