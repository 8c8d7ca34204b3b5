"""`anvil data sample`: build the no-download sample corpus (stdlib docstrings, package READMEs/licences)."""

from __future__ import annotations

import argparse

from launch.cli import Command


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", required=True, help="folder for the JSONL shards")
    p.add_argument("--limit", type=int, default=None, help="at most this many documents (default: all)")
    p.add_argument("--shard-docs", type=int, default=2000, help="documents per shard (default 2000)")
    p.add_argument(
        "--shuffle-words",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="shuffle the words of this share of documents (chosen by id): a damaged copy to check that "
        "`anvil ladder` ranks the clean corpus first (default 0: unchanged)",
    )


def _run(args: argparse.Namespace) -> int:
    from data_pipeline.sample import write_sample_corpus

    if args.limit is not None and args.limit <= 0:
        raise SystemExit("anvil data sample: --limit must be positive")
    if not 0 <= args.shuffle_words <= 1:
        raise SystemExit(f"anvil data sample: --shuffle-words must be in [0, 1], got {args.shuffle_words}")
    stats = write_sample_corpus(args.output, args.limit, args.shard_docs, args.shuffle_words)
    print(
        f"wrote {stats['documents']} documents ({stats['characters']:,} characters) in "
        f"{stats['shards']} shards to {args.output}"
    )
    return 0


COMMANDS = [Command(("data", "sample"), "build a sample corpus of real text that needs no download", _configure, _run)]
