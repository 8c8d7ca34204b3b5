"""`anvil import hf`: a local transformers Llama / GPT-2 folder -> an Anvil run to continue training."""
from __future__ import annotations

import argparse

from launch.cli import Command

DESCRIPTION = """Convert a local transformers folder (LlamaForCausalLM or GPT2LMHeadModel) into an Anvil
run folder: OUTPUT/config.yaml (model.* from config.json; train.* / parallel.* from KEY=VALUE),
OUTPUT/tokenizer.json and a step-0 checkpoint in OUTPUT/checkpoints/. Then continue pretraining:

  anvil import hf --model llama_dir/ --output runs/cont train.global_batch_size=16
  anvil train runs/cont/config.yaml data.paths=[tok/shard] train.steps=1000

The engine checkpoint is written at the layout of this process group: run the import under
torchrun with the parallel.* settings you will train with (ZeRO-0 resumes at any data-parallel size).
train.global_batch_size must match the later training run.
"""


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="local transformers folder (config.json + weights)")
    p.add_argument("--output", required=True, help="new run folder to create")
    p.add_argument("overrides", nargs="*", help="training config KEY=VALUE settings (train.*, parallel.*, data.*, model.seq_len)")


def _run(args: argparse.Namespace) -> int:
    from framework.checkpoint.store import CheckpointError
    from framework.interop.hf_export import ExportError
    from framework.interop.hf_import import import_hf

    try:
        info = import_hf(args.model, args.output, args.overrides)
    except (ExportError, CheckpointError) as exc:
        raise SystemExit(f"anvil import hf: {exc}")
    from framework.runtime import is_rank0

    if is_rank0():
        print(f"imported {args.model} ({info['arch']}, {info['parameters']:,} parameters) into {info['checkpoint']}; "
              f"continue with: anvil train {info['run_dir']}/config.yaml data.paths=[...]")
    return 0


COMMANDS = [Command(("import", "hf"), "import a Hugging Face Llama/GPT-2 folder as an Anvil checkpoint",
                    _configure, _run, DESCRIPTION)]
