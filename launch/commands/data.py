"""`anvil data run` (curate with a recipe) and `anvil data train-classifier` (quality model)."""

from __future__ import annotations

import argparse

from launch.cli import Command


def _configure_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="recipe YAML, e.g. configs/data/web.yaml")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="override recipe keys, e.g. input=crawl/ output=clean/ rejected_text=true",
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes (output identical for any N)")
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first unreadable record (file and line) instead of skipping it",
    )
    from data_pipeline.executors.options import add_executor_args, add_preflight_args

    add_executor_args(p)
    add_preflight_args(p)
    from launch.config_help import add_help_config, recipe_config_rows

    add_help_config(p, recipe_config_rows, "recipe (and every step's steps.NAME.PARAM)")


def _submit_slurm(recipe, args: argparse.Namespace) -> None:
    """Plan, then submit (or with --dry-run print) the sbatch chain; its last job reruns this
    command locally, which finds every task done and writes stats.json and the report."""
    from pathlib import Path

    from data_pipeline.executors import SlurmExecutor
    from data_pipeline.executors.options import slurm_options
    from data_pipeline.pipeline import make_plan, run_recipe

    opts = slurm_options(args)
    finish = [opts.python, "-m", "launch.cli", "data", "run", str(Path(args.config).resolve()), *args.overrides]
    finish += ["--strict"] if args.strict else []
    executor = SlurmExecutor(opts, finish, args.dry_run)
    if args.dry_run:  # nothing written: plan only
        executor.run(make_plan(recipe, args.strict))
    else:
        run_recipe(recipe, strict=args.strict, executor=executor)


def _plan(recipe, args: argparse.Namespace) -> int:
    from data_pipeline.preflight import estimate_recipe, format_estimate, free_disk

    est = estimate_recipe(recipe, workers=args.workers, strict=args.strict)
    print(format_estimate(est, free_disk(recipe.output)))
    return 0


def _run(args: argparse.Namespace) -> int:
    from data_pipeline.executors.ray import TaskFailed
    from data_pipeline.executors.tasks import TaskIOError
    from data_pipeline.io.readers import ReadError
    from data_pipeline.pipeline import load_recipe, run_recipe
    from framework.runtime import print_table

    from data_pipeline.executors.options import check_executor_args, ray_options

    check_executor_args(args, "anvil data run")
    recipe = load_recipe(args.config, args.overrides)
    try:
        if args.plan:
            return _plan(recipe, args)
        if not args.ignore_disk_estimate and not args.dry_run:
            from data_pipeline.preflight import preflight_disk_check

            preflight_disk_check(recipe, args.workers, args.strict)
        if args.executor == "slurm":
            _submit_slurm(recipe, args)
            return 0
        from data_pipeline.executors import LocalExecutor, RayExecutor

        executor = RayExecutor(ray_options(args)) if args.executor == "ray" else LocalExecutor(args.workers)
        try:
            stats = run_recipe(recipe, strict=args.strict, executor=executor)
        except TaskFailed as exc:  # a Ray task failed past its retries; finished tasks keep their markers
            raise SystemExit(f"anvil data run: {exc}") from None
    except ReadError as exc:
        raise SystemExit(f"anvil data run: {exc}") from None
    except TaskIOError as exc:  # disk full / I/O error: finished tasks keep their markers
        raise SystemExit(f"anvil data run: {exc.strerror}") from None
    rows = [
        {
            "step": s["name"],
            "docs in": s["docs_in"],
            "docs out": s["docs_out"],
            "MB out": round(s.get("bytes_out", 0) / 1e6, 2),
            "top drop reasons": ", ".join(
                f"{k} {v}" for k, v in sorted(s["dropped"].items(), key=lambda kv: -kv[1])[:3]
            ),
        }
        for s in stats["steps"]
    ]
    print_table(rows, title=f"curation funnel: {stats['docs_in']:,} in -> {stats['docs_out']:,} out")
    print(f"output: {recipe.output} (stats.json, report.html, rejected/)")
    return 0


def _configure_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "output",
        metavar="OUTPUT",
        help="an `anvil data run` output folder, or a tokenized PREFIX (`anvil data tokenize`)",
    )


def _verify(args: argparse.Namespace) -> int:
    from data_pipeline.executors.verify import verify_output

    try:
        report = verify_output(args.output)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise SystemExit(f"anvil data verify: {exc}") from None
    if report.problems:
        task, problem = report.problems[0]
        more = f" (and {len(report.problems) - 1} more damaged task(s))" if len(report.problems) > 1 else ""
        print(f"anvil data verify: {problem} (task {task}){more}; rerun the same command to redo it")
        return 1
    left = f", {report.unfinished} task(s) not finished yet" if report.unfinished else ""
    print(
        f"ok: {report.finished} finished {report.kind} task(s), {report.files} recorded file(s) match "
        f"their sizes and checksums{left}"
    )
    return 0


