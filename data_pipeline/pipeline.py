"""Recipe (YAML) -> validated steps -> executor -> stats.json and report.html.

`anvil data run configs/data/web.yaml input=crawl/ output=clean/` lands in `run_recipe`. Every
problem with the recipe (unknown step or parameter, missing input, a classifier model that is not
there) is raised as ConfigError before any file is written.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_pipeline.executors.tasks import LENGTH_BINS, Plan, group_inputs, split_segments, write_json_atomic
from data_pipeline.steps.base import StepStats
from framework.configtree import ConfigError, load


@dataclass
class RecipeConfig:
    input: list[str] = field(default_factory=list)  # files, folders, globs
    output: str = ""  # folder for cleaned shards, stats.json and report.html
    steps: list[Any] = field(default_factory=list)  # [name | {name: {params}}]
    rejected_text: bool = False  # also write each dropped document's text to rejected/
    max_doc_bytes: int = 10 * 1024 * 1024  # documents larger than this (UTF-8 bytes) are rejected on read
    shard_bytes: int = 256 * 1024 * 1024  # small input files are grouped into tasks of this size
    report: bool = True  # write report.html (drop reasons, examples) next to stats.json
    keep_work: bool = False  # keep .anvil/ intermediates after a successful run


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> RecipeConfig:
    return load(RecipeConfig, path, overrides)


def make_plan(recipe: RecipeConfig, strict: bool = False) -> Plan:
    from data_pipeline.io.readers import expand_inputs

    if not recipe.input:
        raise ConfigError("config key 'input': required (a file, folder or glob; e.g. input=crawl/)")
    if not recipe.output:
        raise ConfigError("config key 'output': required (a folder; e.g. output=clean/)")
    if not recipe.steps:
        raise ConfigError("config key 'steps': the recipe lists no steps")
    segments = split_segments(recipe.steps)
    try:
        inputs = [str(p) for p in expand_inputs(recipe.input)]
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"config key 'input': {exc}") from None
    out = Path(recipe.output).resolve()
    for p in inputs:
        if Path(p).resolve().is_relative_to(out):
            raise ConfigError(f"config key 'output': {recipe.output} contains the input file {p}")
    if recipe.shard_bytes <= 0:
        raise ConfigError(f"config key 'shard_bytes': expected a positive size in bytes, got {recipe.shard_bytes}")
    return Plan(
        inputs=group_inputs(inputs, recipe.shard_bytes),
        output=recipe.output,
        segments=segments,
        strict=strict,
        rejected_text=recipe.rejected_text,
        max_doc_bytes=recipe.max_doc_bytes,
    )


def _check_resume(plan: Plan) -> None:
    """Markers are only valid for the recipe that wrote them."""
    ident = {
        "inputs": plan.inputs,
        "segments": plan.segments,
        "rejected_text": plan.rejected_text,
        "max_doc_bytes": plan.max_doc_bytes,
    }
    path = plan.work / "recipe.json"
    if path.exists():
        if json.loads(path.read_text()) != json.loads(json.dumps(ident)):
            raise ConfigError(
                f"config key 'output': {plan.output} holds a run of a different recipe or "
                "input; choose a new output folder or delete it"
            )
    else:
        write_json_atomic(path, ident)
    for tmp in Path(plan.output).rglob("*.tmp"):
        tmp.unlink()


def aggregate(plan: Plan, results: list[list[dict]]) -> dict:
    """Per-task counters -> stats.json (the CONTRACT's fields, plus bytes, edits and histograms)."""
    read = StepStats("read")
    skipped: Counter = Counter()
    for r in results[0]:
        read.merge(r["read"])
        skipped.update(r["read"].get("skipped", {}))
    steps = [read]
    for seg_results in results:
        merged = [StepStats(s["name"]) for s in seg_results[0]["steps"]] if seg_results else []
        for r in seg_results:
            for acc, s in zip(merged, r["steps"]):
                acc.merge(s)
        steps += merged
    final = results[-1]
    lang: Counter = Counter()
    lengths = [0] * len(LENGTH_BINS)
    for r in final:
        lang.update(r["lang"])
        lengths = [a + b for a, b in zip(lengths, r["length_hist"])]
    step_dicts = [s.to_dict() for s in steps]
    examples = {s["name"]: s.pop("examples") for s in step_dicts}
    tallies: dict[str, Counter] = {}  # a step's named counters become top-level fields (contamination)
    for s in step_dicts:
        for key, counts in s.pop("tallies", {}).items():
            tallies.setdefault(key, Counter()).update(counts)
    return {
        "docs_in": read.docs_in,
        "docs_out": steps[-1].docs_out,
        "steps": step_dicts,
        "bytes_in": read.bytes_in,
        "bytes_out": steps[-1].bytes_out,
        "skipped_records": dict(sorted(skipped.items())),
        "shards": len(plan.inputs),
        "lang": dict(lang.most_common()),
        "length_hist": {"bin_start_chars": LENGTH_BINS, "docs": lengths},
        **{k: dict(sorted(v.items())) for k, v in sorted(tallies.items())},
        "_examples": examples,
    }


def run_recipe(recipe: RecipeConfig, workers: int = 1, strict: bool = False, executor=None) -> dict | None:
    """Run `recipe` on `executor` (data_pipeline.executors: Local, Ray, Slurm; default: local
    processes, `workers` of them) and write stats.json and report.html. None back means the work
    was handed to a scheduler whose last job finishes the run."""
    from data_pipeline.executors import LocalExecutor

    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    plan = make_plan(recipe, strict)
    Path(plan.output).mkdir(parents=True, exist_ok=True)
    _check_resume(plan)
    results = (executor or LocalExecutor(workers)).run(plan)
    if results is None:
        return None
    stats = aggregate(plan, results)
    examples = stats.pop("_examples")
    # read's bytes are counted as they enter the first step
    first = stats["steps"][1] if len(stats["steps"]) > 1 else stats["steps"][0]
    stats["steps"][0]["bytes_out"] = stats["steps"][0]["bytes_in"] = first["bytes_in"]
    stats["bytes_in"] = first["bytes_in"]
    write_json_atomic(Path(plan.output) / "stats.json", stats)
    if recipe.report:
        from data_pipeline.report import write_report

        write_report(stats, examples, Path(plan.output) / "report.html")
    if not recipe.keep_work:
        for path in plan.work.glob("seg*"):
            shutil.rmtree(path, ignore_errors=True)
        for path in plan.work.glob("stage*"):
            shutil.rmtree(path, ignore_errors=True)
    return stats
