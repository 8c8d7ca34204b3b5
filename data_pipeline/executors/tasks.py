"""The task runner every executor shares: segments, map tasks, reduces and their markers (local processes, Ray and Slurm alike).

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

A task writes each file as NAME.tmp and renames it (a stage's scan writes into a private folder
whose files are renamed into the stage folder), then writes its marker the same way; a task
without a marker is redone from scratch, so a crash at any point resumes to the same bytes. Every
task depends only on its shard (and the reduce before it), never on scheduling, so any number of
workers gives the same files.

Markers record the size and checksum of every file their task wrote (`"files"`, integrity.py).
Before a rerun reuses a finished task, `pending_work` verifies the files that are still needed
(the final and rejected files always; the files between segments only while a task that reads
them is still to run, since a finished run removes them) and redoes a task whose file is missing,
truncated or changed, saying so in the log. A write that fails (disk full, I/O error) raises
TaskIOError naming the task and the file; the task leaves no marker and no file under its final
name.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from data_pipeline.document import Document
from data_pipeline.executors.integrity import check_files, record_files
from data_pipeline.io.readers import read_documents
from data_pipeline.io.writers import JsonlZstWriter, RejectedWriter
from data_pipeline.steps.base import CorpusStage, Step, build_step, parse_step_spec, timed

LENGTH_BINS = [0] + [int(10 ** (k / 4)) for k in range(4, 29)]  # chars, log-spaced 10 .. 10^7


@dataclass(frozen=True)
class MapTask:
    segment: int
    shard: int


@dataclass
class Plan:
    """Everything a worker needs, as plain data (picklable, JSON-able)."""

    inputs: list[list[str]]  # one task per entry: a file, or a group of small files
    output: str
    segments: list[list]  # step specs per segment; segment k>0 starts with its stage
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
    try:
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=False)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if not exc.filename:
            exc.filename = str(path)
        raise
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


class TaskIOError(OSError):
    """A task's read or write failed (disk full, I/O error, a vanished mount): the message names
    the task and the file. The task left no marker, so a rerun redoes it."""


def _io_error(task: str, exc: OSError) -> TaskIOError:
    where = exc.filename or "?"
    why = exc.strerror or str(exc)
    hint = (
        "; free disk space and rerun the same command to resume"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT)
        else "; fix the storage and rerun the same command to resume"
    )
    return TaskIOError(exc.errno or errno.EIO, f"task {task} failed on {where}: {why}{hint}")


def _publish_scan(private: Path, workdir: Path) -> list[Path]:
    """Move what a stage's scan wrote into its private folder into the stage folder (one rename
    each, replacing a leftover of an earlier attempt); returns the published paths."""
    out = []
    for entry in sorted(private.iterdir()):
        dest = workdir / entry.name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(entry, dest)
        out.append(dest)
    private.rmdir()
    return out


def run_map_task(plan: Plan, task: MapTask) -> dict:
    """Run one (segment, shard) task to completion; returns (and marks with) its counters. An
    OSError on the way (disk full, I/O error) is raised as TaskIOError naming the task and file."""
    try:
        return _run_map_task(plan, task)
    except TaskIOError:
        raise
    except OSError as exc:
        raise _io_error(f"seg{task.segment}-{task.shard:05d}", exc) from exc


def _new_read_stats() -> dict:
    """The `read` pseudo-step's counters (records read, rejected by reason, skipped, CPU seconds)."""
    return {
        "name": "read",
        "docs_in": 0,
        "docs_out": 0,
        "dropped": Counter(),
        "bytes_in": 0,
        "bytes_out": 0,
        "edits": {},
        "examples": {},
        "skipped": {},
    }


