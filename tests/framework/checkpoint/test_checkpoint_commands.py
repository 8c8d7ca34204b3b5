"""`anvil checkpoint consolidate|convert|info|verify` on sharded checkpoints written as 2 TP x 2 DP
ranks would (uneven flat ranges, a bf16 copy in bf16 runs), on checkpoints of the earlier format
(model.safetensors + optimizer.safetensors + ds/), and end to end: a converted checkpoint resumes
training with the uninterrupted run's losses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from framework.checkpoint import store
from framework.checkpoint.sharded import Piece, chunk_boxes, write_shard
from launch.cli import main

ROOT = Path(__file__).resolve().parents[3]
MODEL = {"arch": "llama", "n_layers": 2, "d_model": 16, "n_heads": 2, "n_kv_heads": 2, "vocab_size": 32, "seq_len": 8}
MOMENTS = ("exp_avg", "exp_avg_sq")


def _model_shapes() -> dict[str, tuple[int, ...]]:
    from framework.config import ModelConfig
    from framework.configtree import build
    from framework.interop.hf_export import expected_shapes

    return expected_shapes(build(ModelConfig, MODEL, "model"))


def _full(precision: str, seed: int = 0) -> dict[tuple[str, str], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in _model_shapes().items():
        out[(name, "fp32")] = torch.randn(shape, generator=g)
        out[(name, "exp_avg")] = torch.randn(shape, generator=g) * 1e-3
        out[(name, "exp_avg_sq")] = torch.rand(shape, generator=g) * 1e-6
        if precision != "fp32":
            out[(name, "param")] = out[(name, "fp32")].to(torch.bfloat16)
    return out


def _meta(step: int = 5, precision: str = "fp32") -> dict:
    return {
        "format": store.FORMAT,
        "tensors": "anvil-sharded/1",
        "adam_step": step,
        "step": step,
        "consumed_samples": 8 * step,
        "tokens": 64 * step,
        "world_size": 4,
        "dp_size": 2,
        "zero_stage": 1,
        "precision": precision,
        "config": {"model": MODEL, "parallel": {"tensor": 2, "pipeline": 1}, "train": {"global_batch_size": 8}},
    }


def _sharded(run: Path, precision: str = "fp32", skip=lambda rank, piece: False) -> tuple[Path, dict]:
    """A run folder whose latest checkpoint was written by 4 ranks: TP boxes along dim 0 (norms by
    tensor rank 0 only), each split into 2 uneven DP flat ranges. `skip(rank, piece)` drops pieces."""
    full = _full(precision)
    ckpt = run / "checkpoints" / "step_00000005"
    (ckpt / "shards").mkdir(parents=True)
    files: dict[int, list] = {r: [] for r in range(4)}
    for (name, kind), t in full.items():
        boxes = chunk_boxes(t.shape, 0, 2) if t.dim() == 2 else [tuple((0, n) for n in t.shape)]
        for tp, box in enumerate(boxes):
            local = t[tuple(slice(s, s + n) for s, n in box)].reshape(-1)
            cut = local.numel() // 3 + 1  # uneven, as ZeRO-1/2 fragments are
            for dp, (a, b) in enumerate(((0, cut), (cut, local.numel()))):
                piece = Piece(name, kind, t.shape, box, (a, b))
                if not skip(tp * 2 + dp, piece):
                    files[tp * 2 + dp].append((piece, local[a:b].clone()))
    for rank, items in files.items():
        write_shard(ckpt / "shards" / f"rank_{rank:05d}.safetensors", items)
    (ckpt / "anvil.json").write_text(json.dumps(_meta(precision=precision)))
    (ckpt / "config.yaml").write_text("model:\n  d_model: 16\n")
    (run / "checkpoints" / "latest").write_text(ckpt.name + "\n")
    return ckpt, full


def _legacy(run: Path, with_optimizer: bool = True) -> tuple[Path, dict]:
    """A checkpoint of the earlier format: model.safetensors, optimizer.safetensors, ds/."""
    full = _full("fp32", seed=1)
    ckpt = run / "checkpoints" / "step_00000004"
    (ckpt / "ds").mkdir(parents=True)
    save_file({n: t for (n, k), t in full.items() if k == "fp32"}, str(ckpt / "model.safetensors"))
    if with_optimizer:
        save_file(
            {f"{k}.{n}": t for (n, k), t in full.items()},
            str(ckpt / "optimizer.safetensors"),
            metadata={"format": "anvil-universal/1", "adam_step": "4"},
        )
    meta = {k: v for k, v in _meta(step=4).items() if k not in ("tensors", "adam_step")}
    (ckpt / "anvil.json").write_text(json.dumps(meta))
    (run / "checkpoints" / "latest").write_text(ckpt.name + "\n")
    return ckpt, full


def _shard_tensors(ckpt: Path) -> dict[tuple[str, str], torch.Tensor]:
    with store.tensors(ckpt) as reader:
        return {(n, k): reader.read_full(n, k) for n, k in reader.keys()}


# ---------------------------------------------------------------------------------- consolidate


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_consolidate_writes_layout_free_weights(tmp_path, precision, capsys):
    ckpt, full = _sharded(tmp_path / "run", precision)
    out = tmp_path / "weights"
    assert main(["checkpoint", "consolidate", str(tmp_path / "run"), "--output", str(out)]) == 0
    assert "model.safetensors" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["anvil.json", "config.yaml", "model.safetensors"]
    sd = load_file(out / "model.safetensors")
    kind = "fp32" if precision == "fp32" else "param"  # the weights the model computed with
    assert set(sd) == set(_model_shapes())
    for name, t in sd.items():
        assert t.dtype == torch.float32 and torch.equal(t, full[(name, kind)].float()), name
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert f.metadata()["format"] == "pt"
    meta = json.loads((out / "anvil.json").read_text())
    assert meta["step"] == 5 and meta["consolidated_from"] == str(ckpt.resolve()) and "adam_step" not in meta
    assert (out / "config.yaml").read_text() == (ckpt / "config.yaml").read_text()
    # the folder is a weights-only checkpoint for export / eval / generate
    weights, _ = store.load_weights(out)
    assert all(torch.equal(weights[n], sd[n]) for n in sd)
    from framework.eval.generate import load_model

    load_model(out)

    # --masters and --dtype; an earlier consolidation is replaced
    assert main(["checkpoint", "consolidate", str(ckpt), "--output", str(out), "--masters", "--dtype", "bf16"]) == 0
    sd = load_file(out / "model.safetensors")
    assert all(
        t.dtype == torch.bfloat16 and torch.equal(t, full[(n, "fp32")].to(torch.bfloat16)) for n, t in sd.items()
    )


def test_consolidate_refusals_name_the_problem(tmp_path):
    _sharded(
        tmp_path / "run",
        skip=lambda rank, p: rank == 3 and p.name == "blocks.1.mlp.up_proj.weight" and p.kind == "fp32",
    )
    with pytest.raises(
        SystemExit,
        match=r"anvil checkpoint consolidate: .*fp32 of blocks\.1\.mlp\.up_proj\.weight: "
        r".*missing from the checkpoint",
    ):
        main(["checkpoint", "consolidate", str(tmp_path / "run"), "--output", str(tmp_path / "w")])
    assert not (tmp_path / "w" / "model.safetensors").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    _sharded(tmp_path / "ok")
    with pytest.raises(SystemExit, match="not an earlier consolidation"):
        main(["checkpoint", "consolidate", str(tmp_path / "ok"), "--output", str(tmp_path / "other")])
    with pytest.raises(SystemExit, match="no checkpoint found"):
        main(["checkpoint", "consolidate", str(tmp_path / "nowhere"), "--output", str(tmp_path / "w")])


def test_missing_moments_only_block_what_needs_them(tmp_path, capsys):
    """Weights complete, one Adam moment piece lost: consolidate works, verify and convert name it."""
    _sharded(tmp_path / "run", skip=lambda rank, p: rank == 1 and p.kind == "exp_avg_sq" and p.name == "norm.weight")
    assert main(["checkpoint", "consolidate", str(tmp_path / "run"), "--output", str(tmp_path / "w")]) == 0
    with pytest.raises(SystemExit, match=r"anvil checkpoint verify: .*exp_avg_sq of norm\.weight: elements"):
        main(["checkpoint", "verify", str(tmp_path / "run")])
    with pytest.raises(SystemExit, match=r"exp_avg_sq of norm\.weight"):
        main(["checkpoint", "convert", str(tmp_path / "run"), "--output", str(tmp_path / "c")])
    assert (
        main(["checkpoint", "convert", str(tmp_path / "run"), "--output", str(tmp_path / "c"), "--weights-only"]) == 0
    )
    capsys.readouterr()
    assert main(["checkpoint", "info", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "complete: NO: exp_avg_sq of norm.weight" in out and "resumes training: no (incomplete)" in out


# ----------------------------------------------------------------------------------- info, verify


def test_info_reports_files_kinds_and_state(tmp_path, capsys):
    ckpt, full = _sharded(tmp_path / "run", "bf16")
    assert main(["checkpoint", "info", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "step 5" in out and "DP 2 x TP 2 x PP 1, ZeRO-1; precision bf16" in out
    assert "format: sharded (anvil-sharded/1); 4 shard file(s)" in out and "median" in out
    n = len(_model_shapes())
    assert f"param {n} (bfloat16)" in out and f"fp32 {n} (float32)" in out
    assert "complete: yes" in out and "optimizer state: yes (Adam moments, step 5)" in out
    assert main(["checkpoint", "info", str(ckpt), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    sizes = sorted(p.stat().st_size for p in (ckpt / "shards").iterdir())
    assert info["files"] == 4 and info["bytes_total"] == sum(sizes)
    assert info["bytes_per_file"]["min"] == sizes[0] and info["bytes_per_file"]["max"] == sizes[-1]
    assert info["kinds"]["exp_avg"]["tensors"] == len(_model_shapes()) and info["complete"] and info["resumable"]
    assert info["elements"] == sum(t.numel() for (n, k), t in full.items() if k == "fp32")


def test_verify_ok_and_failures(tmp_path, capsys):
    ckpt, _ = _sharded(tmp_path / "run")
    assert main(["checkpoint", "verify", str(tmp_path / "run")]) == 0
    assert capsys.readouterr().out.startswith("ok: ")
    shard = ckpt / "shards" / "rank_00002.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[:-100])  # a truncated copy
    with pytest.raises(SystemExit, match=r"rank_00002\.safetensors: .* bytes, its header describes"):
        main(["checkpoint", "verify", str(ckpt)])
    shard.write_bytes(data)
    meta = json.loads((ckpt / "anvil.json").read_text())
    meta["config"]["model"]["d_model"] = 32  # not the model these weights belong to
    (ckpt / "anvil.json").write_text(json.dumps(meta))
    with pytest.raises(SystemExit, match=r"anvil checkpoint verify: .*weight .*: shape"):
        main(["checkpoint", "verify", str(ckpt)])


def test_cli_exit_codes_for_verify(tmp_path):
    """As scripts use it: `anvil checkpoint verify X && ...`."""
    _sharded(tmp_path / "good")
    _sharded(tmp_path / "bad", skip=lambda rank, p: rank == 0 and p.name == "embed.tok.weight")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run(
        [sys.executable, "-m", "launch.cli", "checkpoint", "verify", str(tmp_path / "good")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "launch.cli", "checkpoint", "verify", str(tmp_path / "bad")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and "embed.tok.weight" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr


# --------------------------------------------------------------------------------------- convert


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_convert_to_one_shard_of_full_tensors(tmp_path, precision, capsys):
    src, full = _sharded(tmp_path / "run", precision)
    out = tmp_path / "new" / "checkpoints" / "step_00000005"
    assert main(["checkpoint", "convert", str(tmp_path / "run"), "--output", str(out), "--publish"]) == 0
    assert "with Adam state, step 5" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["anvil.json", "config.yaml", "shards"]
    assert [p.name for p in (out / "shards").iterdir()] == ["rank_00000.safetensors"]
    assert (out.parent / "latest").read_text().strip() == out.name
    meta = store.read_meta(out)
    assert meta["step"] == 5 and meta["adam_step"] == 5 and meta["converted_from"] == str(src.resolve())
    assert meta["dp_size"] == 2  # the saved layout stays on record
    got = _shard_tensors(out)
    assert set(got) == set(full)
    assert all(got[k].dtype == full[k].dtype and torch.equal(got[k], full[k]) for k in full)
    with store.tensors(out) as reader:  # one full-box piece per tensor
        assert all(len(reader._stored(n, k)) == 1 for n, k in reader.keys())
    assert main(["checkpoint", "verify", str(tmp_path / "new")]) == 0

    with pytest.raises(SystemExit, match="exists and is not empty"):
        main(["checkpoint", "convert", str(tmp_path / "run"), "--output", str(out)])
    light = tmp_path / "light"
    assert main(["checkpoint", "convert", str(src), "--output", str(light), "--weights-only"]) == 0
    assert store.read_meta(light)["adam_step"] == 0 and store.read_meta(light)["weights_only"]
    kinds = {k for _, k in _shard_tensors(light)}
    assert kinds == ({"fp32"} if precision == "fp32" else {"fp32", "param"})
    assert not (tmp_path / "new" / "checkpoints" / "latest").read_text().startswith("light")


def test_earlier_format_info_consolidate_convert(tmp_path, capsys):
    ckpt, full = _legacy(tmp_path / "old")
    assert main(["checkpoint", "info", str(tmp_path / "old")]) == 0
    out = capsys.readouterr().out
    assert "earlier version (model.safetensors + optimizer.safetensors + ds/)" in out
    assert "optimizer state: yes (Adam moments, step 4)" in out
    assert main(["checkpoint", "verify", str(ckpt)]) == 0
    assert main(["checkpoint", "consolidate", str(ckpt), "--output", str(tmp_path / "w")]) == 0
    sd = load_file(tmp_path / "w" / "model.safetensors")
    assert all(torch.equal(sd[n], full[(n, "fp32")]) for n in sd)
    new = tmp_path / "new"
    assert main(["checkpoint", "convert", str(ckpt), "--output", str(new)]) == 0
    got = _shard_tensors(new)
    assert set(got) == {k for k in full}  # fp32 masters + moments; the fp32 model.safetensors is not duplicated
    assert all(torch.equal(got[k], full[k]) for k in full)
    assert store.read_meta(new)["adam_step"] == 4 and not (new / "ds").exists()

    only_weights, full = _legacy(tmp_path / "older", with_optimizer=False)
    with pytest.raises(SystemExit, match=r"no exp_avg of .*pass --weights-only"):
        main(["checkpoint", "convert", str(only_weights), "--output", str(tmp_path / "x")])
    capsys.readouterr()
    assert main(["checkpoint", "info", str(only_weights)]) == 0
    assert "resumes training: no (no fp32 master weights" in capsys.readouterr().out
    assert main(["checkpoint", "convert", str(only_weights), "--output", str(tmp_path / "x"), "--weights-only"]) == 0
    got = _shard_tensors(tmp_path / "x")
    assert {k for _, k in got} == {"fp32"} and all(torch.equal(got[(n, "fp32")], full[(n, "fp32")]) for n, _ in got)


# ---------------------------------------------------------------------------------- end to end


def _train(run_dir: Path, cache: Path, steps: int) -> subprocess.CompletedProcess:
    args = [
        "train",
        str(ROOT / "configs/train/tiny.yaml"),
        f"run_dir={run_dir}",
        f"data.cache_dir={cache}",
        "model.n_layers=2",
        "model.d_model=64",
        "model.seq_len=32",
        "train.micro_batch_size=2",
        "train.global_batch_size=4",
        "train.log_interval=1",
        "train.checkpoint_interval=2",
        "train.warmup_steps=1",
        "train.eval_iters=1",
        f"train.steps={steps}",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), ANVIL_PROGRESS="0")
    proc = subprocess.run(
        [sys.executable, "-m", "launch.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_converted_checkpoint_resumes_like_the_original(tmp_path):
    """Step 4's loss comes after the third update, the first one that uses the restored Adam state."""
    cache = ROOT / ".cache" / "test_data"
    straight = tmp_path / "straight"
    _train(straight, cache, steps=4)
    out = tmp_path / "conv" / "checkpoints" / "step_00000002"
    assert (
        main(
            [
                "checkpoint",
                "convert",
                str(straight / "checkpoints" / "step_00000002"),
                "--output",
                str(out),
                "--publish",
            ]
        )
        == 0
    )
    proc = _train(tmp_path / "conv", cache, steps=4)
    assert "resumed from" in proc.stderr

    def losses(run):
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in lines if r.get("step") in (3, 4) and "loss" in r]

    assert len(losses(straight)) == 2
    assert max(abs(a - b) for a, b in zip(losses(straight), losses(tmp_path / "conv"))) < 1e-6
    # the check has teeth: without the Adam state the fourth step differs
    light = tmp_path / "light" / "checkpoints" / "step_00000002"
    assert (
        main(
            [
                "checkpoint",
                "convert",
                str(straight / "checkpoints" / "step_00000002"),
                "--output",
                str(light),
                "--weights-only",
                "--publish",
            ]
        )
        == 0
    )
    _train(tmp_path / "light", cache, steps=4)
    assert abs(losses(straight)[1] - losses(tmp_path / "light")[1]) > 1e-4
