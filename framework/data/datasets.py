"""Training data: packed, blended, split samples from tokenized prefixes, and a resumable sampler.

Packing, blending and splitting are megatron-core's `GPTDataset` + `BlendedMegatronDatasetBuilder`
(the code Megatron-LM and NeMo train with): documents are shuffled and packed into `seq_len + 1`
token samples, several prefixes are mixed by weight, and the index caches (`.npy` files keyed by a
hash of the config) are built once by rank 0 in `cache_dir` and loaded by every other rank and
every rerun.

The sampler is ours: it maps the global sample index to ranks, so a checkpoint only needs
`consumed_samples`. Global batch `b` is samples `[b*G, (b+1)*G)`; data-parallel rank `r` takes the
`r`-th contiguous slice of it. The union over ranks of one global batch is the same samples in the
same order for any data-parallel size, which is what lets a run saved at DP=2 resume at DP=1 or 4.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from framework.data.shards import PrefixError, file_sha256, inspect_prefix, max_token_id, read_sidecar, strip_prefix


@dataclass
class MegatronTokenizerInfo:
    """What megatron-core's GPTDataset needs from a tokenizer (ids only: text is already tokenized).

    No `pad` attribute on purpose: GPTDataset then uses -1 as padding, so no real token id is ever
    masked or rewritten in the samples it returns.
    """

    vocab_size: int
    eod: int
    unique_identifiers: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.unique_identifiers = {"class": "anvil", "vocab_size": self.vocab_size, "eod": self.eod}


class TokenSamples:
    """`ds[i]` -> int64 array of `seq_len + 1` tokens (input = [:-1], labels = [1:]).

    Wraps the megatron top-level dataset (a BlendedDataset, or a GPTDataset for one prefix).
    `source(i)` tells which prefix sample `i` came from.
    """

    def __init__(self, dataset, paths: Sequence[str], seq_len: int):
        self.dataset = dataset
        self.paths = list(paths)
        self.seq_len = seq_len
        self._blended = hasattr(dataset, "dataset_index")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> np.ndarray:
        if not 0 <= idx < len(self.dataset):
            raise IndexError(f"sample {idx} out of range for a dataset of {len(self.dataset)} samples")
        item = self.dataset[int(idx)]
        # GPTDataset returns tokens = text[:-1], labels = text[1:]; rebuild the packed text.
        return np.concatenate([item["tokens"].numpy(), item["labels"].numpy()[-1:]]).astype(np.int64)

    def source(self, idx: int) -> int:
        if not self._blended:
            return 0
        if self.dataset.dataset_index is None:  # megatron loads its cached indices lazily
            self.dataset[0]
        return int(self.dataset.dataset_index[idx])


def _ensure_process_group():
    """megatron's BlendedDataset calls `torch.distributed.get_rank()` when it writes a cache, so a
    lone process gets a private 1-rank gloo group (in-memory store, no port); returns a cleanup."""
    import torch.distributed as dist

    if dist.is_initialized():
        return lambda: None
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    return dist.destroy_process_group


def build_datasets(
    paths: list[str],
    weights: list[float],
    split: str,
    seq_len: int,
    seed: int,
    num_train_samples: int,
    num_valid_samples: int,
    cache_dir: str,
    vocab_size: int,
    eod_id: int,
    is_built_on_rank: Optional[Callable[[], bool]] = None,
) -> tuple[TokenSamples, Optional[TokenSamples]]:
    """Build (train, valid) sample datasets over a weighted blend of tokenized prefixes.

    `weights` empty = proportional to prefix size. `split` is megatron's "train,valid,test" shares
    of each prefix's documents (e.g. "98,2,0"). Collective when a process group exists: call on
    every rank (rank 0 writes the caches in `cache_dir`, the others load them after a barrier).
    `valid` is None when the split gives validation no documents or `num_valid_samples` is 0.
    """
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    if not paths:
        raise ValueError("build_datasets: no data paths given")
    if weights and len(weights) != len(paths):
        raise ValueError(f"build_datasets: {len(weights)} weights for {len(paths)} paths")
    if weights and (any(w < 0 for w in weights) or sum(weights) <= 0):
        raise ValueError(f"build_datasets: weights must be >= 0 with a positive sum, got {weights}")
    if num_train_samples <= 0:
        raise ValueError(f"build_datasets: num_train_samples must be positive, got {num_train_samples}")
    prefixes = [strip_prefix(p) for p in paths]
    for prefix in prefixes:
        info = inspect_prefix(prefix)  # clear errors for missing / truncated / empty prefixes
        if info.documents < 1:
            raise PrefixError(f"{prefix}: no documents")
    if weights:  # megatron rejects zero weights; a zero-weight source simply takes no part
        kept = [(p, w) for p, w in zip(prefixes, weights) if w > 0]
        prefixes, weights = [p for p, _ in kept], [float(w) for _, w in kept]
    try:
        shares = [float(s) for s in split.replace("/", ",").split(",")]
    except ValueError:
        shares = []
    if not 1 <= len(shares) <= 3 or any(s < 0 for s in shares) or sum(shares) <= 0:
        raise ValueError(f"split {split!r}: expected 'train,valid,test' shares such as '98,2,0'")
    shares += [0.0] * (3 - len(shares))
    has_valid = shares[1] > 0 and num_valid_samples > 0
    if not has_valid:  # no validation wanted: its documents go to training
        shares = [shares[0] + shares[1], 0.0, shares[2]]
    split_str = ",".join(str(s) for s in shares)

    os.makedirs(cache_dir, exist_ok=True)
    config = GPTDatasetConfig(
        random_seed=seed,
        sequence_length=seq_len,
        blend=(prefixes, weights if weights and len(prefixes) > 1 else None),
        split=split_str,
        path_to_cache=cache_dir,
        tokenizer=MegatronTokenizerInfo(vocab_size, eod_id),
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=False,
        mmap_bin_files=True,
    )
    sizes = [num_train_samples, num_valid_samples if has_valid else 0, 0]
    cleanup = _ensure_process_group()
    try:
        train, valid, _ = BlendedMegatronDatasetBuilder(
            GPTDataset, sizes, is_built_on_rank or (lambda: True), config
        ).build()
    finally:
        cleanup()
    return (
        TokenSamples(train, prefixes, seq_len),
        TokenSamples(valid, prefixes, seq_len) if valid is not None and has_valid else None,
    )


def micro_batch_indices(
    consumed_samples: int, global_batch_size: int, micro_batch_size: int, dp_rank: int, dp_size: int
) -> list[list[int]]:
    """This rank's micro-batches (global sample indices) for the global batch starting at
    `consumed_samples`. Depends only on these numbers, never on how many batches came before."""
    if dp_size < 1 or not 0 <= dp_rank < dp_size:
        raise ValueError(f"dp_rank {dp_rank} is not in [0, dp_size={dp_size})")
    if micro_batch_size < 1 or global_batch_size % (micro_batch_size * dp_size):
        raise ValueError(
            f"global_batch_size {global_batch_size} is not divisible by "
            f"micro_batch_size x dp_size = {micro_batch_size} x {dp_size}"
        )
    if consumed_samples % global_batch_size:
        raise ValueError(
            f"consumed_samples {consumed_samples} is not a multiple of "
            f"global_batch_size {global_batch_size} (a checkpoint mid-batch?)"
        )
    per_rank = global_batch_size // dp_size
    start = consumed_samples + dp_rank * per_rank
    return [list(range(s, s + micro_batch_size)) for s in range(start, start + per_rank, micro_batch_size)]


class GlobalBatchSampler:
    """Iterates this rank's micro-batches from `consumed_samples` on, one global batch at a time,
    stopping before a global batch that would run past `total_samples`. Usable as a DataLoader
    `batch_sampler`; `consumed_samples` advances by one global batch per `global_batch_size //
    (micro_batch_size * dp_size)` micro-batches yielded."""

    def __init__(
        self,
        total_samples: int,
        consumed_samples: int,
        global_batch_size: int,
        micro_batch_size: int,
        dp_rank: int,
        dp_size: int,
    ):
        micro_batch_indices(0, global_batch_size, micro_batch_size, dp_rank, dp_size)  # validates
        self.total_samples, self.consumed_samples = total_samples, consumed_samples
        self.global_batch_size, self.micro_batch_size = global_batch_size, micro_batch_size
        self.dp_rank, self.dp_size = dp_rank, dp_size

    def __len__(self) -> int:
        batches = max(0, (self.total_samples - self.consumed_samples) // self.global_batch_size)
        return batches * self.global_batch_size // (self.micro_batch_size * self.dp_size)

    def __iter__(self) -> Iterator[list[int]]:
        consumed = self.consumed_samples
        while consumed + self.global_batch_size <= self.total_samples:
            yield from micro_batch_indices(
                consumed, self.global_batch_size, self.micro_batch_size, self.dp_rank, self.dp_size
            )
            consumed += self.global_batch_size


def check_compatible(
    prefix_or_paths: str | Sequence[str], tokenizer_path: Optional[str], model_vocab_size: int
) -> dict:
    """Fail before training when tokenizer, shards and model disagree; return what was checked.

    Checks: tokenizer vocabulary <= model.vocab_size; each prefix's sidecar vocabulary and
    tokenizer hash match the tokenizer; the sidecar dtype matches the `.idx`; the largest token id
    (from the sidecar, or a scan of `.bin` for prefixes written by other tools) < model.vocab_size.
    """
    paths = [prefix_or_paths] if isinstance(prefix_or_paths, (str, os.PathLike)) else list(prefix_or_paths)
    report: dict = {"model_vocab_size": model_vocab_size, "prefixes": []}
    tok_vocab = tok_hash = None
    if tokenizer_path:
        from tokenizers import Tokenizer

        if not os.path.isfile(tokenizer_path):
            raise ValueError(f"tokenizer {tokenizer_path}: file not found")
        tok_vocab = Tokenizer.from_file(str(tokenizer_path)).get_vocab_size(with_added_tokens=True)
        tok_hash = file_sha256(tokenizer_path)
        report["tokenizer_vocab_size"] = tok_vocab
        if tok_vocab > model_vocab_size:
            raise ValueError(
                f"vocabulary mismatch: tokenizer {tokenizer_path} has {tok_vocab} tokens but "
                f"model.vocab_size is {model_vocab_size}"
            )
    for path in paths:
        prefix = strip_prefix(path)
        info = inspect_prefix(prefix)
        meta = read_sidecar(prefix)
        entry = {"prefix": prefix, "dtype": info.dtype.name, "tokens": info.tokens}
        if meta is not None:
            if meta.get("dtype") != info.dtype.name:
                raise ValueError(
                    f"dtype mismatch: {prefix}.json says {meta.get('dtype')} but {prefix}.idx holds {info.dtype.name}"
                )
            if tok_vocab is not None and meta.get("vocab_size") != tok_vocab:
                raise ValueError(
                    f"vocabulary mismatch: {prefix} was tokenized with a {meta.get('vocab_size')}-token "
                    f"vocabulary but tokenizer {tokenizer_path} has {tok_vocab}"
                )
            if tok_hash is not None and meta.get("tokenizer_sha256") != tok_hash:
                raise ValueError(
                    f"tokenizer mismatch: {prefix} was tokenized with tokenizer sha256 "
                    f"{str(meta.get('tokenizer_sha256'))[:12]} but {tokenizer_path} is {tok_hash[:12]}"
                )
            top = int(meta.get("max_token_id", meta.get("vocab_size", 0) - 1))
        else:
            top = max_token_id(prefix)
        entry["max_token_id"] = top
        if top >= model_vocab_size:
            raise ValueError(
                f"vocabulary mismatch: {prefix} holds token id {top} but model.vocab_size is "
                f"{model_vocab_size} (ids must be < {model_vocab_size})"
            )
        report["prefixes"].append(entry)
    return report
