"""Loss-spike rollback and checkpoint fallback, through the real trainer.

Run A injects a NaN at step 6 with `train.max_consecutive_skips=1`: it rolls back to the step-4
checkpoint, skips the samples of steps 5-6, finishes, and lists the skipped samples. Then, from
copies of A's run folder: a rerun whose two newest checkpoints are damaged (a flipped bit, a
truncated file) falls back to step 4 with warnings and reproduces A's metrics.jsonl exactly (the
fault fires again there: it had not fired at step 4); a rerun without the fault still rolls back at
step 6 because the decision is recorded; a resume after the rollback continues as A did. Run E
flags every step as a spike and stops after `train.max_rollbacks`.

All scenarios run in ONE spawned process (process start-up and imports cost more than the steps).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from tests.helpers.dist import run_distributed

ROOT = Path(__file__).resolve().parents[3]
CACHE = ROOT / ".cache" / "test_data"  # the built-in sample data, built once and shared (file-locked)
BATCH, SEQ = 4, 16


def _overrides(run_dir: Path, cache: Path, *extra: str) -> list[str]:
    return [
        f"run_dir={run_dir}",
        f"data.cache_dir={cache}",
        "model.n_layers=1",
        "model.d_model=32",
        f"model.seq_len={SEQ}",
        "train.micro_batch_size=2",
        f"train.global_batch_size={BATCH}",
        "train.steps=10",
        "train.log_interval=1",
        "train.checkpoint_interval=4",
        "train.eval_interval=0",
        "train.warmup_steps=2",
        "train.keep_checkpoints=5",
        "train.spike_action=rollback",
        "train.max_consecutive_skips=1",
        "logging.console=false",
        *extra,
    ]


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _copy(src: Path, dst: Path, latest: str, drop=()) -> Path:
    shutil.copytree(src, dst)
    for name in drop:
        shutil.rmtree(dst / "checkpoints" / name)
    (dst / "checkpoints" / "latest").write_text(latest + "\n")
    return dst


def _scenarios(base: str) -> dict:
    from framework.config import load_run_config
    from framework.training.stability import TrainingDiverged
    from framework.training.trainer import train
    from launch.commands.train import use_builtin_data

    base, cache = Path(base), CACHE
    warnings: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            warnings.append(record.getMessage())

    logging.getLogger("anvil").addHandler(Keep(logging.WARNING))

    def run(name: str, *extra: str):
        cfg = load_run_config(str(ROOT / "configs/train/tiny.yaml"), _overrides(base / name, cache, *extra))
        use_builtin_data(cfg)  # what `anvil train` does before training
        warnings.clear()
        try:
            summary = train(cfg)
        except TrainingDiverged as exc:
            summary = {"error": str(exc)}
        return {"summary": summary, "metrics": _metrics(base / name), "warnings": list(warnings)}

    out = {"A": run("A", "train.inject_nan_at=[6]")}
    ck = base / "A" / "checkpoints"
    out["A"]["checkpoints"] = sorted(p.name for p in ck.iterdir())
    out["A"]["records"] = (base / "A" / "rollbacks.jsonl").read_text().splitlines()

    fallback = _copy(base / "A", base / "F", "step_00000010")
    shard = fallback / "checkpoints/step_00000010/shards/rank_00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-7] ^= 0x01  # one bit of one weight
    shard.write_bytes(bytes(data))
    rng = fallback / "checkpoints/step_00000008/rng/rank_00000.pt"
    rng.write_bytes(rng.read_bytes()[:-100])
    out["F"] = run("F", "train.inject_nan_at=[6]")
    out["F"]["records"] = (fallback / "rollbacks.jsonl").read_text().splitlines()

    _copy(base / "A", base / "C", "step_00000004", drop=("step_00000008", "step_00000010"))
    out["C"] = run("C")  # no fault: the recorded decision alone makes the rollback

    _copy(base / "A", base / "D", "step_00000008", drop=("step_00000010",))
    out["D"] = run("D", "train.inject_nan_at=[6]")

    out["E"] = run(
        "E", "train.spike_window=2", "train.spike_zscore=-1e9", "train.max_rollbacks=2", "train.checkpoint_interval=100"
    )
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return run_distributed(_scenarios, 1, str(tmp_path_factory.mktemp("rollback")), timeout=600)[0]


def _key(r: dict) -> tuple:
    return tuple(r.get(k) for k in ("step", "loss", "lr", "tokens", "grad_norm", "rollback_to", "skipped_samples"))


ROLLBACK = {"step": 6, "rollback_to": 4, "skipped_samples": [4 * BATCH, 6 * BATCH - 1]}


def test_injected_nan_rolls_back_skips_the_window_and_finishes(runs):
    a = runs["A"]
    lines = a["metrics"]
    assert ROLLBACK in lines  # exactly the contract's line
    i = lines.index(ROLLBACK)
    assert [r["step"] for r in lines[:i]] == [1, 2, 3, 4, 5, 6] and lines[i - 1]["skipped"]
    assert [r["step"] for r in lines[i + 1 :] if "val_loss" not in r] == [5, 6, 7, 8, 9, 10]
    assert lines[i + 1]["tokens"] == lines[3]["tokens"] + BATCH * SEQ  # the step count went back ...
    assert lines[i + 1]["loss"] != lines[4]["loss"]  # ... the data did not: step 5 trains on new samples
    assert not any(r.get("skipped") for r in lines[i + 1 :])  # the fault fired once
    s = a["summary"]
    assert s["steps"] == 10 and s["rollbacks"] == 1 and s["skipped_samples"] == 2 * BATCH
    assert s["rollback_log"] == [ROLLBACK]
    assert a["records"] == [json.dumps(ROLLBACK)]
    assert a["checkpoints"] == ["latest", "step_00000000", "step_00000004", "step_00000008", "step_00000010"]
    assert any("rolled back to step 4" in w for w in a["warnings"])


def test_damaged_checkpoints_fall_back_and_the_rerun_reproduces_the_run(runs):
    f = runs["F"]
    assert any("step_00000010" in w and "xxh3_64 checksum" in w and "falling back" in w for w in f["warnings"])
    assert any("step_00000008" in w and "rank_00000.pt" in w and "truncated" in w for w in f["warnings"])
    assert [_key(r) for r in f["metrics"]] == [_key(r) for r in runs["A"]["metrics"]]
    assert f["summary"]["rollback_log"] == [ROLLBACK]
    assert f["records"] == [json.dumps(ROLLBACK)]  # the replayed decision is not recorded twice


def test_recorded_decision_is_replayed_without_the_fault(runs):
    a, c = runs["A"]["metrics"], runs["C"]["metrics"]
    i = a.index(ROLLBACK)
    assert c.index(ROLLBACK) == i and not c[i - 1].get("skipped")  # step 6 was fine this time ...
    assert [_key(r) for r in c[i:]] == [_key(r) for r in a[i:]]  # ... and rolled back all the same
    assert any("the decision recorded in" in w for w in runs["C"]["warnings"])


def test_resume_after_a_rollback_continues_like_the_uninterrupted_run(runs):
    d = runs["D"]
    assert [_key(r) for r in d["metrics"]] == [_key(r) for r in runs["A"]["metrics"]]
    assert d["summary"]["rollback_log"] == [ROLLBACK] and d["summary"]["skipped_samples"] == 2 * BATCH


def test_max_rollbacks_bounds_the_rollbacks(runs):
    e = runs["E"]
    assert "train.max_rollbacks=2 rollbacks were already made" in e["summary"]["error"]
    rollbacks = [r for r in e["metrics"] if "rollback_to" in r]
    assert rollbacks == [
        {"step": 3, "rollback_to": 0, "skipped_samples": [0, 3 * BATCH - 1]},
        {"step": 3, "rollback_to": 0, "skipped_samples": [3 * BATCH, 6 * BATCH - 1]},
    ]


def test_data_positions_past_the_built_samples_wrap_to_the_start():
    """Skipped windows push the data position past train.steps x global_batch_size samples."""
    import numpy as np

    from framework.config import RunConfig
    from framework.training.data import TrainingData

    cfg = RunConfig()
    cfg.train.global_batch_size, cfg.train.micro_batch_size = 4, 2
    data = TrainingData.__new__(TrainingData)  # no dataset build: ten fake samples
    data.cfg, data.dp_rank, data.dp_size, data._wrapped = cfg, 0, 1, False
    data.train = [np.full(5, i) for i in range(10)]
    (x0, _), (x1, _) = data.train_micro_batches(8)  # samples 8, 9 | 10, 11 -> 0, 1
    assert x0[:, 0].tolist() == [8, 9] and x1[:, 0].tolist() == [0, 1] and data._wrapped
