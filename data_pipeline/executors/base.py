"""The task and marker format every executor shares (local processes here; Ray/Slurm alike).

A recipe's steps are cut at each CorpusStage into segments:

    segment 0: read input shard i -> steps ... -> (scan of stage 1)
    segment k: stage k applied to shard i -> steps ... -> (scan of stage k+1 | final output)

Work is `MapTask(segment, shard)` for every input shard (a file; small files such as HTML pages
are grouped into shards of up to `group_bytes` by `group_inputs`), plus one reduce per stage after all of
its scans (the barrier). Everything lives under the output folder:

    OUTPUT/part-{i:05d}.jsonl.zst          kept documents of input shard i (final segment)
    OUTPUT/rejected/seg{k}-{i:05d}.jsonl.zst  dropped documents and unreadable records
    OUTPUT/.anvil/recipe.json              the resolved recipe; a different one refuses to resume
    OUTPUT/.anvil/seg{k}/{i:05d}.jsonl.zst  documents between segments (removed when the run ends)
    OUTPUT/.anvil/stage{k}/                a stage's scans and decisions
    OUTPUT/.anvil/markers/seg{k}-{i:05d}.json  completion marker = the task's counters
    OUTPUT/.anvil/markers/reduce{k}.json   completion marker of stage k's reduce

A task writes each file as NAME.tmp and renames it, then writes its marker the same way; a task
without a marker is redone from scratch, so a crash at any point resumes to the same bytes. Every
task depends only on its shard (and the reduce before it), never on scheduling, so any number of
workers gives the same files.
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from data_pipeline.document import Document
from data_pipeline.io.readers import read_documents
from data_pipeline.io.writers import JsonlZstWriter, RejectedWriter
from data_pipeline.steps.base import CorpusStage, Step, build_step, parse_step_spec

LENGTH_BINS = [0] + [int(10 ** (k / 4)) for k in range(4, 29)]  # chars, log-spaced 10 .. 10^7


@dataclass(frozen=True)
class MapTask:
    segment: int
    shard: int


@dataclass
class Plan:
    """Everything a worker needs, as plain data (picklable, JSON-able)."""
    inputs: list[list[str]]       # one task per entry: a file, or a group of small files
    output: str
    segments: list[list]          # step specs per segment; segment k>0 starts with its stage
    strict: bool = False
    rejected_text: bool = False
    max_doc_bytes: int = 10 * 1024 * 1024

    @property
    def work(self) -> Path:
        return Path(self.output) / ".anvil"

    def marker(self, task: MapTask) -> Path:
        return self.work / "markers" / f"seg{task.segment}-{task.shard:05d}.json"

    def reduce_marker(self, stage: int) -> Path:
        return self.work / "markers" / f"reduce{stage}.json"

    def stage_dir(self, stage: int) -> Path:
        return self.work / f"stage{stage}"

    def segment_output(self, task: MapTask) -> Path:
        if task.segment == len(self.segments) - 1:
            return Path(self.output) / f"part-{task.shard:05d}.jsonl.zst"
        return self.work / f"seg{task.segment}" / f"{task.shard:05d}.jsonl.zst"


def group_inputs(files: list[str], group_bytes: int = 256 * 1024 * 1024, max_files: int = 10_000) -> list[list[str]]:
    """Consecutive files (in their sorted order) packed into shards of at most `group_bytes` or
    `max_files`; a file larger than that is a shard alone. Depends only on the file list and sizes."""
    groups: list[list[str]] = []
    size = 0
    for f in files:
        n = os.path.getsize(f)
        if not groups or size + n > group_bytes or len(groups[-1]) >= max_files:
            groups.append([])
            size = 0
        groups[-1].append(f)
        size += n
    return groups


def split_segments(specs: list) -> list[list]:
    """Cut the step list before each CorpusStage (checks names and params on the way)."""
    segments: list[list] = [[]]
    for i, spec in enumerate(specs):
        name, params = parse_step_spec(spec, f"steps[{i}]")
        step = build_step(name, params, f"steps[{i}]")
        if isinstance(step, CorpusStage):
            segments.append([])
        segments[-1].append({name: params})
    return segments


def build_steps(specs: list) -> list[Step]:
    return [build_step(*parse_step_spec(spec, "steps")) for spec in specs]


def write_json_atomic(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _dump_internal(doc: Document) -> str:
    rec = {"id": doc.id, "text": doc.text, "_source": doc.source, "_offset": doc.offset}
    rec.update(doc.metadata)
    return json.dumps(rec, ensure_ascii=False, separators=(",", ":"))


def _read_internal(path: Path) -> Iterator[Document]:
    import io

    import zstandard

    with open(path, "rb") as raw:
        reader = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw), encoding="utf-8")
        for line in reader:
            rec = json.loads(line)
            doc_id, text = rec.pop("id"), rec.pop("text")
            source, offset = rec.pop("_source"), rec.pop("_offset")
            yield Document(id=doc_id, text=text, metadata=rec, source=source, offset=offset)


def run_map_task(plan: Plan, task: MapTask) -> dict:
    """Run one (segment, shard) task to completion; returns (and marks with) its counters."""
    seg, shard = task.segment, task.shard
    specs = plan.segments[seg]
    steps = build_steps(specs)
    rejected_path = Path(plan.output) / "rejected" / f"seg{seg}-{shard:05d}.jsonl.zst"
    rejected = RejectedWriter(rejected_path, include_text=plan.rejected_text)
    read_stats = {"name": "read", "docs_in": 0, "docs_out": 0, "dropped": Counter(), "bytes_in": 0,
                  "bytes_out": 0, "edits": {}, "examples": {}, "skipped": {}}

    def on_read_reject(rec: dict) -> None:
        read_stats["dropped"][rec["reason"]] += 1
        read_stats["docs_in"] += 1
        rejected.write_record(rec)

    def on_drop(doc: Document, step: str, reason: str, extra: dict) -> None:
        rejected.write_drop(doc, step, reason, **extra)

    try:
        if seg == 0:
            def counted(files):
                for source in files:
                    for doc in read_documents(source, on_read_reject, plan.strict, raw_html=True,
                                              max_doc_bytes=plan.max_doc_bytes, skipped=read_stats["skipped"]):
                        read_stats["docs_in"] += 1
                        read_stats["docs_out"] += 1
                        yield doc
            docs = counted(plan.inputs[shard])
        else:
            stage = steps[0]
            stage.prepare(shard, plan.stage_dir(seg))
            docs = _read_internal(plan.segment_output(MapTask(seg - 1, shard)))
        for step in steps:
            step.on_drop = on_drop
            docs = step.run(docs)
        final = seg == len(plan.segments) - 1
        out_path = plan.segment_output(task)
        lang, lengths = Counter(), [0] * len(LENGTH_BINS)
        writer = JsonlZstWriter(out_path)
        try:
            for doc in docs:
                if final:
                    writer.write(doc)
                    lang[str(doc.metadata.get("lang", "unknown"))] += 1
                    n = max(len(doc.text), 1)
                    lengths[min(int(4 * math.log10(n)) - 3, len(LENGTH_BINS) - 1) if n >= 10 else 0] += 1
                else:
                    writer.write_line(_dump_internal(doc))
        except BaseException:
            writer.abort()
            raise
        writer.close()
        rejected.close()
    except BaseException:
        rejected.abort()
        raise
    if seg + 1 < len(plan.segments):
        stage = build_steps(plan.segments[seg + 1][:1])[0]
        workdir = plan.stage_dir(seg + 1)
        workdir.mkdir(parents=True, exist_ok=True)
        stage.scan(_read_internal(out_path), shard, workdir)
    result = {"segment": seg, "shard": shard, "steps": [s.stats.to_dict() for s in steps]}
    if seg == 0:
        read_stats["dropped"] = dict(sorted(read_stats["dropped"].items()))
        read_stats["skipped"] = dict(sorted(read_stats["skipped"].items()))
        result["read"] = read_stats
    if final:
        result["lang"] = dict(sorted(lang.items()))
        result["length_hist"] = lengths
    write_json_atomic(plan.marker(task), result)
    return result


def run_reduce(plan: Plan, stage_index: int, num_shards: int) -> None:
    stage = build_steps(plan.segments[stage_index][:1])[0]
    stage.reduce(num_shards, plan.stage_dir(stage_index))
    write_json_atomic(plan.reduce_marker(stage_index), {"stage": stage_index, "shards": num_shards})
