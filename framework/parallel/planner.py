"""Memory planner: per-rank bytes of every valid layout and ZeRO stage, before anything is launched.

Parameter counts are closed form from the model config, exactly as Anvil lays the model out:
tensor-parallel matrices and vocabulary split over `tensor`, norms (and GPT-2's row biases and
positions) replicated, pipeline stages cut by DeepSpeed's own `partition_balanced` over the same
per-layer parameter counts `PipelineModule(partition_method="parameters")` uses, the tied
embedding present on the first and the last stage. `n` below is the parameters of one rank of the
most loaded stage, D the data-parallel size.

Which optimizer DeepSpeed wraps around the AdamW decides what it allocates (`optimizer_path`,
after `DeepSpeedEngine._do_optimizer_sanity_check`, deepspeed 0.19):

    adamw  fp32 ZeRO-0: the client AdamW, no wrapper
    fp16   bf16 ZeRO-0 without pipeline, fp16 ZeRO-0: FP16_(Unfused)Optimizer, an fp32 copy of each parameter
    bf16   bf16 ZeRO-1, and bf16 ZeRO-0 under a pipeline: BF16_Optimizer, which keeps an fp32 (bf16
           under a pipeline: Anvil sets grad_accum_dtype=fp32 only for ZeRO >= 1) gradient buffer of
           the whole model next to 1/D fp32 master weights and Adam moments
    zero   ZeRO-1/2 in fp32 and fp16, ZeRO-2 in bf16: stage_1_and_2.py
    zero3  ZeRO-3: stage3.py

`model_state_bytes` gives what stays allocated at the optimizer step (the `params`, `grads`,
`optim` columns). `rank_memory` gives the peak of each phase of `anvil train` on one rank, as
`framework/training/memory.py` measures them: start-up (building the model and
`deepspeed.initialize`), steps, checkpoint save, checkpoint load. Its closed forms, with P the
training dtype's bytes (4 or 2), G the gradient-accumulation dtype's bytes (4 for fp32 and for bf16
at ZeRO >= 1, else 2), l the largest single parameter, u the largest ZeRO-3 unit (embedding, one
block, head), B the ZeRO reduce bucket (`engine.bucket_elements`), A = min(n, 5e8) the largest flat
gradient copy of DeepSpeed's all-reduce (made even when D = 1), g = P min(n, 5e8) the parameters ZeRO-3
keeps gathered after a forward (stage3_max_reuse_distance = 1e9 elements, not set by Anvil, so
every parameter whose backward use is less than 1e9 elements away stays gathered), act the
activations below:

    path   start-up                      between steps (S)          steps (peak)
    adamw  4n                            12n                        S + 4n + max(4A + act, T)
    fp16   20n (+ T)                     14n                        S + 2n + max(2A + act, 4n + T)
    bf16   max(4n, 2n + Gn + 4n/D)       2n + Gn + 12n/D            S + 2n + max(G A + 2A[G=4] + act, 4n/D[G=2] + T)
    zero   max(4n, 2Pn, Pn + 8n/D)       Pn + 12n/D                 ZeRO-1: S + max(Pn + PB + act, Gn/D + F + T)
                                                                    ZeRO-2: S + max(Gn/D + PB + Pl + act, Gn/D + F + T)
    zero3  max(Pn/D + Pu + 4l[P=2],      Pn/D + (4 + G) n/D + 8n/D  S + max(g + act, 4n/D + T)
               S - 8n/D + 4l)               + PB

F the step's flat fp32 gradient partition (fp32: 4n/D; fp16: 6n/D; bf16 keeps it flat already: 0),
and T the temporaries of torch's single-tensor AdamW on CPU (sqrt and quotient of the second
moment: 8n/D, or 8l per parameter for adamw/fp16); T = 0 on GPUs, where FusedAdam updates in place.
ZeRO-3's 4n/D at the step is its flat copy of the gradient partition. The first step creates
the Adam moments inside the same envelope. Save peak = S (ZeRO-3: + g, since the evaluation
forward before the save leaves them gathered): `checkpoint.universal.save_shard` writes views of
the fp32 masters, moments and 16-bit weights, one tensor at a time. Load peak = S (without moments) + the
moments it creates (8n/D; 8n for adamw) + what it reads: the full tensor-parallel fp32 weight of
every parameter (ZeRO-0/1/2: 4n, plus the moments of its own range, 8n/D; ZeRO-0 reads all 8n;
ZeRO-3 reads 12n/D) + 3 x 4l. The reader memory-maps the shard files (safetensors `safe_open`),
so every page it reads stays in the rank's RSS until the reader is closed (page cache: ranks of one
host reading the same pages share them physically, but each rank's RSS counts them).

Device or host: on a GPU run those figures are device memory (without the `T` temporaries and the
mapped bytes); the host then holds one parameter's initial values at a time at start-up (4l, +2l
for bf16 ZeRO-3's cast), one tensor at a time while saving (4l),
the mapped checkpoint bytes + 3 x 4l while loading, and nothing model-sized during steps, plus the
CUDA runtime's own host memory (not counted). On a CPU run everything is host memory, and the
fixed overheads below are added.

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

A layout fits when every phase's peak (start-up, steps, save, load) <= 90% of device memory (the
rest: allocator fragmentation, CUDA context). The recommendation prefers no activation
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
MiB = 2**20

# DeepSpeed values the closed forms use (deepspeed 0.19; Anvil leaves them at their defaults).
ALLREDUCE_FLAT_ELEMENTS = 500_000_000  # engine.MEMORY_OPT_ALLREDUCE_SIZE: the all-reduce flattens this many at most
ZERO3_REUSE_DISTANCE = 1_000_000_000  # stage3_max_reuse_distance (elements)
ZERO3_SUB_GROUP = 1_000_000_000  # sub_group_size: ZeRO-3 steps the optimizer on sub-groups of this many elements

# Host memory a CPU rank adds beyond every term above: the first training step's one-time
# allocations (autograd and gloo work buffers, DeepSpeed's ZeRO bookkeeping, Python objects) and
# small allocations below glibc's mmap threshold. Measured as RSS above the trainer's baseline minus
# the closed-form terms, on 2 CPU ranks with OMP_NUM_THREADS=1 and MALLOC_MMAP_THRESHOLD_=65536
# (tests/framework/parallel/test_planner.py::test_rank_memory_matches_measured_cpu_peaks and
# exploratory runs of 14-40M-parameter Llamas): after `deepspeed.initialize` 4-8 MiB (19 MiB with
# TP 2); after a training step 17-35 MiB at DP 2 (DP 2 ZeRO-1 grows from 18 to 35 MiB from a 14M to
# a 40M model), 25-35 MiB at TP 2 / PP 2, up to 45 MiB at DP 4 ZeRO-3; ZeRO-3 adds 9-23 MiB to
# every phase. Tensor parallelism adds 13-30 MiB to every phase (TP 2 ZeRO-1 bf16 before the save:
# live torch tensors equal the closed-form terms to 0.1 MiB, RSS is 54 MiB above them against 24-35
# at DP 2 / PP 2; the excess lies outside torch tensors and is not attributed further).
# The constants sit mid-range; the spread is what the test's absolute tolerance covers.
HOST_FIXED_STARTUP = 6 * MiB  # added to start-up and load
HOST_FIXED_TRAINING = 24 * MiB  # added to steps and save
HOST_FIXED_ZERO3 = 16 * MiB  # added to every ZeRO-3 phase
HOST_FIXED_TP = 16 * MiB  # added to every phase when tensor > 1


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


def largest_param(m: ModelConfig, tp: int = 1) -> int:
    """Elements of the largest single parameter on one tensor-parallel rank."""
    d, f, V = m.d_model, ffn_hidden(m), m.vocab_size
    kv = (m.n_kv_heads or m.n_heads) * (d // m.n_heads)
    return max(V // tp * d, f * d // tp, d * d // tp, d * kv // tp, m.seq_len * d if m.arch == "gpt2" else 0)


_STAGES: dict = {}  # (per-layer counts, pipeline) -> stage_params: DeepSpeed's partitioning is slow


def stage_params(m: ModelConfig, layout: Layout) -> list[int]:
    """Parameters held by one rank of each pipeline stage (DeepSpeed's partitioning)."""
    counts = layer_params(m, layout.tensor)
    if layout.pipeline == 1:
        return [sum(counts) - (counts[-1] if m.tie_embeddings else 0)]
    key = (tuple(counts), layout.pipeline)
    if key not in _STAGES:
        from deepspeed.runtime.utils import partition_balanced

        parts = partition_balanced(weights=counts, num_parts=layout.pipeline)
        _STAGES[key] = [sum(counts[parts[i] : parts[i + 1]]) for i in range(layout.pipeline)]
    return list(_STAGES[key])


def optimizer_path(precision: str, zero: int, pipeline: int = 1) -> str:
    """Which DeepSpeed optimizer wrapper Anvil's engine config gets (see the module docstring)."""
    if zero == 3:
        return "zero3"
    if precision == "fp32":
        return "zero" if zero else "adamw"
    if precision == "bf16" and (zero == 1 or (zero == 0 and pipeline > 1)):
        return "bf16"
    return "zero" if zero else "fp16"


def grad_accum_bytes(precision: str, zero: int) -> int:
    """Bytes of the dtype DeepSpeed accumulates gradients in (`engine.deepspeed_config`'s data_types)."""
    return 4 if precision == "fp32" or (precision == "bf16" and zero >= 1) else 2


def model_state_bytes(n: int, dp: int, zero: int, precision: str, pipeline: int = 1) -> dict[str, float]:
    """Bytes of parameters, gradients and optimizer states for `n` parameters on one rank, as
    allocated at the optimizer step (gradients: what the optimizer reads; transient copies are in
    `rank_memory`)."""
    path, G = optimizer_path(precision, zero, pipeline), grad_accum_bytes(precision, zero)
    P = 4 if precision == "fp32" else 2
    if path == "adamw":
        return {"params": 4 * n, "grads": 4 * n, "optimizer": 8 * n}
    if path == "fp16":  # fp32 copy of every parameter + Adam moments on it
        return {"params": 2 * n, "grads": 2 * n, "optimizer": 12 * n}
    if path == "bf16":  # 16-bit .grad until the step + the whole model's accumulation buffer
        return {"params": 2 * n, "grads": (2 + G) * n, "optimizer": 12 * n / dp}
    if path == "zero":  # ZeRO-1 and 2 keep the reduced gradient partition only
        return {"params": P * n, "grads": G * n / dp, "optimizer": 12 * n / dp}
    return {"params": P * n / dp, "grads": G * n / dp, "optimizer": 12 * n / dp}


def activation_bytes(
    m: ModelConfig,
    layout: Layout,
    micro_batch: int,
    micro_batches: int,
    precision: str,
    checkpointing: bool,
    sequence_parallel: bool = False,
    flash: bool = True,
) -> float:
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


def _check_zero(layout: Layout, zero: int) -> None:
    if zero not in (0, 1, 2, 3):
        raise ValueError(f"ZeRO stage must be 0, 1, 2 or 3, got {zero}")
    if layout.pipeline > 1 and zero > 1:
        raise ValueError(f"ZeRO-{zero} with pipeline parallelism is not supported by DeepSpeed (use 0 or 1)")


def _phases(cfg: RunConfig, layout: Layout, zero: int, gpu: bool, act: float) -> tuple[dict, dict]:
    """(device-or-CPU phases, host phases of a GPU run) in bytes, without the fixed CPU overheads."""
    m, precision = cfg.model, cfg.train.precision
    _check_zero(layout, zero)
    path, G = optimizer_path(precision, zero, layout.pipeline), grad_accum_bytes(precision, zero)
    P = 4 if precision == "fp32" else 2
    n, D = max(stage_params(m, layout)), layout.data
    nD = n / D
    l = largest_param(m, layout.tensor)
    cpu = not gpu
    A = min(n, ALLREDUCE_FLAT_ELEMENTS)  # flattened even when D = 1 (a one-rank all-reduce)
    from framework.training.engine import bucket_elements

    B = bucket_elements(cfg)
    adam_tmp = 8 * min(nD, ZERO3_SUB_GROUP) if cpu else 0  # torch AdamW on a flat fp32 partition
    if path == "adamw":
        startup, steady = 4 * n, 12 * n
        steps = steady + 4 * n + max(4 * A + act, 8 * l if cpu else 0)
        read = 12 * n
    elif path == "fp16":  # fp32 copies, zeroed 16-bit and fp32 grads and one optimizer step at init
        startup, steady = 20 * n + (8 * l if cpu else 0), 14 * n
        steps = steady + 2 * n + max(2 * A + act, 4 * n + (8 * l if cpu else 0))
        read = 12 * n
    elif path == "bf16":
        # flat bf16 copy, fp32 master (made via a bf16 clone), then the fp32 gradient buffer
        startup = max(4 * n, 2 * n + 6 * nD, 2 * n + 4 * nD + G * n)
        steady = 2 * n + G * n + 12 * nD
        comm = G * A + (2 * A if G == 4 else 0)  # flat copy of the fp32 grads + its bf16 cast for the all-reduce
        steps = steady + 2 * n + max(comm + act, (4 * nD if G == 2 else 0) + adam_tmp)
        read = 4 * n + 8 * nD
    elif path == "zero":
        startup = max(4 * n, 2 * P * n, P * n + 8 * nD)  # params + flat copy; master + zeroed grad partition
        steady = P * n + 12 * nD
        flat = 4 * nD if precision == "fp32" else (6 * nD if G == 2 else 0)  # the step's flat fp32 grad partition
        at_step = G * nD + flat + adam_tmp
        if zero == 1:  # gradients are reduced after the backward pass: all of them live at once
            bwd = P * n + P * B
        else:  # reduced as they arrive: the partition, one bucket, the gradient being copied
            bwd = G * nD + P * B + P * l
        steps = steady + max(bwd + act, at_step)
        read = 4 * n + 8 * nD
    else:  # zero3
        u = max(layer_params(m, layout.tensor))
        startup = max(
            P * nD + P * u + (4 * l if P == 2 else 0),  # partitions so far + one whole unit
            P * nD + (4 + G) * nD + P * B + 4 * l,
        )  # + fp32 master, gradient partitions, bucket
        steady = P * nD + (4 + G) * nD + 8 * nD + P * B  # + the reduce bucket
        gathered = P * min(n, ZERO3_REUSE_DISTANCE // 2)
        steps = steady + max(gathered + act, 4 * min(nD, ZERO3_SUB_GROUP) + adam_tmp)
        read = 12 * nD
    save = steady + (gathered if path == "zero3" else 0)  # `save_shard` writes views of what exists
    # A resume creates the Adam moments S holds (the fp16 path has them since start-up), then reads
    # one parameter at a time: its fp32 weight, a cast or slice of it, a moment.
    load = steady + 3 * 4 * l + (read if cpu else 0)
    device = {"startup": startup, "steps": steps, "save": save, "load": load}
    host = {
        "startup": 4 * l + (2 * l if path == "zero3" and P == 2 else 0),
        "steps": 0.0,
        "save": 4 * l,
        "load": read + 3 * 4 * l,
    }
    return device, host


def rank_memory(cfg: RunConfig, layout: Layout, zero: int, device: str = "cpu") -> dict[str, float]:
    """Peak bytes per rank (the most loaded one) of each phase of `anvil train` for `cfg` at `layout`
    and ZeRO stage `zero`, above the process's baseline (RSS before the model is built):

    - `startup`: building the model and `deepspeed.initialize`; `steps`: training steps (model
      states, gradients, transient buffers, activations of cfg.parallel.activation_checkpointing);
      `save`: writing a checkpoint; `load`: resuming from one;
    - these four are the memory of `device`: host RAM for "cpu" (then with the fixed overheads
      HOST_FIXED_STARTUP / HOST_FIXED_TRAINING / HOST_FIXED_ZERO3 / HOST_FIXED_TP), GPU memory for "cuda" (no
      allocator or CUDA-context overhead; `HEADROOM` is for those);
    - `host_startup`, `host_steps`, `host_save`, `host_load`: host RAM of the same phases; equal to
      the four above on "cpu"; on "cuda" what the host holds besides the CUDA runtime.
    """
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    m, t = cfg.model, cfg.train
    mbs = max(1, t.global_batch_size // (t.micro_batch_size * layout.data))
    act = activation_bytes(
        m,
        layout,
        t.micro_batch_size,
        mbs,
        t.precision,
        cfg.parallel.activation_checkpointing,
        cfg.parallel.sequence_parallel,
    )
    dev, host = _phases(cfg, layout, zero, device == "cuda", act)
    if device == "cpu":
        z3 = (HOST_FIXED_ZERO3 if zero == 3 else 0) + (HOST_FIXED_TP if layout.tensor > 1 else 0)
        dev = {
            "startup": dev["startup"] + HOST_FIXED_STARTUP + z3,
            "steps": dev["steps"] + HOST_FIXED_TRAINING + z3,
            "save": dev["save"] + HOST_FIXED_TRAINING + z3,
            "load": dev["load"] + HOST_FIXED_STARTUP + z3,
        }
        host = dict(dev)
    return {**{k: float(v) for k, v in dev.items()}, **{f"host_{k}": float(v) for k, v in host.items()}}


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
    startup: float = 0.0  # peak bytes per phase on the device (host RAM when planning CPU ranks)
    steps: float = 0.0  # without activation checkpointing
    steps_ckpt: float = 0.0  # with it
    save: float = 0.0
    load: float = 0.0
    host: float = 0.0  # host RAM peak over the phases (GPU runs: besides the CUDA runtime)

    @property
    def model_states(self) -> float:
        return self.params + self.grads + self.optimizer

    @property
    def total(self) -> float:
        """Peak over the phases, with activation checkpointing when only that fits."""
        return max(self.startup, self.steps if self.fits else self.steps_ckpt, self.save, self.load)

    @property
    def peak_phase(self) -> str:
        """The phase of `total`: start-up, steps, save or load."""
        phases = {
            "start-up": self.startup,
            "steps": self.steps if self.fits else self.steps_ckpt,
            "save": self.save,
            "load": self.load,
        }
        return max(phases, key=phases.get)


def valid_layouts(m: ModelConfig, world: int) -> list[Layout]:
    """Every DP x TP x PP of `world` ranks the model can run under (`framework.config.layout_problems`,
    the one copy of the rules; ZeRO stage and batch size are judged per plan)."""
    from framework.config import layout_problems

    return [
        Layout(world // (tp * pp), tp, pp)
        for tp in range(1, world + 1)
        if world % tp == 0
        for pp in range(1, world // tp + 1)
        if (world // tp) % pp == 0 and not layout_problems(m, world, tp, pp)
    ]


def plan(cfg: RunConfig, world: int, device_bytes: Optional[int], device: str = "cuda") -> list[Plan]:
    """Every valid layout and ZeRO stage of `world` ranks with its per-rank bytes; `device` "cuda"
    plans GPU memory, "cpu" host RAM of CPU ranks."""
    from dataclasses import replace

    m, t = cfg.model, cfg.train
    plans = []
    for layout in valid_layouts(m, world):
        n = max(stage_params(m, layout))
        mbs = max(1, t.global_batch_size // (t.micro_batch_size * layout.data))
        for zero in (0, 1) if layout.pipeline > 1 else (0, 1, 2, 3):
            st = model_state_bytes(n, layout.data, zero, t.precision, layout.pipeline)
            act = activation_bytes(
                m, layout, t.micro_batch_size, mbs, t.precision, False, cfg.parallel.sequence_parallel
            )
            ack = activation_bytes(
                m, layout, t.micro_batch_size, mbs, t.precision, True, cfg.parallel.sequence_parallel
            )
            full = rank_memory(
                replace(cfg, parallel=replace(cfg.parallel, activation_checkpointing=False)), layout, zero, device
            )
            ckpt = rank_memory(
                replace(cfg, parallel=replace(cfg.parallel, activation_checkpointing=True)), layout, zero, device
            )
            limit = HEADROOM * device_bytes if device_bytes else float("inf")
            others = max(full["startup"], full["save"], full["load"])
            host = max(full[f"host_{k}"] for k in ("startup", "steps", "save", "load"))
            plans.append(
                Plan(
                    layout,
                    zero,
                    st["params"],
                    st["grads"],
                    st["optimizer"],
                    act,
                    ack,
                    max(others, full["steps"]) <= limit,
                    max(others, ckpt["steps"]) <= limit,
                    t.global_batch_size % (t.micro_batch_size * layout.data) == 0,
                    full["startup"],
                    full["steps"],
                    ckpt["steps"],
                    full["save"],
                    full["load"],
                    host,
                )
            )
    return plans


def recommend(plans: list[Plan], gpus_per_node: int = 8) -> Optional[Plan]:
    """The layout to use: see the module docstring for the order of preference. Only layouts whose
    every phase (start-up, steps with activation checkpointing at least, save, load) fits."""
    ok = [p for p in plans if p.fits_ckpt and p.batch_ok]  # never recommend what check_layout refuses
    if not ok:
        return None

    def key(p: Plan):
        zero = 0 if p.layout.data == 1 and p.zero == 0 else ZERO_PREFERENCE[p.zero] + 1
        return (
            not p.fits,
            p.layout.tensor > gpus_per_node,
            p.layout.tensor * p.layout.pipeline,
            p.layout.pipeline,
            zero,
        )

    return min(ok, key=key)
