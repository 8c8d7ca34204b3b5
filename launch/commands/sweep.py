"""`anvil sweep plan|run|fit|plot`: scaling-law sweeps from an isoFLOP plan to a fitted frontier."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from launch.cli import Command
from launch.config_help import add_help_config, sweep_config_rows

PLAN_EPILOG = """examples:
  anvil sweep plan configs/sweeps/cpu_tiny.yaml --output plan.csv
  anvil sweep plan configs/sweeps/cpu_tiny.yaml --output plan.csv grid.prior_fit=fit.json rules.hparams=porian
  anvil sweep plan configs/sweeps/hparams_grid.yaml --output plan.csv     # lr x batch grid per budget
One row per run: shape, non-embedding N, tokens D, C = 6ND and the model's own FLOPs, batch, lr, beta2,
schedule, the rule that set lr/batch/beta2 (`rule`) and the budget's predicted optimum (`n_opt`)."""
RUN_EPILOG = """examples:
  anvil sweep run configs/sweeps/cpu_tiny.yaml
  anvil sweep run configs/sweeps/cpu_tiny.yaml output_dir=runs/sweeps/try2 run.final_evals=5
  anvil sweep run configs/sweeps/cpu_tiny.yaml --dry-run          # print the anvil train commands
  anvil sweep run configs/sweeps/cpu_tiny.yaml --slurm --dry-run  # write the Slurm array script
Rerunning skips finished runs and resumes a partial one from its checkpoint. Results land in
OUTPUT_DIR/results.csv (N, D, loss, ...)."""
FIT_EPILOG = """examples:
  anvil sweep fit runs/sweeps/cpu_tiny/results.csv --output fit.json --plot fit.png
  anvil sweep fit results.csv --output fit.json --bootstrap 200
  anvil sweep fit results.csv --output fit.json --repetition --unique-tokens 2.5e6   # data-constrained
  anvil sweep fit runs/sweeps/hparams_grid/results.csv --hparams --output hparams.json
fit.json: E, A, B, alpha, beta, a, b, G (L = E + A/N^alpha + B/D^beta, N_opt(C) = G (C/6)^a),
the objective, bootstrap CIs and the isoFLOP (approach 2) power laws. With --hparams: the power laws
lr_opt(C) and B_opt(C) from an lr x batch grid (use them with rules.hparams=fitted rules.hparams_fit=FILE)."""


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", metavar="SWEEP.yaml", help="sweep config (e.g. configs/sweeps/cpu_tiny.yaml)")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="sweep config overrides, e.g. grid.sizes_per_budget=5"
    )
    add_help_config(p, sweep_config_rows, "sweep config")


def _configure_plan(p: argparse.ArgumentParser) -> None:
    p.epilog = PLAN_EPILOG
    _config_args(p)
    p.add_argument("--output", required=True, help="plan CSV to write")


def _run_plan(args: argparse.Namespace) -> int:
    from framework.runtime import print_table
    from framework.scaling.config import load_sweep
    from framework.scaling.plan import plan, write_plan

    cfg = load_sweep(args.sweep, args.overrides)
    rows, dropped = plan(cfg)
    write_plan(rows, args.output)
    print_table(
        [
            {
                "run": r["name"],
                "N": f"{r['N']:,}",
                "D": f"{r['D']:,}",
                "D/N": f"{r['tokens_per_param']:.1f}",
                "steps": r["steps"],
                "batch": r["global_batch_size"],
                "lr": f"{r['lr']:.3g}",
                "beta2": r["beta2"],
                "rule": r["rule"],
            }
            for r in rows
        ],
        title=f"sweep plan: {cfg.name}",
    )
    print(
        f"wrote {len(rows)} runs to {args.output}" + (f" ({dropped} dropped: under grid.min_steps)" if dropped else "")
    )
    if cfg.grid.kind == "isoflop":
        _print_placement(rows, cfg)
    return 0


