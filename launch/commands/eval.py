"""`anvil eval`: loss and perplexity of a checkpoint (or exported model) on held-out tokens."""

from __future__ import annotations

import argparse
import json

from launch.cli import Command

DESCRIPTION = """Token-mean next-token loss and perplexity on tokenized PREFIX.bin/.idx shards, in
non-overlapping windows of the model's context. Works for a checkpoint of any training layout (it
reads the consolidated weights) or a transformers folder. Under torchrun the windows are split
over ranks; the result does not depend on the number of ranks.

  anvil eval --checkpoint runs/tiny --data tok/valid --output eval.json
"""


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="run folder, checkpoint folder, or transformers folder")
    p.add_argument("--data", required=True, nargs="+", help="tokenized prefix(es) (PREFIX.bin / PREFIX.idx)")
    p.add_argument("--output", default=None, help="write the JSON result here too (default: stdout only)")
    p.add_argument("--seq-len", type=int, default=None, help="window length (default: the model's seq_len)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    p.add_argument("--max-tokens", type=int, default=None, help="evaluate at most this many tokens per prefix")


def _run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from framework.checkpoint.store import CheckpointError
    from framework.eval.perplexity import evaluate_prefix, load_scorer
    from framework.interop.hf_export import ExportError
    from framework.runtime import print_table

    if args.batch_size <= 0 or (args.seq_len is not None and args.seq_len <= 1):
        raise SystemExit("anvil eval: --batch-size must be positive and --seq-len at least 2")
    rank, world = 0, int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        from framework.distributed import init_distributed

        rank, world, _ = init_distributed()
    try:
        scorer = load_scorer(args.checkpoint)
        result = evaluate_prefix(
            scorer,
            [p.removesuffix(".bin").removesuffix(".idx") for p in args.data],
            args.seq_len,
            args.batch_size,
            args.max_tokens,
            rank,
            world,
        )
    except (ExportError, CheckpointError, ValueError) as exc:
        raise SystemExit(f"anvil eval: {exc}")
    result = {"checkpoint": scorer.source, "step": scorer.step, "data": args.data, **result}
    if rank == 0:
        print(json.dumps(result))
        if args.output:
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
        print_table([{k: result[k] for k in ("step", "tokens", "loss", "perplexity")}], title="anvil eval")
    return 0


COMMANDS = [
    Command(("eval",), "loss and perplexity of a checkpoint on held-out tokens (JSON)", _configure, _run, DESCRIPTION)
]