def _task_input(plan: Plan, task: MapTask, steps: list[Step], read_stats: dict, rejected: RejectedWriter):
    """Phase 1, the task's documents: segment 0 reads its input files (rejections counted under
    `read`); a later segment prepares its corpus stage and reads the previous segment's output."""
    if task.segment > 0:
        steps[0].prepare(task.shard, plan.stage_dir(task.segment))
        return _read_internal(plan.segment_output(MapTask(task.segment - 1, task.shard)))

    def on_reject(rec: dict) -> None:
        read_stats["dropped"][rec["reason"]] += 1
        read_stats["docs_in"] += 1
        rejected.write_record(rec)

    def documents():
        for source in plan.inputs[task.shard]:
            docs = read_documents(
                source,
                on_reject,
                plan.strict,
                raw_html=True,
                max_doc_bytes=plan.max_doc_bytes,
                skipped=read_stats["skipped"],
            )
            for doc in timed(docs, read_stats):
                read_stats["docs_in"] += 1
                read_stats["docs_out"] += 1
                yield doc

    return documents()


def _write_output(out_path: Path, docs, final: bool) -> tuple[Counter, list[int]]:
    """Phase 3, the segment's output: the final segment writes the curated JSONL (and counts
    languages and lengths for the report); an earlier one writes the internal format."""
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
    return lang, lengths


def _scan_for_next_stage(plan: Plan, task: MapTask, out_path: Path) -> list[Path]:
    """Phase 4: the next segment's corpus stage scans this shard (privately, then published)."""
    if task.segment + 1 >= len(plan.segments):
        return []
    stage = build_steps(plan.segments[task.segment + 1][:1])[0]
    workdir = plan.stage_dir(task.segment + 1)
    private = workdir / f".scan-{task.shard:05d}.partial"  # an earlier attempt's is replaced below
    if private.exists():
        shutil.rmtree(private)
    private.mkdir(parents=True)
    stage.scan(_read_internal(out_path), task.shard, private)
    return _publish_scan(private, workdir)


def _run_map_task(plan: Plan, task: MapTask) -> dict:
    seg, shard = task.segment, task.shard
    steps = build_steps(plan.segments[seg])
    rejected_path = Path(plan.output) / "rejected" / f"seg{seg}-{shard:05d}.jsonl.zst"
    rejected = RejectedWriter(rejected_path, include_text=plan.rejected_text)
    read_stats = _new_read_stats()
    final = seg == len(plan.segments) - 1
    out_path = plan.segment_output(task)

    def on_drop(doc: Document, step: str, reason: str, extra: dict) -> None:
        rejected.write_drop(doc, step, reason, **extra)

    try:
        docs = _task_input(plan, task, steps, read_stats, rejected)  # 1. read
        for step in steps:  # 2. the segment's steps, chained lazily
            step.on_drop = on_drop
            docs = step.run(docs)
        lang, lengths = _write_output(out_path, docs, final)  # 3. write
        rejected.close()
    except BaseException:
        rejected.abort()
        raise
    produced = [out_path, rejected_path, *_scan_for_next_stage(plan, task, out_path)]  # 4. next stage's scan
    result = {
        "segment": seg,
        "shard": shard,
        "steps": [s.stats.to_dict() for s in steps],
        "files": record_files(produced, Path(plan.output)),
    }
    if seg == 0:
        read_stats["dropped"] = dict(sorted(read_stats["dropped"].items()))
        read_stats["skipped"] = dict(sorted(read_stats["skipped"].items()))
        result["read"] = read_stats
    if final:
        result["lang"] = dict(sorted(lang.items()))
        result["length_hist"] = lengths
    write_json_atomic(plan.marker(task), result)  # 5. the marker, last: the commit point
    return result


def _snapshot(folder: Path) -> dict:
    return {f: (st.st_size, st.st_mtime_ns) for f in folder.rglob("*") if f.is_file() for st in [f.stat()]}


