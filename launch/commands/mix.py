"""`anvil data mix`: plan a token-budget blend of tokenized sources and write the trainer's fragment."""

from __future__ import annotations

import argparse
import sys

from launch.cli import Command

DESCRIPTION = """\
Count the tokens of each tokenized source (PREFIX.idx, as written by `anvil data tokenize`), split a
token budget by the target weights, print tokens available, tokens drawn and epochs per source, and
write the blend as a YAML fragment `{data: {paths: [...], weights: [...]}}` for the trainer.
A source repeated more than --max-epochs times is refused (default 4: Muennighoff et al. 2023 find
returns from repeated data fall off after ~4 epochs); one above 3/4 of it draws a warning.
examples:
  anvil data mix --source web=tokens/web:3 --source code=tokens/code:1 --tokens 2B --output mix.yaml
  anvil train configs/train/10m.yaml data.mix=mix.yaml data.tokenizer=tokenizer.json"""


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--source",
        action="append",
        required=True,
        metavar="NAME=PREFIX:WEIGHT",
        help="a tokenized prefix (PREFIX.bin/.idx) and its target weight; repeat per source. "
        "Weights are relative: web=a:3 code=b:1 draws 75%% / 25%% of the tokens",
    )
    p.add_argument(
        "--tokens", required=True, help="total training tokens to plan for, e.g. 2000000000, 2e9 or 2B (K, M, B, T)"
    )
    p.add_argument("--output", required=True, help="mix YAML to write (then `anvil train ... data.mix=FILE`)")
    p.add_argument(
        "--max-epochs",
        type=float,
        default=4.0,
        help="refuse a mix that repeats any source more often than this (default 4)",
    )


def _run(args: argparse.Namespace) -> int:
    from data_pipeline.tokens.mix import (
        MixError,
        check_epochs,
        parse_source,
        parse_tokens,
        plan_mix,
        write_mix,
    )
    from framework.runtime import print_table

    try:
        if not args.max_epochs > 0:
            raise MixError(f"--max-epochs must be positive, got {args.max_epochs}")
        total = parse_tokens(args.tokens)
        rows = plan_mix([parse_source(s) for s in args.source], total)
    except MixError as exc:
        raise SystemExit(f"anvil data mix: {exc}") from None
    print_table(
        [
            {
                "source": r.name,
                "prefix": r.prefix,
                "weight": round(r.share, 4),
                "tokens available": f"{r.available:,}",
                "tokens drawn": f"{r.drawn:,}",
                "epochs": round(r.epochs, 3),
            }
            for r in rows
        ],
        title=f"mix of {total:,} tokens (max {args.max_epochs:g} epochs per source)",
    )
    try:
        warnings = check_epochs(rows, args.max_epochs)
    except MixError as exc:
        raise SystemExit(f"anvil data mix: {exc}; nothing written") from None
    for warning in warnings:  # on stderr directly: a CLI warning must not depend on logging set-up
        print(f"anvil data mix: warning: {warning}", file=sys.stderr)
    write_mix(rows, total, args.output)
    print(f"mix: {args.output} (train with: anvil train CONFIG.yaml data.mix={args.output})")
    return 0


COMMANDS = [
    Command(
        ("data", "mix"),
        "blend tokenized sources by weight for a token budget (data.mix YAML)",
        _configure,
        _run,
        description=DESCRIPTION,
    )
]