def _print_placement(rows: list[dict], cfg) -> None:
    from framework.scaling.plan import placement_report

    source = f"prior fit {cfg.grid.prior_fit}" if cfg.grid.prior_fit else f"D/N = {cfg.grid.tokens_per_param:g}"
    for p in placement_report(rows, cfg.grid.min_each_side):
        line = (
            f"budget {p['budget']:.3g}: predicted optimum N = {p['n_opt']:,.0f} ({source}); "
            f"{p['below']} sizes below, {p['above']} above"
        )
        if not p["ok"]:
            line += (
                f"  WARNING: fewer than grid.min_each_side={cfg.grid.min_each_side} on a side, the isoFLOP "
                "minimum may fall outside the sampled sizes (add family.shapes there or move the budget)"
            )
        print(line)


def _configure_run(p: argparse.ArgumentParser) -> None:
    p.epilog = RUN_EPILOG
    _config_args(p)
    p.add_argument("--index", type=int, default=None, help="run only this row of the plan (Slurm array tasks)")
    p.add_argument("--dry-run", action="store_true", help="print the commands (or the Slurm script) and run nothing")
    p.add_argument(
        "--slurm",
        action="store_true",
        help="write OUTPUT_DIR/sweep.sbatch (one array task per run) "
        "and submit it with sbatch (same as run.launcher=slurm)",
    )


def _run_run(args: argparse.Namespace) -> int:
    import shutil
    import subprocess

    from framework.runtime import setup_logging
    from framework.scaling.config import load_sweep
    from framework.scaling.plan import plan
    from framework.scaling.run import run_sweep, write_slurm_array

    setup_logging()
    cfg = load_sweep(args.sweep, args.overrides)
    if not Path(cfg.base_config).is_file():
        raise SystemExit(
            f"anvil sweep run: base_config {cfg.base_config!r} not found (paths are relative to the working directory)"
        )
    if (args.slurm or cfg.run.launcher == "slurm") and args.index is None:
        rows, _ = plan(cfg)
        script = write_slurm_array(cfg, args.sweep, len(rows), args.overrides)
        if args.dry_run or not shutil.which("sbatch"):
            print(script.read_text(), end="")
            print(f"# wrote {script}" + ("" if args.dry_run else " (sbatch not found: submit it yourself)"))
            return 0
        subprocess.run(["sbatch", str(script)], check=True)
        print(f"submitted {script}; when the array is done, `anvil sweep run {args.sweep}` collects results.csv")
        return 0
    if cfg.run.launcher == "slurm":  # inside an array task: run the row here
        cfg.run.launcher = "local"
    summary = run_sweep(cfg, index=args.index, dry_run=args.dry_run)
    if not args.dry_run:
        print(json.dumps(summary))
    return 1 if summary.get("failed") else 0


def _configure_fit(p: argparse.ArgumentParser) -> None:
    p.epilog = FIT_EPILOG
    p.add_argument(
        "results",
        metavar="RESULTS.csv",
        help="columns N (non-embedding params), D (tokens), loss; "
        "optional C (budget, groups isoFLOP curves); other columns ignored",
    )
    p.add_argument("--output", required=True, help="fit.json to write")
    p.add_argument("--plot", default=None, help="also draw the fit to this PNG")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N", help="bootstrap resamples for CIs (default 0)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument(
        "--heldout",
        action="store_true",
        help="also fit without the largest budget and report the "
        "relative error of the predicted best loss there (fit.json 'heldout')",
    )
    p.add_argument(
        "--all-starts",
        action="store_true",
        help="L-BFGS-B from all 4500 grid starts instead of the best 128 by initial objective",
    )
    p.add_argument(
        "--repetition",
        action="store_true",
        help="fit on Muennighoff et al.'s effective data D' = U + U R* (1 - exp(-(D/U - 1)/R*)) for runs "
        "that repeat their U unique tokens (column unique_tokens, or --unique-tokens)",
    )
    p.add_argument(
        "--unique-tokens",
        type=float,
        default=None,
        metavar="U",
        help="unique tokens of the corpus, for rows without a unique_tokens value (with --repetition)",
    )
    p.add_argument(
        "--r-star",
        type=float,
        default=None,
        metavar="R",
        help="R*_D of the repetition term (default 15.4, fitted by Muennighoff et al. 2023)",
    )
    p.add_argument(
        "--hparams",
        action="store_true",
        help="fit lr_opt(C) and B_opt(C) power laws from an lr x batch grid (columns C or budget, lr, "
        "batch_tokens, loss; grid.kind=hparams) and write them to --output instead of L(N, D)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=None,
        metavar="T",
        help="--hparams: runs within this relative distance of a budget's best loss are near-optimal "
        "(default 0.0025, DeepSeek LLM's 0.25%%)",
    )
    p.add_argument(
        "--metric",
        default=None,
        metavar="TASK/METRIC",
        help="predict a task metric (a results.csv column such as anvil_mc/acc) at the largest budget from "
        "the smaller ones: loss from (N, D), then the metric from loss with a sigmoid (OLMo's ladder); "
        "writes the prediction and the observed value to --output",
    )
    p.add_argument(
        "--hparams-method",
        choices=["near-optimal", "quadratic"],
        default="near-optimal",
        help="--hparams: a budget's optimum is the near-optimal region's geometric centre (DeepSeek), or "
        "the vertex of a quadratic surface in (log lr, log batch) (default near-optimal)",
    )


