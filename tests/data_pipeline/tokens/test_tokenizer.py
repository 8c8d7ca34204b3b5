"""Tokenizer training: padded vocabulary, special tokens, lossless round trip, determinism, errors."""

import pytest

from data_pipeline.tokens.tokenizer import (
    EOD_TOKEN,
    PAD_TOKEN,
    load_tokenizer,
    padded_vocab_size,
    special_ids,
    train_tokenizer,
)
from tests.data_pipeline.tokens.conftest import TRICKY


def test_vocab_is_padded_to_multiple_of_128_with_special_tokens_first(tokenizer_path):
    tok = load_tokenizer(tokenizer_path)
    assert tok.get_vocab_size(with_added_tokens=True) == 384  # asked for 300
    assert special_ids(tok) == (0, 1)
    assert tok.token_to_id(EOD_TOKEN) == 0 and tok.token_to_id(PAD_TOKEN) == 1
    assert padded_vocab_size(384) == 384 and padded_vocab_size(385) == 512


def test_round_trip_is_lossless(corpus, tokenizer_path):
    tok = load_tokenizer(tokenizer_path)
    texts = corpus[1]
    for text, enc in zip(texts, tok.encode_batch(texts, add_special_tokens=False)):
        assert tok.decode(enc.ids, skip_special_tokens=False) == text
    # Special-token strings inside a document are plain text, never an end of document.
    for text in TRICKY[:2]:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert 0 not in ids and 1 not in ids, text


def test_small_corpus_fills_reserved_tokens(tmp_path):
    tok, stats = train_tokenizer(["tiny corpus"] * 3, 1000, tmp_path / "t.json")
    assert stats.bpe_vocab < 1024 and stats.vocab_size == 1024
    assert tok.token_to_id("<|reserved_0|>") == stats.bpe_vocab
    assert load_tokenizer(tmp_path / "t.json").get_vocab_size() == 1024


def test_training_is_deterministic(tmp_path, corpus):
    texts = corpus[1][:120]
    train_tokenizer(iter(texts), 512, tmp_path / "a.json")
    train_tokenizer(iter(texts), 512, tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="at least 258"):
        train_tokenizer(["x"], 100)
    with pytest.raises(ValueError, match="no text to train on"):
        train_tokenizer(["", ""], 384)
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a Hugging Face tokenizers file"):
        load_tokenizer(tmp_path / "bad.json")
