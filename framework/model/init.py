"""Layout-free initial values: every row of every parameter drawn from its own seed.

Same seed, same weights under any DP x TP x PP x ZeRO layout, and no rank ever needs the whole
model to compute its part: row r of parameter NAME comes from a generator seeded with
hash(seed, NAME, r), so a tensor-parallel shard (a block of rows, or some columns of every row) is
drawn directly, one row at a time, and a model built on the meta device is materialised shard by
shard (`framework.parallel.parallelize`). The rule for a parameter follows the module that owns it:
weights of linears and embeddings normal(0, module.init_std) (set by `layers.py`), biases zero,
norm weights one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

Box = Sequence[tuple[int, int]]  # (start, length) per dimension


@dataclass(frozen=True)
class Rule:
    kind: str  # "normal" | "zeros" | "ones"
    std: float = 0.0


NORMS = (nn.LayerNorm, nn.RMSNorm)


def rules(model: nn.Module) -> dict[str, Rule]:
    """The initialisation rule of every parameter, by its name in the plain model (tied names too)."""
    out: dict[str, Rule] = {}
    for mname, module in model.named_modules():
        for pname, _ in module.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if pname == "bias":
                out[full] = Rule("zeros")
            elif isinstance(module, NORMS):
                out[full] = Rule("ones")
            elif getattr(module, "init_std", None) is not None:
                out[full] = Rule("normal", float(module.init_std))
            else:
                raise ValueError(
                    f"parameter {full!r} ({type(module).__name__}) has no initialisation rule: "
                    "build it with a framework.model.layers factory"
                )
    return out


def row_seed(seed: int, name: str, row: int) -> int:
    digest = hashlib.blake2b(f"{seed}/{name}/{row}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def full_box(shape: Sequence[int]) -> tuple[tuple[int, int], ...]:
    return tuple((0, int(n)) for n in shape)


@torch.no_grad()
def values(
    rule: Rule,
    name: str,
    shape: Sequence[int],
    seed: int,
    box: Optional[Box] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The initial values of `box` (default: all) of parameter `name` with global `shape`, on the CPU.

    Peak memory: the box plus one full row of the parameter."""
    box = tuple(box) if box is not None else full_box(shape)
    out_shape = tuple(n for _, n in box)
    if rule.kind == "zeros":
        return torch.zeros(out_shape, dtype=dtype)
    if rule.kind == "ones":
        return torch.ones(out_shape, dtype=dtype)
    if len(shape) == 1:  # a vector is one row
        shape, box = (1, shape[0]), ((0, 1), box[0])
    (first, count), inner = box[0], tuple(slice(s, s + n) for s, n in box[1:])
    out = torch.empty((count, *(n for _, n in box[1:])), dtype=torch.float32)
    gen, row = torch.Generator(), torch.empty(tuple(shape[1:]), dtype=torch.float32)
    for i in range(count):
        gen.manual_seed(row_seed(seed, name, first + i))
        row.normal_(0.0, rule.std, generator=gen)
        out[i] = row[inner]
    return out.reshape(out_shape).to(dtype)


@torch.no_grad()
def init_model(model: nn.Module, seed: int, device: torch.device | str = "cpu") -> nn.Module:
    """Give a plain (unsharded) model its layout-free initial values, materialising meta parameters.

    The single-process counterpart of `framework.parallel.parallelize`: both produce the same numbers."""
    table = rules(model)
    seen: set[int] = set()
    for mname, module in model.named_modules():
        for pname, p in list(module.named_parameters(recurse=False)):
            if id(p) in seen:
                continue
            seen.add(id(p))
            full = f"{mname}.{pname}" if mname else pname
            data = values(table[full], full, p.shape, seed).to(device)
            if p.is_meta:
                module._parameters[pname] = nn.Parameter(data, requires_grad=p.requires_grad)
            else:
                p.copy_(data)
    retie(model)
    return model


def retie(model: nn.Module) -> None:
    """Re-point a tied head at the embedding's (new) parameter after materialisation."""
    cfg = getattr(model, "cfg", None)
    if cfg is not None and getattr(cfg, "tie_embeddings", False) and hasattr(model, "head"):
        model.head.weight = model.embed.tok.weight