def _json_safe(value):
    from framework.scaling.fit import finite_or_null  # lazy: the CLI imports every command module

    return finite_or_null(value)


def _null_to_nan(value):
    """The inverse of finite_or_null (framework.scaling.fit) when reading fit.json back: null numbers become NaN."""
    if value is None:
        return float("nan")
    if isinstance(value, dict):
        return {k: _null_to_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_null_to_nan(v) for v in value]
    return value


def _run_fit(args: argparse.Namespace) -> int:
    from framework.scaling.fit import (
        MUENNIGHOFF_R_STAR_D,
        FitError,
        fit_all,
        read_results,
    )

    if args.bootstrap < 0:
        raise SystemExit("anvil sweep fit: --bootstrap must be >= 0")
    if args.hparams:
        return _run_fit_hparams(args)
    if args.metric:
        return _run_fit_metric(args)
    if (args.unique_tokens is not None or args.r_star is not None) and not args.repetition:
        raise SystemExit("anvil sweep fit: --unique-tokens and --r-star need --repetition")
    try:
        points = read_results(args.results)
        r_star = (args.r_star if args.r_star is not None else MUENNIGHOFF_R_STAR_D) if args.repetition else None
        out = fit_all(
            points,
            bootstrap=args.bootstrap,
            seed=args.seed,
            top_k=None if args.all_starts else 128,
            heldout=args.heldout,
            repetition=r_star,
            unique_tokens=args.unique_tokens,
        )
    except FitError as exc:
        raise SystemExit(f"anvil sweep fit: {exc}") from None
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(_json_safe(out), indent=1, allow_nan=False) + "\n")
    print(
        f"L(N, D) = {out['E']:.4g} + {out['A']:.4g}/N^{out['alpha']:.4f} + {out['B']:.4g}/D^{out['beta']:.4f}  "
        f"(objective {out['objective']:.6g}, {out['n_points']} points"
        + (f", {points.skipped} rows skipped" if points.skipped else "")
        + ")"
    )
    print(f"N_opt(C) = {out['G']:.4g} (C/6)^{out['a']:.4f}; wrote {args.output}")
    if "repetition" in out:
        r = out["repetition"]
        print(
            f"repetition term: R* = {r['R_star']:g}, {r['rows_repeated']} runs repeated data "
            f"(up to {r['max_epochs']:.2f} epochs); D is the effective data D'"
        )
    if "heldout" in out:
        h = out["heldout"]
        print(
            f"held out C={h['budget']:.3g}: predicted best loss {h['predicted_best_loss']:.4f}, observed "
            f"{h['observed_best_loss']:.4f} (relative error {h['relative_error']:.2%})"
            + (
                f", {h['interval_level']:.0%} bootstrap interval of the prediction "
                f"[{h['predicted_interval'][0]:.4f}, {h['predicted_interval'][1]:.4f}]"
                + (
                    f" ({h['n_boot_degenerate']} of {h['n_boot']} resamples had no compute-optimal split)"
                    if h.get("n_boot_degenerate")
                    else ""
                )
                if "predicted_interval" in h
                else ""
            )
        )
    if args.plot:
        from framework.scaling.plot import plot_fit

        plot_fit(points, out, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _run_fit_metric(args: argparse.Namespace) -> int:
    from framework.scaling.fit import FitError
    from framework.scaling.metric_fit import read_metric, two_step_heldout

    try:
        out = two_step_heldout(read_metric(args.results, args.metric), top_k=None if args.all_starts else 128)
    except FitError as exc:
        raise SystemExit(f"anvil sweep fit --metric: {exc}") from None
    out = {"metric": args.metric, **out}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(_json_safe(out), indent=1, allow_nan=False) + "\n")
    s = out["step2_sigmoid"]
    print(
        f"{args.metric}(L) = {s['a']:.4g} / (1 + exp(-{s['k']:.4g} (L - {s['L0']:.4g}))) + {s['b']:.4g}  "
        f"(fitted on {out['fit_runs']} runs below the largest budget)"
    )
    print(
        f"held out C={out['budget']:.3g}: predicted {args.metric} {out['predicted_metric']:.4f}, observed "
        f"{out['observed_metric']:.4f} (absolute error {out['absolute_error']:.4f}; mean over its "
        f"{len(out['runs'])} runs {out['mean_absolute_error']:.4f}); wrote {args.output}"
    )
    return 0


