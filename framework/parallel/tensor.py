"""Tensor parallelism: megatron-core's `tensor_parallel` layers swapped into a plain model by a plan.

`apply_tensor_parallel(model, topo)` walks the plain model (normally still on the meta device) and
replaces each module that `TP_PLAN` names (a module-name pattern -> a style: column, row,
vocabulary embedding, vocabulary head, vocabulary-parallel loss) with the class here, as
torchtitan's `parallelize_module` does with DTensor styles. Each class is megatron-core's layer
allocating only its shard (no initialisation: `framework.model.init` fills shards later with
layout-free values), with a `forward(x) -> tensor` like `nn.Linear`/`nn.Embedding` and the same
parameter names (`weight`, `bias`), so state dicts read like a plain model's.

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

import fnmatch

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
        use_cpu_initialization=True,  # allocate with torch.empty on the default device (meta while building)
        perform_initialization=False,  # framework.model.init fills the shards
    )


def _no_init(_: torch.Tensor) -> None:
    raise AssertionError("megatron-core must not initialise Anvil's layers (perform_initialization=False)")


def _mark_split(p: torch.Tensor, dim: int) -> None:
    """Megatron sets these while initialising, which it no longer does here."""
    tp.set_tensor_model_parallel_attributes(p, True, dim, 1)


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

    def __init__(
        self,
        in_features: int,
        out_features: int,
        topo: topology.Topology,
        *,
        bias: bool = False,
        gather_output: bool = False,
    ):
        # With the sequence split, the gather's backward already sums the input gradient.
        super().__init__(
            in_features,
            out_features,
            config=model_parallel_config(topo),
            init_method=_no_init,
            bias=bias,
            gather_output=gather_output,
            skip_bias_add=False,
            disable_grad_reduce=topo.sequence_parallel,
        )
        _mark_split(self.weight, 0)
        self.sequence_split = topo.sequence_parallel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sequence_split:
            x = gather_sequence(x)
        out, _ = super().forward(x)
        return out


class RowLinear(tp.RowParallelLinear):
    """Y = X A with A split by input features; the input arrives split, the output is summed."""

    def __init__(self, in_features: int, out_features: int, topo: topology.Topology, *, bias: bool = False):
        super().__init__(
            in_features,
            out_features,
            config=model_parallel_config(topo),
            init_method=_no_init,
            bias=bias,
            input_is_parallel=True,
            skip_bias_add=False,
        )
        _mark_split(self.weight, 1)
        self.sequence_split = topo.sequence_parallel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = super().forward(x)
        return scatter_sequence(out) if self.sequence_split else out


class VocabEmbedding(tp.VocabParallelEmbedding):
    """Token embedding with the vocabulary split over the tensor group."""

    def __init__(self, num_embeddings: int, embedding_dim: int, topo: topology.Topology):
        super().__init__(num_embeddings, embedding_dim, init_method=_no_init, config=model_parallel_config(topo))
        _mark_split(self.weight, 0)
        self.sequence_split = topo.sequence_parallel

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        out = super().forward(idx)
        return scatter_sequence(out) if self.sequence_split else out


class VocabHead(ColumnLinear):
    """Output projection to vocabulary-parallel logits `[b, s, V/tp]` for `cross_entropy`."""

    def __init__(self, d_model: int, vocab_size: int, topo: topology.Topology):
        super().__init__(d_model, vocab_size, topo, bias=False, gather_output=False)


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


class VocabCrossEntropy(nn.Module):
    """The model's loss module for vocabulary-parallel logits."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return cross_entropy(logits, targets)


# Module-name pattern -> style. Everything not named here (norms, learned positions) is replicated.
TP_PLAN: dict[str, str] = {
    "embed.tok": "vocab_embedding",
    "blocks.*.attn.q_proj": "column",
    "blocks.*.attn.k_proj": "column",
    "blocks.*.attn.v_proj": "column",
    "blocks.*.attn.o_proj": "row",
    "blocks.*.mlp.gate_proj": "column",
    "blocks.*.mlp.up_proj": "column",
    "blocks.*.mlp.down_proj": "row",
    "blocks.*.mlp.fc_in": "column",
    "blocks.*.mlp.fc_out": "row",
    "head": "vocab_head",
    "loss": "vocab_cross_entropy",
}


def _parallel_module(style: str, plain: nn.Module, topo: topology.Topology) -> nn.Module:
    if style == "column":
        return ColumnLinear(plain.in_features, plain.out_features, topo, bias=plain.bias is not None)
    if style == "row":
        return RowLinear(plain.in_features, plain.out_features, topo, bias=plain.bias is not None)
    if style == "vocab_embedding":
        return VocabEmbedding(plain.num_embeddings, plain.embedding_dim, topo)
    if style == "vocab_head":
        return VocabHead(plain.in_features, plain.out_features, topo)
    if style == "vocab_cross_entropy":
        return VocabCrossEntropy()
    raise ValueError(f"unknown tensor-parallel style {style!r}")


def apply_tensor_parallel(model: nn.Module, topo: topology.Topology, plan: dict[str, str] | None = None) -> int:
    """Swap the modules `plan` names for tensor-parallel ones (in place); returns how many.

    Call it on a model built under `torch.device("meta")`: the new layers are allocated on the
    current default device, so build them under the meta device too and materialise later. Each
    replacement keeps the plain module's `init_std`; a tied head shares the embedding's shard."""
    plan = TP_PLAN if plan is None else plan
    swapped = 0
    for name, module in list(model.named_modules()):
        style = next((s for pattern, s in plan.items() if fnmatch.fnmatchcase(name, pattern)), None)
        if style is None:
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        new = _parallel_module(style, module, topo)
        if hasattr(module, "init_std"):
            new.init_std = module.init_std
        setattr(parent, attr, new)
        swapped += 1
    cfg = getattr(model, "cfg", None)
    if cfg is not None and cfg.tie_embeddings:
        model.head.weight = model.embed.tok.weight
    return swapped


def gather_vocab_logits(logits: torch.Tensor) -> torch.Tensor:
    """Full-vocabulary logits from the tensor group's shards (for sampling and evaluation)."""
    return tp.gather_from_tensor_model_parallel_region(logits)


def sync_sequence_parallel_grads(module: nn.Module, topo: topology.Topology) -> int:
    """Sum the gradients of replicated parameters over the tensor group (sequence parallelism).

    With the sequence split, a norm's weight sees only this rank's tokens; its full gradient is the
    sum over the group. A tensor hook does it during backward, before DeepSpeed reads the gradient.
    Returns how many parameters were hooked.
    """
    if not topo.sequence_parallel:
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


__all__ = [
    "ColumnLinear",
    "RowLinear",
    "VocabEmbedding",
    "VocabHead",
    "VocabCrossEntropy",
    "TP_PLAN",
    "apply_tensor_parallel",
    "tied_head_forward",
    "cross_entropy",
    "gather_vocab_logits",
    "sync_sequence_parallel_grads",
    "is_tensor_parallel",
    "partition_dim",
    "model_parallel_config",
]
