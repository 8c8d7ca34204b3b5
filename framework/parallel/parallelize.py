"""`parallelize(model, topo, cfg, device)`: this rank's part of a plain model, never the whole model.

The model arrives plain and on the meta device (`build_meta_model`): no memory, no values. Parallelism
is then applied in one stated order, torchtitan-style, with the topology passed in:

    tensor      swap linears / embeddings / head / loss for megatron-core layers (`tensor.TP_PLAN`)
    sequence    those layers split the sequence (a flag of the topology); norm gradients are summed
    activation checkpointing   a flag of the model (or of the pipeline module)
    pipeline    cut the chain of pieces into stages; this rank keeps its stage's layers
    materialise allocate this rank's shards on `device` and fill them with layout-free initial values
                (`framework.model.init`: row r of parameter NAME from seed hash(seed, NAME, r))
    ZeRO-3      partition each unit (embedding, block, norm, head) right after it is materialised

So peak start-up memory per rank is its shard plus one unit (one transformer block, or the
embedding), and the same seed gives the same weights at any layout.

`shard_full_state_dict` copies layout-free weights into this rank's module (imports); `tp_box` says
which rectangle of a full parameter this rank's tensor-parallel shard is.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.distributed as dist
from torch import nn

from framework.model import init
from framework.parallel import topology


def build_meta_model(cfg) -> nn.Module:
    """The plain Transformer of `cfg.model` on the meta device (no memory, no values)."""
    from framework.model.transformer import Transformer

    with torch.device("meta"):
        return Transformer(cfg.model)


def tp_box(
    param: torch.Tensor, topo: Optional[topology.Topology]
) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
    """(global shape, box) of this rank's tensor-parallel shard of `param` (box = (start, length) per dim)."""
    shape = tuple(param.ds_shape if hasattr(param, "ds_shape") else param.shape)
    dim = partition_dim(param)
    if dim < 0 or topo is None or topo.layout.tensor == 1:
        return shape, init.full_box(shape)
    full = list(shape)
    full[dim] *= topo.layout.tensor
    box = [(0, n) for n in shape]
    box[dim] = (topo.tp_rank * shape[dim], shape[dim])
    return tuple(full), tuple(box)


def partition_dim(param: torch.Tensor) -> int:
    return int(getattr(param, "partition_dim", -1)) if getattr(param, "tensor_model_parallel", False) else -1


def tp_split(full: torch.Tensor, param: torch.Tensor, topo: Optional[topology.Topology]) -> torch.Tensor:
    """This rank's slice of a full tensor for `param` (the full tensor itself if replicated)."""
    _, box = tp_box(param, topo)
    return full[tuple(slice(s, s + n) for s, n in box)]


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
def shard_full_state_dict(
    module: nn.Module, full: dict[str, torch.Tensor], topo: Optional[topology.Topology] = None
) -> None:
    """Copy this rank's slices of layout-free weights `full` into `module`'s parameters."""
    params = dict(module.named_parameters(remove_duplicate=False))
    for local, name in local_names(module).items():
        if name not in full:
            raise KeyError(f"weight {name!r} missing from the full state dict")
        p = params[local]
        src = tp_split(full[name], p, topo)
        if src.shape != p.shape:
            raise ValueError(f"weight {name!r}: slice {tuple(src.shape)} does not fit parameter {tuple(p.shape)}")
        p.copy_(src)


