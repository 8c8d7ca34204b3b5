"""Steps: the small classes a curation recipe is made of, their counters and the registry.

A recipe (configs/data/*.yaml) lists steps by registry name with parameters:

    steps:
      - extract: {timeout_s: 5}
      - gopher_quality: {min_doc_words: 50}
      - exact_dedup: {}

`build_step(name, params, path)` checks both against the registry and the step's `Params` dataclass
(through framework.configtree) and raises ConfigError naming the YAML key (`steps[1].gopher_quality.
min_doc_wrds`) before any work starts.

Three kinds of steps
--------------------
* `Step`: per-document. Implement `process(doc) -> None | reason | (reason, extra)`; it may edit
  `doc.text` / `doc.metadata` in place; returning a reason drops the document. `run(docs)` (the only
  thing the executor calls) wraps it with counters: docs/bytes in and out, dropped by reason, edits,
  a few examples per reason, and `on_drop(doc, step, reason, extra)` for `rejected/`. An exception
  in `process` drops that document with reason `error_<ExceptionType>` (logged once per step)
  instead of ending the run.
* `Filter(Step)`: implement `keep(doc) -> (bool, reason)`; reasons are tagged with the rule that
  fired (`gopher_quality` + `short_doc`, ...).
* `CorpusStage(Step)`: a step that needs the whole corpus (exact dedup, CCNet-style line removal,
  MinHash dedup in data_pipeline/dedup/). The executor runs it in three phases around a barrier:

    1. `scan(docs, shard, workdir)` - once per shard, on the documents that reach the stage, in
       shard order. Write what the stage needs to `workdir` (a folder private to this stage), in
       files named after `shard` (e.g. `workdir / f"scan-{shard:05d}.npz"`). Must be a pure
       function of (docs, shard): a crashed scan is simply rerun.
    2. `reduce(num_shards, workdir)` - once, in one process, after every scan finished. Combine
       the scans in shard order (0, 1, ...) and write the decisions to `workdir` (e.g. per shard,
       the positions to drop and the id they duplicate). Ties must be broken by (shard, position)
       so the result does not depend on how many workers ran the scans.
    3. `prepare(shard, workdir)` then `run(docs)` - once per shard, on the same documents in the
       same order as the scan saw: load this shard's decisions in `prepare`, then `process(doc)`
       is called for each document with `self.position` set to its 0-based index in the shard.

  The executor writes files atomically and keeps completion markers for each phase, so a stage
  never sees a partial scan. A stage registers like any step:

    from data_pipeline.steps.base import CorpusStage, register

    @register("minhash_dedup")
    class MinhashDedup(CorpusStage):
        @dataclass
        class Params: threshold: float = 0.8
        def scan(self, docs, shard, workdir): ...
        def reduce(self, num_shards, workdir): ...
        def prepare(self, shard, workdir): ...
        def process(self, doc): return ("duplicate", {"duplicate_of": rep_id}) or None

  Modules are found by `load_registry()`: every module of data_pipeline/steps/ (minhash_dedup.py
  included: the step wraps the plain `data_pipeline.dedup` library, which imports no step code).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import os
import pkgutil
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator

from data_pipeline.document import Document
from framework.configtree import ConfigError, build

EXAMPLES_PER_REASON = 3
EXAMPLE_CHARS = 400

DropFn = Callable[[Document, str, str, dict], None]
_clock = time.process_time  # CPU seconds of this process: wall time on a shared machine measures the neighbours


@dataclass
class StepStats:
    name: str
    docs_in: int = 0
    docs_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    dropped: Counter = dataclasses.field(default_factory=Counter)
    edits: Counter = dataclasses.field(default_factory=Counter)
    examples: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0  # CPU seconds (time.process_time) spent in this step's own code
    # named counters a step adds to stats.json at the top level, summed over tasks and steps
    # (decontaminate: {"contamination": {FILE_STEM: documents_matched}})
    tallies: dict = dataclasses.field(default_factory=lambda: defaultdict(Counter))

    def to_dict(self) -> dict:
        out = {
            "name": self.name,
            "docs_in": self.docs_in,
            "docs_out": self.docs_out,
            "dropped": dict(sorted(self.dropped.items())),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "edits": dict(sorted(self.edits.items())),
            "seconds": round(self.seconds, 3),
            "examples": self.examples,
        }
        if self.tallies:
            out["tallies"] = {k: dict(sorted(v.items())) for k, v in sorted(self.tallies.items())}
        return out

    def merge(self, other: dict) -> None:
        self.docs_in += other["docs_in"]
        self.docs_out += other["docs_out"]
        self.bytes_in += other.get("bytes_in", 0)
        self.bytes_out += other.get("bytes_out", 0)
        self.dropped.update(other["dropped"])
        self.edits.update(other.get("edits", {}))
        self.seconds += other.get("seconds", 0.0)
        for key, counts in other.get("tallies", {}).items():
            self.tallies[key].update(counts)
        for reason, items in other.get("examples", {}).items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(items[: EXAMPLES_PER_REASON - len(mine)])


def _nbytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class Step:
    """A per-document step. Subclasses set `Params` (a dataclass) and implement `process`."""

    name: ClassVar[str] = "step"

    @dataclass
    class Params:
        pass

    def __init__(self, params: Any = None):
        self.params = params if params is not None else self.Params()
        self.stats = StepStats(self.name)
        self.on_drop: DropFn | None = None
        self.position = 0
        self._warned = False

    def process(self, doc: Document) -> None | str | tuple[str, dict]:
        raise NotImplementedError

    def run(self, docs: Iterable[Document]) -> Iterator[Document]:
        stats = self.stats
        for position, doc in enumerate(docs):
            self.position = position
            stats.docs_in += 1
            stats.bytes_in += _nbytes(doc.text)
            start = _clock()
            try:
                result = self.process(doc)
            except Exception as exc:  # noqa: BLE001 - one hostile document must not end a long job
                result = (f"error_{type(exc).__name__}", {"detail": str(exc)[:300]})
                if not self._warned:
                    self._warned = True
                    from framework.runtime import get_logger

                    get_logger("data").warning(
                        "step %s failed on document %s (%s: %s); such documents are dropped with reason %s",
                        self.name,
                        doc.id,
                        type(exc).__name__,
                        exc,
                        result[0],
                    )
            stats.seconds += _clock() - start
            if result is None:
                stats.docs_out += 1
                stats.bytes_out += _nbytes(doc.text)
                yield doc
                continue
            reason, extra = result if isinstance(result, tuple) else (result, {})
            stats.dropped[reason] += 1
            examples = stats.examples.setdefault(reason, [])
            if len(examples) < EXAMPLES_PER_REASON:
                examples.append({"id": doc.id, "text": doc.text[:EXAMPLE_CHARS]})
            if self.on_drop is not None:
                self.on_drop(doc, self.name, reason, extra)


class Filter(Step):
    """A step that only keeps or drops: implement `keep(doc) -> (bool, reason)`."""

    def keep(self, doc: Document) -> tuple[bool, str | None]:
        raise NotImplementedError

    def process(self, doc: Document):
        ok, reason = self.keep(doc)
        return None if ok else reason


class CorpusStage(Step):
    """A step that needs the whole corpus; see the module docstring for the three phases.

    The base class times every phase. `scan` and `reduce` run on other instances (often in other
    processes) than the `run` whose counters reach stats.json, so their CPU seconds are left in the
    stage's workdir (`cpu-scan-{shard}.json`, `cpu-reduce.json`) and `prepare` adds them to its
    shard's counters (the reduce's to shard 0): `seconds` of a stage = scans + reduce + applying.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for phase in ("scan", "reduce", "prepare"):
            if phase in cls.__dict__:
                setattr(cls, phase, _timed_phase(phase, cls.__dict__[phase]))

    def scan(self, docs: Iterable[Document], shard: int, workdir: Path) -> None:
        raise NotImplementedError

    def reduce(self, num_shards: int, workdir: Path) -> None:
        raise NotImplementedError

    def prepare(self, shard: int, workdir: Path) -> None:
        raise NotImplementedError


