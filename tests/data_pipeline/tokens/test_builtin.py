"""The built-in data the trainer falls back to: real text, the tiny model's vocabulary, cached."""

import time

import numpy as np

from data_pipeline.tokens.builtin import builtin_data
from framework.data.datasets import build_datasets, check_compatible
from framework.data.shards import read_sidecar
from data_pipeline.tokens.tokenizer import load_tokenizer
from framework.config import ModelConfig


def test_builtin_data_matches_tiny_model_and_is_cached(tmp_path):
    prefix, tok_path = builtin_data(tmp_path)
    vocab = ModelConfig().vocab_size
    report = check_compatible(prefix, tok_path, vocab)
    assert report["tokenizer_vocab_size"] == vocab == 384
    meta = read_sidecar(prefix)
    assert meta["documents"] > 1000 and meta["tokens"] > 1_000_000
    train, valid = build_datasets(
        [prefix], [], "98,2,0", 64, 1, 256, 16, str(tmp_path / "cache"), vocab, meta["eod_id"]
    )
    # A packed sample is a contiguous run of the tokenized corpus (EOD = 0 between documents).
    corpus = np.fromfile(prefix + ".bin", dtype=np.uint16)
    sample = train[3]
    starts = np.flatnonzero(corpus[: len(corpus) - 64] == sample[0])
    assert any((corpus[s : s + 65] == sample).all() for s in starts)
    # Real English text (the sample corpus depends on the installed packages, so look at a few samples).
    tok = load_tokenizer(tok_path)
    text = " ".join(tok.decode(train[i].tolist()) for i in range(64)).lower()  # ~10K characters
    assert sum(text.count(word) for word in (" the ", " and ", " of ", " to ")) >= 40, text[:300]
    start = time.perf_counter()
    assert builtin_data(tmp_path) == (prefix, tok_path)
    assert time.perf_counter() - start < 1.0  # cached: no retraining


def test_builtin_data_refuses_a_vocabulary_it_cannot_match(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="multiple of 128 and at least 258.*got 300"):
        builtin_data(tmp_path, 300)
