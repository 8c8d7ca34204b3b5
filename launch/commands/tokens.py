"""`anvil tokenizer train` and `anvil data tokenize`: curated text -> tokenizer.json -> Megatron shards."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from launch.cli import Command


def _configure_train(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="files or folders of .jsonl(.gz/.zst), .parquet, .warc(.gz), .wet(.gz)",
    )
    p.add_argument(
        "--vocab-size",
        type=int,
        required=True,
        help="vocabulary size; rounded up to a multiple of 128 (special tokens included)",
    )
    p.add_argument("--output", required=True, help="tokenizer.json to write (Hugging Face tokenizers format)")
    p.add_argument("--min-frequency", type=int, default=2, help="minimum pair count for a merge (default 2)")


def _run_train(args: argparse.Namespace) -> int:
    import time

    from data_pipeline.tokens.inputs import iter_input_texts
    from data_pipeline.tokens.tokenizer import train_tokenizer
    from framework.runtime import get_logger, print_table

    log = get_logger("tokenizer")
    rejected: dict[str, int] = {}
    out = Path(args.output)
    start = time.perf_counter()
    try:
        texts = iter_input_texts(args.inputs, rejected, out.parent / "rejected" / f"{out.stem}.jsonl")
        _, stats = train_tokenizer(texts, args.vocab_size, out, args.min_frequency, show_progress=sys.stderr.isatty())
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"anvil tokenizer train: {exc}") from exc
    log.info("trained on %d documents; wrote %s", stats.documents, out)
    print_table(
        [
            {
                "documents": stats.documents,
                "characters": stats.characters,
                "skipped (empty)": stats.skipped_empty,
                "rejected": sum(rejected.values()),
                "BPE tokens": stats.bpe_vocab,
                "vocab (padded)": stats.vocab_size,
                "seconds": time.perf_counter() - start,
            }
        ],
        title=f"tokenizer {out}",
    )
    return 0


def _configure_tokenize(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="files or folders of .jsonl(.gz/.zst), .parquet, .warc(.gz), .wet(.gz)",
    )
    p.add_argument("--tokenizer", required=True, help="tokenizer.json (from `anvil tokenizer train`)")
    p.add_argument(
        "--output-prefix",
        required=True,
        help="writes PREFIX.bin, PREFIX.idx (Megatron indexed dataset) and PREFIX.json",
    )
    p.add_argument(
        "--workers", type=int, default=1, help="tokenizer processes (default 1); the output is identical for any number"
    )
    p.add_argument("--batch-docs", type=int, default=256, help="documents per worker batch (default 256)")


def _run_tokenize(args: argparse.Namespace) -> int:
    from data_pipeline.tokens.inputs import input_sources
    from data_pipeline.tokens.tokenize import rejected_path, tokenize_sources
    from framework.runtime import get_logger, print_table

    if args.batch_docs < 1:
        raise SystemExit(f"anvil data tokenize: --batch-docs must be >= 1, got {args.batch_docs}")
    try:
        stats = tokenize_sources(
            input_sources(args.inputs),
            args.tokenizer,
            args.output_prefix,
            workers=args.workers,
            batch_docs=args.batch_docs,
        )
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"anvil data tokenize: {exc}") from exc
    except OSError as exc:  # disk full, I/O error: finished input shards keep their parts
        raise SystemExit(
            f"anvil data tokenize: writing {exc.filename or '?'} failed: {exc.strerror or exc}; "
            "finished input shards are kept, rerun the same command to resume"
        ) from exc
    if stats.rejected:
        get_logger("tokenize").info("rejected records: %s (see %s)", stats.rejected, rejected_path(args.output_prefix))
    print_table(
        [
            {
                "inputs": len(stats.per_source),
                "resumed": stats.sources_resumed,
                "documents": stats.documents,
                "tokens": stats.tokens,
                "MB": stats.bytes / 1e6,
                "skipped (empty)": stats.skipped_empty,
                "rejected": sum(stats.rejected.values()),
                "seconds": stats.seconds,
                "tokens/s": stats.tokens / max(stats.seconds, 1e-9),
            }
        ],
        title=f"{args.output_prefix}.bin/.idx",
    )
    return 0


COMMANDS = [
    Command(
        ("tokenizer", "train"),
        "train a byte-level BPE tokenizer (Hugging Face tokenizers)",
        _configure_train,
        _run_train,
    ),
    Command(
        ("data", "tokenize"),
        "tokenize documents into a Megatron indexed dataset (PREFIX.bin/.idx)",
        _configure_tokenize,
        _run_tokenize,
    ),
]
