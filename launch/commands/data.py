"""`anvil data run` (curate with a recipe) and `anvil data train-classifier` (quality model)."""
from __future__ import annotations

import argparse

from launch.cli import Command


def _configure_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="recipe YAML, e.g. configs/data/web.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="override recipe keys, e.g. input=crawl/ output=clean/ rejected_text=true")
    p.add_argument("--workers", type=int, default=1, help="worker processes (output identical for any N)")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first unreadable record (file and line) instead of skipping it")
    from data_pipeline.executors.options import add_executor_args

    add_executor_args(p)


def _run(args: argparse.Namespace) -> int:
    from data_pipeline.io.readers import ReadError
    from data_pipeline.pipeline import load_recipe, run_recipe
    from framework.runtime import print_table

    from data_pipeline.executors.options import check_executor_args, ray_options, slurm_options

    check_executor_args(args, "anvil data run")
    recipe = load_recipe(args.config, args.overrides)
    try:
        if args.executor == "slurm":
            from data_pipeline.executors.slurm import submit_curation

            submit_curation(recipe, args.config, args.overrides, args.strict, slurm_options(args), args.dry_run)
            return 0
        execute = None
        if args.executor == "ray":
            from data_pipeline.executors.ray import TaskFailed, run_ray

            def execute(plan):
                try:
                    return run_ray(plan, ray_options(args))
                except TaskFailed as exc:
                    raise SystemExit(f"anvil data run: {exc}") from None
        stats = run_recipe(recipe, workers=args.workers, strict=args.strict, execute=execute)
    except ReadError as exc:
        raise SystemExit(f"anvil data run: {exc}") from None
    rows = [{"step": s["name"], "docs in": s["docs_in"], "docs out": s["docs_out"],
             "MB out": round(s.get("bytes_out", 0) / 1e6, 2),
             "top drop reasons": ", ".join(f"{k} {v}" for k, v in sorted(s["dropped"].items(), key=lambda kv: -kv[1])[:3])}
            for s in stats["steps"]]
    print_table(rows, title=f"curation funnel: {stats['docs_in']:,} in -> {stats['docs_out']:,} out")
    print(f"output: {recipe.output} (stats.json, report.html, rejected/)")
    return 0


def _configure_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--positive", nargs="+", required=True, help="inputs of good documents (any reader format)")
    p.add_argument("--negative", nargs="+", required=True, help="inputs of bad documents")
    p.add_argument("--output", required=True, help="model file (.npz; weights only, no pickle)")
    p.add_argument("--n-features", type=int, default=2 ** 20, help="hashed n-gram buckets (default 2^20)")
    p.add_argument("--ngram", type=int, default=2, help="word n-grams up to this length (default 2)")
    p.add_argument("--C", type=float, default=4.0, help="inverse L2 regularisation (default 4)")
    p.add_argument("--max-docs", type=int, default=None, help="at most this many documents per class")


def _train(args: argparse.Namespace) -> int:
    from data_pipeline.steps.classifier import train_classifier

    if args.n_features <= 0 or args.ngram <= 0 or args.C <= 0:
        raise SystemExit("anvil data train-classifier: --n-features, --ngram and --C must be positive")
    try:
        metrics = train_classifier(args.positive, args.negative, args.output, n_features=args.n_features,
                                   ngram_max=args.ngram, C=args.C, max_docs=args.max_docs)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"anvil data train-classifier: {exc}") from None
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
    print(f"model: {args.output}")
    return 0


COMMANDS = [
    Command(("data", "run"), "curate a corpus with a recipe (configs/data/*.yaml)", _configure_run, _run,
            description="Run a curation recipe: read input shards, apply the steps, write kept documents "
                        "(part-*.jsonl.zst), rejected/, stats.json and report.html to the output folder.\n"
                        "Reruns resume unfinished shards. Example:\n"
                        "  anvil data run configs/data/web.yaml input=crawl/ output=clean/ --workers 2\n"
                        "  anvil data run configs/data/web.yaml input=crawl/ output=clean/ --executor ray "
                        "--ray-address auto"),
    Command(("data", "train-classifier"), "train the quality classifier (hashed n-grams + logistic regression)",
            _configure_train, _train),
]