def run_reduce(plan: Plan, stage_index: int, num_shards: int) -> None:
    """Stage `stage_index`'s reduce; its marker records the files it created or rewrote."""
    try:
        stage = build_steps(plan.segments[stage_index][:1])[0]
        workdir = plan.stage_dir(stage_index)
        workdir.mkdir(parents=True, exist_ok=True)
        before = _snapshot(workdir)
        stage.reduce(num_shards, workdir)
        written = [f for f, meta in _snapshot(workdir).items() if before.get(f) != meta]
        write_json_atomic(
            plan.reduce_marker(stage_index),
            {"stage": stage_index, "shards": num_shards, "files": record_files(written, Path(plan.output))},
        )
    except TaskIOError:
        raise
    except OSError as exc:
        raise _io_error(f"reduce{stage_index}", exc) from exc


# ------------------------------------------------------------------------------ what is still to do
@dataclass
class Todo:
    """What a (re)run must still do: map tasks per segment and the stages whose reduce must run;
    `problems` lists (task, file problem) of finished tasks found damaged, in the order found."""

    tasks: list[list[MapTask]]
    reduces: set
    problems: list[tuple[str, str]]
    finished: int = 0


def _load_marker(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:  # not valid JSON (markers are written atomically: damage): not done
        return None


def pending_work(plan: Plan, fix: bool = True, log=None) -> Todo:
    """Which tasks and reduces must (re)run, verifying the files of finished ones that are needed.

    Walks the segments backwards: a final segment's output and every task's rejected file are
    always needed; a task's output between segments (and a stage's scans / reduce files) only when
    a task that reads it is going to run. A finished task whose needed file is missing, truncated
    or changed is redone (with `fix`, its marker is removed and the reason logged). Without `fix`
    (`anvil data verify`) a damaged task does not make its inputs needed: only first-hand damage
    is reported, not the intermediates a finished run has already removed."""
    n_shards, n_seg = len(plan.inputs), len(plan.segments)
    root = Path(plan.output)
    tasks: list[set] = [set() for _ in range(n_seg)]
    broken: list[set] = [set() for _ in range(n_seg)]
    reduces: set = set()
    problems: list[tuple[str, str]] = []
    need_output: set = set()  # shards whose segment-k output a later task reads
    need_scans = False  # the next stage's reduce reruns: it reads every shard's scan
    finished = 0

    def damaged(name: str, marker_path: Path, problem: str) -> None:
        problems.append((name, problem))
        if log is not None:
            log.warning("task %s: %s; redoing it", name, problem)
        if fix:
            marker_path.unlink(missing_ok=True)

    for seg in reversed(range(n_seg)):
        stage_prefix = f".anvil/stage{seg + 1}/"
        seg_prefix = f".anvil/seg{seg}/"
        for shard in range(n_shards):
            task = MapTask(seg, shard)
            marker = _load_marker(plan.marker(task))
            if marker is None:
                tasks[seg].add(shard)
                continue
            finished += 1

            scans, output = need_scans, shard in need_output
            problem = check_files(
                marker.get("files", {}),
                root,
                lambda rel, scans=scans, output=output, sp=stage_prefix, op=seg_prefix: (
                    scans if rel.startswith(sp) else output if rel.startswith(op) else True
                ),
            )
            if problem:
                damaged(f"seg{seg}-{shard:05d}", plan.marker(task), problem)
                tasks[seg].add(shard)
                broken[seg].add(shard)
        need_scans = False
        runs = tasks[seg] if fix else tasks[seg] - broken[seg]
        need_output = set(runs)
        if seg > 0:
            # the reduce's files are read by this segment's tasks: needed only if one runs
            marker = _load_marker(plan.reduce_marker(seg))
            finished += marker is not None
            if marker is None:
                if runs:
                    reduces.add(seg)
            elif runs:
                problem = check_files(marker.get("files", {}), root)
                if problem:
                    damaged(f"reduce{seg}", plan.reduce_marker(seg), problem)
                    reduces.add(seg)
            need_scans = seg in reduces
    return Todo([[MapTask(k, i) for i in sorted(tasks[k])] for k in range(n_seg)], reduces, problems, finished)
