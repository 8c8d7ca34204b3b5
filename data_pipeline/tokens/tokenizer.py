"""Byte-level BPE tokenizer training: `anvil tokenizer train INPUT... --vocab-size N --output tokenizer.json`.

Hugging Face `tokenizers` does the work (GPT-2 style byte-level BPE: every byte is in the base
alphabet, so any text encodes and decodes back exactly). Anvil adds three conventions:
- special tokens `<|endoftext|>` (end of document, id 0) and `<|pad|>` (id 1), first in the vocabulary;
- the vocabulary is padded to a multiple of 128 (tensor-parallel embedding splits need equal shards):
  the BPE trainer is asked for the padded size, and when the corpus runs out of merges first the rest
  is filled with `<|reserved_K|>` tokens, so `get_vocab_size()` is always the padded number;
- documents stream from the shared readers, so corpora larger than memory train in one pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from framework.data.tokenizer import (
    EOD_TOKEN,
    MIN_VOCAB,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    VOCAB_MULTIPLE,
    load_tokenizer,
    padded_vocab_size,
    special_ids,
)

# Loading lives in framework.data.tokenizer (the trainer reads tokenizers too); re-exported here so
# curation code has one module for tokenizers.
__all__ = [
    "EOD_TOKEN",
    "PAD_TOKEN",
    "SPECIAL_TOKENS",
    "VOCAB_MULTIPLE",
    "MIN_VOCAB",
    "padded_vocab_size",
    "load_tokenizer",
    "special_ids",
    "train_tokenizer",
    "new_tokenizer",
    "TokenizerTrainStats",
]


@dataclass
class TokenizerTrainStats:
    documents: int = 0
    characters: int = 0
    skipped_empty: int = 0
    bpe_vocab: int = 0
    vocab_size: int = 0


def new_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    output: str | os.PathLike | None = None,
    min_frequency: int = 2,
    show_progress: bool = False,
):
    """Train on a stream of texts; return (tokenizer, stats) and write `output` when given."""
    from tokenizers import AddedToken, pre_tokenizers, trainers

    if vocab_size < MIN_VOCAB:
        raise ValueError(
            f"--vocab-size must be at least {MIN_VOCAB} (256 bytes + {len(SPECIAL_TOKENS)} "
            f"special tokens), got {vocab_size}"
        )
    target = padded_vocab_size(vocab_size)
    stats = TokenizerTrainStats()

    def counted() -> Iterator[str]:
        for text in texts:
            if not text:
                stats.skipped_empty += 1
                continue
            stats.documents += 1
            stats.characters += len(text)
            yield text

    tok = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=target,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tok.train_from_iterator(counted(), trainer=trainer)
    if stats.documents == 0:
        raise ValueError("no text to train on: every input document was empty or unreadable")
    stats.bpe_vocab = tok.get_vocab_size(with_added_tokens=True)
    missing = target - stats.bpe_vocab
    if missing > 0:
        tok.add_special_tokens([AddedToken(f"<|reserved_{k}|>", special=True) for k in range(missing)])
    stats.vocab_size = tok.get_vocab_size(with_added_tokens=True)
    assert stats.vocab_size == target, (stats.vocab_size, target)
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{output}.tmp"
        tok.save(tmp, pretty=True)
        os.replace(tmp, output)
    return tok, stats
