"""Real training data that needs no download: `builtin_data(cache_dir) -> (prefix, tokenizer_path)`.

The trainer falls back to this when `data.paths` is empty, so `anvil train configs/train/tiny.yaml`
trains on text out of the box. It trains a 384-token byte-level BPE tokenizer (the tiny model's
default `model.vocab_size`) on the sample corpus (`data_pipeline.sample`: stdlib docstrings,
package READMEs and licences) and tokenizes that corpus into a Megatron prefix. Built once per
`cache_dir` under a file lock (ranks started together wait for the first), byte-identical for a
given installation.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

BUILTIN_VOCAB = 384
VERSION = "builtin-v1"


def builtin_data(cache_dir: str | os.PathLike, vocab_size: int = BUILTIN_VOCAB) -> tuple[str, str]:
    from data_pipeline.sample import iter_sample_documents
    from data_pipeline.tokens.tokenize import Source, tokenize_sources
    from data_pipeline.tokens.tokenizer import train_tokenizer

    from data_pipeline.tokens.tokenizer import MIN_VOCAB, padded_vocab_size

    if vocab_size < MIN_VOCAB or padded_vocab_size(vocab_size) != vocab_size:
        raise ValueError(
            f"the built-in data needs model.vocab_size to be a multiple of 128 and at least "
            f"{MIN_VOCAB} (its tokenizer pads to one), got {vocab_size}"
        )
    root = Path(cache_dir) / f"{VERSION}-{vocab_size}"
    root.mkdir(parents=True, exist_ok=True)
    tokenizer_path, prefix, done = root / "tokenizer.json", root / "sample", root / "done.json"
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.is_file():
            train_tokenizer((d.text for d in iter_sample_documents()), vocab_size, tokenizer_path)
            stats = tokenize_sources(
                [Source("sample", {"corpus": VERSION}, lambda on_reject=None: iter_sample_documents())],
                str(tokenizer_path),
                str(prefix),
                workers=1,
            )
            done.write_text(json.dumps({"documents": stats.documents, "tokens": stats.tokens}))
        fcntl.flock(lock, fcntl.LOCK_UN)
    return str(prefix), str(tokenizer_path)
