"""`anvil ladder LADDER.yaml`: rank curated corpora by the loss a model trained on each reaches at a target compute."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from launch.cli import Command
from launch.config_help import add_help_config

DESCRIPTION = """\
Which corpus is better, at the compute you will train with, and how sure is that? For K corpora
(curated documents: files, folders or globs), `anvil ladder`:
  1. holds out a share of documents (drawn by id from the union, removed from every corpus) as one
     common evaluation set, trains one tokenizer on the union and tokenizes each corpus;
  2. runs the same sweep (SWEEP.yaml) on each corpus (`anvil sweep run`, resumable) and scores
     every run's final checkpoint on the same held-out tokens;
  3. fits L(N, D) = E + A/N^alpha + B/D^beta per corpus (Muennighoff's effective data when runs
     repeat a small corpus), predicts each corpus's compute-optimal loss at target_flops with
     bootstrap intervals (runs resampled), ranks them, and reports p_correct (the share of
     resamples that give the same ranking) and the compute from which the ranking stopped changing.
Writes OUTPUT/ladder.json {"ranking", "predicted_loss", "interval", "p_correct", ...},
OUTPUT/report.html, and per corpus OUTPUT/sweeps/NAME/ (sweep.yaml, runs, heldout_results.csv,
fit.json). Running the same command again skips finished tokenization, runs and evaluations.
Paths in LADDER.yaml are relative to the working directory.
examples:
  anvil ladder configs/ladder/sample_vs_shuffled.yaml
  anvil ladder LADDER.yaml corpora.strict=clean_strict/ corpora.loose=clean_loose/ output=runs/ladders/t
  anvil ladder LADDER.yaml target_flops=1e13 bootstrap=500 jobs=2
  anvil ladder LADDER.yaml --help-config      # every key, its type, default and help"""


def _rows():
    from framework.configtree import describe
    from framework.scaling.ladder import LadderConfig

    return describe(LadderConfig)


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("ladder", metavar="LADDER.yaml", help="ladder config (corpora, sweep, target_flops, output)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. target_flops=1e13")
    add_help_config(p, _rows, "ladder config")


def _run(args: argparse.Namespace) -> int:
    from data_pipeline.tokens.corpora import CorpusError, prepare_corpora
    from framework.runtime import print_table, setup_logging
    from framework.scaling.fit import FitError
    from framework.scaling.ladder import LadderData, base_sweep, load_ladder, run_ladder
    from framework.scaling.ladder_tasks import check_tasks

    setup_logging()
    start = time.perf_counter()
    cfg = load_ladder(args.ladder, args.overrides)
    sweep = base_sweep(cfg)  # a bad sweep config fails before any data work
    check_tasks(cfg.tasks, cfg.task_include_paths)  # so does an unknown task
    if not Path(sweep.base_config).is_file():
        raise SystemExit(
            f"anvil ladder: the sweep's base_config {sweep.base_config!r} not found (paths are relative to the working directory)"
        )
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        prepared = prepare_corpora(
            cfg.corpora,
            cfg.out_dir / "data",
            cfg.vocab_size or sweep.family.vocab_size,
            cfg.heldout_fraction,
            cfg.seed,
            cfg.tokenize_workers,
            cfg.tokenizer_docs,
            cfg.heldout_from or None,
        )
    except CorpusError as exc:
        raise SystemExit(f"anvil ladder: {exc}") from None
    data = LadderData(
        prepared.tokenizer,
        prepared.vocab_size,
        prepared.prefixes,
        prepared.tokens,
        prepared.heldout,
        prepared.heldout_tokens,
        prepared.heldout_documents,
        prepared.documents,
    )
    try:
        out, code = run_ladder(cfg, data)
    except FitError as exc:
        raise SystemExit(f"anvil ladder: {exc} (rerun to resume; see {cfg.out_dir / 'sweeps'})") from None
    print_table(
        [
            {
                "rank": i + 1,
                "corpus": name,
                "predicted loss": f"{out['predicted_loss'][name]:.4f}"
                if out["predicted_loss"][name] is not None
                else "n/a",
                f"{out['level']:.0%} interval": "{} .. {}".format(
                    *(f"{v:.4f}" if v is not None else "n/a" for v in out["interval"][name])
                ),
                "runs": out["runs"][name],
                "train tokens": f"{out['corpora'][name]['train_tokens']:,}",
                "max epochs": f"{out['corpora'][name]['max_epochs']:.2f}",
            }
            for i, name in enumerate(out["ranking"])
        ],
        title=f"anvil ladder {cfg.name}: predicted held-out loss at {cfg.target_flops:.3g} FLOPs",
    )
    p = out["p_correct"]
    stable = out["stable_from_flops"]
    print(
        f"ranking (best first): {', '.join(out['ranking'])}; p_correct = "
        f"{'n/a' if p is None else f'{p:.3f}'} ({cfg.bootstrap} bootstrap resamples of the runs)"
    )
    for e in out["by_compute"]:
        pc = e.get("p_correct")
        print(
            f"  runs up to {e['max_flops']:.3g} FLOPs: "
            + (
                f"{', '.join(e['ranking'])}, p_correct = {'n/a' if pc is None else f'{pc:.3f}'}"
                if e.get("ranking")
                else e.get("note", "too few runs to fit")
            )
        )
    print(
        f"decision stable from {stable:.3g} FLOPs"
        if stable
        else "decision not stable: the last compute level changed it"
    )
    for name, task in out["tasks"].items():
        _print_task(name, task, cfg.target_flops, print_table)
    if out["incomplete"] or out["failed_sweeps"]:
        print(f"WARNING: unfinished runs {out['incomplete']}; rerun the same command to resume")
    if out["unscored_runs"]:
        print(f"WARNING: runs left out (could not be scored, see the log): {out['unscored_runs']}")
    print(
        f"wrote {cfg.out_dir / 'ladder.json'} and {cfg.out_dir / 'report.html'} in {time.perf_counter() - start:.0f} s"
    )
    return code


def _print_task(name: str, task: dict, target: float, print_table) -> None:
    def fmt(v):
        return "n/a" if v is None else f"{v:.4f}"

    print_table(
        [
            {
                "corpus": corpus,
                "at largest compute": f"{e['at_largest_compute']:.4f} ({e['largest_compute']:.3g} FLOPs)",
                "predicted": fmt(e["predicted"]) + (" (extrapolated)" if e.get("extrapolated") else ""),
                "interval": " .. ".join(fmt(v) for v in e["interval"]) if e["interval"] else e.get("note", "n/a"),
                "runs": e["runs"],
            }
            for corpus, e in task["corpora"].items()
        ],
        title=f"{name} ({'higher' if task['higher_is_better'] else 'lower'} is better) at {target:.3g} FLOPs: "
        f"ranking {', '.join(task['ranking']) or 'n/a'}",
    )


COMMANDS = [
    Command(
        ("ladder",),
        "rank curated corpora at a target compute: one sweep each, a common held-out set, bootstrap confidence",
        _configure,
        _run,
        description=DESCRIPTION,
    )
]
