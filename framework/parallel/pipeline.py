"""Pipeline parallelism: the model's pieces as a DeepSpeed `PipelineModule` (1F1B schedule).

The model is already a chain `embed -> blocks[0..L-1] -> norm -> head`; `to_pipeline` lists those
pieces as pipeline layers and DeepSpeed partitions them over the stages by parameter count,
keeping only this stage's layers. With tied embeddings the token embedding is a tied layer on the
first and the last stage (DeepSpeed all-reduces its gradient between them); the last stage
computes logits through it. The loss is the model's own `layers.cross_entropy`, so tensor
parallelism inside a stage works unchanged.

Layer names inside the pipeline module are `{index}.{name}` (tied ones `tied_modules.embed.*`);
`layer_names` maps them back to the model's own parameter names so checkpoints stay layout-free.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from deepspeed.pipe import PipelineModule, TiedLayerSpec

from framework.parallel import topology

TIED_KEY = "embed"


class _Prebuilt(TiedLayerSpec):
    """A tied layer whose module already exists (DeepSpeed's specs build from a class)."""

    def __init__(self, key: str, module: nn.Module, forward_fn=None):
        super().__init__(key, type(module), forward_fn=forward_fn, tied_weight_attr="weight")
        self.module = module

    def build(self, log=False):
        return self.module


class AddPositions(nn.Module):
    """GPT-2's learned positions, split from the token embedding when that one is tied."""

    def __init__(self, pos: nn.Module):
        super().__init__()
        self.pos = pos

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.pos(torch.arange(h.size(1), device=h.device))


def _tied_logits(tok: nn.Module, h: torch.Tensor) -> torch.Tensor:
    from framework.parallel import tensor

    if isinstance(tok, tensor.VocabEmbedding):
        return tensor.tied_head_forward(tok, h)
    return torch.nn.functional.linear(h, tok.weight)


def pipeline_layers(model: nn.Module) -> tuple[list, list[str]]:
    """The model's pieces in order, and for each the prefix of its parameters in the model."""
    tied = model.cfg.tie_embeddings
    layers: list = []
    names: list[str] = []
    if tied:
        layers.append(_Prebuilt(TIED_KEY, model.embed.tok))
        names.append("embed.tok")
        if model.embed.pos is not None:
            layers.append(AddPositions(model.embed.pos))
            names.append("embed")  # its parameter is `pos.weight` -> embed.pos.weight
    else:
        layers.append(model.embed)
        names.append("embed")
    for i, block in enumerate(model.blocks):
        layers.append(block)
        names.append(f"blocks.{i}")
    layers.append(model.norm)
    names.append("norm")
    if tied:
        layers.append(_Prebuilt(TIED_KEY, model.embed.tok, forward_fn=_tied_logits))
        names.append("embed.tok")
    else:
        layers.append(model.head)
        names.append("head")
    return layers, names


class PipelineLoss(nn.Module):
    """The model's own loss module on the last stage; `inject_nan` (set by the engine for one step)
    turns the loss into NaN, so `train.inject_nan_at` works under pipeline parallelism too."""

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss
        self.inject_nan = False

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        out = self.loss(logits, targets)
        return out * float("nan") if self.inject_nan else out


def _layer_param_names(layers: list, names: list[str]) -> list[list[str]]:
    """Full parameter names of each pipeline layer."""
    out = []
    for layer, prefix in zip(layers, names):
        module = layer.module if isinstance(layer, _Prebuilt) else layer
        out.append([f"{prefix}.{n}" for n, _ in module.named_parameters()])
    return out


def _is_block(layer) -> bool:
    return type(layer.module if isinstance(layer, _Prebuilt) else layer).__name__ == "Block"


def partition(model: nn.Module, stages: int) -> tuple[str, list[int]]:
    """(DeepSpeed partition method, stage boundaries) for the model's pipeline layers.

    By parameter count (DeepSpeed's "parameters"), unless that leaves a stage without a transformer
    block - a large vocabulary can make the embedding a stage of its own - in which case blocks are
    spread evenly ("type:Block", embedding on the first stage, norm and head on the last, as
    Megatron does). A stage without a block has no 1-D parameter, so its optimizer has one parameter
    group fewer than its peers, and ZeRO's per-group gradient-norm all-reduces then no longer pair up
    across stages (a hang, seen at TP2 x PP4 with a 32k vocabulary)."""
    from deepspeed.runtime.utils import partition_balanced

    layers, _ = pipeline_layers(model)
    counts = [
        sum(p.numel() for p in (l.module if isinstance(l, _Prebuilt) else l).parameters() if p.requires_grad)
        for l in layers
    ]
    blocks = [1 if _is_block(l) else 0 for l in layers]
    parts = partition_balanced(weights=counts, num_parts=stages)
    if all(sum(blocks[parts[i] : parts[i + 1]]) for i in range(stages)):
        return "parameters", parts
    return "type:Block", partition_balanced(weights=blocks, num_parts=stages)


def stage_bounds_for(model: nn.Module, topo: topology.Topology) -> tuple[int, int]:
    """[start, stop) of this rank's stage in `pipeline_layers` order, as DeepSpeed will cut it with
    `partition`'s method (checked again after the PipelineModule is built)."""
    _, parts = partition(model, topo.layout.pipeline)
    return parts[topo.pp_rank], parts[topo.pp_rank + 1]


def stage_param_full_names(model: nn.Module, topo: topology.Topology) -> set[str]:
    """The plain model's names of the parameters this rank's pipeline stage holds."""
    layers, names = pipeline_layers(model)
    start, stop = stage_bounds_for(model, topo)
    return {n for per_layer in _layer_param_names(layers, names)[start:stop] for n in per_layer}


def to_pipeline(
    model: nn.Module, topo: topology.Topology, activation_checkpointing: bool = False, seed: int = 1234
) -> PipelineModule:
    """Cut `model` into `topo.layout.pipeline` stages; this rank keeps its own stage's layers.

    Only this stage's parameters need to be materialised (`stage_param_full_names`): the others may
    stay on the meta device, DeepSpeed never touches them."""
    layers, names = pipeline_layers(model)
    expected = stage_bounds_for(model, topo)
    pipe = PipelineModule(
        layers=layers,
        loss_fn=PipelineLoss(model.loss),
        topology=topology.deepspeed_topology(topo.layout),
        partition_method=partition(model, topo.layout.pipeline)[0],
        seed_layers=False,
        base_seed=seed,
        activation_checkpoint_interval=1 if activation_checkpointing else 0,
        activation_checkpoint_func=partial(checkpoint, use_reentrant=False),
        checkpointable_layers=["Block"],
    )
    # DeepSpeed keeps the whole layer list after building this stage; drop the other stages'
    # modules from it, or every rank would hold the full model's weights.
    start, stop = pipe._local_start, pipe._local_stop
    if (start, stop) != expected:
        raise RuntimeError(
            f"pipeline stage {topo.pp_rank}: DeepSpeed kept layers [{start}, {stop}), Anvil "
            f"materialised [{expected[0]}, {expected[1]})"
        )
    for i, spec in enumerate(pipe._layer_specs):
        if not start <= i < stop:
            if isinstance(spec, _Prebuilt):
                spec.module = None
            else:
                pipe._layer_specs[i] = None
    pipe.anvil_layer_names = names
    pipe.cfg = model.cfg
    return pipe


def stage_param_names(pipe: PipelineModule) -> dict[str, str]:
    """Map this stage's parameter names (`3.attn.q_proj.weight`, `tied_modules.embed.weight`) to
    the model's (`blocks.2.attn.q_proj.weight`, `embed.tok.weight`)."""
    out = {}
    for name, _ in pipe.named_parameters():
        head, _, rest = name.partition(".")
        if head == "tied_modules":
            key, _, rest = rest.partition(".")
            out[name] = f"embed.tok.{rest}"
        else:
            out[name] = f"{pipe.anvil_layer_names[int(head)]}.{rest}"
    return out


def stage_bounds(pipe: PipelineModule) -> tuple[int, int]:
    """[start, stop) of this stage's layers in `pipeline_layers` order."""
    return pipe._local_start, pipe._local_stop


__all__ = ["to_pipeline", "pipeline_layers", "stage_param_names", "stage_bounds"]
