"""Layer factories: the only place the model gets its linears, embeddings, norms and loss from.

The model calls these instead of `nn.Linear` / `nn.Embedding` so that parallelism stays out of it:
today they return plain torch modules; `framework/parallel` can make them return megatron-core
tensor-parallel layers (column / row parallel linears, a vocab-parallel embedding and loss) when a
tensor-parallel group is configured, without a single `if tp > 1` in `transformer.py`.

Every factory takes the init std and initialises its weights (normal(0, std), zero biases), so a
parallel replacement can initialise its shard the same way.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from framework.parallel.topology import tensor_parallel



def _init_linear(layer: nn.Linear, std: float) -> nn.Linear:
    if layer.weight.device.type != "meta":
        nn.init.normal_(layer.weight, mean=0.0, std=std)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    return layer


def column_linear(in_features: int, out_features: int, bias: bool = False, init_std: float = 0.02) -> nn.Module:
    """A linear whose output dimension may be split across tensor-parallel ranks (q/k/v, up, gate)."""
    if tensor_parallel():
        from framework.parallel.tensor import ColumnLinear

        return ColumnLinear(in_features, out_features, bias=bias, init_std=init_std)
    return _init_linear(nn.Linear(in_features, out_features, bias=bias), init_std)


def row_linear(in_features: int, out_features: int, bias: bool = False, init_std: float = 0.02) -> nn.Module:
    """A linear whose input dimension may be split across tensor-parallel ranks (attention out, down)."""
    if tensor_parallel():
        from framework.parallel.tensor import RowLinear

        return RowLinear(in_features, out_features, bias=bias, init_std=init_std)
    return _init_linear(nn.Linear(in_features, out_features, bias=bias), init_std)


def vocab_embedding(vocab_size: int, dim: int, init_std: float = 0.02) -> nn.Module:
    if tensor_parallel():
        from framework.parallel.tensor import VocabEmbedding

        return VocabEmbedding(vocab_size, dim, init_std=init_std)
    emb = nn.Embedding(vocab_size, dim)
    if emb.weight.device.type != "meta":
        nn.init.normal_(emb.weight, mean=0.0, std=init_std)
    return emb


def position_embedding(seq_len: int, dim: int, init_std: float = 0.02) -> nn.Module:
    emb = nn.Embedding(seq_len, dim)  # replicated under tensor parallelism
    if emb.weight.device.type != "meta":
        nn.init.normal_(emb.weight, mean=0.0, std=init_std)
    return emb


def lm_head(dim: int, vocab_size: int, init_std: float = 0.02) -> nn.Module:
    """The output projection to vocabulary logits (may be split over the vocabulary)."""
    if tensor_parallel():
        from framework.parallel.tensor import VocabHead

        return VocabHead(dim, vocab_size, init_std=init_std)
    return _init_linear(nn.Linear(dim, vocab_size, bias=False), init_std)


def norm(kind: str, dim: int, eps: float) -> nn.Module:
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    raise ValueError(f"unknown norm {kind!r} (expected rmsnorm or layernorm)")


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss in fp32 over all positions: (B, T, V) logits, (B, T) targets."""
    if tensor_parallel():  # logits are split over the vocabulary
        from framework.parallel.tensor import cross_entropy as vocab_parallel_cross_entropy

        return vocab_parallel_cross_entropy(logits, targets)
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))
