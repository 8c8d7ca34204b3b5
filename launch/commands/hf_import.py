"""`anvil import hf`: a local transformers Llama / GPT-2 folder -> an Anvil run to continue training."""

from __future__ import annotations

import argparse

from launch.cli import Command

DESCRIPTION = """Convert a local transformers folder (LlamaForCausalLM or GPT2LMHeadModel) into an Anvil
run folder: OUTPUT/config.yaml (model.* from config.json; train.* / parallel.* / data.* from
KEY=VALUE), OUTPUT/tokenizer.json and a step-0 checkpoint in OUTPUT/checkpoints/. Then continue
pretraining:

  anvil import hf --model llama_dir/ --output runs/cont train.global_batch_size=16
  anvil train runs/cont/config.yaml data.paths=[tok/shard] train.steps=1000

The checkpoint holds the full fp32 weights (no optimizer state: Adam starts from zero, as in a new
run) and does not depend on a layout, so one process writes it, without DeepSpeed, and training
resumes from it under any DP x TP x PP x ZeRO layout (parallel.* settings given here only go into
config.yaml; they can be overridden when training). Under torchrun only rank 0 writes.
train.global_batch_size must match the later training run (the data position is in samples).
"""


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        metavar="DIR",
        help="local transformers folder: config.json, model.safetensors (or sharded model-*.safetensors "
        "+ index, or pytorch_model.bin), tokenizer.json if any",
    )
    p.add_argument(
        "--output",
        required=True,
        metavar="RUN_DIR",
        help="run folder to create (refused if it already holds checkpoints)",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="training config settings written to OUTPUT/config.yaml (train.*, parallel.*, data.*, "
        "model.seq_len; other model.* keys come from config.json)",
    )


def _run(args: argparse.Namespace) -> int:
    from framework.checkpoint.store import CheckpointError
    from framework.interop.hf_export import ExportError
    from framework.interop.hf_import import import_hf

    try:
        info = import_hf(args.model, args.output, args.overrides)
    except (ExportError, CheckpointError) as exc:
        raise SystemExit(f"anvil import hf: {exc}")
    from framework.runtime import is_rank0

    if is_rank0() and info["parameters"] is not None:
        print(
            f"imported {args.model} ({info['arch']}, {info['parameters']:,} parameters) into {info['checkpoint']}; "
            f"continue with: anvil train {info['run_dir']}/config.yaml data.paths=[...]"
        )
    return 0


COMMANDS = [
    Command(
        ("import", "hf"),
        "import a Hugging Face Llama/GPT-2 folder as an Anvil checkpoint",
        _configure,
        _run,
        DESCRIPTION,
    )
]
