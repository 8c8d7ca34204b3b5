"""Run lm-evaluation-harness tasks offline on an `AnvilLM` (after training and inside the loop).

Nothing is downloaded: the harness runs with the Hugging Face hub and datasets libraries offline.
Tasks come from harness YAMLs in `include_path` folders (Anvil ships `configs/eval/`) or from the
harness's own registry when their datasets are already in the local cache. A task YAML that reads
local files (`dataset_path: json` with `dataset_kwargs.data_files`) may name them relative to the
YAML's folder; they are made absolute here, and a missing one fails before any model work with the
task's name and the path looked for. A registry task whose dataset is not cached fails the same
way, naming the cache folder.

`run_tasks` returns the harness's own results dictionary (`results`, `versions`, `n-shot`,
`higher_is_better`, `n-samples`, ...) on rank 0 and None on the others; `flat_metrics` turns it
into `eval/TASK/METRIC` scalars for metrics.jsonl, wandb and TensorBoard.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import yaml

DEFAULT_BOOTSTRAP_ITERS = 1000  # standard errors of acc etc. (the harness's default is 100,000)


class TaskError(ValueError):
    """A task that cannot be found or whose data is missing; the message names both."""


class _TaggedLoader(yaml.SafeLoader):
    """Reads harness YAMLs that use `!function` tags without executing anything."""


_TaggedLoader.add_multi_constructor("!", lambda loader, suffix, node: _Tagged(suffix))


class _Tagged:
    def __init__(self, tag: str):
        self.tag = tag


def _has_tag(value) -> bool:
    if isinstance(value, _Tagged):
        return True
    if isinstance(value, dict):
        return any(_has_tag(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_tag(v) for v in value)
    return False


def _local_yaml_tasks(include_paths: list[str]) -> dict[str, tuple[Path, dict]]:
    """task name -> (yaml path, config) for every task YAML under the include paths."""
    found: dict[str, tuple[Path, dict]] = {}
    for root in include_paths:
        if not Path(root).is_dir():
            raise TaskError(f"include path {root}: no such folder (expected a folder of harness task YAMLs)")
        for path in sorted(Path(root).rglob("*.yaml")):
            try:
                cfg = yaml.load(path.read_text(), Loader=_TaggedLoader)
            except yaml.YAMLError as exc:
                raise TaskError(f"{path}: not valid YAML ({exc})") from None
            if isinstance(cfg, dict) and isinstance(cfg.get("task"), str):
                found[cfg["task"]] = (path, cfg)
    return found


def _as_inline_config(name: str, path: Path, cfg: dict) -> dict | None:
    """The YAML as an inline harness config with local data files made absolute; None when it
    must go through the harness's registry (functions, includes, remote datasets)."""
    if _has_tag(cfg) or "include" in cfg or "group" in cfg:
        return None
    kwargs = dict(cfg.get("dataset_kwargs") or {})
    files = kwargs.get("data_files")
    if files is None:
        return None
    if isinstance(files, str):
        files = {"train": files}
    elif isinstance(files, list):
        files = {"train": files}
    resolved: dict[str, list[str] | str] = {}
    for split, names in files.items():
        paths = [names] if isinstance(names, str) else list(names)
        absolute = [str(p if Path(p).is_absolute() else (path.parent / p).resolve()) for p in paths]
        for p in absolute:
            if not Path(p).is_file():
                raise TaskError(f"task {name}: data file {p} not found (dataset_kwargs.data_files.{split} in {path})")
        resolved[split] = absolute if isinstance(names, list) else absolute[0]
    return {**cfg, "dataset_kwargs": {**kwargs, "data_files": resolved}}


