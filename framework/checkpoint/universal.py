"""Universal (layout-free) checkpoints: save under one DP x TP x PP x ZeRO layout, resume under any.

Every Anvil checkpoint already holds the full fp32 weights under the model's own parameter names
(`model.safetensors`). This module adds `optimizer.safetensors`: for every parameter its fp32
master weight (`fp32.NAME`) and Adam moments (`exp_avg.NAME`, `exp_avg_sq.NAME`), full-size, plus
the Adam step in the metadata. Saving gathers over the data-parallel group with DeepSpeed's
fragment API (`safe_get_full_optimizer_state`, which covers ZeRO 1, 2 and 3), over the tensor group
with an all-gather along each parameter's partition dimension, and over pipeline stages to rank 0.
Loading slices the full tensors for this rank and writes them through the inverse calls, so any
layout reads any other one, single process included, and ZeRO 1/2 <-> 3 too, which DeepSpeed's
own `ds_to_universal` cannot do. Step, learning-rate schedule (a function of the step) and data
position (consumed samples) live in `anvil.json` and are restored by the trainer.

The same-layout resume keeps using DeepSpeed's engine checkpoint (bit-identical, faster); the
trainer's store switches to `load` here only when the layout changed or `ds/` is absent.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist

FORMAT = "anvil-universal/1"
OPTIMIZER_FILE = "optimizer.safetensors"
MOMENTS = ("exp_avg", "exp_avg_sq")


def _inner_optimizer(engine) -> torch.optim.Optimizer:
    opt = engine.ds.optimizer
    while not isinstance(opt, torch.optim.Optimizer) or hasattr(opt, "optimizer"):
        opt = opt.optimizer
    return opt


def _zero(engine) -> int:
    return engine.cfg.parallel.zero_stage


def _shape(p: torch.Tensor) -> torch.Size:
    return p.ds_shape if hasattr(p, "ds_shape") else p.shape


def _topology(engine):
    from framework.parallel import topology

    return topology.current() or topology.Topology(topology.Layout(dist.get_world_size(), 1, 1), dist.get_rank())


def _named_params(engine) -> list[tuple[str, torch.Tensor]]:
    from framework.parallel.parallelize import local_names

    module = engine.ds.module
    params = dict(module.named_parameters())
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


def adam_step(engine) -> int:
    inner = _inner_optimizer(engine)
    for state in inner.state.values():
        if "step" in state:
            return int(float(state["step"]))
    return 0


def _full_state(engine, p: torch.Tensor, key: Optional[str]) -> torch.Tensor:
    """This rank's (tensor-parallel-local) full-over-DP fp32 tensor: master weight or a moment."""
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    if hasattr(p, "ds_id") or hasattr(p, "_hp_mapping"):  # ZeRO 1-3 (collective over DP)
        t = safe_get_full_fp32_param(p) if key is None else safe_get_full_optimizer_state(p, key)
        return t.detach().float().reshape(_shape(p))
    if key is None:
        return p.detach().float()
    state = _inner_optimizer(engine).state.get(p, {})
    return state[key].detach().float() if key in state else torch.zeros_like(p, dtype=torch.float32)


@torch.no_grad()
def save_optimizer(engine, folder: str | Path) -> None:
    """Write `folder/optimizer.safetensors` (rank 0). Collective: every rank calls it."""
    from safetensors.torch import save_file

    from framework.parallel.parallelize import gather_tensor

    topo = _topology(engine)
    _ensure_state(engine, None)
    _link_fragments(engine)
    mine: dict[str, torch.Tensor] = {}
    for name, p in _named_params(engine):
        for key in (None, *MOMENTS):
            t = gather_tensor(_full_state(engine, p, key), p, topo)
            if topo.dp_rank == 0 and topo.tp_rank == 0:
                mine[f"{key or 'fp32'}.{name}"] = t.cpu().contiguous().clone()
    parts = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(mine, parts, dst=0)  # our own tensors between our own ranks
    step = adam_step(engine)
    if dist.get_rank() == 0:
        tensors: dict[str, torch.Tensor] = {}
        for part in parts:
            tensors.update(part)
        layout = {"data": topo.layout.data, "tensor": topo.layout.tensor, "pipeline": topo.layout.pipeline,
                  "zero_stage": _zero(engine)}
        save_file(tensors, str(Path(folder) / OPTIMIZER_FILE),
                  metadata={"format": FORMAT, "adam_step": str(step), "layout": json.dumps(layout)})


def optimizer_from_weights(model_file: str | Path, out_file: str | Path) -> None:
    """An `optimizer.safetensors` for a weights-only checkpoint: master weights = the weights, Adam
    moments zero, step 0, so it resumes under any layout like any other universal checkpoint."""
    from safetensors.torch import load_file, save_file

    tensors = {}
    for name, w in load_file(str(model_file)).items():
        w = w.float().contiguous()
        tensors[f"fp32.{name}"] = w
        for key in MOMENTS:
            tensors[f"{key}.{name}"] = torch.zeros_like(w)
    save_file(tensors, str(out_file), metadata={"format": FORMAT, "adam_step": "0", "layout": "{}"})


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


@torch.no_grad()
def load(engine, ckpt: str | Path) -> dict:
    """Restore weights, master weights and Adam moments of a checkpoint saved under any layout."""
    from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state
    from safetensors import safe_open

    from framework.parallel.parallelize import tp_split

    ckpt = Path(ckpt)
    opt_file = ckpt / OPTIMIZER_FILE
    if not opt_file.is_file():
        raise FileNotFoundError(f"{opt_file}: missing; this checkpoint can only resume under its own layout")
    topo = _topology(engine)
    with safe_open(str(opt_file), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"{opt_file}: format {meta.get('format')!r}, expected {FORMAT!r}")
        step = int(meta["adam_step"])
        _ensure_state(engine, step)
        _link_fragments(engine)
        named = _named_params(engine)
        zero3 = _zero(engine) == 3
        params = [p for _, p in named]
        if zero3:
            import deepspeed

            gathered = deepspeed.zero.GatheredParameters(params, modifier_rank=0)
            gathered.__enter__()
        try:
            for name, p in named:
                full = {key: tp_split(f.get_tensor(f"{key}.{name}"), p, topo) for key in ("fp32", *MOMENTS)}
                p.data.copy_(full["fp32"].to(p.dtype).reshape(p.shape))
                if hasattr(p, "ds_id") or hasattr(p, "_hp_mapping"):
                    safe_set_full_fp32_param(p, full["fp32"])
                    for key in MOMENTS:
                        safe_set_full_optimizer_state(p, full[key], key)
                else:
                    state = _inner_optimizer(engine).state[p]
                    for key in MOMENTS:
                        state[key].copy_(full[key].reshape(state[key].shape))
        finally:
            if zero3:
                gathered.__exit__(None, None, None)
    return {"adam_step": step, "saved_layout": json.loads(meta.get("layout", "{}"))}
