"""`anvil finetune`: LoRA fine-tuning of a local transformers model with peft + accelerate."""

from __future__ import annotations

import argparse

from launch.cli import Command

DESCRIPTION = """LoRA fine-tuning (peft) of a local transformers folder with accelerate.

Data parallel over all processes: run it under torchrun for several (accelerate launch --cpu
would silently start one). --zero-stage 1-3 uses accelerate's DeepSpeed plugin; 0 is plain DDP.
Writes OUTPUT/adapter (peft), OUTPUT/merged (full model, unless --no-merge), OUTPUT/metrics.jsonl
and OUTPUT/finetune.json (held-out loss before/after, trainable parameter count).

  torchrun --nproc_per_node 2 $(which anvil) finetune --model hf/ --data docs.jsonl --output ft/
"""


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="local transformers folder (e.g. from `anvil export hf`)")
    p.add_argument("--data", required=True, nargs="+", help="JSONL file(s)/folder(s) of {id, text}")
    p.add_argument("--eval-data", nargs="+", default=[], help="held-out JSONL (default: split off --data by id hash)")
    p.add_argument("--output", default="finetune_out", help="output folder (default finetune_out)")
    p.add_argument("--lora-rank", type=int, default=8, help="LoRA rank r (default 8)")
    p.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA alpha (default 16)")
    p.add_argument(
        "--target-modules",
        nargs="+",
        default=None,
        help="module names to adapt (default q_proj k_proj v_proj o_proj; c_attn c_proj for GPT-2)",
    )
    p.add_argument("--zero-stage", type=int, default=0, help="0: DDP; 1-3: DeepSpeed ZeRO stage (default 0)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps (default 100)")
    p.add_argument("--micro-batch-size", type=int, default=4, help="blocks per rank per micro step (default 4)")
    p.add_argument("--global-batch-size", type=int, default=8, help="blocks per optimizer step (default 8)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per block (default 128)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="default fp32")
    p.add_argument("--seed", type=int, default=1234, help="default 1234")
    p.add_argument("--no-merge", action="store_true", help="save the adapter only")
    p.add_argument("overrides", nargs="*", help="further FinetuneConfig key=value settings")


def _run(args: argparse.Namespace) -> int:
    from framework.configtree import build, parse_overrides, merge
    from framework.interop.finetune import FinetuneConfig, run_finetune

    values = {
        "model": args.model,
        "data": args.data,
        "eval_data": args.eval_data,
        "output": args.output,
        "lora_rank": args.lora_rank,
        "lora_alpha": args.lora_alpha,
        "zero_stage": args.zero_stage,
        "steps": args.steps,
        "micro_batch_size": args.micro_batch_size,
        "global_batch_size": args.global_batch_size,
        "seq_len": args.seq_len,
        "lr": args.lr,
        "precision": args.precision,
        "seed": args.seed,
        "merge": not args.no_merge,
    }
    if args.target_modules:
        values["target_modules"] = args.target_modules
    cfg = build(FinetuneConfig, merge(values, parse_overrides(args.overrides)))
    run_finetune(cfg)
    return 0


COMMANDS = [
    Command(
        ("finetune",),
        "LoRA fine-tuning of a transformers folder (peft + accelerate, ZeRO optional)",
        _configure,
        _run,
        DESCRIPTION,
    )
]
