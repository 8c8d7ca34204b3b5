"""`model.vocab_size` follows the tokenizer when the config does not set it (padded to 128), so the
new-user command `anvil train configs/train/tiny.yaml data.paths=[tok] data.tokenizer=tok.json` trains."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from framework.config import load_run_config
from framework.configtree import ConfigError
from launch.cli import main

ROOT = Path(__file__).resolve().parents[3]
TINY = str(ROOT / "configs/train/tiny.yaml")


@pytest.fixture(scope="module")
def big_vocab(corpus, tmp_path_factory):
    """A 600-token tokenizer (padded to 640, above the tiny preset's 384) and the corpus tokenized with it."""
    from data_pipeline.tokens.inputs import input_sources, iter_input_texts
    from data_pipeline.tokens.tokenize import tokenize_sources
    from data_pipeline.tokens.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("bigvocab")
    tok = root / "tokenizer.json"  # not tok.json: that is the prefix's sidecar
    train_tokenizer(iter_input_texts([str(corpus[0])]), 600, tok)
    tokenize_sources(input_sources([str(corpus[0])]), str(tok), str(root / "tok"), workers=1)
    return str(root / "tok"), str(tok)


def test_vocab_follows_the_tokenizer_unless_set_explicitly(big_vocab, tmp_path):
    prefix, tok = big_vocab
    assert load_run_config(TINY).model.vocab_size == 384  # the 1m preset's value, no tokenizer
    assert load_run_config(TINY, [f"data.tokenizer={tok}"]).model.vocab_size == 640  # preset value does not count
    assert load_run_config(TINY, [f"data.tokenizer={tok}", "model.vocab_size=1024"]).model.vocab_size == 1024
    own = tmp_path / "own.yaml"
    own.write_text(f"base: {TINY}\nmodel:\n  vocab_size: 768\ndata:\n  tokenizer: {tok}\n")
    assert load_run_config(str(own)).model.vocab_size == 768  # set in the user's own file
    with pytest.raises(ConfigError, match="data.tokenizer.*missing.json"):
        load_run_config(TINY, [f"data.tokenizer={tmp_path / 'missing.json'}"])


def test_new_user_command_trains_and_a_too_small_vocab_names_both_numbers(big_vocab, tmp_path, capsys):
    prefix, tok = big_vocab
    run = tmp_path / "run"
    args = [
        "train",
        TINY,
        f"data.paths=[{prefix}]",
        f"data.tokenizer={tok}",
        f"run_dir={run}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "train.steps=2",
        "train.log_interval=1",
        "train.eval_iters=1",
        "model.seq_len=32",
        "train.micro_batch_size=2",
        "train.global_batch_size=2",
        "train.warmup_steps=1",
    ]
    saved = dict(os.environ)  # in-process: the trainer sets RANK/MASTER_PORT for its one-rank group
    os.environ.update(OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), ANVIL_PROGRESS="0")
    try:
        assert main(args) == 0
        capsys.readouterr()
        assert main(args + ["model.vocab_size=512", f"run_dir={tmp_path / 'small'}"]) == 2
        assert "has 640 tokens but model.vocab_size is 512" in capsys.readouterr().err
    finally:
        os.environ.clear()
        os.environ.update(saved)
    losses = [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 2 and np.isfinite(losses).all()
    assert "vocab_size: 640" in (run / "config.yaml").read_text()
