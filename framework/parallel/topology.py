"""One place that turns `parallel.{tensor, pipeline}` and the world size into DP/TP/PP groups.

Megatron-core's `parallel_state` (used by its tensor-parallel layers) and DeepSpeed (ZeRO's data-
parallel group, the pipeline engine's grid) each build their own process groups. They must put the
same ranks in the same groups, or gradients are averaged over the wrong peers; the mismatch only
shows when data and pipeline parallelism are both > 1. The rank order used everywhere here is
megatron's default `tp-cp-ep-dp-pp` (tensor fastest, then data, then pipeline), which is exactly
DeepSpeed's `PipeModelDataParallelTopology(num_pp, num_mp, num_dp)` (axes pipe, data, model):

    rank = tp + TP * (dp + DP * pp)

`rank_groups` states that order as a pure function; `initialize` builds both libraries' groups and
checks them against it before any model exists. Without pipelines DeepSpeed takes an `mpu` object:
`DeepSpeedMPU` adapts megatron's `parallel_state` to the functions DeepSpeed calls.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

from framework.configtree import ConfigError


@dataclass(frozen=True)
class Layout:
    """Sizes of the three parallel dimensions; their product is the world size."""

    data: int = 1
    tensor: int = 1
    pipeline: int = 1

    @property
    def world_size(self) -> int:
        return self.data * self.tensor * self.pipeline

    def coords(self, rank: int) -> tuple[int, int, int]:
        """(dp, tp, pp) coordinates of a global rank."""
        tp = rank % self.tensor
        dp = (rank // self.tensor) % self.data
        pp = rank // (self.tensor * self.data)
        return dp, tp, pp

    def rank(self, dp: int, tp: int, pp: int) -> int:
        return tp + self.tensor * (dp + self.data * pp)

    def __str__(self) -> str:
        return f"DP{self.data}xTP{self.tensor}xPP{self.pipeline}"


def layout_from_config(world_size: int, tensor: int, pipeline: int) -> Layout:
    from framework.config import layout_problems

    problems = layout_problems(None, world_size, tensor, pipeline)
    if problems:
        raise ConfigError(problems[0])
    return Layout(world_size // (tensor * pipeline), tensor, pipeline)


def validate_layout(cfg, world_size: int) -> Layout:
    """All layout checks for a `RunConfig` (`framework.config.layout_problems`), before any process
    group is made; the layout."""
    dp = cfg.check_layout(world_size)
    return Layout(dp, cfg.parallel.tensor, cfg.parallel.pipeline)


def rank_groups(layout: Layout) -> dict[str, list[list[int]]]:
    """Every group of each kind, as sorted rank lists: the single source of truth for rank order."""
    out: dict[str, list[list[int]]] = {"data": [], "tensor": [], "pipeline": [], "model": []}
    D, T, P = layout.data, layout.tensor, layout.pipeline
    for pp in range(P):
        for tp in range(T):
            out["data"].append([layout.rank(dp, tp, pp) for dp in range(D)])
        for dp in range(D):
            out["tensor"].append([layout.rank(dp, tp, pp) for tp in range(T)])
    for dp in range(D):
        for tp in range(T):
            out["pipeline"].append([layout.rank(dp, tp, pp) for pp in range(P)])
        out["model"].append(sorted(layout.rank(dp, tp, pp) for tp in range(T) for pp in range(P)))
    return out


def deepspeed_topology(layout: Layout):
    """DeepSpeed's pipeline topology for `layout` (same rank order as megatron's default)."""
    from deepspeed.runtime.pipe.topology import PipeModelDataParallelTopology

    return PipeModelDataParallelTopology(num_pp=layout.pipeline, num_mp=layout.tensor, num_dp=layout.data)


def deepspeed_groups(layout: Layout) -> dict[str, list[list[int]]]:
    """The groups DeepSpeed's topology forms, in `rank_groups`' vocabulary (pure; no process group)."""
    topo = deepspeed_topology(layout)
    names = {"data": "data", "tensor": "model", "pipeline": "pipe"}
    return {ours: sorted(sorted(g) for g in topo.get_axis_comm_lists(theirs)) for ours, theirs in names.items()}


class DeepSpeedMPU:
    """The model-parallel unit DeepSpeed's engine expects, backed by megatron-core's groups.

    DeepSpeed calls "model parallel" what megatron calls tensor x pipeline; without pipelines (the
    only case where DeepSpeed accepts an mpu) those are the tensor-parallel groups.
    """

    def __init__(self):
        from megatron.core import parallel_state as ps

        self.ps = ps

    def get_data_parallel_group(self):
        return self.ps.get_data_parallel_group()

    def get_data_parallel_rank(self) -> int:
        return self.ps.get_data_parallel_rank()

    def get_data_parallel_world_size(self) -> int:
        return self.ps.get_data_parallel_world_size()

    def get_model_parallel_group(self):
        return self.ps.get_model_parallel_group()

    def get_model_parallel_rank(self) -> int:
        import torch.distributed as dist

        return dist.get_rank(group=self.ps.get_model_parallel_group())

    def get_model_parallel_world_size(self) -> int:
        import torch.distributed as dist

        return dist.get_world_size(group=self.ps.get_model_parallel_group())

    def get_tensor_model_parallel_group(self):
        return self.ps.get_tensor_model_parallel_group()

    def get_tensor_model_parallel_rank(self) -> int:
        return self.ps.get_tensor_model_parallel_rank()

    def get_tensor_model_parallel_world_size(self) -> int:
        return self.ps.get_tensor_model_parallel_world_size()

    def get_tensor_model_parallel_src_rank(self) -> int:
        return self.ps.get_tensor_model_parallel_src_rank()

    def get_pipeline_model_parallel_rank(self) -> int:
        return self.ps.get_pipeline_model_parallel_rank()

    def get_pipeline_model_parallel_world_size(self) -> int:
        return self.ps.get_pipeline_model_parallel_world_size()


@dataclass
class Topology:
    """The live groups of this process: what the model factories, pipeline and engine ask for."""

    layout: Layout
    rank: int
    sequence_parallel: bool = False

    @property
    def dp_rank(self) -> int:
        return self.layout.coords(self.rank)[0]

    @property
    def tp_rank(self) -> int:
        return self.layout.coords(self.rank)[1]

    @property
    def pp_rank(self) -> int:
        return self.layout.coords(self.rank)[2]

    def mpu(self) -> Optional[DeepSpeedMPU]:
        """What to pass to `deepspeed.initialize(mpu=...)`: None with pipelines (the module's grid
        is used) or without tensor parallelism (DeepSpeed's default groups are right)."""
        if self.layout.pipeline > 1 or self.layout.tensor == 1:
            return None
        return DeepSpeedMPU()


_CURRENT: Optional[Topology] = None
_PLAIN = False


def current() -> Optional[Topology]:
    """The topology `initialize` made in this process, or None (a plain single-process model)."""
    return _CURRENT


def tensor_parallel() -> Optional[Topology]:
    """The active topology when the layer factories should return tensor-parallel layers."""
    if _PLAIN or _CURRENT is None or _CURRENT.layout.tensor == 1:
        return None
    return _CURRENT


@contextmanager
def plain_layers() -> Iterator[None]:
    """Inside, the layer factories return plain torch layers even under tensor parallelism."""
    global _PLAIN
    old, _PLAIN = _PLAIN, True
    try:
        yield
    finally:
        _PLAIN = old


def initialize(layout: Layout, sequence_parallel: bool = False) -> Topology:
    """Create megatron-core's groups for `layout` and check them against DeepSpeed's rank order.

    Needs an initialised default process group (`framework.distributed.init_distributed`). Safe to
    call again with the same layout (a no-op); a different layout tears the old groups down first.
    """
    global _CURRENT
    import torch.distributed as dist
    from megatron.core import parallel_state as ps

    world = dist.get_world_size()
    if layout.world_size != world:
        raise ConfigError(
            f"config key 'parallel': layout {layout} needs {layout.world_size} ranks, world size is {world}"
        )
    if sequence_parallel and layout.tensor == 1:
        sequence_parallel = False  # nothing to split the sequence over
    if _CURRENT is not None and _CURRENT.layout == layout:
        _CURRENT.sequence_parallel = sequence_parallel
        return _CURRENT
    if ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()
    ps.initialize_model_parallel(
        tensor_model_parallel_size=layout.tensor,
        pipeline_model_parallel_size=layout.pipeline,
        order="tp-cp-ep-dp-pp",
        create_gloo_process_groups=False,
    )
    rank = dist.get_rank()
    mine = {
        "data": ps.get_data_parallel_group(),
        "tensor": ps.get_tensor_model_parallel_group(),
        "pipeline": ps.get_pipeline_model_parallel_group(),
    }
    expected = rank_groups(layout)
    for kind, group in mine.items():
        got = sorted(dist.get_process_group_ranks(group))
        want = next(g for g in expected[kind] if rank in g)
        if got != want:
            raise RuntimeError(f"megatron-core {kind} group of rank {rank} is {got}, Anvil's rank order says {want}")
    ds = deepspeed_groups(layout)
    for kind in ("data", "tensor", "pipeline"):
        if ds[kind] != sorted(expected[kind]):
            raise RuntimeError(f"DeepSpeed's {kind} groups {ds[kind]} differ from Anvil's {expected[kind]}")
    _CURRENT = Topology(layout, rank, sequence_parallel)
    return _CURRENT


def destroy() -> None:
    global _CURRENT
    from megatron.core import parallel_state as ps

    if ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()
    from deepspeed.utils import groups

    groups.mpu = None  # DeepSpeed remembers the last engine's mpu / pipeline grid process-wide
    _CURRENT = None
