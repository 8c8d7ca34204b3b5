"""Crash consistency through the real CLI: SIGKILL at a random step, a kill while a checkpoint is
being written, then a rerun of the same command gives the uninterrupted run's metrics.jsonl.
Also: checkpoints refuse malicious pickles, generate reads any checkpoint, torchrun DP=2 works.
"""

import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
ANVIL = [str(Path(sys.executable).parent / "anvil")]  # the console script, as users run it
STEPS = 12


def _args(run_dir: Path, cache: Path) -> list[str]:
    return [
        "train",
        str(ROOT / "configs/train/tiny.yaml"),
        f"run_dir={run_dir}",
        f"data.cache_dir={cache}",
        "model.n_layers=2",
        "model.d_model=64",
        "model.seq_len=32",
        "train.micro_batch_size=2",
        "train.global_batch_size=4",
        f"train.steps={STEPS}",
        "train.log_interval=1",
        "train.checkpoint_interval=3",
        "train.eval_interval=4",
        "train.warmup_steps=2",
        "train.keep_checkpoints=2",
    ]


def _env(**extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), ANVIL_PROGRESS="0", **extra)
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _run(args, timeout=240, **env):
    return subprocess.run(ANVIL + args, env=_env(**env), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _comparable(records: list[dict]) -> list[tuple]:
    keys = ("step", "loss", "lr", "tokens", "grad_norm", "val_loss")
    return [tuple(r.get(k) for k in keys) for r in records]


def _assert_same(a: list[dict], b: list[dict], tol: float = 1e-6) -> None:
    ca, cb = _comparable(a), _comparable(b)
    assert len(ca) == len(cb), f"{len(ca)} vs {len(cb)} lines"
    for ra, rb in zip(ca, cb):
        for x, y in zip(ra, rb):
            if isinstance(x, float) or isinstance(y, float):
                assert abs(x - y) <= tol * max(1.0, abs(x)), (ra, rb)
            else:
                assert x == y, (ra, rb)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("resume")
    cache = base / "cache"
    straight = base / "straight"
    res = _run(_args(straight, cache))
    assert res.returncode == 0, res.stderr[-3000:]
    return base, cache, straight


def test_sigkill_and_kill_during_checkpoint_then_rerun_equals_uninterrupted(runs):
    from framework.checkpoint import store

    base, cache, straight = runs
    crashed = base / "crashed"
    kill_at = random.Random().randint(4, STEPS - 2)
    proc = subprocess.Popen(
        ANVIL + _args(crashed, cache),
        env=_env(),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    metrics = crashed / "metrics.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists():
            lines = [line for line in metrics.read_text().splitlines() if line.strip()]
            if lines and json.loads(lines[-1]).get("step", 0) >= kill_at:
                break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"run ended before step {kill_at}"
    before = store.latest_checkpoint(crashed / "checkpoints")
    assert before is not None, f"no checkpoint before the kill at step {kill_at}"

    # Second attempt dies inside the next checkpoint write (all files written, nothing published).
    res = _run(_args(crashed, cache), ANVIL_FAULT_KILL_IN_CHECKPOINT="1")
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    assert list((crashed / "checkpoints").glob("step_*.tmp-*")), "expected a half-published checkpoint folder"
    assert store.latest_checkpoint(crashed / "checkpoints") == before
    weights, meta = store.load_weights(before)  # the previous checkpoint still loads
    assert meta["step"] == int(before.name.split("_")[1]) and "embed.tok.weight" in weights

    res = _run(_args(crashed, cache))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed from" in res.stderr
    _assert_same(_metrics(straight), _metrics(crashed))
    ckpts = sorted(p.name for p in (crashed / "checkpoints").iterdir())
    assert ckpts == ["latest", f"step_{STEPS - 3:08d}", f"step_{STEPS:08d}"], ckpts  # keep-last-2, no tmp left


def test_metrics_contract_and_checkpoint_layout(runs):
    _, _, straight = runs
    records = _metrics(straight)
    train = [r for r in records if "val_loss" not in r]
    assert [r["step"] for r in train] == list(range(1, STEPS + 1))
    for r in train:
        assert {"step", "loss", "lr", "tokens", "tokens_per_s", "grad_norm"} <= set(r)
    assert train[-1]["tokens"] == STEPS * 4 * 32
    assert [r["step"] for r in records if "val_loss" in r] == [4, 8, 12]
    ckpt = straight / "checkpoints" / f"step_{STEPS:08d}"
    for name in ("anvil.json", "config.yaml", "shards/rank_00000.safetensors", "rng/rank_00000.pt"):
        assert (ckpt / name).exists(), name
    for gone in ("model.safetensors", "optimizer.safetensors", "ds"):  # no second full copy
        assert not (ckpt / gone).exists(), gone
    assert (straight / "config.yaml").is_file()
    assert (straight / "checkpoints" / "latest").read_text().strip() == ckpt.name


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['ANVIL_EVIL_MARKER']}",))


def test_malicious_pickle_in_checkpoint_is_refused(runs, tmp_path, monkeypatch):
    from framework.checkpoint import store

    _, _, straight = runs
    ckpt = tmp_path / "ckpt"
    shutil.copytree(store.resolve(straight), ckpt)
    rng = ckpt / "rng" / "rank_00000.pt"
    assert isinstance(store.safe_torch_load(rng), dict)  # genuine RNG files pass weights_only
    marker = tmp_path / "pwned"
    monkeypatch.setenv("ANVIL_EVIL_MARKER", str(marker))
    with open(rng, "wb") as f:
        pickle.dump({"state": _Evil()}, f)
    with pytest.raises(store.CheckpointError, match="refused"):
        store.safe_torch_load(rng)
    # a resume in the same layout reads that file: refused too, nothing executed
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copytree(ckpt, run / "checkpoints" / ckpt.name)
    (run / "checkpoints" / "latest").write_text(ckpt.name + "\n")
    problem = store.verify(run / "checkpoints" / ckpt.name)[0]
    assert "rng/rank_00000.pt: " in problem and "recorded" in problem, problem
    meta = json.loads((run / "checkpoints" / ckpt.name / "anvil.json").read_text())
    del meta["integrity"]  # the checksum rejects the swapped file first; without one, weights_only must
    (run / "checkpoints" / ckpt.name / "anvil.json").write_text(json.dumps(meta))
    res = _run(_args(run, straight.parent / "cache") + [f"train.steps={STEPS + 1}"])
    assert res.returncode != 0 and "refused" in res.stderr, res.stderr[-2000:]
    assert not marker.exists()


def test_generate_from_run_and_checkpoint(runs, capsys):
    from launch.cli import main

    _, _, straight = runs
    args = ["generate", "--prompt", "def main", "--max-new-tokens", "8"]
    assert main(args + ["--checkpoint", str(straight)]) == 0
    a = capsys.readouterr().out
    assert main(args + ["--checkpoint", str(straight / "checkpoints" / f"step_{STEPS:08d}")]) == 0
    assert capsys.readouterr().out == a  # greedy is deterministic; run folder = its latest checkpoint
    assert main(args + ["--checkpoint", str(straight), "--temperature", "1.0", "--top-k", "5", "--top-p", "0.9"]) == 0
    with pytest.raises(SystemExit, match="no checkpoint found"):
        main(["generate", "--checkpoint", str(straight / "nowhere"), "--prompt", "x"])


def test_torchrun_two_ranks_zero1_matches_one_process(runs):
    base, cache, straight = runs
    run_dir = base / "torchrun"
    from tests.helpers.dist import free_port

    cmd = (
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(free_port()),
            ANVIL[0],
        ]
        + _args(run_dir, cache)
        + ["train.steps=4", "parallel.zero_stage=1"]
    )
    # steps=4 changes the cosine schedule; compare against the same config in one process
    res = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    single = base / "single4"
    res = _run(
        _args(single, cache) + ["train.steps=4", "logging.wandb=true", "logging.tensorboard=true"],
        WANDB_MODE="",
        WANDB_API_KEY="",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_same(_metrics(single), _metrics(run_dir), tol=1e-5)
    # wandb went offline by itself (no key, no prompt) and TensorBoard wrote events
    assert list((single / "wandb").glob("offline-run-*")), list(single.iterdir())
    assert list((single / "tensorboard").glob("events.out.tfevents.*"))
