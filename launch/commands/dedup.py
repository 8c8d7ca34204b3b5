"""`anvil data dedup` and `anvil data dedup-eval`: MinHash LSH near-duplicate removal and its check."""

from __future__ import annotations

import argparse

from launch.cli import Command

DEDUP_EPILOG = """\
output folder:
  part-NNNNN.jsonl.zst   kept documents (input order)
  duplicates.jsonl       {"id", "duplicate_of"} per removed document
  rejected/              unreadable records and dropped duplicate ids
  stats.json             counts, bands x rows, cluster sizes
  timings.json           wall-clock seconds per phase
  .dedup-work/           finished units with checksummed markers while the run lasts: after a
                         kill, the same command verifies and reuses them (removed when done)

example:
  anvil data dedup crawl/ --output deduped/ --workers 2 --memory-budget 1GB
  anvil data dedup crawl/ --output deduped/ --executor ray --ray-address auto
  anvil data dedup crawl/ --output deduped/ --plan      # disk, memory and time estimate; runs nothing
"""


def _configure_dedup(p: argparse.ArgumentParser) -> None:
    p.epilog = DEDUP_EPILOG
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="files, folders or globs (.jsonl[.gz|.zst], .parquet, .warc[.gz], .wet[.gz], .html)",
    )
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--threshold", type=float, default=0.8, help="Jaccard similarity of near-duplicates (default 0.8)")
    p.add_argument("--num-perm", type=int, default=128, help="MinHash permutations (default 128)")
    p.add_argument("--ngram", type=int, default=5, help="words per shingle (default 5)")
    p.add_argument("--workers", type=int, default=1, help="processes computing signatures (default 1)")
    p.add_argument(
        "--memory-budget",
        default="1GB",
        help="bound on buffered LSH records, merge blocks and signature reads (sorted runs "
        "spill to disk beyond it), e.g. 256MB, 2GB (default 1GB)",
    )
    p.add_argument(
        "--dedupe-ids", action="store_true", help="drop later documents with an id seen before instead of failing"
    )
    p.add_argument(
        "--keep",
        default="first",
        help="representative of a cluster: first (input order), longest, or field:NAME "
        "(largest numeric metadata value) (default first)",
    )
    p.add_argument(
        "--incremental-store",
        default=None,
        metavar="DIR",
        help="dedup this batch against (and add it to) the signatures stored in DIR by earlier batches",
    )
    p.add_argument(
        "--exact-verify",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="decide candidate pairs on the exact Jaccard of their word n-gram sets (kept on disk, "
        "8 bytes per distinct n-gram); --no-exact-verify decides on the MinHash estimate instead "
        "(std ~0.035 at 0.8 with 128 permutations; no n-gram sets written) (default: exact)",
    )
    p.add_argument(
        "--weights",
        type=float,
        nargs=2,
        default=(0.05, 0.95),
        metavar=("FP", "FN"),
        help="false-positive and false-negative weights of datasketch's bands x rows optimiser; "
        "candidates are verified, so the default favours recall (default 0.05 0.95)",
    )
    p.add_argument("--seed", type=int, default=1, help="permutation seed (datasketch's; default 1)")
    from data_pipeline.executors.options import add_executor_args, add_preflight_args

    add_executor_args(p)
    add_preflight_args(p)


def _config(args):
    from data_pipeline.dedup.index import DedupConfig

    cfg = DedupConfig(
        threshold=args.threshold,
        num_perm=args.num_perm,
        ngram=args.ngram,
        seed=args.seed,
        fp_weight=args.weights[0],
        fn_weight=args.weights[1],
        keep=args.keep,
        exact_verify=args.exact_verify,
        dedupe_ids=args.dedupe_ids,
        memory_budget=args.memory_budget,
        workers=args.workers,
    )
    try:
        cfg.check()
    except ValueError as exc:
        raise SystemExit(f"anvil data dedup: {exc}")
    return cfg


def _run_dedup(args: argparse.Namespace) -> int:
    from data_pipeline.dedup.api import print_summary, run_dedup
    from data_pipeline.dedup.index import DuplicateIdError

    from data_pipeline.executors.options import check_executor_args, ray_options, slurm_options

    check_executor_args(args, "anvil data dedup")
    cfg = _config(args)
    try:
        if args.plan or not (args.ignore_disk_estimate or args.dry_run):
            from data_pipeline import preflight

            if args.plan:
                est = preflight.estimate_dedup(args.inputs, cfg)
                print(preflight.format_estimate(est, preflight.free_disk(args.output)))
                return 0
            preflight.preflight_dedup_check(args.inputs, args.output, cfg)
        if args.executor == "slurm":
            from data_pipeline.executors.slurm import submit_dedup

            submit_dedup(args.inputs, args.output, cfg, args.incremental_store, slurm_options(args), args.dry_run)
            return 0
        if args.executor == "ray":
            from data_pipeline.executors.ray import TaskFailed, run_dedup_ray

            try:
                stats = run_dedup_ray(args.inputs, args.output, cfg, args.incremental_store, ray_options(args))
            except TaskFailed as exc:
                raise SystemExit(f"anvil data dedup: {exc}") from None
        else:
            stats = run_dedup(args.inputs, args.output, cfg, incremental_store=args.incremental_store)
    except (DuplicateIdError, FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"anvil data dedup: {exc}")
    print_summary(stats)
    print(
        f"kept {stats['docs_out']} of {stats['docs_in']} documents in {args.output}; "
        f"{stats['duplicates']} near-duplicates listed in {args.output}/duplicates.jsonl"
    )
    return 0


def _configure_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="INPUT", help="the corpus that was deduplicated (files, folders or globs)")
    p.add_argument("--dedup-output", required=True, help="output folder of `anvil data dedup`")
    p.add_argument("--sample", type=int, default=None, help="evaluate on the first N documents (default 20000)")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="Jaccard defining a true near-duplicate (default: the dedup run's threshold)",
    )
    p.add_argument("--ngram", type=int, default=None, help="words per shingle (default: the dedup run's)")
    p.add_argument("--output", default=None, help="also write the report as JSON here")


def _run_eval(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from data_pipeline.dedup.evaluate import evaluate, print_report

    stats_file = Path(args.dedup_output) / "stats.json"
    if not stats_file.exists():
        raise SystemExit(f"anvil data dedup-eval: {stats_file} not found; expected an `anvil data dedup` output")
    stats = json.loads(stats_file.read_text())
    if args.sample is not None and args.sample < 2:
        raise SystemExit("anvil data dedup-eval: --sample must be at least 2")
    try:
        report = evaluate(
            [args.input],
            args.dedup_output,
            threshold=args.threshold or stats["threshold"],
            ngram=args.ngram or stats["ngram"],
            sample=args.sample,
        )
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"anvil data dedup-eval: {exc}")
    print_report(report)
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=1))
    return 0


COMMANDS = [
    Command(
        ("data", "dedup"),
        "remove near-duplicate documents (MinHash LSH over word n-grams)",
        _configure_dedup,
        _run_dedup,
    ),
    Command(
        ("data", "dedup-eval"), "precision and recall of a dedup run against exact Jaccard", _configure_eval, _run_eval
    ),
]
