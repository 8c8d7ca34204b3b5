"""The engine: the only module that calls `deepspeed.initialize`.

It turns a `RunConfig` into a DeepSpeed config (ZeRO stage, precision, micro batch and gradient
accumulation, clipping), builds the AdamW optimizer (no weight decay for norms and biases), and
gives the trainer a handful of methods: `train_step`, `eval_loss`, `full_state_dict` (tests).
Checkpoints are written and read by `framework.checkpoint` from the engine's state. DeepSpeed does the data-parallel reduction, ZeRO partitioning, mixed precision
and loss scaling.

Skipping non-finite steps: DeepSpeed's ZeRO 1-3 optimizers, its bf16 optimizer and its fp16 loss
scaler already discard a step whose gradient norm is not finite (weights and optimizer state
untouched, `engine.was_step_applied()` False). The one path without that check is ZeRO-0 in fp32,
where DeepSpeed steps the client optimizer directly; `GuardedAdamW` adds the same check there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from framework.config import RunConfig
from framework.runtime import get_logger

log = get_logger("anvil.engine")


class GuardedAdamW(torch.optim.AdamW):
    """AdamW that measures the global gradient norm, skips the update when it is not finite
    (DeepSpeed reads `overflow` and `_global_grad_norm` from its optimizer), and clips otherwise.

    Used only where DeepSpeed hands the optimizer full, already all-reduced gradients (ZeRO-0, fp32):
    every rank then sees the same norm and takes the same decision.
    """

    def __init__(self, params, clip: float = 0.0, **kwargs):
        super().__init__(params, **kwargs)
        self.clip = clip
        self.overflow = False
        self._global_grad_norm = 0.0

    @torch.no_grad()
    def step(self, closure=None):
        from framework.parallel.parallelize import global_grad_norm  # tensor/pipeline-aware

        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        norm = global_grad_norm(params)
        self._global_grad_norm = float(norm)
        self.overflow = not math.isfinite(self._global_grad_norm)
        if self.overflow:
            return None
        if self.clip > 0:
            torch.nn.utils.clip_grads_with_norm_(params, self.clip, norm)
        return super().step(closure)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices (linears, embeddings); none on norms and biases (1-D tensors)."""
    decay, no_decay, seen = [], [], set()
    for _, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        ndim = len(p.ds_shape) if hasattr(p, "ds_shape") else p.dim()  # ZeRO-3 partitions are flat
        (decay if ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def guarded_path(cfg: RunConfig) -> bool:
    return cfg.parallel.zero_stage == 0 and cfg.train.precision == "fp32"


def build_optimizer(model: torch.nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    t = cfg.train
    groups = param_groups(model, t.weight_decay)
    kwargs = dict(lr=t.lr, betas=(t.beta1, t.beta2), eps=t.adam_eps)
    if guarded_path(cfg):
        return GuardedAdamW(groups, clip=t.grad_clip, **kwargs)
    if torch.cuda.is_available():
        try:
            from deepspeed.ops.adam import FusedAdam

            return FusedAdam(groups, adam_w_mode=True, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the op needs a CUDA toolchain to build
            log.warning("DeepSpeed FusedAdam unavailable (%s); using torch's fused AdamW", exc)
            return torch.optim.AdamW(groups, fused=True, **kwargs)
    # On CPU never DeepSpeedCPUAdam / FusedAdam: each costs a multi-minute C++ build.
    return torch.optim.AdamW(groups, **kwargs)


def bucket_elements(cfg: RunConfig) -> int:
    """Communication bucket size for ZeRO (elements): 4 d^2, at least 2^20. DeepSpeed's default
    (5e8 elements, 2 GB in fp32 per bucket) is sized for GPUs with large models; on a 100M model it
    dwarfs each rank's share of the model states."""
    return max(4 * cfg.model.d_model**2, 2**20)


def deepspeed_config(cfg: RunConfig, dp_size: int) -> dict:
    t, p = cfg.train, cfg.parallel
    gas = t.global_batch_size // (t.micro_batch_size * dp_size)
    bucket = bucket_elements(cfg)
    ds = {
        "train_batch_size": t.global_batch_size,
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": gas,
        # ZeRO-0 fp32 clips inside GuardedAdamW with the norm it already computed.
        "gradient_clipping": 0.0 if guarded_path(cfg) else t.grad_clip,
        "zero_optimization": {"stage": p.zero_stage, "reduce_bucket_size": bucket, "allgather_bucket_size": bucket},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**62,
        "wall_clock_breakdown": False,
        "dump_state": False,
    }
    if p.zero_stage == 3:
        ds["zero_optimization"].update(
            {
                "stage3_gather_16bit_weights_on_model_save": False,
                "stage3_prefetch_bucket_size": bucket,
                "stage3_param_persistence_threshold": 10 * cfg.model.d_model,
                "stage3_max_live_parameters": 4 * bucket,
            }
        )
    if t.precision == "bf16":
        ds["bf16"] = {"enabled": True, "check_grad_overflow": True}
        if p.zero_stage >= 1:  # ZeRO-0 bf16 must accumulate in bf16 (DeepSpeed's DDP bf16 path)
            ds["data_types"] = {"grad_accum_dtype": "fp32"}
    elif t.precision == "fp16":
        ds["fp16"] = {
            "enabled": True,
            "loss_scale": 0,
            "initial_scale_power": 16,
            "loss_scale_window": 1000,
            "hysteresis": 2,
            "min_loss_scale": 1,
        }
    return ds


@dataclass
class StepResult:
    loss: torch.Tensor  # mean of this rank's micro-batch losses (detached, fp32)
    grad_norm: float  # global norm before clipping; inf/nan when the step was skipped
    applied: bool


class Engine:
    def __init__(self, cfg: RunConfig, model: torch.nn.Module, dp_size: int, device: torch.device):
        import deepspeed

        from framework.distributed import disable_deepspeed_cpu_builds

        disable_deepspeed_cpu_builds()  # also when the process group was created by someone else
        if cfg.train.precision == "fp16" and device.type != "cuda":
            from framework.configtree import ConfigError

            raise ConfigError("config key 'train.precision': fp16 needs a GPU (on CPU use fp32 or bf16)")
        self.cfg, self.device, self.dp_size = cfg, device, dp_size
        self.ds_config = deepspeed_config(cfg, dp_size)
        self.gas = self.ds_config["gradient_accumulation_steps"]
        from framework.parallel import topology

        self.topo = topology.current()
        self.pipeline = isinstance(model, deepspeed.PipelineModule)
        # With tensor parallelism (and no pipeline) DeepSpeed needs megatron's groups as its mpu.
        mpu = self.topo.mpu() if self.topo is not None else None
        if not any(hasattr(p, "ds_id") for p in model.parameters()):  # ZeRO-3 partitions are placed already
            model = model.to(device)
        optimizer = build_optimizer(model, cfg)
        self.ds, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, mpu=mpu, config=self.ds_config
        )
        if not self.pipeline and guarded_path(cfg) and self.ds.seq_dp_world_size == 1:
            # DeepSpeed would still flatten every gradient, "all-reduce" it over one rank and copy
            # it back at each step boundary: an identity costing ~3% of a CPU step.
            self.ds.enable_backward_allreduce = False
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.train.precision]

    @property
    def module(self) -> torch.nn.Module:
        return self.ds.module

    def set_lr(self, lr: float) -> None:
        for group in self.ds.optimizer.param_groups:
            group["lr"] = lr

    def train_step(
        self, micro_batches: list[tuple[torch.Tensor, torch.Tensor]], lr: float, inject_nan: bool = False
    ) -> StepResult:
        if len(micro_batches) != self.gas:
            raise ValueError(f"expected {self.gas} micro-batches per step, got {len(micro_batches)}")
        self.set_lr(lr)
        self.ds.train()
        if self.pipeline:  # DeepSpeed's 1F1B schedule runs every micro-batch of the step
            self.ds.module.loss_fn.inject_nan = inject_nan  # the last stage's loss turns NaN
            try:
                loss = self.ds.train_batch(data_iter=iter(micro_batches)).detach().float()
            finally:
                self.ds.module.loss_fn.inject_nan = False
            applied = bool(self.ds.was_step_applied())
            norm = self.ds.get_global_grad_norm()
            norm = float(norm) if norm is not None else float("nan")
            return StepResult(loss, norm if applied else float("nan"), applied)
        losses = []
        for i, (x, y) in enumerate(micro_batches):
            loss = self.ds(x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True))
            if inject_nan and i == 0:
                loss = loss * float("nan")
            self.ds.backward(loss)
            self.ds.step()
            losses.append(loss.detach().float())
        applied = bool(self.ds.was_step_applied())
        norm = self.ds.get_global_grad_norm()
        norm = float(norm) if norm is not None else float("nan")
        return StepResult(torch.stack(losses).mean(), norm if applied else float("nan"), applied)

    @torch.no_grad()
    def eval_loss(self, micro_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Sum of micro-batch mean losses on this rank (the caller reduces and divides)."""
        if self.pipeline:
            loss = self.ds.eval_batch(iter(micro_batches), num_micro_batches=len(micro_batches))
            return loss.detach().float() * len(micro_batches)
        self.ds.eval()
        total = torch.zeros((), device=self.device, dtype=torch.float32)
        for x, y in micro_batches:
            total += self.ds(x.to(self.device), y.to(self.device)).float()
        self.ds.train()
        return total

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The unsharded fp32 weights on rank 0 (None elsewhere); collective under ZeRO-3.

        For tests and small models under data parallelism only: training never gathers the model
        (checkpoints are sharded; `anvil checkpoint consolidate` makes a full copy on demand)."""
        import torch.distributed as dist

        module = self.module
        if self.topo is not None and self.topo.layout.tensor * self.topo.layout.pipeline > 1:
            raise ValueError(
                "full_state_dict: not under tensor/pipeline parallelism; save a checkpoint and "
                "consolidate it (anvil checkpoint consolidate)"
            )
        if self.cfg.parallel.zero_stage == 3:
            import deepspeed

            params = list(module.parameters())
            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                sd = (
                    {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}
                    if dist.get_rank() == 0
                    else None
                )
        else:
            sd = (
                {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}
                if dist.get_rank() == 0
                else None
            )
        if sd is not None and getattr(module, "cfg", None) is not None and module.cfg.tie_embeddings:
            sd.pop("head.weight", None)
        return sd