def _run_fit_hparams(args: argparse.Namespace) -> int:
    from framework.scaling.fit import FitError
    from framework.scaling.hparams import (
        DEEPSEEK_TOLERANCE,
        fit_hparams,
        read_hparam_results,
    )

    try:
        cols, skipped = read_hparam_results(args.results)
        tol = DEEPSEEK_TOLERANCE if args.tolerance is None else args.tolerance
        out = fit_hparams(
            cols["C"], cols["lr"], cols["batch_tokens"], cols["loss"], tolerance=tol, method=args.hparams_method
        )
    except FitError as exc:
        raise SystemExit(f"anvil sweep fit: {exc}") from None
    out["skipped_rows"] = skipped
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(_json_safe(out), indent=1, allow_nan=False) + "\n")
    lr, bt = out["lr"], out["batch_tokens"]
    print(
        f"lr_opt(C) = {lr['coef']:.4g} C^{lr['exponent']:.4f}; B_opt(C) = {bt['coef']:.4g} C^{bt['exponent']:.4f} "
        f"tokens ({len(out['budgets'])} budgets, {args.hparams_method}"
        + (f", {skipped} rows skipped" if skipped else "")
        + f"); wrote {args.output}"
    )
    print(f"use it: anvil sweep plan SWEEP.yaml rules.hparams=fitted rules.hparams_fit={args.output} --output plan.csv")
    return 0


def _configure_plot(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", metavar="RESULTS.csv", help="sweep results (N, D, loss[, C])")
    p.add_argument("--fit", default=None, help="fit.json from `anvil sweep fit` (default: fit now)")
    p.add_argument("--output", required=True, help="folder for the PNG files and report.html")


def _run_plot(args: argparse.Namespace) -> int:
    from framework.scaling.fit import FitError, fit_all, read_results
    from framework.scaling.plot import write_report

    try:
        points = read_results(args.results)
        if args.fit:
            if not Path(args.fit).is_file():
                raise SystemExit(f"anvil sweep plot: fit file not found: {args.fit}")
            fit = _null_to_nan(json.loads(Path(args.fit).read_text()))
            missing = [k for k in ("E", "A", "B", "alpha", "beta", "a", "b", "G") if k not in fit]
            if missing:
                raise SystemExit(f"anvil sweep plot: {args.fit}: missing field(s) {', '.join(missing)}")
        else:
            fit = fit_all(points)
    except FitError as exc:
        raise SystemExit(f"anvil sweep plot: {exc}") from None
    report = write_report(points, fit, args.output)
    print(f"wrote {report}")
    return 0


COMMANDS = [
    Command(("sweep", "plan"), "plan an isoFLOP (or explicit N x D) grid of training runs", _configure_plan, _run_plan),
    Command(
        ("sweep", "run"),
        "run a planned sweep through anvil train (resumable; skips finished runs)",
        _configure_run,
        _run_run,
    ),
    Command(
        ("sweep", "fit"),
        "fit L(N, D) = E + A/N^alpha + B/D^beta (and isoFLOP power laws) to results",
        _configure_fit,
        _run_fit,
    ),
    Command(
        ("sweep", "plot"),
        "draw loss vs compute, isoFLOP curves, the frontier and L(N, D) contours",
        _configure_plot,
        _run_plot,
    ),
]
