"""Input shards for tokenizer training and tokenization, read through the shared readers.

One `Source` per input file (`data_pipeline.io.readers.expand_inputs` decides files and their
order), so tokenization can resume file by file. A file's identity is its path, size and
modification time: a file that changed since a completed part is tokenized again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Sequence

from data_pipeline.tokens.tokenize import Source


def input_sources(inputs: Sequence[str]) -> list[Source]:
    from data_pipeline.io.readers import expand_inputs, read_documents

    files = expand_inputs(list(inputs))
    if not files:
        raise FileNotFoundError(f"no supported input files in {' '.join(map(str, inputs))}")
    sources = []
    for path in files:
        st = path.stat()
        sources.append(
            Source(
                str(path),
                {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns},
                lambda on_reject=None, p=path: read_documents(p, on_reject),
            )
        )
    return sources


def iter_input_texts(
    inputs: Sequence[str], rejected: dict[str, int] | None = None, rejected_path: str | Path | None = None
) -> Iterator[str]:
    """Texts of every document of `inputs`, in order; unreadable records are counted by reason
    in `rejected` and written as JSON lines to `rejected_path` (created only when needed)."""
    handle = None

    def on_reject(rec: dict) -> None:
        nonlocal handle
        if rejected is not None:
            rejected[rec["reason"]] = rejected.get(rec["reason"], 0) + 1
        if rejected_path is not None:
            if handle is None:
                Path(rejected_path).parent.mkdir(parents=True, exist_ok=True)
                handle = open(rejected_path, "w", encoding="utf-8")
            handle.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")

    try:
        for source in input_sources(inputs):
            for doc in source.open(on_reject):
                yield doc.text
    finally:
        if handle is not None:
            handle.close()
