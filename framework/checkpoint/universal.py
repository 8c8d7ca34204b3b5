"""Layout-free checkpoints of the engine: each rank saves what it owns, loads what it needs.

What a rank owns of each parameter (its model name, its tensor-parallel box from `tp_box`):
- ZeRO-3: its partition of the flattened TP-local parameter (DeepSpeed's `ds_tensor` range);
- ZeRO-1/2 and DeepSpeed's bf16 optimizer: the fragment of its flat fp32 partition that falls in
  the parameter (`_hp_mapping`, uneven 1-D ranges);
- ZeRO-0 in fp32 (replicated over DP): an even 1/DP flat range, so DP ranks share the writing;
- replicated over the tensor group (norms): only tensor rank 0 writes; the tied embedding's copy on
  the last pipeline stage is not written (the first stage's is).
It writes the fp32 master weight, both Adam moments and, when training in bf16/fp16, the
training-dtype weight: weights + optimizer state and nothing twice (in fp32 the master is the
weight). `framework.checkpoint.sharded` stores the pieces with their global offsets, one file per
rank, in parallel; nothing is gathered anywhere.

Loading reads, through `ShardedReader`, exactly the regions this rank holds under the new layout
(any DP x TP x PP x ZeRO, one process included; ZeRO 1/2 <-> 3 too) and writes them through
DeepSpeed's fragment views. Same layout, same bits: fp32 masters and moments are restored exactly
and the 16-bit weights are their cast, as DeepSpeed computes them after a step. A checkpoint without
Adam moments (HF import, weights-only convert) starts them at zero.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, Optional

import torch
import torch.distributed as dist

from framework.checkpoint.sharded import Piece, ShardedReader, write_shard

MOMENTS = ("exp_avg", "exp_avg_sq")


def _inner_optimizer(engine) -> torch.optim.Optimizer:
    opt = engine.ds.optimizer
    while not isinstance(opt, torch.optim.Optimizer) or hasattr(opt, "optimizer"):
        opt = opt.optimizer
    return opt


def _topology(engine):
    from framework.parallel import topology

    topo = topology.current()
    if topo is not None:
        return topo
    world = dist.get_world_size() if dist.is_initialized() else 1
    return topology.Topology(topology.Layout(world, 1, 1), dist.get_rank() if dist.is_initialized() else 0)


def _named_params(engine) -> list[tuple[str, torch.Tensor]]:
    """(model name, local parameter) for every parameter this rank holds, tied copies included."""
    from framework.parallel.parallelize import local_names

    module = engine.ds.module
    params = dict(module.named_parameters(remove_duplicate=False))
    return [(full, params[local]) for local, full in local_names(module).items()]


def _link_fragments(engine) -> None:
    """(Re)point ZeRO-1/2 parameters' fragment views at the current Adam state tensors (DeepSpeed
    links them once, lazily, and not again when the state is created or replaced later)."""
    from deepspeed.utils import lazy_init_hp_params_optimizer_state

    opt = engine.ds.optimizer
    if hasattr(opt, "single_partition_of_fp32_groups"):  # ZeRO-1/2
        lp, hp = opt.bit16_groups, opt.single_partition_of_fp32_groups
    elif hasattr(opt, "fp32_groups_flat_partition"):  # DeepSpeed's bf16 optimizer (ZeRO-0 in bf16)
        lp, hp = opt.bf16_groups, opt.fp32_groups_flat_partition
    else:
        return
    for i, _ in enumerate(opt.optimizer.param_groups):
        lazy_init_hp_params_optimizer_state(lp[i], hp[i], opt.optimizer.state)


def _masters(engine) -> dict[int, torch.Tensor]:
    """id(model parameter) -> its fp32 master where DeepSpeed keeps one per parameter (ZeRO-0 in
    bf16/fp16: FP16_UnfusedOptimizer's `fp32_groups`); empty where the parameter is its own master."""
    opt = engine.ds.optimizer
    lows, highs = getattr(opt, "fp16_groups", None), getattr(opt, "fp32_groups", None)
    if not lows or not highs:
        return {}
    return {id(lo): hi for lg, hg in zip(lows, highs) for lo, hi in zip(lg, hg)}


def adam_step(engine) -> int:
    for state in _inner_optimizer(engine).state.values():
        if "step" in state:
            return int(float(state["step"]))
    return 0


def _ensure_state(engine, step: Optional[int]) -> None:
    """Give every optimizer parameter Adam state (zeros) and `step` (if given), so it can be read/set."""
    inner = _inner_optimizer(engine)
    outer = engine.ds.optimizer
    if hasattr(outer, "fp32_partitioned_groups_flat"):  # ZeRO-3 empties param_groups between steps
        targets = list(outer.fp32_partitioned_groups_flat)
    else:
        targets = [p for group in inner.param_groups for p in group["params"]]
    for p in targets:
        state = inner.state[p]
        for key in MOMENTS:
            if key not in state:
                state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if step is not None or "step" not in state:
            state["step"] = torch.tensor(float(step or 0), dtype=torch.float32)


def _flat_range(engine, p: torch.Tensor, numel: int, dp_rank: int, dp: int) -> Optional[tuple[int, int]]:
    """The flat range of the TP-local parameter this rank's optimizer partition covers (None: none)."""
    if hasattr(p, "ds_id"):  # ZeRO-3: equal partitions of the (padded) flat parameter
        size = p.ds_tensor.numel()
        start = dp_rank * size
        return (start, min(numel, start + size)) if start < numel else None
    if hasattr(p, "_hp_mapping"):  # ZeRO-1/2, bf16 optimizer: this rank's fragment, if any
        if p._hp_mapping is None:
            return None
        addr = p._hp_mapping.lp_fragment_address
        return addr.start, addr.start + addr.numel
    return None  # replicated optimizer state (ZeRO-0 fp32)


def _owned(engine, topo) -> Iterator[tuple[str, torch.Tensor, tuple, tuple, tuple[int, int], str]]:
    """(name, param, global shape, box, flat range, how) of every piece this rank writes."""
    from framework.parallel.parallelize import partition_dim, tp_box

    dp_rank, dp = topo.dp_rank, topo.layout.data
    for name, p in _named_params(engine):
        if getattr(p, "ds_pipe_replicated", False):
            continue  # the tied embedding's copy on the last stage: the first stage writes it
        if partition_dim(p) < 0 and topo.tp_rank != 0:
            continue  # replicated over the tensor group: tensor rank 0 writes it
        shape, box = tp_box(p, topo)
        numel = math.prod(n for _, n in box)
        if hasattr(p, "ds_id") or hasattr(p, "_hp_mapping"):
            flat = _flat_range(engine, p, numel, dp_rank, dp)
            how = "zero3" if hasattr(p, "ds_id") else "fragment"
        else:  # replicated over DP: each DP rank writes an even share
            chunk = math.ceil(numel / dp)
            flat = (dp_rank * chunk, min(numel, (dp_rank + 1) * chunk))
            flat = flat if flat[0] < flat[1] else None
            how = "replicated"
        if flat is not None and flat[1] > flat[0]:
            yield name, p, shape, box, flat, how


def _local_state(
    engine, p: torch.Tensor, how: str, flat: tuple[int, int], key: Optional[str], masters: dict[int, torch.Tensor]
) -> torch.Tensor:
    """This rank's fp32 master (key None) or Adam moment for `flat` of parameter `p`."""
    from deepspeed.utils import safe_get_local_fp32_param, safe_get_local_optimizer_state

    n = flat[1] - flat[0]
    if how == "zero3":
        t = safe_get_local_fp32_param(p) if key is None else safe_get_local_optimizer_state(p, key)
        return t.reshape(-1)[:n]
    if how == "fragment":
        return p._hp_mapping.get_hp_fragment(key).reshape(-1)
    p = masters.get(id(p), p)
    if key is None:
        return p.detach().reshape(-1)[flat[0] : flat[1]]
    state = _inner_optimizer(engine).state.get(p, {})
    if key not in state:
        return torch.zeros(n, dtype=torch.float32)
    return state[key].reshape(-1)[flat[0] : flat[1]]


def _local_weight(p: torch.Tensor, how: str, flat: tuple[int, int]) -> torch.Tensor:
    """The training-dtype weight for `flat` (bf16/fp16 runs)."""
    if how == "zero3":
        return p.ds_tensor.reshape(-1)[: flat[1] - flat[0]]
    return p.detach().reshape(-1)[flat[0] : flat[1]]


@torch.no_grad()
def save_shard(engine, path: str | Path, metadata: Optional[dict] = None, record: Optional[dict] = None) -> int:
    """Write this rank's pieces to `path` (one safetensors file); returns bytes written. Not collective.
    `record`, if given, receives the file's size and checksum (computed while writing)."""
    topo = _topology(engine)
    _ensure_state(engine, None)
    _link_fragments(engine)
    sixteen = engine.cfg.train.precision != "fp32"
    masters = _masters(engine)

    def items():
        for name, p, shape, box, flat, how in _owned(engine, topo):
            for key in (None, *MOMENTS):
                t = _local_state(engine, p, how, flat, key, masters)
                yield Piece(name, key or "fp32", shape, box, flat), t.float()
            if sixteen:
                yield Piece(name, "param", shape, box, flat), _local_weight(p, how, flat)

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return write_shard(path, items(), metadata=metadata, record=record)


@torch.no_grad()
def load(engine, reader: ShardedReader, step: int) -> None:
    """Restore weights, fp32 masters and Adam moments (and Adam's `step`) from any layout's pieces."""
    from deepspeed.utils import safe_set_local_fp32_param, safe_set_local_optimizer_state

    from framework.parallel.parallelize import tp_box

    topo = _topology(engine)
    _ensure_state(engine, step)
    _link_fragments(engine)
    masters = _masters(engine)
    # weights: the fp32 masters; a checkpoint of the earliest format has only `model.safetensors` ("param")
    wkind = {name: "fp32" if reader.has(name, "fp32") else "param" for name, _ in _named_params(engine)}
    missing = [name for name, _ in _named_params(engine) if not reader.has(name, wkind[name])]
    if missing:
        raise KeyError(
            f"{reader.folder}: no weights for {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''} (is this a checkpoint of the same model?)"
        )
    for name, p in _named_params(engine):
        shape, box = tp_box(p, topo)
        if tuple(reader.shape(name, wkind[name])) != tuple(shape):
            raise ValueError(
                f"{reader.folder}: {name} has shape {reader.shape(name, wkind[name])} in the checkpoint, "
                f"the model expects {tuple(shape)}"
            )
        numel = math.prod(n for _, n in box)

        def read(kind: str, flat=None) -> torch.Tensor:
            kind = wkind[name] if kind == "fp32" else kind
            if kind in MOMENTS and not reader.has(name, kind):  # weights-only checkpoint: moments start at zero
                n = numel if flat is None else flat[1] - flat[0]
                return torch.zeros(n if flat is not None else tuple(n for _, n in box))
            return reader.read(name, kind, box=box, flat=flat, dtype=torch.float32)

        if hasattr(p, "ds_id"):  # ZeRO-3: only this rank's partition is read
            flat = _flat_range(engine, p, numel, topo.dp_rank, topo.layout.data)
            size = p.ds_tensor.numel()
            for kind in ("fp32", *MOMENTS):
                part = torch.zeros(size, dtype=torch.float32)
                if flat is not None:
                    part[: flat[1] - flat[0]] = read(kind, flat)
                if kind == "fp32":
                    p.ds_tensor.copy_(part.to(p.ds_tensor.dtype))
                    safe_set_local_fp32_param(p, part.to(p.ds_tensor.device))
                    if getattr(p, "ds_persist", False) and p.data.numel() == numel:  # kept gathered too
                        p.data.copy_(read("fp32").to(p.dtype).reshape(p.data.shape))
                else:
                    safe_set_local_optimizer_state(p, part.to(p.ds_tensor.device), kind)
            continue
        weight = read("fp32")
        p.data.copy_(weight.to(p.dtype).reshape(p.shape))
        if hasattr(p, "_hp_mapping"):
            if p._hp_mapping is None:
                continue
            lo, hi = _flat_range(engine, p, numel, topo.dp_rank, topo.layout.data)
            p._hp_mapping.get_hp_fragment().copy_(weight.reshape(-1)[lo:hi])
            for kind in MOMENTS:
                p._hp_mapping.get_hp_fragment(kind).copy_(read(kind, (lo, hi)))
            continue
        master = masters.get(id(p))
        if master is not None:  # ZeRO-0 bf16/fp16: a separate fp32 master per parameter
            master.copy_(weight.reshape(master.shape))
        state = _inner_optimizer(engine).state[master if master is not None else p]
        for kind in MOMENTS:
            state[kind].copy_(read(kind).reshape(state[kind].shape))
