"""`anvil export hf`: an Anvil checkpoint (any training layout) -> a transformers folder."""

from __future__ import annotations

import argparse
import json

from launch.cli import Command

DESCRIPTION = """Write a folder that transformers' AutoModelForCausalLM and AutoTokenizer load offline:
config.json (LlamaForCausalLM, or GPT2LMHeadModel for model.arch=gpt2), model.safetensors (sharded
above --max-shard-size) and the tokenizer files. Reads the checkpoint's full weights (assembled
from its shards), so checkpoints of any tensor / pipeline / ZeRO layout export the same way.

  anvil export hf --checkpoint runs/tiny --output hf/ --verify
"""


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="run folder (its latest checkpoint) or one checkpoint folder")
    p.add_argument("--output", required=True, help="folder to write (replaced if it is an earlier export)")
    p.add_argument("--tokenizer", default=None, help="tokenizer.json (default: the one the run trained with)")
    p.add_argument("--max-shard-size", default="2GB", help="split model.safetensors above this size (default 2GB)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32", help="default float32")
    p.add_argument(
        "--verify",
        action="store_true",
        help="load the export in transformers and compare logits and greedy tokens with Anvil's model",
    )


def _run(args: argparse.Namespace) -> int:
    from framework.checkpoint.store import CheckpointError
    from framework.interop.hf_export import ExportError, export_hf

    try:
        info = export_hf(args.checkpoint, args.output, args.tokenizer, args.max_shard_size, args.dtype)
    except (ExportError, CheckpointError) as exc:
        raise SystemExit(f"anvil export hf: {exc}")
    print(
        f"exported {info['checkpoint']} (step {info['step']}) as {info['class']} to {args.output}: "
        f"{', '.join(info['files'])}"
    )
    if args.verify:
        from framework.interop.parity import compare

        result = compare(args.checkpoint, args.output)
        print(json.dumps({k: result[k] for k in ("max_abs_logit_diff", "greedy_equal")}))
        tol = 1e-4 if args.dtype == "float32" else 5e-2
        if result["max_abs_logit_diff"] > tol or not result["greedy_equal"]:
            raise SystemExit(
                f"anvil export hf: verification failed: max |logit diff| "
                f"{result['max_abs_logit_diff']:.3g} (tolerance {tol}), greedy equal: {result['greedy_equal']}"
            )
    return 0


COMMANDS = [
    Command(
        ("export", "hf"), "export a checkpoint to a Hugging Face transformers folder", _configure, _run, DESCRIPTION
    )
]
