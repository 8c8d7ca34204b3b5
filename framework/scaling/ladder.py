"""`anvil ladder`: the same small sweep on K corpora, scored on one held-out set, ranked with a stated confidence.

The data side (one tokenizer trained on the union of the corpora, a common held-out set, one token
prefix per corpus) is `data_pipeline.tokens.corpora`; this module runs the rest on what it made:

1. per corpus (and seed), a sweep config: the ladder's SWEEP.yaml with the corpus's prefix and the
   shared tokenizer as training data, `family.vocab_size` = the tokenizer's, `grid.unique_tokens` =
   the corpus's training tokens, written to OUTPUT/sweeps/NAME/sweep.yaml and run by
   `anvil sweep run` (a child process per sweep, `jobs` of them at a time; the sweep runner skips
   finished runs and resumes a killed one from its checkpoint);
2. every finished run's final checkpoint is scored on the first `eval_tokens` tokens of the
   held-out prefix (`framework.eval.perplexity`), cached in RUN_DIR/ladder_eval.json, so every
   corpus is judged on the same tokens, text none of them trained on;
3. the held-out losses are fitted and compared (`framework.scaling.ladder_stats`) and written to
   OUTPUT/ladder.json and OUTPUT/report.html; the fits are cached in OUTPUT/analysis_cache.json
   by their exact inputs (a rerun over the same runs does not refit).

A rerun redoes nothing that finished: prepared data, runs and evaluations are all kept on disk.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from framework.configtree import ConfigError, dump_yaml, load
from framework.runtime import get_logger
from framework.scaling.config import SweepConfig, load_sweep
from framework.scaling.fit import MUENNIGHOFF_R_STAR_D, finite_or_null
from framework.scaling.plan import plan
from framework.scaling.run import RESULT_FILE

log = get_logger("anvil.ladder")
EVAL_FILE = "ladder_eval.json"
RESERVED_NAMES = {"heldout"}


@dataclass
class LadderConfig:
    corpora: dict[str, Any] = field(default_factory=dict)  # NAME: INPUT (curated documents: file, folder, glob or list)
    sweep: str = ""  # the sweep config run on every corpus (e.g. configs/sweeps/demo.yaml)
    target_flops: float = 0.0  # training compute (C = 6ND) at which the corpora are compared
    output: Optional[str] = None  # output folder; default runs/ladders/NAME
    name: str = "ladder"  # names the default output folder and the sweeps (NAME-CORPUS)
    sweep_overrides: list[str] = field(default_factory=list)  # key=value applied to the sweep config of every corpus
    seeds: list[int] = field(default_factory=list)  # training seeds, one sweep each, runs pooled; [] = the sweep's
    heldout_fraction: float = 0.05  # documents (drawn by id from the union) held out of every corpus to evaluate on
    heldout_from: list[str] = field(default_factory=list)  # corpora whose held-out texts are scored; [] = all
    eval_tokens: int = 100000  # held-out tokens each run is scored on (the same first tokens for all); 0 = all
    vocab_size: Optional[int] = None  # tokenizer vocabulary (multiple of 128); None = the sweep's family.vocab_size
    seed: int = 0  # seed of the held-out draw and of the bootstrap
    bootstrap: int = 100  # bootstrap resamples of the runs, per compute level (intervals and p_correct)
    level: float = 0.95  # confidence level of the intervals
    fit_starts: int = 128  # L-BFGS-B starts of each fit (the best of Hoffmann's grid by initial objective)
    repetition: bool = True  # fit with Muennighoff's effective data for runs that repeat their corpus
    jobs: int = 1  # corpus sweeps run at the same time
    tokenize_workers: int = 1  # processes of each tokenization
    tokenizer_docs: int = 0  # documents the tokenizer trains on, taken from each corpus in turn; 0 = all
    tasks: list[str] = field(default_factory=list)  # lm-eval tasks each run's checkpoint answers, e.g. [anvil_mc]
    task_include_paths: list[str] = field(default_factory=list)  # folders of local task YAMLs (e.g. [configs/eval])
    task_limit: int = 0  # examples per task (the same first ones for every run); 0 = all

    def validate(self) -> None:
        if len(self.corpora) < 2:
            raise ConfigError(
                f"config key 'corpora': expected at least two corpora (NAME: INPUT), got {len(self.corpora)}"
            )
        for name, inputs in self.corpora.items():
            if not isinstance(name, str) or not name or any(c in name for c in "/\\ .") or name in RESERVED_NAMES:
                raise ConfigError(
                    f"config key 'corpora': {name!r} is not a usable corpus name (no spaces, dots or slashes; "
                    f"not {', '.join(sorted(RESERVED_NAMES))})"
                )
            ok = (
                isinstance(inputs, str)
                and inputs
                or (isinstance(inputs, list) and inputs and all(isinstance(i, str) and i for i in inputs))
            )
            if not ok:
                raise ConfigError(
                    f"config key 'corpora.{name}': expected a file, folder or glob (or a list), got {inputs!r}"
                )
        if not self.sweep:
            raise ConfigError("config key 'sweep': required (a sweep config, e.g. configs/sweeps/demo.yaml)")
        if not self.target_flops > 0:
            raise ConfigError(
                f"config key 'target_flops': required, a positive number of FLOPs, got {self.target_flops}"
            )
        if not 0 < self.heldout_fraction <= 0.5:
            raise ConfigError(f"config key 'heldout_fraction': expected (0, 0.5], got {self.heldout_fraction}")
        if self.bootstrap < 10:
            raise ConfigError(f"config key 'bootstrap': expected at least 10 resamples, got {self.bootstrap}")
        if not 0 < self.level < 1:
            raise ConfigError(f"config key 'level': expected (0, 1), got {self.level}")
        for key in ("eval_tokens", "tokenizer_docs", "task_limit"):
            if getattr(self, key) < 0:
                raise ConfigError(f"config key '{key}': must be >= 0, got {getattr(self, key)}")
        for key in ("fit_starts", "jobs", "tokenize_workers"):
            if getattr(self, key) < 1:
                raise ConfigError(f"config key '{key}': must be >= 1, got {getattr(self, key)}")
        unknown = sorted(set(self.heldout_from) - set(self.corpora))
        if unknown:
            raise ConfigError(f"config key 'heldout_from': {unknown} are not corpora ({sorted(self.corpora)})")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"config key 'seeds': repeated seeds {self.seeds}")
        if not self.name or any(c in self.name for c in "/\\ "):
            raise ConfigError(f"config key 'name': expected a plain name (no spaces or slashes), got {self.name!r}")

    @property
    def out_dir(self) -> Path:
        return Path(self.output or f"runs/ladders/{self.name}")


def load_ladder(path: str, overrides: list[str] | None = None) -> LadderConfig:
    return load(LadderConfig, path, overrides)


def base_sweep(cfg: LadderConfig) -> SweepConfig:
    try:
        return load_sweep(cfg.sweep, cfg.sweep_overrides)
    except ConfigError as exc:
        raise ConfigError(f"config key 'sweep' ({cfg.sweep}): {exc}") from None


@dataclass
class LadderData:
    """What the data side made (see `data_pipeline.tokens.corpora.PreparedCorpora`)."""

    tokenizer: str
    vocab_size: int
    prefixes: dict[str, str]
    tokens: dict[str, int]  # training tokens per corpus
    heldout: str
    heldout_tokens: int = 0
    heldout_documents: int = 0
    documents: dict[str, dict] = field(default_factory=dict)  # per corpus: read, train, heldout, rejected


@dataclass
class SweepSpec:
    corpus: str
    seed: int
    config: SweepConfig
    path: Path  # the sweep.yaml written for it

    @property
    def out_dir(self) -> Path:
        return Path(self.config.out_dir)


def corpus_sweeps(cfg: LadderConfig, data: LadderData) -> list[SweepSpec]:
    """One sweep per corpus and seed, written to OUTPUT/sweeps/NAME[/seed-S]/sweep.yaml. A folder
    whose finished runs came from a different sweep.yaml is refused, not mixed."""
    base = base_sweep(cfg)
    seeds = cfg.seeds or [base.seed]
    specs = []
    for corpus in sorted(cfg.corpora):
        for seed in seeds:
            sc = copy.deepcopy(base)
            out = cfg.out_dir / "sweeps" / corpus
            if len(seeds) > 1:
                out = out / f"seed-{seed}"
            sc.name = f"{cfg.name}-{corpus}" + (f"-s{seed}" if len(seeds) > 1 else "")
            sc.output_dir = str(out)
            sc.seed = seed
            sc.family.vocab_size = data.vocab_size
            sc.grid.unique_tokens = float(data.tokens[corpus])
            # JSON strings and lists are YAML, so any path survives the key=value parser
            sc.overrides = list(base.overrides) + [
                f"data.paths={json.dumps([os.path.abspath(data.prefixes[corpus])])}",
                f"data.tokenizer={json.dumps(os.path.abspath(data.tokenizer))}",
                "data.weights=[]",
                "data.mix=null",
            ]
            text = f"# written by anvil ladder ({cfg.name}): the sweep of corpus {corpus}, seed {seed}\n" + dump_yaml(
                sc
            )
            path = out / "sweep.yaml"
            if path.is_file() and path.read_text() != text and any((out / "runs").glob(f"*/{RESULT_FILE}")):
                raise ConfigError(
                    f"{path} holds finished runs of a different sweep config; delete {out} or use another output"
                )
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            specs.append(SweepSpec(corpus, seed, load_sweep(str(path)), path))
    return specs


def unfinished(spec: SweepSpec) -> list[str]:
    rows, _ = plan(spec.config)
    return [r["name"] for r in rows if not (spec.out_dir / "runs" / r["name"] / RESULT_FILE).is_file()]


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)  # `anvil sweep run` stops its trainer on SIGTERM
    for p in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()


def run_sweeps(specs: list[SweepSpec], jobs: int = 1) -> dict[str, int]:
    """`anvil sweep run` for every sweep with unfinished runs, `jobs` at a time; returns the exit
    code of each (0 for sweeps with nothing left). Interrupted: the children are stopped too."""
    from framework.scaling.run import _terminate_on_sigterm

    _terminate_on_sigterm()
    codes: dict[str, int] = {}
    pending = []
    for spec in specs:
        left = unfinished(spec)
        if left:
            pending.append(spec)
        else:
            codes[str(spec.path)] = 0
            log.info("sweep %s: every run finished before; skipped", spec.config.name)
    running: list[tuple[SweepSpec, subprocess.Popen, float]] = []
    env = dict(os.environ)
    env.setdefault("WANDB_MODE", "offline")
    try:
        while pending or running:
            while pending and len(running) < jobs:
                spec = pending.pop(0)
                log_path = spec.out_dir / "sweep_run.log"
                log.info("sweep %s: %d runs to go (log: %s)", spec.config.name, len(unfinished(spec)), log_path)
                with open(log_path, "a") as fh:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "launch.cli", "sweep", "run", str(spec.path)],
                        stdout=fh,
                        stderr=subprocess.STDOUT,
                        env=env,
                    )
                running.append((spec, proc, time.perf_counter()))
            for item in list(running):
                spec, proc, start = item
                if proc.poll() is not None:
                    running.remove(item)
                    codes[str(spec.path)] = proc.returncode
                    log.info(
                        "sweep %s: %s in %.0f s",
                        spec.config.name,
                        "finished" if proc.returncode == 0 else f"exited with {proc.returncode}",
                        time.perf_counter() - start,
                    )
            time.sleep(0.2)
    except BaseException:
        _stop([p for _, p, _ in running])
        raise
    return codes


def evaluate_run(run_dir: Path, heldout: str, heldout_sha: str, eval_tokens: int, steps: int, tasks=None) -> dict:
    """The held-out loss of a finished run's final checkpoint, plus its task metrics when `tasks`
    (a dict: tasks, task_include_paths, task_limit) names any; cached in RUN_DIR/ladder_eval.json."""
    cache = run_dir / EVAL_FILE
    key = {"heldout_sha256": heldout_sha, "eval_tokens": eval_tokens, "steps": steps}
    if tasks and tasks["tasks"]:
        key["tasks"] = tasks
    if cache.is_file():
        rec = json.loads(cache.read_text())
        if all(rec.get(k) == v for k, v in key.items()):
            return rec
    from framework.eval.perplexity import evaluate_prefix, load_scorer
    from framework.scaling.ladder_tasks import score_tasks

    scorer = load_scorer(run_dir)
    if scorer.step != steps:
        raise ValueError(f"{run_dir}: latest checkpoint is step {scorer.step}, the run has {steps} steps")
    res = evaluate_prefix(scorer, [heldout], batch_size=16, max_tokens=eval_tokens or None)
    rec = key | {"loss": res["loss"], "tokens": res["tokens"], "windows": res["windows"], "seq_len": res["seq_len"]}
    if "tasks" in key:
        rec |= score_tasks(scorer, tasks["tasks"], tasks["task_include_paths"], tasks["task_limit"])
    tmp = cache.with_name(EVAL_FILE + ".tmp")
    tmp.write_text(json.dumps(rec, indent=1))
    os.replace(tmp, cache)
    return rec


HELDOUT_COLUMNS = ["name", "seed", "N", "D", "C", "loss", "train_val_loss", "unique_tokens", "eval_tokens"]


def collect(
    specs: list[SweepSpec], data: LadderData, eval_tokens: int, out_dir: Path, failed: list[str], tasks=None
) -> dict[str, list[dict]]:
    """Per corpus, one row per finished run with its held-out loss and task metrics (every seed
    pooled); writes OUTPUT/sweeps/NAME/heldout_results.csv (`anvil sweep fit`, with `--metric
    TASK/METRIC` too, reads it). Runs that cannot be scored are logged, appended to `failed` and left out."""
    from framework.data.shards import file_sha256

    sha = file_sha256(data.heldout + ".bin")
    rows: dict[str, list[dict]] = {}
    evaluated = 0
    for spec in specs:
        plan_rows, _ = plan(spec.config)
        for row in plan_rows:
            run_dir = spec.out_dir / "runs" / row["name"]
            if not (run_dir / RESULT_FILE).is_file():
                continue
            marker = json.loads((run_dir / RESULT_FILE).read_text())
            fresh = not (run_dir / EVAL_FILE).is_file()
            try:
                rec = evaluate_run(run_dir, data.heldout, sha, eval_tokens, int(row["steps"]), tasks)
            except (ValueError, OSError, RuntimeError) as exc:  # a broken checkpoint costs one run, not the ladder
                log.error("%s: not scored on the held-out set: %s", run_dir, exc)
                failed.append(str(run_dir))
                continue
            evaluated += fresh
            rows.setdefault(spec.corpus, []).append(
                {
                    "name": row["name"],
                    "seed": spec.seed,
                    "N": row["N"],
                    "D": row["D"],
                    "C": row["C"],
                    "loss": rec["loss"],
                    "train_val_loss": marker.get("loss"),
                    "unique_tokens": data.tokens[spec.corpus],
                    "eval_tokens": rec["tokens"],
                    "metrics": rec.get("metrics", {}),
                    "higher_is_better": rec.get("higher_is_better", {}),
                }
            )
    if evaluated:
        log.info("scored %d runs on the held-out set", evaluated)
    for corpus, corpus_rows in rows.items():
        metrics = sorted({m for r in corpus_rows for m in r["metrics"]})
        with open(out_dir / "sweeps" / corpus / "heldout_results.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=HELDOUT_COLUMNS + metrics)
            writer.writeheader()
            writer.writerows({**{k: r[k] for k in HELDOUT_COLUMNS}, **r["metrics"]} for r in corpus_rows)
    return rows


def run_ladder(cfg: LadderConfig, data: LadderData) -> tuple[dict, int]:
    """Steps 1-3 of the module docstring; returns (ladder.json content, exit code)."""
    from framework.scaling.ladder_report import write_report
    from framework.scaling.ladder_stats import CorpusRuns, analyse
    from framework.scaling.ladder_tasks import summarise

    specs = corpus_sweeps(cfg, data)
    codes = run_sweeps(specs, cfg.jobs)
    failed = sorted(str(p) for p, rc in codes.items() if rc != 0)
    unscored: list[str] = []
    tasks = {"tasks": cfg.tasks, "task_include_paths": cfg.task_include_paths, "task_limit": cfg.task_limit}
    rows = collect(specs, data, cfg.eval_tokens, cfg.out_dir, unscored, tasks)
    missing = {s.config.name: unfinished(s) for s in specs}
    missing = {k: v for k, v in missing.items() if v}
    corpora = [
        CorpusRuns(
            name,
            [r["N"] for r in rows.get(name, [])],
            [r["D"] for r in rows.get(name, [])],
            [r["loss"] for r in rows.get(name, [])],
            [r["C"] for r in rows.get(name, [])],
            float(data.tokens[name]) if cfg.repetition else 0.0,
            [f"{r['seed']}/{r['name']}" for r in rows.get(name, [])],  # pairs the runs across corpora
        )
        for name in sorted(cfg.corpora)
    ]
    cache_path = cfg.out_dir / "analysis_cache.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    start = time.perf_counter()
    result = analyse(
        corpora,
        cfg.target_flops,
        n_boot=cfg.bootstrap,
        seed=cfg.seed,
        level=cfg.level,
        top_k=cfg.fit_starts,
        r_star=MUENNIGHOFF_R_STAR_D if cfg.repetition else None,
        cache=cache,
    )
    log.info(
        "fits and %d bootstrap resamples per corpus and compute level: %.0f s",
        cfg.bootstrap,
        time.perf_counter() - start,
    )
    tmp = cache_path.with_name(cache_path.name + ".tmp")
    tmp.write_text(json.dumps(cache))
    os.replace(tmp, cache_path)
    fits = result.pop("fits")
    for name, fit in fits.items():
        (cfg.out_dir / "sweeps" / name / "fit.json").write_text(json.dumps(finite_or_null(fit), indent=1) + "\n")
    out = {
        "ranking": result["ranking"],
        "predicted_loss": result["predicted_loss"],
        "interval": result["interval"],
        "p_correct": result["p_correct"],
        "target_flops": cfg.target_flops,
        "level": cfg.level,
        "bootstrap": cfg.bootstrap,
        "stable_from_flops": result["stable_from_flops"],
        "by_compute": result["by_compute"],
        "runs": result["runs"],
        "failed_resamples": result["failed_resamples"],
        "corpora": {
            name: {
                "input": cfg.corpora[name],
                "train_tokens": data.tokens[name],
                "documents": data.documents.get(name, {}),
                "max_epochs": max((r["D"] / data.tokens[name] for r in rows.get(name, [])), default=0.0),
                "fit": {k: fits[name].get(k) for k in ("E", "A", "B", "alpha", "beta", "a", "b", "G", "objective")},
                "repetition": fits[name].get("repetition"),
            }
            for name in sorted(cfg.corpora)
        },
        "heldout": {
            "prefix": data.heldout,
            "documents": data.heldout_documents,
            "tokens": data.heldout_tokens,
            "scored_tokens": sorted({r["eval_tokens"] for rs in rows.values() for r in rs}),
            "from": sorted(cfg.heldout_from or cfg.corpora),
        },
        "tasks": summarise(rows, result["predicted_loss"], result["interval"]),
        "incomplete": missing,
        "failed_sweeps": failed,
        "unscored_runs": unscored,
    }
    out = finite_or_null(out)
    tmp = cfg.out_dir / "ladder.json.tmp"
    tmp.write_text(json.dumps(out, indent=1, allow_nan=False) + "\n")
    os.replace(tmp, cfg.out_dir / "ladder.json")
    write_report(out, corpora, fits, cfg.out_dir)
    return out, (1 if failed or missing or unscored else 0)
