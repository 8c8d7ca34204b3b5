"""`parallelize(cfg, build)`: the model for this rank under the configured layout (torchtitan-style).

Initial weights must not depend on the layout (same seed, same numbers at any DP x TP x PP), so the
full model is built first exactly as a single process builds it; the tensor-parallel model is
then built by the same code (the layer factories return megatron-core layers while a topology is
active) and given its slices of the full weights, and a pipeline keeps only its stage's layers.
Building the full model once per rank costs its fp32 size in host memory at start-up; for models
that do not fit, start from a converted checkpoint instead (`framework.checkpoint.universal`).

`shard_full_state_dict` / `gather_full_state_dict` move between the model's own (layout-free)
parameter names and shapes and this rank's module; they are also what universal checkpoints use.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.distributed as dist
from torch import nn

from framework.parallel import topology


def tp_split(full: torch.Tensor, param: torch.Tensor, topo: topology.Topology) -> torch.Tensor:
    """This rank's slice of a full tensor for `param` (the full tensor itself if replicated)."""
    dim = int(getattr(param, "partition_dim", -1)) if getattr(param, "tensor_model_parallel", False) else -1
    if dim < 0 or topo.layout.tensor == 1:
        return full
    return full.chunk(topo.layout.tensor, dim=dim)[topo.tp_rank]


def local_names(module: nn.Module) -> dict[str, str]:
    """This rank's parameter names -> the model's full names (identity unless a pipeline stage)."""
    if hasattr(module, "anvil_layer_names"):
        from framework.parallel.pipeline import stage_param_names

        return stage_param_names(module)
    seen, out = set(), {}
    for name, p in module.named_parameters():
        if id(p) not in seen:
            seen.add(id(p))
            out[name] = name
    return out


@torch.no_grad()
def shard_full_state_dict(module: nn.Module, full: dict[str, torch.Tensor],
                          topo: Optional[topology.Topology] = None) -> None:
    """Copy this rank's slices of layout-free weights `full` into `module`'s parameters."""
    topo = topo or topology.current()
    params = dict(module.named_parameters(remove_duplicate=False))
    for local, name in local_names(module).items():
        if name not in full:
            raise KeyError(f"weight {name!r} missing from the full state dict")
        p = params[local]
        src = tp_split(full[name], p, topo) if topo is not None else full[name]
        if src.shape != p.shape:
            raise ValueError(f"weight {name!r}: slice {tuple(src.shape)} does not fit parameter {tuple(p.shape)}")
        p.copy_(src)


@torch.no_grad()
def gather_tensor(t: torch.Tensor, param: torch.Tensor, topo: topology.Topology) -> torch.Tensor:
    """All-gather a tensor-parallel tensor (a weight or its optimizer moment) over the tensor group."""
    dim = int(getattr(param, "partition_dim", -1)) if getattr(param, "tensor_model_parallel", False) else -1
    if dim < 0 or topo.layout.tensor == 1:
        return t
    from megatron.core import parallel_state as ps

    group = ps.get_tensor_model_parallel_group()
    parts = [torch.empty_like(t) for _ in range(topo.layout.tensor)]
    dist.all_gather(parts, t.contiguous(), group=group)
    return torch.cat(parts, dim=dim)


def parallelize(build: Callable[[], nn.Module], topo: Optional[topology.Topology],
                activation_checkpointing: bool = False, seed: int = 1234) -> nn.Module:
    """Build the model for this rank: plain, tensor-parallel, and/or one pipeline stage.

    `build()` must construct the model deterministically (it seeds itself); it is called with the
    factories returning plain layers, then (with tensor parallelism) again with parallel ones.
    """
    if topo is None or topo.layout.tensor == 1 and topo.layout.pipeline == 1:
        return build()
    with topology.plain_layers():
        full = build()
    model = full
    if topo.layout.tensor > 1:
        model = build()
        shard_full_state_dict(model, {k: v for k, v in full.state_dict().items()}, topo)
        del full
        from framework.parallel.tensor import sync_sequence_parallel_grads

        sync_sequence_parallel_grads(model)
    if topo.layout.pipeline > 1:
        from framework.parallel.pipeline import to_pipeline

        model = to_pipeline(model, topo, activation_checkpointing=activation_checkpointing, seed=seed)
    return model


def global_grad_norm(params: list[torch.Tensor]) -> torch.Tensor:
    """L2 norm of the whole model's gradient from this rank's (tensor/pipeline-split) parameters.

    Tensor-parallel shards are summed over the tensor group, replicated parameters counted once,
    pipeline stages summed, and the tied embedding's copy on the last stage skipped (DeepSpeed
    marks it `ds_pipe_replicated`). Without model parallelism it is torch's total norm.
    """
    topo = topology.current()
    grads = [p.grad for p in params if p.grad is not None]
    if topo is None or topo.layout.tensor * topo.layout.pipeline == 1:
        return torch.nn.utils.get_total_norm(grads)
    sq = torch.zeros((), dtype=torch.float64)
    for p in params:
        if p.grad is None or getattr(p, "ds_pipe_replicated", False):
            continue
        if getattr(p, "tensor_model_parallel", False) or topo.tp_rank == 0:
            sq += p.grad.detach().double().pow(2).sum()
    from megatron.core import parallel_state as ps

    dist.all_reduce(sq, group=ps.get_model_parallel_group())
    return sq.sqrt().float()


@torch.no_grad()
def gather_full_state_dict(module: nn.Module, topo: topology.Topology) -> Optional[dict[str, torch.Tensor]]:
    """Layout-free fp32 weights on global rank 0 (None elsewhere). Collective over all ranks."""
    params = dict(module.named_parameters())
    mine: dict[str, torch.Tensor] = {}
    for local, name in local_names(module).items():
        full = gather_tensor(params[local].detach().float(), params[local], topo)
        if topo.dp_rank == 0 and topo.tp_rank == 0:
            mine[name] = full.cpu().clone()
    parts: list = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(mine, parts, dst=0)  # our own tensors between our own ranks
    if dist.get_rank() != 0:
        return None
    out: dict[str, torch.Tensor] = {}
    for part in parts:
        out.update(part)
    return out
