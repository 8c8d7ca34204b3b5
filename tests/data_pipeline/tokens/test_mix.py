"""`anvil data mix`: token counts from `.idx`, shares and epochs per source, the fragment the
trainer reads (`data.mix`), refusal past --max-epochs and a warning near it; the trainer's blend
hits a 3:1 mix within 1% over 10,000 samples, and `anvil train ... data.mix=` trains."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from framework.data.shards import inspect_prefix
from framework.config import load_run_config
from framework.configtree import ConfigError
from launch.cli import main
from tests.data_pipeline.tokens.test_datasets import megatron_prefix

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    return megatron_prefix(root / "web", 0, docs=3000), megatron_prefix(root / "code", 1, docs=2000)


def _mix(tmp_path, capsys, web, code, tokens, *extra, name="mix.yaml"):
    out = tmp_path / name
    code_ = main(
        [
            "data",
            "mix",
            "--source",
            f"web={web}:3",
            "--source",
            f"code={code}.idx:1",
            "--tokens",
            str(tokens),
            "--output",
            str(out),
            *extra,
        ]
    )
    return code_, out, capsys.readouterr()


def test_mix_table_fragment_and_trainer_share(sources, tmp_path, capsys):
    web, code = sources
    available = [inspect_prefix(p).tokens for p in sources]
    rc, out, printed = _mix(tmp_path, capsys, web, code, "160K")
    assert rc == 0
    frag = yaml.safe_load(out.read_text())
    assert frag == {"data": {"paths": [os.path.abspath(web), os.path.abspath(code)], "weights": [0.75, 0.25]}}
    for n, drawn in zip(available, (120_000, 40_000)):  # the table: available, drawn, epochs
        assert f"{n:,}" in printed.out and f"{drawn:,}" in printed.out
        assert f"{round(drawn / n, 3):,.4g}" in printed.out
    # The trainer's own data path (TrainingData over megatron's blend) draws 3:1 by samples.
    from framework.training.data import TrainingData

    cfg = load_run_config(
        None,
        [
            f"data.mix={out}",
            "model.seq_len=16",
            "train.steps=1250",
            "train.global_batch_size=8",
            "train.micro_batch_size=8",
            "train.eval_iters=0",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"run_dir={tmp_path / 'run'}",
        ],
    )
    assert cfg.data.paths == frag["data"]["paths"] and cfg.data.weights == [0.75, 0.25]
    data = TrainingData(cfg, 0, 1)
    sampled = np.array([data.train.source(i) for i in range(10_000)])
    share = np.bincount(sampled, minlength=2) / 10_000
    assert abs(share[0] - 0.75) < 0.01 and abs(share[1] - 0.25) < 0.01, share
    first = data.train[0]  # tokens really come from the source the blend names (source k: ids 100k+1..)
    assert ((first[first != 0] // 100) == sampled[0]).all()


def test_max_epochs_refused_and_warned(sources, tmp_path, capsys):
    web, code = sources
    web_tokens = inspect_prefix(web).tokens
    too_many = int(web_tokens * 4 / 0.75) + 1000  # web past 4 epochs
    with pytest.raises(
        SystemExit,
        match=r"source 'web' would be repeated 4\.\d\d epochs .* past --max-epochs 4"
        r".*Lower --tokens to at most [\d,]+.*nothing written",
    ):
        _mix(tmp_path, capsys, web, code, too_many)
    assert not (tmp_path / "mix.yaml").exists()
    rc, out, printed = _mix(tmp_path, capsys, web, code, too_many, "--max-epochs", "5")
    assert rc == 0 and out.is_file()
    assert "'web' repeats 4." in printed.err and "close to --max-epochs 5" in printed.err
    rc, _, printed = _mix(tmp_path, capsys, web, code, "1000", name="small.yaml")
    assert rc == 0 and "close to" not in printed.err


def test_bad_sources_and_fragments(sources, tmp_path, capsys):
    web, code = sources
    for argv, message in (
        (["--source", f"web{web}:3"], "expected NAME=PREFIX:WEIGHT"),
        (["--source", f"web={web}:x"], "weight 'x' is not a number"),
        (["--source", f"web={web}:0"], "weight must be positive"),
        (["--source", f"web={web}:1", "--source", f"web={code}:1"], "the name 'web' is given twice"),
        (["--source", f"web={tmp_path / 'none'}:1"], r"--source web: .*none.idx: missing"),
        (["--source", f"web={web}:1", "--tokens", "lots"], "--tokens 'lots': expected a positive token count"),
    ):
        argv = ["data", "mix", *argv, "--output", str(tmp_path / "m.yaml")]
        if "--tokens" not in argv:
            argv += ["--tokens", "1000"]
        with pytest.raises(SystemExit, match=message):
            main(argv)
    # Fragments: relative paths are read from the fragment's folder; a differing data.paths is refused.
    frag = tmp_path / "frags" / "rel.yaml"
    frag.parent.mkdir()
    frag.write_text(yaml.safe_dump({"data": {"paths": [os.path.relpath(web, frag.parent)], "weights": [1]}}))
    assert load_run_config(None, [f"data.mix={frag}"]).data.paths == [
        str(frag.parent / os.path.relpath(web, frag.parent))
    ]
    with pytest.raises(ConfigError, match="config key 'data.mix'.*different ones"):
        load_run_config(None, [f"data.mix={frag}", f"data.paths=[{code}]"])
    assert load_run_config(None, [f"data.mix={frag}", f"data.paths=[{web}]"]).data.weights == [1.0]
    bad = tmp_path / "bad.yaml"
    for text, message in (
        ("data: {paths: [a], weights: [1, 2]}", "2 data.weights for 1 data.paths"),
        ("data: {paths: []}", "non-empty list"),
        ("train: {steps: 3}", r"expected \{data: \{paths"),
        ("data: [", "not valid YAML"),
    ):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=f"config key 'data.mix': .*bad.yaml: .*{message}"):
            load_run_config(None, [f"data.mix={bad}"])
    with pytest.raises(ConfigError, match="data.mix': .*missing.yaml: file not found"):
        load_run_config(None, [f"data.mix={tmp_path / 'missing.yaml'}"])


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["data", "mix", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "NAME=PREFIX:WEIGHT" in out and "--max-epochs" in out and "Muennighoff" in out


def test_anvil_train_on_a_mix(prefix, tokenizer_path, corpus, tmp_path, capsys):
    """Two sources tokenized with one tokenizer, mixed 3:1, trained for a few steps by the real CLI."""
    from data_pipeline.tokens.inputs import input_sources
    from data_pipeline.tokens.tokenize import tokenize_sources

    second = str(tmp_path / "second")
    tokenize_sources(input_sources([str(corpus[0] / "shard-1.jsonl")]), str(tokenizer_path), second, workers=1)
    rc, mix, _ = _mix(tmp_path, capsys, prefix, second, "20K")
    assert rc == 0
    run = tmp_path / "run"
    args = [
        "train",
        str(ROOT / "configs/train/tiny.yaml"),
        f"run_dir={run}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"data.mix={mix}",
        f"data.tokenizer={tokenizer_path}",
        "model.n_layers=2",
        "model.d_model=64",
        "model.seq_len=32",
        "train.micro_batch_size=2",
        "train.global_batch_size=4",
        "train.steps=3",
        "train.log_interval=1",
        "train.warmup_steps=1",
        "train.eval_iters=1",
    ]
    # In-process (torch and megatron are loaded already; a subprocess costs 30 s here). The trainer
    # sets RANK/MASTER_PORT/... for its 1-rank group and destroys the group at the end: restore env.
    saved = dict(os.environ)
    os.environ.update(OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), ANVIL_PROGRESS="0")
    try:
        assert main(args) == 0
    finally:
        os.environ.clear()
        os.environ.update(saved)
    import torch.distributed as dist

    assert not dist.is_initialized()
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in steps if "loss" in r]
    assert len(losses) == 3 and all(np.isfinite(losses))
    saved = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert saved["mix"] == str(mix) and saved["paths"] == [os.path.abspath(prefix), os.path.abspath(second)]
    assert load_run_config(str(run / "config.yaml")).data.weights == [0.75, 0.25]  # a resume reloads it
