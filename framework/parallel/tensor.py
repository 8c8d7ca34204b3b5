"""Tensor-parallel layers: megatron-core's `tensor_parallel` modules behind plain-module manners.

The model asks `framework/model/layers.py` for its linears and embeddings; when a topology with
tensor > 1 is active those factories return the classes here. Each one is megatron-core's layer
(initialised on CPU from the full master weight, so the shards equal slices of a single-process
layer initialised the same way) with a `forward(x) -> tensor` like `nn.Linear`/`nn.Embedding`, and
the same parameter names (`weight`, `bias`), so state dicts read like a plain model's.

Activations are batch-first `[b, s, h]` as in the model. With `sequence_parallel` the embedding and
the row-parallel linears hand out `[b, s/tp, h]` and the column-parallel linears gather the sequence
back, so norms and residuals hold a slice of the sequence (Korthikanti et al. 2022). Megatron's own
sequence-parallel mappings allocate with `torch.cuda.current_device()` and need reduce-scatter, which
gloo lacks, so the two small autograd functions below do the gathering/scattering with all-gather and
all-reduce (same result; on NCCL a reduce-scatter would move half the bytes). Parameters that see
only a slice of the sequence (norms) get their gradient summed over the tensor group by
`sync_sequence_parallel_grads`, as Megatron does for its layernorms.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from megatron.core import ModelParallelConfig, parallel_state
from megatron.core import tensor_parallel as tp

from framework.parallel import topology


def model_parallel_config(topo: topology.Topology, dtype: torch.dtype = torch.float32) -> ModelParallelConfig:
    return ModelParallelConfig(
        tensor_model_parallel_size=topo.layout.tensor,
        pipeline_model_parallel_size=topo.layout.pipeline,
        pipeline_dtype=dtype,
        params_dtype=dtype,
        sequence_parallel=False,  # done by the wrappers below (megatron's mappings need CUDA)
        use_cpu_initialization=True,
        perform_initialization=True,
    )


def normal_init(std: float) -> Callable[[torch.Tensor], None]:
    return lambda w: nn.init.normal_(w, mean=0.0, std=std)


def _tp_group():
    return parallel_state.get_tensor_model_parallel_group()


class _GatherSequence(torch.autograd.Function):
    """Forward: all-gather the sequence dim 1; backward: sum over the group, keep this rank's slice."""

    @staticmethod
    def forward(ctx, x):
        group = _tp_group()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        ctx.rank, ctx.n = dist.get_rank(group), len(parts)
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=_tp_group())
        return grad.chunk(ctx.n, dim=1)[ctx.rank].contiguous()


class _ScatterSequence(torch.autograd.Function):
    """Forward: keep this rank's slice of the (replicated) sequence; backward: all-gather it."""

    @staticmethod
    def forward(ctx, x):
        group = _tp_group()
        ctx.n = dist.get_world_size(group)
        if x.shape[1] % ctx.n:
            raise ValueError(f"sequence parallelism: sequence length {x.shape[1]} is not divisible by tensor={ctx.n}")
        return x.chunk(ctx.n, dim=1)[dist.get_rank(group)].contiguous()

    @staticmethod
    def backward(ctx, grad):
        parts = [torch.empty_like(grad) for _ in range(ctx.n)]
        dist.all_gather(parts, grad.contiguous(), group=_tp_group())
        return torch.cat(parts, dim=1)


def gather_sequence(x: torch.Tensor) -> torch.Tensor:
    return _GatherSequence.apply(x)


def scatter_sequence(x: torch.Tensor) -> torch.Tensor:
    return _ScatterSequence.apply(x)


