"""Loading a tokenizer the way training and generation need it, and Anvil's vocabulary conventions.

Training tokenizers is curation work (`data_pipeline.tokens.tokenizer`); reading one is what the
framework does (the trainer's end-of-document id, the default `model.vocab_size`, generation).
Conventions: `<|endoftext|>` (id 0) ends a document, `<|pad|>` (id 1) pads, and the vocabulary is
padded to a multiple of 128 (tensor-parallel embedding splits need equal shards; Megatron and
GPT-NeoX pad the same way).
"""

from __future__ import annotations

import os
from pathlib import Path

EOD_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = [EOD_TOKEN, PAD_TOKEN]
VOCAB_MULTIPLE = 128
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)


def padded_vocab_size(n: int, multiple: int = VOCAB_MULTIPLE) -> int:
    return -(-n // multiple) * multiple


def tokenizer_vocab_size(path: str | os.PathLike) -> int:
    """Tokens in tokenizer.json, added tokens included."""
    return load_tokenizer(path).get_vocab_size(with_added_tokens=True)


def load_tokenizer(path: str | os.PathLike):
    """Load tokenizer.json; special-token strings inside documents are encoded as plain text
    (a document quoting "<|endoftext|>" must not end early)."""
    from tokenizers import Tokenizer

    if not Path(path).is_file():
        raise FileNotFoundError(f"tokenizer {path}: file not found")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:
        raise ValueError(f"tokenizer {path}: not a Hugging Face tokenizers file ({exc})") from exc
    tok.encode_special_tokens = True
    return tok


def special_ids(tok) -> tuple[int, int | None]:
    """(end-of-document id, padding id or None) of a loaded tokenizer."""
    eod = tok.token_to_id(EOD_TOKEN)
    if eod is None:
        for name in ("</s>", "<|end_of_text|>", "<eos>"):  # tokenizers trained elsewhere
            eod = tok.token_to_id(name)
            if eod is not None:
                break
    if eod is None:
        raise ValueError(f"tokenizer has no end-of-document token ({EOD_TOKEN!r} or </s>)")
    return eod, tok.token_to_id(PAD_TOKEN)