@torch.no_grad()
def materialize(
    model: nn.Module,
    rules: dict[str, init.Rule],
    seed: int,
    topo: Optional[topology.Topology],
    device: torch.device,
    keep: Callable[[str], bool] = lambda name: True,
    dtype: torch.dtype = torch.float32,
    replaced: Optional[dict] = None,
) -> int:
    """Allocate and initialise the meta parameters of `model` whose full name `keep` accepts.

    Names are the plain model's (call it before a pipeline renames them). Each parameter is replaced
    by a new one on `device` holding this rank's tensor-parallel box of the layout-free values; its
    attributes (tensor-parallel markers) carry over, tied references follow (also across calls that
    share `replaced`). Returns the number of elements made."""
    replaced = {} if replaced is None else replaced
    made = 0
    for mname, module in model.named_modules():
        for pname, p in list(module._parameters.items()):
            if p is None or not p.is_meta:
                continue
            if id(p) in replaced:  # a tied reference to a parameter made already
                module._parameters[pname] = replaced[id(p)][1]
                continue
            full = f"{mname}.{pname}" if mname else pname
            if not keep(full):
                continue
            shape, box = tp_box(p, topo)
            data = init.values(rules[full], full, shape, seed, box, dtype=dtype).to(device)
            new = nn.Parameter(data, requires_grad=p.requires_grad)
            new.__dict__.update(p.__dict__)
            module._parameters[pname] = new
            replaced[id(p)] = (p, new)  # the old one stays referenced: its id cannot be reused
            made += data.numel()
    return made


def units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The pieces ZeRO-3 partitions one at a time: direct children, a ModuleList's items each."""
    out = []
    for name, child in model.named_children():
        if isinstance(child, nn.ModuleList):
            out += [(f"{name}.{i}", block) for i, block in enumerate(child)]
        else:
            out.append((name, child))
    return out


def _zero3_partition(unit: nn.Module, ds_config: dict, topo: Optional[topology.Topology], dtype: torch.dtype) -> None:
    import deepspeed

    mpu = topo.mpu() if topo is not None else None
    group = mpu.get_data_parallel_group() if mpu is not None else None
    deepspeed.zero.Init(module=unit, data_parallel_group=group, mpu=mpu, dtype=dtype, config_dict_or_path=ds_config)


def _every_parameter(name: str) -> bool:
    return True


def parallelize(
    model: nn.Module, topo: Optional[topology.Topology], cfg, device: torch.device, ds_config: Optional[dict] = None
) -> nn.Module:
    """This rank's module for the meta-device plain `model` under `topo` (None: one process).

    `cfg` is the RunConfig (seed, parallel and precision settings); `ds_config` the DeepSpeed config
    (needed for ZeRO-3, whose parameters are partitioned as they are materialised)."""
    rules = init.rules(model)  # by the plain model's names, before anything is swapped
    seed, par = cfg.seed, cfg.parallel
    if topo is not None and topo.layout.tensor > 1:  # tensor (sequence parallelism is part of the topology)
        from framework.parallel import tensor

        with torch.device("meta"):
            tensor.apply_tensor_parallel(model, topo)
    model.activation_checkpointing = par.activation_checkpointing  # activation checkpointing
    pipelined = topo is not None and topo.layout.pipeline > 1
    keep: Callable[[str], bool] = _every_parameter
    if pipelined:  # pipeline: materialise only this stage's layers
        from framework.parallel.pipeline import stage_param_full_names

        keep = stage_param_full_names(model, topo).__contains__
    zero3 = par.zero_stage == 3
    dtype = (
        {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.precision, torch.float32)
        if zero3
        else torch.float32
    )
    if zero3:  # materialise and partition one unit at a time
        if ds_config is None:
            raise ValueError("parallelize: ZeRO-3 needs the DeepSpeed config")
        shared: dict = {}
        for name, unit in units(model):
            if materialize(model, rules, seed, topo, device, lambda n: n.startswith(name + "."), dtype, shared):
                _zero3_partition(unit, ds_config, topo, dtype)
    else:
        materialize(model, rules, seed, topo, device, keep)
    if topo is not None and topo.sequence_parallel:
        from framework.parallel import tensor

        tensor.sync_sequence_parallel_grads(model, topo)
    if pipelined:
        from framework.parallel.pipeline import to_pipeline

        model = to_pipeline(model, topo, activation_checkpointing=par.activation_checkpointing, seed=seed)
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
