"""Megatron indexed-dataset prefixes on disk: checking them and their `PREFIX.json` sidecar.

A prefix is `PREFIX.bin` (tokens) + `PREFIX.idx` (header, sequence lengths, pointers, document
indices) in Megatron-LM's format. megatron-core trusts both files: a truncated `.idx` surfaces as
a numpy buffer error deep inside dataset building, a short `.bin` as garbage samples. `inspect_prefix`
reads the header and checks both file sizes against it, so a damaged prefix fails first, naming the
file and the byte counts. The sidecar records what the tokenizer run knew (vocabulary, dtype,
tokenizer hash, counts) so that training can refuse mismatched inputs before it starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INDEX_HEADER = b"MMIDIDX\x00\x00"
# megatron.core.datasets.indexed_dataset.DType codes
DTYPE_CODES = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.float32,
    8: np.uint16,
}
SIDECAR_FORMAT = "anvil-tokens/1"


class PrefixError(ValueError):
    """A prefix that cannot be used as training data; the message names the file and the reason."""


@dataclass(frozen=True)
class PrefixInfo:
    prefix: str
    dtype: np.dtype
    sequences: int
    documents: int
    tokens: int


def strip_prefix(path: str | os.PathLike) -> str:
    """Accept `PREFIX`, `PREFIX.bin`, `PREFIX.idx` or `PREFIX.json`; return `PREFIX`."""
    text = str(path)
    for ext in (".bin", ".idx", ".json"):
        if text.endswith(ext):
            return text[: -len(ext)]
    return text


def inspect_prefix(prefix: str | os.PathLike) -> PrefixInfo:
    """Read and check `PREFIX.idx` against its own header and `PREFIX.bin`; raise PrefixError."""
    prefix = strip_prefix(prefix)
    idx, bin_ = Path(prefix + ".idx"), Path(prefix + ".bin")
    for f in (idx, bin_):
        if not f.is_file():
            raise PrefixError(f"{f}: missing (a tokenized prefix needs both PREFIX.bin and PREFIX.idx)")
    size = idx.stat().st_size
    with open(idx, "rb") as fh:
        head = fh.read(34)
    if len(head) < 34 or head[:9] != INDEX_HEADER:
        raise PrefixError(f"{idx}: not a Megatron index file (bad or short header, {size} bytes)")
    version, code, n_seq, n_doc = struct.unpack("<QBQQ", head[9:34])
    if version != 1 or code not in DTYPE_CODES:
        raise PrefixError(f"{idx}: unsupported index version {version} or dtype code {code}")
    expected = 34 + n_seq * (4 + 8) + n_doc * 8
    if size < expected:
        raise PrefixError(
            f"{idx}: truncated: header promises {n_seq} sequences and {n_doc - 1} documents "
            f"({expected} bytes) but the file has {size} bytes"
        )
    dtype = np.dtype(DTYPE_CODES[code])
    lengths = np.memmap(idx, dtype=np.int32, mode="r", offset=34, shape=(n_seq,)) if n_seq else np.zeros(0)
    tokens = int(lengths.sum(dtype=np.int64))
    del lengths
    bin_size = bin_.stat().st_size
    if bin_size != tokens * dtype.itemsize:
        raise PrefixError(
            f"{bin_}: {bin_size} bytes but {idx.name} describes {tokens} {dtype.name} tokens "
            f"({tokens * dtype.itemsize} bytes); the pair is truncated or mismatched"
        )
    if n_seq == 0 or tokens == 0:
        raise PrefixError(f"{prefix}: holds no tokens (empty input?); nothing to train on")
    return PrefixInfo(prefix, dtype, int(n_seq), int(n_doc) - 1, tokens)


def max_token_id(prefix: str | os.PathLike, chunk: int = 1 << 26) -> int:
    """Largest token id in `PREFIX.bin` (a streaming scan; ~GB/s from page cache)."""
    info = inspect_prefix(prefix)
    data = np.memmap(info.prefix + ".bin", dtype=info.dtype, mode="r")
    best = 0
    for start in range(0, len(data), chunk):
        best = max(best, int(data[start : start + chunk].max()))
    del data
    return best


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar_path(prefix: str) -> Path:
    return Path(strip_prefix(prefix) + ".json")


def read_sidecar(prefix: str) -> dict | None:
    path = sidecar_path(prefix)
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PrefixError(f"{path}: not valid JSON ({exc})") from exc
    if meta.get("format") != SIDECAR_FORMAT:
        raise PrefixError(f"{path}: expected format {SIDECAR_FORMAT!r}, got {meta.get('format')!r}")
    return meta


def write_sidecar(prefix: str, meta: dict) -> None:
    path = sidecar_path(prefix)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"format": SIDECAR_FORMAT, **meta}, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
