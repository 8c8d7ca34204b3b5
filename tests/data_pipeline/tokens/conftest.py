"""Shared tiny fixtures: a JSONL corpus in 3 shards, a 384-token tokenizer, a tokenized prefix."""

import json

import pytest

from data_pipeline.sample import iter_sample_documents

# Documents that stress byte-level BPE: special-token strings as text, control characters,
# multi-byte scripts and emoji, whitespace only.
TRICKY = [
    "<|endoftext|>",
    "<|pad|><|endoftext|><|reserved_3|>",
    "\x00\x01\x02\x7f",
    "   \n\t ",
    "naïve café 日本語 العربية 🙂🚀",
    "a" * 5000,
]


def write_jsonl(path, texts, start=0):
    with open(path, "w", encoding="utf-8") as fh:
        for k, text in enumerate(texts):
            fh.write(json.dumps({"id": f"d{start + k}", "text": text}) + "\n")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    texts = [d.text for d in iter_sample_documents(limit=240)]
    shards = [texts[:80] + TRICKY, texts[80:160], texts[160:]]
    for i, shard in enumerate(shards):
        write_jsonl(root / f"shard-{i}.jsonl", shard, start=1000 * i)
    return root, [t for shard in shards for t in shard]


@pytest.fixture(scope="session")
def tokenizer_path(corpus, tmp_path_factory):
    from data_pipeline.tokens.inputs import iter_input_texts
    from data_pipeline.tokens.tokenizer import train_tokenizer

    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_tokenizer(iter_input_texts([str(corpus[0])]), 300, path)
    return path


@pytest.fixture(scope="session")
def prefix(corpus, tokenizer_path, tmp_path_factory):
    from data_pipeline.tokens.inputs import input_sources
    from data_pipeline.tokens.tokenize import tokenize_sources

    out = tmp_path_factory.mktemp("tokens") / "corpus"
    tokenize_sources(input_sources([str(corpus[0])]), str(tokenizer_path), str(out), workers=1, batch_docs=16)
    return str(out)
