"""Layer factories: the only place the model gets its linears, embeddings, norms and loss from.

They return plain torch modules and nothing else: the model knows nothing of parallelism.
`framework.parallel.tensor` swaps them for megatron-core tensor-parallel layers afterwards, by a
name -> style plan (torchtitan-style), so `transformer.py` has no `if tp > 1` and reads no globals.

Initial values are not drawn here. Each linear and embedding carries its init std as the attribute
`init_std`; `framework.model.init` turns (seed, parameter name, std) into values that are the same
under any layout, so a model built on the meta device can be materialised shard by shard.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _tag(module: nn.Module, std: float) -> nn.Module:
    module.init_std = std
    return module


def column_linear(in_features: int, out_features: int, bias: bool = False, init_std: float = 0.02) -> nn.Module:
    """A linear whose output dimension tensor parallelism may split (q/k/v, up, gate)."""
    return _tag(nn.Linear(in_features, out_features, bias=bias), init_std)


def row_linear(in_features: int, out_features: int, bias: bool = False, init_std: float = 0.02) -> nn.Module:
    """A linear whose input dimension tensor parallelism may split (attention out, down)."""
    return _tag(nn.Linear(in_features, out_features, bias=bias), init_std)


def vocab_embedding(vocab_size: int, dim: int, init_std: float = 0.02) -> nn.Module:
    return _tag(nn.Embedding(vocab_size, dim), init_std)


def position_embedding(seq_len: int, dim: int, init_std: float = 0.02) -> nn.Module:
    return _tag(nn.Embedding(seq_len, dim), init_std)  # replicated under tensor parallelism


def lm_head(dim: int, vocab_size: int, init_std: float = 0.02) -> nn.Module:
    """The output projection to vocabulary logits (tensor parallelism may split the vocabulary)."""
    return _tag(nn.Linear(dim, vocab_size, bias=False), init_std)


def norm(kind: str, dim: int, eps: float) -> nn.Module:
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    raise ValueError(f"unknown norm {kind!r} (expected rmsnorm or layernorm)")


class CrossEntropy(nn.Module):
    """Mean next-token loss in fp32 over all positions: (B, T, V) logits, (B, T) targets.

    A module (not a function) so tensor parallelism can swap in the vocabulary-parallel loss."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))