def _configure_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--positive", nargs="+", required=True, help="inputs of good documents (any reader format)")
    p.add_argument("--negative", nargs="+", required=True, help="inputs of bad documents")
    p.add_argument(
        "--output", required=True, help="model file: .npz for sklearn (weights only, no pickle), .bin for fasttext"
    )
    p.add_argument(
        "--backend",
        choices=("sklearn", "fasttext"),
        default="sklearn",
        help="sklearn: hashed n-grams + logistic regression (default); fasttext: a fastText "
        "supervised model with labels __label__hq / __label__lq",
    )
    p.add_argument(
        "--n-features",
        type=int,
        default=None,
        help="hashed n-gram buckets (default 2^20 for sklearn, 2^18 for fasttext)",
    )
    p.add_argument("--ngram", type=int, default=2, help="word n-grams up to this length (default 2)")
    p.add_argument("--max-docs", type=int, default=None, help="at most this many documents per class")
    g = p.add_argument_group("sklearn only")
    g.add_argument("--C", type=float, default=None, help="inverse L2 regularisation (default 4)")
    g = p.add_argument_group("fasttext only")
    g.add_argument("--dim", type=int, default=None, help="embedding size (default 64)")
    g.add_argument("--epoch", type=int, default=None, help="passes over the data (default 25)")
    g.add_argument("--lr", type=float, default=None, help="learning rate (default 0.5)")
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        help="training threads (default 1: the only setting whose model is reproducible)",
    )


FASTTEXT_ONLY = ("dim", "epoch", "lr", "threads")


def _train(args: argparse.Namespace) -> int:
    from data_pipeline.steps.classifier import train_classifier

    name = "anvil data train-classifier"
    numbers = {k: getattr(args, k) for k in ("n_features", "ngram", "C", *FASTTEXT_ONLY)}
    bad = [f"--{k.replace('_', '-')}" for k, v in numbers.items() if v is not None and v <= 0]
    if bad:
        raise SystemExit(f"{name}: {', '.join(bad)} must be positive")
    wrong = (
        ["--C"]
        if args.backend == "fasttext" and args.C is not None
        else [f"--{k}" for k in FASTTEXT_ONLY if args.backend == "sklearn" and getattr(args, k) is not None]
    )
    if wrong:
        raise SystemExit(f"{name}: {', '.join(wrong)} does not apply to --backend {args.backend}")
    try:
        if args.backend == "fasttext":
            from data_pipeline.steps.fasttext_model import train_fasttext

            given = {
                "dim": args.dim,
                "epoch": args.epoch,
                "lr": args.lr,
                "threads": args.threads,
                "buckets": args.n_features,
            }
            metrics = train_fasttext(
                args.positive,
                args.negative,
                args.output,
                word_ngrams=args.ngram,
                max_docs=args.max_docs,
                **{k: v for k, v in given.items() if v is not None},
            )
        else:
            metrics = train_classifier(
                args.positive,
                args.negative,
                args.output,
                n_features=args.n_features or 2**20,
                ngram_max=args.ngram,
                C=args.C or 4.0,
                max_docs=args.max_docs,
            )
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"{name}: {exc}") from None
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
    print(f"model: {args.output}")
    return 0


COMMANDS = [
    Command(
        ("data", "run"),
        "curate a corpus with a recipe (configs/data/*.yaml)",
        _configure_run,
        _run,
        description="Run a curation recipe: read input shards, apply the steps, write kept documents "
        "(part-*.jsonl.zst), rejected/, stats.json and report.html to the output folder.\n"
        "Reruns resume unfinished shards. Example:\n"
        "  anvil data run configs/data/web.yaml input=crawl/ output=clean/ --workers 2\n"
        "  anvil data run configs/data/web.yaml input=crawl/ output=clean/ --executor ray "
        "--ray-address auto\n"
        "  anvil data run configs/data/fineweb_like.yaml input=crawl/ output=clean/\n"
        "  anvil data run configs/data/web_fast.yaml input=crawl/ output=clean/   # Resiliparse extraction\n"
        "Steps (README 'Curation'; parameters are checked against each step's Params): "
        "extract {engine: trafilatura|resiliparse}, language, gopher_quality, gopher_repetition, c4, fineweb, normalize, pii, line_dedup, "
        "exact_dedup, minhash_dedup, classifier, perplexity,\n"
        "  url_filter {block_domains, block_urls, banned_words, banned_subwords, soft_banned_words, "
        "allow_domains: [FILE|UT1 folder]},\n"
        "  decontaminate {eval_files: [JSONL], fields: [NAME], ngram: 13, mode: document|spans},\n"
        "  paragraph_dedup {min_doc_words: 50}, sentence_dedup {span: 3, min_doc_words: 50}.\n"
        "stats.json gives each step's CPU seconds (`seconds`, summed over workers).\n"
        "Before starting it checks the output's free disk against a calibrated estimate "
        "(--plan prints it per stage and runs nothing; --ignore-disk-estimate starts anyway).",
    ),
    Command(
        ("data", "verify"),
        "check a finished output's files against the sizes and checksums its tasks recorded",
        _configure_verify,
        _verify,
        description="Re-read every file a finished task of `anvil data run` (or a tokenized prefix of "
        "`anvil data tokenize`) wrote and compare it with the size and checksum in its marker; "
        "runs nothing. Exit 0 when all match, 1 naming the first file that does not (missing, "
        "truncated or changed). A rerun of the same command redoes exactly those tasks.\n"
        "  anvil data verify clean/\n  anvil data verify tokens/train",
    ),
    Command(
        ("data", "train-classifier"),
        "train a quality classifier (logistic regression or fastText)",
        _configure_train,
        _train,
        description="Train a good-vs-bad document classifier for the `classifier` curation step.\n"
        "  anvil data train-classifier --positive good/ --negative bad/ --output quality.npz\n"
        "  anvil data train-classifier --backend fasttext --positive good/ --negative bad/ "
        "--output quality.bin\n"
        "Use it in a recipe as `classifier: {model: quality.bin, threshold: 0.5}`. The step\n"
        "also loads published fastText models (DCLM, FineWeb-Edu; lid.176.bin with `label: en`).",
    ),
]