class ColumnLinear(tp.ColumnParallelLinear):
    """Y = X A with A split by output features; the output stays split (`gather_output=False`)."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = False, init_std: float = 0.02,
                 gather_output: bool = False, topo: topology.Topology | None = None):
        topo = topo or topology.current()
        # With the sequence split, the gather's backward already sums the input gradient.
        super().__init__(in_features, out_features, config=model_parallel_config(topo), init_method=normal_init(init_std),
                         bias=bias, gather_output=gather_output, skip_bias_add=False,
                         disable_grad_reduce=topo.sequence_parallel)
        self.sequence_split = topo.sequence_parallel
        if bias:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sequence_split:
            x = gather_sequence(x)
        out, _ = super().forward(x)
        return out


class RowLinear(tp.RowParallelLinear):
    """Y = X A with A split by input features; the input arrives split, the output is summed."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = False, init_std: float = 0.02,
                 topo: topology.Topology | None = None):
        topo = topo or topology.current()
        super().__init__(in_features, out_features, config=model_parallel_config(topo), init_method=normal_init(init_std),
                         bias=bias, input_is_parallel=True, skip_bias_add=False)
        self.sequence_split = topo.sequence_parallel
        if bias:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = super().forward(x)
        return scatter_sequence(out) if self.sequence_split else out


class VocabEmbedding(tp.VocabParallelEmbedding):
    """Token embedding with the vocabulary split over the tensor group."""

    def __init__(self, num_embeddings: int, embedding_dim: int, *, init_std: float = 0.02,
                 topo: topology.Topology | None = None):
        topo = topo or topology.current()
        cfg = model_parallel_config(topo)
        super().__init__(num_embeddings, embedding_dim, init_method=normal_init(init_std), config=cfg)
        self.sequence_split = topo.sequence_parallel

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        out = super().forward(idx)
        return scatter_sequence(out) if self.sequence_split else out


class VocabHead(ColumnLinear):
    """Output projection to vocabulary-parallel logits `[b, s, V/tp]` for `cross_entropy`."""

    def __init__(self, d_model: int, vocab_size: int, *, init_std: float = 0.02, topo: topology.Topology | None = None):
        super().__init__(d_model, vocab_size, bias=False, init_std=init_std, gather_output=False, topo=topo)


def tied_head_forward(embedding: VocabEmbedding, x: torch.Tensor) -> torch.Tensor:
    """Logits through the (vocabulary-split) input embedding's weight, for tied embeddings."""
    if getattr(embedding, "sequence_split", False):
        x = gather_sequence(x)
    elif parallel_state.get_tensor_model_parallel_world_size() > 1:
        x = tp.copy_to_tensor_model_parallel_region(x)
    return torch.matmul(x, embedding.weight.t())


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean token loss from vocabulary-parallel logits (equals `F.cross_entropy` on full logits)."""
    losses = tp.vocab_parallel_cross_entropy(logits.float(), targets)
    return losses.mean()


def gather_vocab_logits(logits: torch.Tensor) -> torch.Tensor:
    """Full-vocabulary logits from the tensor group's shards (for sampling and evaluation)."""
    return tp.gather_from_tensor_model_parallel_region(logits)


def sync_sequence_parallel_grads(module: nn.Module) -> int:
    """Sum the gradients of replicated parameters over the tensor group (sequence parallelism).

    With the sequence split, a norm's weight sees only this rank's tokens; its full gradient is the
    sum over the group. A tensor hook does it during backward, before DeepSpeed reads the gradient.
    Returns how many parameters were hooked.
    """
    topo = topology.current()
    if topo is None or not topo.sequence_parallel:
        return 0
    group = parallel_state.get_tensor_model_parallel_group()

    def reduce(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, group=group)
        return grad

    n = 0
    for p in module.parameters():
        if p.requires_grad and not getattr(p, "tensor_model_parallel", False):
            p.register_hook(reduce)
            p.sequence_parallel = True
            n += 1
    return n


def is_tensor_parallel(p: torch.Tensor) -> bool:
    return bool(getattr(p, "tensor_model_parallel", False))


def partition_dim(p: torch.Tensor) -> int:
    """The dimension a tensor-parallel parameter is split along (-1 for replicated ones)."""
    return int(getattr(p, "partition_dim", -1)) if is_tensor_parallel(p) else -1


__all__ = ["ColumnLinear", "RowLinear", "VocabEmbedding", "VocabHead", "tied_head_forward", "cross_entropy",
           "gather_vocab_logits", "sync_sequence_parallel_grads", "is_tensor_parallel", "partition_dim",
           "model_parallel_config"]