def resolve_tasks(tasks: list[str], include_paths: list[str] | None) -> tuple[list, object]:
    """Task specs for the harness (inline configs or registered names) and its TaskManager."""
    from lm_eval.tasks import TaskManager

    include_paths = [str(p) for p in include_paths or []]
    local = _local_yaml_tasks(include_paths)
    specs: list = []
    for name in tasks:
        if name in local:
            specs.append(_as_inline_config(name, *local[name]) or name)
        else:
            specs.append(name)
    need_registry = any(isinstance(s, str) and s not in local for s in specs)
    manager = TaskManager(include_path=include_paths or None, include_defaults=need_registry)
    unknown = [s for s in specs if isinstance(s, str) and s not in manager.all_tasks]
    if unknown:
        where = f" or in {', '.join(include_paths)}" if include_paths else ""
        raise TaskError(
            f"task {unknown[0]}: not a task of lm-evaluation-harness{where} "
            "(name a harness task, or pass --include-path / eval.include_path with its YAML)"
        )
    return specs, manager


@contextlib.contextmanager
def _offline():
    """The hub and datasets libraries offline for the duration (they read their environment at
    import, so their module flags are set too), then restored."""
    import datasets
    import huggingface_hub.constants as hub

    env = {k: os.environ.get(k) for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")}
    flags = [(hub, "HF_HUB_OFFLINE"), (datasets.config, "HF_HUB_OFFLINE"), (datasets.config, "HF_DATASETS_OFFLINE")]
    saved = [getattr(mod, name) for mod, name in flags]
    os.environ.update({k: "1" for k in env})
    for mod, name in flags:
        setattr(mod, name, True)
    try:
        yield
    finally:
        for (mod, name), value in zip(flags, saved):
            setattr(mod, name, value)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_tasks(
    lm,
    tasks: list[str],
    include_paths: list[str] | None = None,
    limit: int | None = None,
    bootstrap_iters: int = DEFAULT_BOOTSTRAP_ITERS,
    log_samples: bool = False,
    resolved: tuple[list, object] | None = None,
) -> dict | None:
    """Evaluate `lm` (an lm_eval LM, e.g. `AnvilLM`) on `tasks`; the harness's results on rank 0.
    `resolved`: `resolve_tasks`'s answer for these tasks, kept by callers that evaluate repeatedly
    (the training loop), so the registry is not indexed again at every evaluation."""
    import logging

    from lm_eval import evaluator

    if not tasks:
        raise TaskError("no tasks given")
    specs, manager = resolved or resolve_tasks(tasks, include_paths)
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    with _offline():
        try:
            return evaluator.simple_evaluate(
                model=lm,
                tasks=specs,
                task_manager=manager,
                limit=limit,
                bootstrap_iters=bootstrap_iters,
                log_samples=log_samples,
            )
        except (TaskError, KeyError, TypeError, ValueError, RuntimeError):
            raise
        except Exception as exc:  # the datasets library's errors differ by version; the cause is the data
            raise _dataset_error(exc, specs, tasks) from exc


def _dataset_error(exc: Exception, specs: list, names: list[str]) -> TaskError:
    import datasets

    name = next((n for n, s in zip(names, specs) if isinstance(s, str)), names[0])
    return TaskError(
        f"task {name}: its dataset is not available offline ({type(exc).__name__}: {exc}); "
        f"looked in the datasets cache {datasets.config.HF_DATASETS_CACHE}. Download it there "
        "once, or write a task YAML over local files (dataset_path: json, data_files)"
    )


def flat_metrics(results: dict, prefix: str = "eval") -> dict[str, float]:
    """{"eval/TASK/METRIC": value}: numeric harness metrics; the default filter's ",none" is dropped,
    other filters are kept after an underscore (exact_match,strict-match -> exact_match_strict-match)."""
    out: dict[str, float] = {}
    for task, metrics in results.get("results", {}).items():
        for key, value in metrics.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or key == "sample_len":
                continue
            metric, _, filt = key.partition(",")
            name = metric if filt in ("", "none") else f"{metric}_{filt}"
            out[f"{prefix}/{task}/{name}"] = float(value)
    return out
