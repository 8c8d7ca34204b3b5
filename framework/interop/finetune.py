"""LoRA fine-tuning of a Hugging Face causal LM with `peft` + `accelerate` (DeepSpeed ZeRO optional).

`anvil finetune --model HF_DIR --data JSONL` adapts an exported (or any local transformers) model:
the base weights stay frozen, `peft` adds low-rank adapters, `accelerate` runs data parallelism
(DDP, or DeepSpeed ZeRO 1-3 through its DeepSpeed plugin), and at the end the adapter is saved and
merged back into a plain transformers folder that `anvil import hf` or any HF tool reads.

Determinism across world sizes is by construction: the global batch is fixed and cut into
`micro_batch_size` blocks per rank and accumulation step, every block is full (documents are
packed), and the held-out split is a hash of the document id. So 1 and 2 ranks see the same
global batches and give the same losses up to reduction order.

CPU traps handled here (measured, see CPU_NOTES.md): `accelerate launch --cpu` runs a single
process, so use torchrun; with the DeepSpeed plugin on CPU each rank thinks it is rank 0 unless
the process group is created with gloo explicitly; the plugin silently clips gradients at 1.0,
so clipping is always set from our config.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from framework.configtree import ConfigError, to_dict
from framework.runtime import get_logger, print_table, progress, seed_everything

log = get_logger("anvil.finetune")


DEFAULT_TARGETS = {"llama": ["q_proj", "k_proj", "v_proj", "o_proj"], "gpt2": ["c_attn", "c_proj"]}


@dataclass
class FinetuneConfig:
    model: str = ""  # a local transformers folder (config.json, weights, tokenizer files)
    data: list[str] = field(default_factory=list)  # JSONL files / folders with {"id", "text"}
    eval_data: list[str] = field(default_factory=list)  # held-out JSONL; empty: split off `data`
    eval_fraction: float = 0.1  # share of `data` documents held out (by id hash) when no eval_data
    output: str = "finetune_out"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0  # >0 makes runs depend on the world size (per-rank dropout RNG)
    target_modules: list[str] = field(default_factory=list)  # empty: attention projections of the model type
    zero_stage: int = 0  # 0: DDP through accelerate; 1-3: accelerate's DeepSpeed plugin
    steps: int = 100
    micro_batch_size: int = 4
    global_batch_size: int = 8
    seq_len: int = 128
    lr: float = 1e-3
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    precision: str = "fp32"  # fp32 | bf16
    seed: int = 1234
    log_interval: int = 10
    eval_interval: int = 0  # 0: evaluate before and after training only
    max_eval_blocks: int = 256
    merge: bool = True

    def validate(self, world_size: int = 1) -> int:
        """Check the settings; return the gradient-accumulation steps for this world size."""
        if not self.model:
            raise ConfigError("config key 'model': a local transformers folder is required")
        if not (Path(self.model) / "config.json").is_file():
            raise ConfigError(f"config key 'model': {self.model} has no config.json")
        if not self.data:
            raise ConfigError("config key 'data': at least one JSONL file or folder is required")
        for name in ("lora_rank", "steps", "micro_batch_size", "global_batch_size", "seq_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"config key '{name}': must be positive, got {getattr(self, name)}")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"config key 'zero_stage': expected 0, 1, 2 or 3, got {self.zero_stage}")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"config key 'precision': expected fp32 or bf16, got {self.precision!r}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ConfigError(f"config key 'eval_fraction': expected [0, 1), got {self.eval_fraction}")
        per_step = self.micro_batch_size * world_size
        if self.global_batch_size % per_step:
            raise ConfigError(
                f"config key 'global_batch_size': {self.global_batch_size} is not divisible by "
                f"micro_batch_size x world size = {self.micro_batch_size} x {world_size} = {per_step}"
            )
        return self.global_batch_size // per_step


def _make_accelerator(cfg: FinetuneConfig, accum: int):
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs
    from datetime import timedelta

    from framework.distributed import init_distributed

    # Our process group first (gloo on CPU, also for one process; no DeepSpeed C++ builds), so
    # accelerate finds it initialised and every path is the same at any world size.
    init_distributed()
    cpu = not torch.cuda.is_available()
    # Explicit gloo on CPU: without it the DeepSpeed plugin leaves every rank believing it is rank 0.
    pg = InitProcessGroupKwargs(backend="gloo" if cpu else "nccl", timeout=timedelta(seconds=300))
    mixed = "bf16" if cfg.precision == "bf16" else "no"
    if cfg.zero_stage == 0:
        return Accelerator(cpu=cpu, mixed_precision=mixed, gradient_accumulation_steps=accum, kwargs_handlers=[pg])
    ds_config = {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": accum,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage, "stage3_gather_16bit_weights_on_model_save": True},
        "bf16": {"enabled": cfg.precision == "bf16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    return Accelerator(
        mixed_precision=mixed, deepspeed_plugin=DeepSpeedPlugin(hf_ds_config=ds_config), kwargs_handlers=[pg]
    )


def _tokenize_blocks(cfg: FinetuneConfig, tokenizer) -> tuple[list[list[int]], list[list[int]], dict]:
    from framework.interop.textdata import ReadStats, is_held_out, iter_documents, pack

    eos = tokenizer.eos_token_id
    stats = ReadStats()
    train_tok, eval_tok = [], []

    def encode(text: str) -> list[int]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids + ([eos] if eos is not None else [])

    for doc in iter_documents(cfg.data, stats):
        held = not cfg.eval_data and is_held_out(doc["id"], cfg.eval_fraction)
        (eval_tok if held else train_tok).append(encode(doc["text"]))
    if cfg.eval_data:
        eval_tok = [encode(d["text"]) for d in iter_documents(cfg.eval_data, stats)]
    block = cfg.seq_len
    train_blocks, eval_blocks = pack(train_tok, block), pack(eval_tok, block)[: cfg.max_eval_blocks]
    if not train_blocks:
        raise ConfigError(f"config key 'data': fewer than seq_len={block} training tokens after the split")
    info = {
        "docs": stats.docs,
        "skipped": stats.skipped,
        "train_docs": len(train_tok),
        "eval_docs": len(eval_tok),
        "train_blocks": len(train_blocks),
        "eval_blocks": len(eval_blocks),
    }
    return train_blocks, eval_blocks, info


def _evaluate(model, blocks: list[list[int]], accelerator, micro: int) -> float:
    """Token-mean loss over `blocks`, split across ranks. Every rank runs the same number of
    forwards (ZeRO-3 gathers parameters collectively), padding with zero-weight repeats."""
    import torch

    if not blocks:
        return float("nan")
    rank, world = accelerator.process_index, accelerator.num_processes
    per_rank = math.ceil(len(blocks) / world)
    mine = list(range(rank, len(blocks), world))
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, per_rank, micro):
            idx = [mine[j] if j < len(mine) else 0 for j in range(i, min(i + micro, per_rank))]
            weight = torch.tensor(
                [1.0 if j < len(mine) else 0.0 for j in range(i, min(i + micro, per_rank))],
                dtype=torch.float64,
                device=accelerator.device,
            )
            x = torch.tensor([blocks[k] for k in idx], device=accelerator.device)
            logits = model(input_ids=x).logits.float()
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1), reduction="none"
            )
            per_block = loss.view(x.size(0), -1).double().mean(dim=1)
            total[0] += (per_block * weight).sum()
            total[1] += weight.sum()
    model.train(was_training)
    total = accelerator.reduce(total, reduction="sum")
    return float(total[0] / total[1])


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; under ZeRO-3 uses DeepSpeed's full sizes."""
    trainable = total = 0
    for p in model.parameters():
        n = getattr(p, "ds_numel", p.numel())
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def run_finetune(cfg: FinetuneConfig) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    accum = cfg.validate(world)
    accelerator = _make_accelerator(cfg, accum)
    if accelerator.num_processes != world:
        raise RuntimeError(f"accelerate started {accelerator.num_processes} processes, WORLD_SIZE is {world}")
    rank = accelerator.process_index
    seed_everything(cfg.seed)
    out = Path(cfg.output)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)

    tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=torch.float32)
    seq_limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if seq_limit and cfg.seq_len > seq_limit:
        raise ConfigError(f"config key 'seq_len': {cfg.seq_len} exceeds the model's {seq_limit} positions")
    targets = list(cfg.target_modules) or DEFAULT_TARGETS.get(model.config.model_type, DEFAULT_TARGETS["llama"])
    lora = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        model = get_peft_model(model, lora)
    except ValueError as exc:
        raise ConfigError(f"config key 'target_modules': {exc}") from exc
    trainable, total = count_parameters(model)

    train_blocks, eval_blocks, data_info = _tokenize_blocks(cfg, tokenizer)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    warm = max(cfg.warmup_steps, 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    model.train()

    initial = _evaluate(model, eval_blocks, accelerator, cfg.micro_batch_size)
    log.info(
        "LoRA rank %d: %s trainable of %s parameters; %d ranks x %d micro x %d accum; "
        "%d train / %d eval blocks; held-out loss %.4f",
        cfg.lora_rank,
        f"{trainable:,}",
        f"{total:,}",
        world,
        cfg.micro_batch_size,
        accum,
        len(train_blocks),
        len(eval_blocks),
        initial,
    )

    gen = torch.Generator().manual_seed(cfg.seed)
    order: list[int] = []
    metrics_path = out / "metrics.jsonl"
    metrics = open(metrics_path, "w") if accelerator.is_main_process else None
    history, start = [], time.perf_counter()
    micro_done, first_blocks = 0, []  # per rank: proof of real data parallelism in finetune.json
    for step in progress(range(cfg.steps), total=cfg.steps, desc="finetune", unit="step"):
        while len(order) < cfg.global_batch_size:  # epochs of seeded permutations, identical on all ranks
            order += torch.randperm(len(train_blocks), generator=gen).tolist()
        batch, order = order[: cfg.global_batch_size], order[cfg.global_batch_size :]
        step_loss = torch.zeros((), dtype=torch.float64, device=accelerator.device)
        for a in range(accum):
            lo = (a * world + rank) * cfg.micro_batch_size
            mine = batch[lo : lo + cfg.micro_batch_size]
            micro_done += 1
            if step == 0:
                first_blocks += mine
            x = torch.tensor([train_blocks[i] for i in mine], device=accelerator.device)
            with accelerator.accumulate(model):
                loss = model(input_ids=x, labels=x).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and accelerator.distributed_type.name != "DEEPSPEED":
                    accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            step_loss += loss.detach().double() / accum
        step_loss = float(accelerator.reduce(step_loss, reduction="mean"))
        row = {"step": step + 1, "loss": step_loss, "lr": scheduler.get_last_lr()[0]}
        if cfg.eval_interval and (step + 1) % cfg.eval_interval == 0:
            row["val_loss"] = _evaluate(model, eval_blocks, accelerator, cfg.micro_batch_size)
        history.append(row)
        if metrics:
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
        if (step + 1) % cfg.log_interval == 0 or step + 1 == cfg.steps:
            log.info("step %d/%d loss %.4f", step + 1, cfg.steps, step_loss)
    elapsed = time.perf_counter() - start
    final = _evaluate(model, eval_blocks, accelerator, cfg.micro_batch_size)
    if metrics:
        metrics.close()

    # Proof that the run was really distributed: every rank reports its index and micro-batches.
    from accelerate.utils import gather_object

    seen = gather_object([{"rank": rank, "micro_batches": micro_done, "first_step_blocks": first_blocks}])
    summary = _save(cfg, accelerator, model, tokenizer, out)
    summary.update(
        {
            "world_size": world,
            "ranks": seen,
            "zero_stage": cfg.zero_stage,
            "accumulation_steps": accum,
            "trainable_params": trainable,
            "total_params": total,
            "initial_eval_loss": initial,
            "final_eval_loss": final,
            "final_train_loss": history[-1]["loss"],
            "steps": cfg.steps,
            "seconds": round(elapsed, 3),
            "data": data_info,
            "config": to_dict(cfg),
        }
    )
    if accelerator.is_main_process:
        (out / "finetune.json").write_text(json.dumps(summary, indent=2) + "\n")
        print_table(
            [
                {
                    "ranks": world,
                    "zero": cfg.zero_stage,
                    "trainable": f"{trainable:,}",
                    "total": f"{total:,}",
                    "eval loss before": initial,
                    "eval loss after": final,
                    "s": elapsed,
                }
            ],
            title=f"anvil finetune -> {out}",
        )
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


@contextmanager
def _without_zero3_init():
    """Under the DeepSpeed plugin with ZeRO-3, transformers builds every model inside
    `zero.Init`, a collective; rank 0 building the merge model alone would hang. Lift it here."""
    from transformers.integrations import deepspeed as hf_ds

    ref = hf_ds._hf_deepspeed_config_weak_ref
    obj = ref() if ref is not None else None
    hf_ds.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if obj is not None:
            hf_ds.set_hf_deepspeed_config(obj)


def _save(cfg: FinetuneConfig, accelerator, model, tokenizer, out: Path) -> dict:
    """Save the adapter (peft format) and, when asked, the merged full model. The adapter state is
    gathered collectively (ZeRO-3 shards it); only rank 0 writes."""
    import torch
    from peft import PeftModel, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    full = accelerator.get_state_dict(model)  # collective under ZeRO-3
    paths = {"adapter": str(out / "adapter"), "merged": str(out / "merged") if cfg.merge else None}
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        adapter_sd = get_peft_model_state_dict(unwrapped, state_dict=full)
        adapter_sd = {k: v.detach().float().cpu().contiguous() for k, v in adapter_sd.items()}
        unwrapped.save_pretrained(paths["adapter"], state_dict=adapter_sd, safe_serialization=True)
        if cfg.merge:
            with _without_zero3_init():
                base = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=torch.float32)
                merged = PeftModel.from_pretrained(base, paths["adapter"]).merge_and_unload()
            merged.save_pretrained(paths["merged"], safe_serialization=True)
            tokenizer.save_pretrained(paths["merged"])
    accelerator.wait_for_everyone()
    return {"output": paths}
