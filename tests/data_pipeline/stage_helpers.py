"""Run a CorpusStage in-process, phase by phase, as the executor does (scan each shard, one reduce,
then prepare + run each shard on fresh step instances)."""

from __future__ import annotations

from pathlib import Path

from data_pipeline.document import Document
from data_pipeline.steps.base import StepStats, build_step


def run_stage(name: str, params: dict, shards: list[list[Document]], workdir: Path):
    """-> (kept documents per shard, merged stats dict, {doc id: reason} of dropped documents)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for i, docs in enumerate(shards):
        build_step(name, params).scan(iter(_copy(docs)), i, workdir)
    build_step(name, params).reduce(len(shards), workdir)
    kept, stats, dropped = [], StepStats(name), {}
    for i, docs in enumerate(shards):
        step = build_step(name, params)
        step.on_drop = lambda doc, _step, reason, extra: dropped.__setitem__(doc.id, reason)
        step.prepare(i, workdir)
        kept.append(list(step.run(_copy(docs))))
        stats.merge(step.stats.to_dict())
    return kept, stats.to_dict(), dropped


def _copy(docs: list[Document]) -> list[Document]:
    return [Document(d.id, d.text, dict(d.metadata)) for d in docs]
