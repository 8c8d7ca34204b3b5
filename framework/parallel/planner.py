"""Memory planner: per-rank bytes of every valid layout and ZeRO stage, before anything is launched.

Model states are counted in closed form from the model config, exactly as Anvil lays the model out:
tensor-parallel matrices and vocabulary split over `tensor`, norms (and GPT-2's row biases and
positions) replicated, pipeline stages cut by DeepSpeed's own `partition_balanced` over the same
per-layer parameter counts `PipelineModule(partition_method="parameters")` uses, the tied
embedding present on the first and the last stage. Bytes per parameter follow what DeepSpeed
allocates (checked against measured engine allocations on CPU in tests/framework/parallel):

    fp32:  params 4 (4/DP at ZeRO-3), grads 4 (4/DP at ZeRO>=1: DeepSpeed keeps only the reduced
           partition), optimizer 8 (ZeRO-0: Adam m, v) or 12/DP (ZeRO>=1: fp32 master slice + m + v)
    bf16/fp16 (ZeRO paper, K=12): params 2 (2/DP at 3), grads 2 (2/DP at >=2), optimizer 12 (12/DP at >=1)

Activations per transformer layer and micro-batch follow Korthikanti et al. 2022, "Reducing
Activation Recomputation in Large Transformer Models" (arXiv:2205.05198), Eq. 1-4, for 16-bit
activations (doubled for fp32): s b h (34 + 5 a s / h) bytes without parallelism,
s b h (10 + 24/t + 5 a s / (h t)) with tensor parallelism t, s b h / t (34 + 5 a s / h) with sequence
parallelism too, and 2 s b h (/t with SP) per layer with full recomputation (plus one layer's full
activations while it is recomputed). The 5 a s / h term is the attention matrix; PyTorch's
scaled_dot_product_attention (flash / memory-efficient kernels) never stores it, so it is dropped
by default (`flash=True`). With 1F1B the first stage holds min(PP, micro-batches) micro-batches of
its L/PP layers (Korthikanti Sec. 4.2.3). The fp32 logits (and their gradient) of the last stage are
added: 2 x 4 s b V / t bytes.

A layout fits when model states + activations <= 90% of device memory (the rest: allocator
fragmentation, communication buckets, CUDA context). The recommendation prefers no activation
recomputation, then the most data parallelism (least model-parallel communication), then fewer
pipeline stages (bubbles), then ZeRO-1 > 2 > 0 > 3 (same traffic as plain DP for 1 and 2; ZeRO-3
adds a parameter all-gather per forward and backward).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional

from framework.config import ModelConfig, RunConfig
from framework.parallel.topology import Layout

HEADROOM = 0.9
ZERO_PREFERENCE = {1: 0, 2: 1, 0: 2, 3: 3}


def parse_bytes(text: str) -> int:
    """'80GB', '80 GiB', '141e9' -> bytes (GB = 1e9, GiB = 2**30)."""
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([KMGT]?i?B?)?\s*", text or "")
    if not m:
        raise ValueError(f"cannot read a memory size from {text!r} (expected e.g. 80GB or 96GiB)")
    unit = (m.group(2) or "B").upper().rstrip("B")
    scale = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40}[unit]
    return int(float(m.group(1)) * scale)


def ffn_hidden(m: ModelConfig) -> int:
    if m.ffn_hidden:
        return m.ffn_hidden
    return 4 * m.d_model if m.arch == "gpt2" else 64 * math.ceil(8 * m.d_model / 3 / 64)


def layer_params(m: ModelConfig, tp: int = 1) -> list[int]:
    """Parameters of each pipeline layer on one tensor-parallel rank, in `pipeline_layers` order:
    [embedding (+ positions), block x L, final norm, head (or the tied embedding again)]."""
    d, f, V = m.d_model, ffn_hidden(m), m.vocab_size
    kv = (m.n_kv_heads or m.n_heads) * (d // m.n_heads)
    gpt2 = m.arch == "gpt2"
    split = d * d * 2 + 2 * d * kv + (3 if not gpt2 else 2) * d * f  # q, o, k, v, MLP matrices
    replicated = 2 * d * (2 if gpt2 else 1)  # two norms (LayerNorm has a bias)
    if gpt2:
        split += d + 2 * kv + f  # q, k, v and fc_in biases (split with their columns)
        replicated += 2 * d  # o_proj and fc_out biases (after the reduction)
    block = split // tp + replicated
    emb = V // tp * d
    layers = [emb]
    if gpt2:
        if m.tie_embeddings:
            layers.append(m.seq_len * d)  # positions become their own pipeline layer
        else:
            layers[0] += m.seq_len * d
    layers += [block] * m.n_layers
    layers.append(d * (2 if gpt2 else 1))
    layers.append(emb)  # untied head, or the tied embedding on the last stage
    return layers


def stage_params(m: ModelConfig, layout: Layout) -> list[int]:
    """Parameters held by one rank of each pipeline stage (DeepSpeed's partitioning)."""
    counts = layer_params(m, layout.tensor)
    if layout.pipeline == 1:
        return [sum(counts) - (counts[-1] if m.tie_embeddings else 0)]
    from deepspeed.runtime.utils import partition_balanced

    parts = partition_balanced(weights=counts, num_parts=layout.pipeline)
    return [sum(counts[parts[i]:parts[i + 1]]) for i in range(layout.pipeline)]


def model_state_bytes(n: int, dp: int, zero: int, precision: str) -> dict[str, float]:
    """Bytes of parameters, gradients and optimizer states for `n` parameters on one rank."""
    if precision == "fp32":
        params = 4 * n / (dp if zero >= 3 else 1)
        grads = 4 * n / (dp if zero >= 1 else 1)
        optim = 8 * n if zero == 0 else 12 * n / dp
    else:
        params = 2 * n / (dp if zero >= 3 else 1)
        grads = 2 * n / (dp if zero >= 2 else 1)
        optim = 12 * n / (dp if zero >= 1 else 1)
    return {"params": params, "grads": grads, "optimizer": optim}


def activation_bytes(m: ModelConfig, layout: Layout, micro_batch: int, micro_batches: int, precision: str,
                     checkpointing: bool, sequence_parallel: bool = False, flash: bool = True) -> float:
    """Peak activation bytes on the first pipeline stage (Korthikanti et al. 2022)."""
    s, b, h, a, t = m.seq_len, micro_batch, m.d_model, m.n_heads, layout.tensor
    attn = 0.0 if flash else 5 * a * s / h
    sp = sequence_parallel and t > 1
    if sp:
        full_layer = s * b * h / t * (34 + attn)
    elif t > 1:
        full_layer = s * b * h * (10 + 24 / t + attn / t)
    else:
        full_layer = s * b * h * (34 + attn)
    scale = 2 if precision == "fp32" else 1  # the formula counts 16-bit activations
    layers_per_stage = math.ceil(m.n_layers / layout.pipeline)
    in_flight = min(layout.pipeline, micro_batches)
    if checkpointing:
        per_mb = layers_per_stage * 2 * s * b * h / (t if sp else 1)
        stored = in_flight * per_mb + full_layer
    else:
        stored = in_flight * layers_per_stage * full_layer
    logits = 2 * 4 * s * b * m.vocab_size / t
    return stored * scale + logits


@dataclass
class Plan:
    layout: Layout
    zero: int
    params: float
    grads: float
    optimizer: float
    act: float
    act_ckpt: float
    fits: bool
    fits_ckpt: bool
    batch_ok: bool = True  # train.global_batch_size divisible by micro_batch_size x DP (check_layout)

    @property
    def model_states(self) -> float:
        return self.params + self.grads + self.optimizer

    @property
    def total(self) -> float:
        return self.model_states + (self.act if self.fits else self.act_ckpt)


def valid_layouts(m: ModelConfig, world: int) -> list[Layout]:
    out = []
    for tp in range(1, world + 1):
        if world % tp or m.n_heads % tp or (m.n_kv_heads or m.n_heads) % tp or m.vocab_size % tp:
            continue
        for pp in range(1, world // tp + 1):
            if (world // tp) % pp or pp > m.n_layers:
                continue
            out.append(Layout(world // (tp * pp), tp, pp))
    return out


def plan(cfg: RunConfig, world: int, device_bytes: Optional[int]) -> list[Plan]:
    m, t = cfg.model, cfg.train
    plans = []
    for layout in valid_layouts(m, world):
        n = max(stage_params(m, layout))
        mbs = max(1, t.global_batch_size // (t.micro_batch_size * layout.data))
        for zero in ((0, 1) if layout.pipeline > 1 else (0, 1, 2, 3)):
            st = model_state_bytes(n, layout.data, zero, t.precision)
            act = activation_bytes(m, layout, t.micro_batch_size, mbs, t.precision, False, cfg.parallel.sequence_parallel)
            ack = activation_bytes(m, layout, t.micro_batch_size, mbs, t.precision, True, cfg.parallel.sequence_parallel)
            states = sum(st.values())
            limit = HEADROOM * device_bytes if device_bytes else float("inf")
            plans.append(Plan(layout, zero, st["params"], st["grads"], st["optimizer"], act, ack,
                              states + act <= limit, states + ack <= limit,
                              t.global_batch_size % (t.micro_batch_size * layout.data) == 0))
    return plans


def recommend(plans: list[Plan], gpus_per_node: int = 8) -> Optional[Plan]:
    """The layout to use: see the module docstring for the order of preference."""
    ok = [p for p in plans if p.fits_ckpt and p.batch_ok]  # never recommend what check_layout refuses
    if not ok:
        return None

    def key(p: Plan):
        zero = 0 if p.layout.data == 1 and p.zero == 0 else ZERO_PREFERENCE[p.zero] + 1
        return (not p.fits, p.layout.tensor > gpus_per_node, p.layout.tensor * p.layout.pipeline,
                p.layout.pipeline, zero)

    return min(ok, key=key)
