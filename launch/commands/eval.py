"""`anvil eval`: lm-evaluation-harness tasks and per-domain held-out loss of a checkpoint (or an
exported transformers folder)."""

from __future__ import annotations

import argparse
import json
import os

from launch.cli import Command

DESCRIPTION = """Evaluate a checkpoint of any training layout (it reads the consolidated weights) or
a transformers folder, offline:

--tasks: lm-evaluation-harness tasks through Anvil's own model (log-likelihood, rolling
log-likelihood, greedy generation), batched. Task YAMLs come from --include-path folders (Anvil
ships configs/eval: anvil_mc, anvil_cloze) or the harness's registry when the task's dataset is
in the local cache; nothing is downloaded. results.json holds the harness's own output
({"results": {TASK: {"acc,none": ..., "acc_stderr,none": ...}}, "versions", "n-samples", ...}).

--data: token-mean next-token loss and perplexity on tokenized PREFIX.bin/.idx shards, in
non-overlapping windows of the model's context, per domain (NAME=PREFIX, Paloma-style) and over
all of them.

Under torchrun the examples / windows are split over ranks; results do not depend on the number
of ranks.

  anvil eval --checkpoint runs/tiny --tasks anvil_mc,anvil_cloze --include-path configs/eval --output results.json
  anvil eval --checkpoint runs/tiny --data web=tok/web_valid code=tok/code_valid --output eval.json
"""


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="run folder, checkpoint folder, or transformers folder")
    p.add_argument(
        "--tasks", default=None, help="comma-separated lm-evaluation-harness tasks, e.g. anvil_mc,anvil_cloze"
    )
    p.add_argument(
        "--include-path",
        action="append",
        default=None,
        help="folder of harness task YAMLs (repeatable; as lm_eval --include_path)",
    )
    p.add_argument("--limit", type=int, default=None, help="at most this many examples per task (default: all)")
    p.add_argument(
        "--data", nargs="+", default=None, help="tokenized prefixes, each PREFIX or NAME=PREFIX (one domain each)"
    )
    p.add_argument("--output", default=None, help="write the JSON result here too (default: stdout only)")
    p.add_argument("--seq-len", type=int, default=None, help="window length (default: the model's seq_len)")
    p.add_argument("--batch-size", type=int, default=8, help="windows or task requests per forward pass (default 8)")
    p.add_argument("--max-tokens", type=int, default=None, help="evaluate at most this many tokens per prefix")


def _domains(specs: list[str]) -> dict[str, str]:
    """NAME=PREFIX or PREFIX (named by its file name) -> {name: prefix}; names must be unique."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, prefix = spec.partition("=")
        if not sep:
            name, prefix = os.path.basename(spec.removesuffix(".bin").removesuffix(".idx")), spec
        if not name or not prefix:
            raise SystemExit(f"anvil eval: --data {spec!r}: expected PREFIX or NAME=PREFIX")
        if name in out:
            raise SystemExit(f"anvil eval: --data: domain name {name!r} given twice (use NAME=PREFIX)")
        out[name] = prefix.removesuffix(".bin").removesuffix(".idx")
    return out


def _run(args: argparse.Namespace) -> int:

    from framework.checkpoint.store import CheckpointError
    from framework.eval.harness import TaskError
    from framework.eval.perplexity import evaluate_domains, load_scorer
    from framework.interop.hf_export import ExportError

    if not args.tasks and not args.data:
        raise SystemExit("anvil eval: give --tasks T1,T2 and/or --data PREFIX ... (nothing to evaluate)")
    if args.batch_size <= 0 or (args.seq_len is not None and args.seq_len <= 1):
        raise SystemExit("anvil eval: --batch-size must be positive and --seq-len at least 2")
    if args.limit is not None and args.limit <= 0:
        raise SystemExit("anvil eval: --limit must be positive")
    tasks = [t.strip() for t in (args.tasks or "").split(",") if t.strip()]
    domains = _domains(args.data or [])
    rank, world = 0, int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        from framework.distributed import init_distributed

        rank, world, _ = init_distributed()
    result: dict = {}
    try:
        scorer = load_scorer(args.checkpoint)
        result = {"checkpoint": scorer.source, "step": scorer.step}
        if domains:
            result.update(
                {
                    "data": args.data,
                    **evaluate_domains(scorer, domains, args.seq_len, args.batch_size, args.max_tokens, rank, world),
                }
            )
        if tasks:
            result.update(_harness(scorer, tasks, args, rank, world) or {})
    except (ExportError, CheckpointError, TaskError, ValueError) as exc:
        raise SystemExit(f"anvil eval: {exc}")
    if rank == 0:
        _report(result, args.output)
    return 0


def _harness(scorer, tasks: list[str], args, rank: int, world: int) -> dict | None:
    from lm_eval.utils import handle_non_serializable

    from framework.eval.harness import run_tasks
    from framework.eval.lm_adapter import from_scorer

    lm = from_scorer(scorer, args.batch_size, rank, world)
    out = run_tasks(lm, tasks, args.include_path, args.limit)
    if out is None:
        return None
    out.pop("samples", None)
    return json.loads(json.dumps(out, default=handle_non_serializable))


def _report(result: dict, output: str | None) -> None:
    from pathlib import Path

    from framework.runtime import print_table

    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(result, indent=2) + "\n")
    if "results" in result:
        from lm_eval.utils import make_table

        print(make_table(result))  # the harness's own table
    if "domains" in result:
        rows = [
            {"domain": k, **{f: v[f] for f in ("tokens", "loss", "perplexity")}} for k, v in result["domains"].items()
        ]
        rows.append({"domain": "all", **{f: result[f] for f in ("tokens", "loss", "perplexity")}})
        print_table(rows, title=f"anvil eval: held-out loss (step {result['step']})")
    if output:
        print(f"results written to {output}")
    else:  # one JSON line for scripts (the harness's per-task configs left out)
        print(json.dumps({k: v for k, v in result.items() if k not in ("configs", "config")}))


COMMANDS = [
    Command(
        ("eval",),
        "evaluate a checkpoint: lm-eval harness tasks and per-domain held-out loss (JSON)",
        _configure,
        _run,
        DESCRIPTION,
    )
]