def _timed_phase(phase: str, fn):
    @functools.wraps(fn)
    def wrapper(self, *args):
        if getattr(self, "_in_phase", False):  # a subclass calling super().scan(...): timed once, outside
            return fn(self, *args)
        self._in_phase = True
        start = _clock()
        try:
            fn(self, *args)
        finally:
            self._in_phase = False
        seconds = _clock() - start
        if phase == "prepare":
            shard, workdir = args
            names = [f"cpu-scan-{shard:05d}.json"] + (["cpu-reduce.json"] if shard == 0 else [])
            for name in names:
                path = Path(workdir) / name
                if path.is_file():
                    seconds += json.loads(path.read_text())["seconds"]
            self.stats.seconds += seconds
            return
        workdir = Path(args[-1])
        name = f"cpu-scan-{args[1]:05d}.json" if phase == "scan" else "cpu-reduce.json"
        tmp = workdir / (name + ".tmp")
        tmp.write_text(json.dumps({"seconds": seconds}))
        os.replace(tmp, workdir / name)

    return wrapper


STEPS: dict[str, type[Step]] = {}
_LOADED = False


def register(name: str):
    def wrap(cls: type[Step]) -> type[Step]:
        if name in STEPS and STEPS[name] is not cls:
            raise ValueError(f"step name '{name}' registered twice ({STEPS[name].__module__}, {cls.__module__})")
        cls.name = name
        STEPS[name] = cls
        return cls

    return wrap


def load_registry() -> dict[str, type[Step]]:
    global _LOADED
    if not _LOADED:
        import data_pipeline.steps as pkg

        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
            importlib.import_module(f"data_pipeline.steps.{info.name}")
        _LOADED = True
    return STEPS


def parse_step_spec(spec: Any, path: str) -> tuple[str, dict]:
    """A recipe entry (`name` or `{name: {params}}`) -> (name, params)."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, dict) and len(spec) == 1:
        ((name, params),) = spec.items()
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ConfigError(f"config key '{path}.{name}': expected a mapping of parameters, got {params!r}")
        return str(name), params
    raise ConfigError(f"config key '{path}': expected a step name or {{name: {{params}}}}, got {spec!r}")


def build_step(name: str, params: dict | None, path: str = "steps") -> Step:
    registry = load_registry()
    if name not in registry:
        import difflib

        close = difflib.get_close_matches(name, list(registry), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"config key '{path}': unknown step '{name}'{hint}; known steps: {', '.join(sorted(registry))}"
        )
    cls = registry[name]
    return cls(build(cls.Params, params or {}, f"{path}.{name}"))


def timed(items: Iterable, counters: dict) -> Iterator:
    """`items`, adding the CPU seconds spent producing each one to `counters["seconds"]` (the
    executor's `read` step: parsing input files)."""
    it = iter(items)
    counters.setdefault("seconds", 0.0)
    while True:
        start = _clock()
        try:
            item = next(it)
        except StopIteration:
            counters["seconds"] += _clock() - start
            return
        counters["seconds"] += _clock() - start
        yield item
