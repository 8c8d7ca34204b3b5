"""Preflight of a curation or dedup job: disk, memory and CPU time per stage, before anything runs.

`anvil data run ... --plan` and `anvil data dedup ... --plan` print the estimate and exit; a real
run compares the disk estimate with the free space of the output folder's file system and refuses
to start below it (`--ignore-disk-estimate` overrides).

How the figures are made (calibrated, not guessed): a small deterministic sample of the input
(1/8 of the input, at least 512 KB and at most 4 MB: the files under evenly spaced byte positions,
whole while they fit; a larger JSONL file contributes lines from evenly spaced places, or its first
lines when compressed, counted in its own bytes) goes through the real recipe in a
temporary folder, one task after another in this process. Per stage we measure the bytes of the
files its tasks write (from their markers), the CPU seconds and the peak resident memory, and
scale by input bytes / sample bytes:

- disk: linear in the input. The peak is the sum over stages: files between stages stay until
  the run ends. Resumed runs subtract what finished tasks already wrote.
- CPU time: a tiny warm-up run first pays the one-off costs (loading a model, building tables),
  counted once per task of the real run; the warm sample run's CPU time scales linearly. Wall
  time ~ CPU time / workers for the map stages (interpreter start-up is not counted).
- memory: a map task streams its shard, so a worker's peak does not grow with the input (times
  --workers); a reduce's growth above the interpreter is scaled, capped by its `memory_budget`.

Duplicate rates grow with corpus size, so dedup stages keep somewhat less at full size than on
the sample: the disk estimate errs on the safe side there. The dedup command's estimate runs
`run_dedup` on the same kind of sample, sampling the size of its work folder while it runs
(estimate_dedup). A real run only calibrates when the free disk is below a generous quick bound
(`preflight_disk_check`), so runs with room to spare start at once.

    est = estimate_recipe(recipe, workers=4)          # Estimate(stages=[...], disk_peak=..., ...)
    print(format_estimate(est, free=shutil.disk_usage(out).free))
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE_BYTES = 4 << 20  # the calibration sample: at most this ...
MIN_SAMPLE_BYTES = 512 << 10  # ... and at least this, else 1/8 of the input


JSONL = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".ndjson")


def sample_target(input_bytes: int) -> int:
    return min(SAMPLE_BYTES, max(MIN_SAMPLE_BYTES, input_bytes // 8))


@dataclass
class StageEstimate:
    name: str
    disk_bytes: int
    memory_bytes: int
    cpu_seconds: float
    wall_seconds: float


@dataclass
class Estimate:
    what: str  # "curation" | "dedup"
    input_bytes: int
    input_files: int
    sample_bytes: int
    sample_seconds: float
    workers: int
    stages: list[StageEstimate] = field(default_factory=list)
    disk_final: int = 0  # what stays after the run (kept + rejected)
    already_written: int = 0  # bytes of finished tasks (a resumed run)

    @property
    def scale(self) -> float:
        return self.input_bytes / max(self.sample_bytes, 1)

    @property
    def disk_peak(self) -> int:
        return sum(s.disk_bytes for s in self.stages)

    @property
    def disk_needed(self) -> int:
        return max(self.disk_peak - self.already_written, 0)


# ---------------------------------------------------------------------------------------- sampling
class _Counting:
    """A raw file that counts the bytes read through it (compressed bytes of a cut JSONL file)."""

    def __init__(self, fh):
        self.fh, self.n = fh, 0

    def read(self, size=-1):
        data = self.fh.read(size)
        self.n += len(data)
        return data

    def readable(self):
        return True


def _cut_plain(src: Path, dest: Path, budget: int, chunks: int = 8) -> int:
    """Lines from `chunks` evenly spaced places of an uncompressed JSONL file, about `budget`
    bytes in all, into `dest`; returns their bytes."""
    size = src.stat().st_size
    used = 0
    with open(src, "rb") as fh, open(dest, "wb") as out:
        for c in range(chunks):
            start, stop = c * size // chunks, (c + 1) * size // chunks
            fh.seek(start)
            if start:
                fh.readline()  # the rest of a line that began before this place
            got = 0
            while got < budget / chunks and fh.tell() < stop:
                line = fh.readline()
                if not line:
                    break
                out.write(line if line.endswith(b"\n") else line + b"\n")
                got += len(line)
            used += got
    return used


def _cut_jsonl(src: Path, dest: Path, budget: int) -> int:
    """Copy lines of `src` worth `budget` of its (compressed) bytes into plain `dest`: spread
    over the file when it is uncompressed, its first lines otherwise; returns those bytes in
    `src`'s own encoding."""
    name = src.name.lower()
    if not name.endswith((".gz", ".zst")):
        return _cut_plain(src, dest, budget)
    with open(src, "rb") as raw, open(dest, "wb") as out:
        counter = _Counting(raw)
        if name.endswith(".gz"):
            lines = gzip.GzipFile(fileobj=counter)
        elif name.endswith(".zst"):
            import io

            import zstandard

            lines = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(counter, read_size=1 << 14))
        else:
            lines = counter.fh
        used = 0
        for line in lines:
            out.write(line)
            used = counter.n if lines is not counter.fh else used + len(line)
            if used >= budget:
                break
    return used


def sample_inputs(files: list[str], folder: Path, target: int = SAMPLE_BYTES, picks: int = 64) -> tuple[list[str], int]:
    """A deterministic sample of `files` (sorted paths) of about `target` bytes, spread by bytes:
    the file holding each of `picks` evenly spaced byte positions of the input, whole when it fits
    its share of the target, a JSONL file larger than that cut to its first lines (other formats
    whole). Returns the sample's files and its size in the inputs' own bytes."""
    sizes = [os.path.getsize(f) for f in files]
    total = sum(sizes)
    if total <= target:
        return list(files), total
    picks = min(picks, len(files))
    share = target / picks
    starts, acc = [], 0
    for n in sizes:
        starts.append(acc)
        acc += n
    chosen, used, seen = [], 0, set()
    folder.mkdir(parents=True, exist_ok=True)
    for j in range(picks):
        if len(files) > picks:  # many files: every file equally likely, so the bytes-weighted
            i = int((j + 0.5) * len(files) / picks)  # scale-up below stays unbiased (a big file
        else:  # picked by byte position would count twice: once picked, once weighted)
            pos = (j + 0.5) * total / picks
            i = max(k for k in range(len(files)) if starts[k] <= pos)
        if i in seen:
            continue
        seen.add(i)
        if sizes[i] <= share * 1.25 or not files[i].lower().endswith(JSONL):
            chosen.append(files[i])
            used += sizes[i]
        else:
            dest = folder / f"cut-{i:05d}.jsonl"
            used += _cut_jsonl(Path(files[i]), dest, int(share))
            chosen.append(str(dest))
    return chosen, used


# ------------------------------------------------------------------------------------ measurement
def _reset_peak() -> None:
    try:  # Linux: reset VmHWM so the next reading is this stage's own peak
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return _peak_rss()


def _marker_bytes(path: Path) -> int:
    try:
        return sum(f["size"] for f in json.loads(path.read_text()).get("files", {}).values())
    except (OSError, ValueError):
        return 0


@dataclass
class _Measured:
    name: str
    tasks: int
    disk: int = 0
    final: int = 0
    cpu: float = 0.0
    peak: int = 0
    base: int = 0


def _run_sample(plan, files: list[str], folder: Path) -> list[_Measured]:
    """Run `plan`'s recipe on `files`, in this process, task by task; measure each stage."""
    from data_pipeline.executors.tasks import MapTask, Plan, group_inputs, run_map_task, run_reduce

    splan = Plan(
        inputs=group_inputs(files, 1 << 62),
        output=str(folder),
        segments=plan.segments,
        strict=plan.strict,
        rejected_text=plan.rejected_text,
        max_doc_bytes=plan.max_doc_bytes,
    )
    out: list[_Measured] = []
    for seg in range(len(plan.segments)):
        if seg > 0:
            m = _Measured(f"reduce {seg} ({next(iter(plan.segments[seg][0]))})", 1, base=_rss())
            _reset_peak()
            cpu = time.process_time()
            run_reduce(splan, seg, len(splan.inputs))
            m.cpu, m.peak = time.process_time() - cpu, _peak_rss()
            m.disk = _marker_bytes(splan.reduce_marker(seg))
            out.append(m)
        steps = ", ".join(next(iter(s)) for s in plan.segments[seg])
        m = _Measured(f"segment {seg} ({steps})", len(plan.inputs))
        cpu = time.process_time()
        for shard in range(len(splan.inputs)):
            _reset_peak()
            run_map_task(splan, MapTask(seg, shard))
            m.peak = max(m.peak, _peak_rss())
            for rel, f in json.loads(splan.marker(MapTask(seg, shard)).read_text())["files"].items():
                m.disk += f["size"]
                m.final += 0 if rel.startswith(".anvil/") else f["size"]
        m.cpu = time.process_time() - cpu
        out.append(m)
    return out


def estimate_recipe(recipe, workers: int = 1, strict: bool = False, target: int | None = None) -> Estimate:
    """Calibrate on a sample of `recipe`'s input (see the module docstring); writes nothing under
    the recipe's output. A tiny first run (1/16 of the sample) pays the one-off costs (loading
    models, building tables): its CPU time is the fixed cost per task; the sample run after it,
    warm, gives the cost per input byte."""
    from data_pipeline.executors.ray import stage_memory
    from data_pipeline.pipeline import make_plan

    plan = make_plan(recipe, strict)
    files = [f for group in plan.inputs for f in group]
    input_bytes = sum(os.path.getsize(f) for f in files)
    est = Estimate("curation", input_bytes, len(files), 0, 0.0, workers)
    target = target or sample_target(input_bytes)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="anvil-plan-") as tmp:
        tiny = sample_inputs(files, Path(tmp) / "tiny", max(target // 16, 1), picks=1)[0]
        fixed = _run_sample(plan, tiny, Path(tmp) / "warm")
        sample, est.sample_bytes = sample_inputs(files, Path(tmp) / "sample", target)
        measured = _run_sample(plan, sample, Path(tmp) / "out")
    est.sample_seconds = time.perf_counter() - t_start
    scale = est.scale
    for m, f in zip(measured, fixed):
        cpu = f.cpu * m.tasks + m.cpu * scale
        if m.name.startswith("reduce"):
            grow = max(m.peak - m.base, 0) * scale
            cap = stage_memory(plan, int(m.name.split()[1]))
            mem, wall = m.base + (min(grow, cap) if cap else grow), cpu
        else:
            parallel = max(1, min(workers, len(plan.inputs)))
            mem, wall = m.peak * parallel, cpu / parallel
        est.stages.append(StageEstimate(m.name, int(m.disk * scale), int(mem), cpu, wall))
        est.disk_final += int(m.final * scale)
    est.already_written = _written(plan)
    return est


def _written(plan) -> int:
    """Bytes the finished tasks of an earlier (interrupted) run of this output already hold."""
    markers = plan.work / "markers"
    return sum(_marker_bytes(m) for m in markers.glob("*.json")) if markers.is_dir() else 0


@dataclass
class _DedupRun:
    cpu: float
    seconds: float
    peak_disk: int
    final_disk: int
    base_rss: int
    grow_rss: int
    docs: int


def _measure_dedup(files: list[str], out: Path, cfg) -> _DedupRun:
    """Run `run_dedup`, sampling the size of `out` every 20 ms (its work folder holds signatures,
    band runs and the store until the output is written, then goes)."""
    from data_pipeline.dedup.api import run_dedup

    peak = [0]
    stop = threading.Event()

    def watch():
        while not stop.wait(0.02):
            peak[0] = max(peak[0], _tree_bytes(out))

    watcher = threading.Thread(target=watch, daemon=True)
    base = _rss()
    _reset_peak()
    cpu, t0 = time.process_time() + _children_cpu(), time.perf_counter()
    watcher.start()
    try:
        stats = run_dedup(files, out, cfg)
    finally:
        stop.set()
        watcher.join()
    final = _tree_bytes(out)
    return _DedupRun(
        time.process_time() + _children_cpu() - cpu,
        time.perf_counter() - t0,
        max(peak[0], final),
        final,
        base,
        max(_peak_rss() - base, 0),
        stats.get("docs_in", 0),
    )


def estimate_dedup(inputs: list[str], cfg, target: int | None = None) -> Estimate:
    """Run `run_dedup` on a tiny sample and on the calibration sample and scale: disk by input
    bytes; CPU along the line through the two runs (a run's fixed costs, such as choosing bands x
    rows, are paid once); memory grows with the input until --memory-budget bounds the buffers, so
    the sample's growth is scaled and capped at the budget (an upper estimate)."""
    from data_pipeline.dedup.index import parse_size
    from data_pipeline.io import expand_inputs

    files = [str(p) for p in expand_inputs(list(inputs))]
    input_bytes = sum(os.path.getsize(f) for f in files)
    target = target or sample_target(input_bytes)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="anvil-plan-") as tmp:
        tiny, tiny_bytes = sample_inputs(files, Path(tmp) / "tiny", max(target // 16, 1), picks=1)
        _measure_dedup(tiny, Path(tmp) / "cold", cfg)  # pays the first run's imports and caches
        warm = _measure_dedup(tiny, Path(tmp) / "warm", cfg)
        sample, sample_bytes = sample_inputs(files, Path(tmp) / "sample", target)
        run = _measure_dedup(sample, Path(tmp) / "out", cfg)
    est = Estimate("dedup", input_bytes, len(files), sample_bytes, time.perf_counter() - t0, cfg.workers)
    scale = est.scale
    docs = run.docs * scale
    signature = int(docs * cfg.num_perm * 8)
    memory = run.base_rss + min(run.grow_rss * scale, parse_size(cfg.memory_budget) + (256 << 20))
    per_byte = max(run.cpu - warm.cpu, 0.0) / max(sample_bytes - tiny_bytes, 1)
    cpu = warm.cpu + per_byte * max(input_bytes - tiny_bytes, 0) if sample_bytes > tiny_bytes else run.cpu * scale
    est.stages.append(
        StageEstimate(
            f"dedup (~{docs:,.0f} docs; num_perm {cfg.num_perm}: {_size(signature)} of signatures)",
            int(run.peak_disk * scale),
            int(memory),
            cpu,
            cpu / max(1, cfg.workers),
        )
    )
    est.disk_final = int(run.final_disk * scale)
    return est


def _children_cpu() -> float:
    """CPU seconds of this process's finished child processes (dedup's scan workers)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _tree_bytes(folder: Path) -> int:
    total = 0
    for root, _, names in os.walk(folder):
        for n in names:
            try:
                total += os.path.getsize(os.path.join(root, n))
            except OSError:
                pass
    return total


# -------------------------------------------------------------------------------------- reporting
def free_disk(output: str | Path) -> int:
    """Free bytes on the file system that will hold `output` (its nearest existing parent)."""
    p = Path(output).resolve()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n}"


def _secs(s: float) -> str:
    return f"{s:,.1f} s" if s < 120 else (f"{s / 60:,.1f} min" if s < 7200 else f"{s / 3600:,.1f} h")


def _table(rows: list[dict]) -> str:
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}

    def line(r: dict) -> str:
        return "  ".join(
            str(r[c]).ljust(width[c]) if i == 0 else str(r[c]).rjust(width[c]) for i, c in enumerate(cols)
        ).rstrip()

    return "\n".join([line({c: c for c in cols})] + [line(r) for r in rows])


def format_estimate(est: Estimate, free: int | None = None) -> str:
    rows = [
        {
            "stage": s.name,
            "disk": _size(s.disk_bytes),
            "memory": _size(s.memory_bytes),
            "CPU time": _secs(s.cpu_seconds),
            "wall time": _secs(s.wall_seconds),
        }
        for s in est.stages
    ]
    rows.append(
        {
            "stage": "total",
            "disk": _size(est.disk_peak),
            "memory": _size(max(s.memory_bytes for s in est.stages)),
            "CPU time": _secs(sum(s.cpu_seconds for s in est.stages)),
            "wall time": _secs(sum(s.wall_seconds for s in est.stages)),
        }
    )
    head = (
        f"preflight ({est.what}): {_size(est.input_bytes)} in {est.input_files} input file(s); calibrated "
        f"on a {_size(est.sample_bytes)} sample (x{est.scale:,.1f}) in {est.sample_seconds:.1f} s, "
        f"workers={est.workers}"
    )
    lines = [
        head,
        _table(rows),
        (
            f"disk: {_size(est.disk_peak)} at the peak, {_size(est.disk_final)} left after the run"
            + (f"; {_size(est.already_written)} already written by finished tasks" if est.already_written else "")
        ),
    ]
    if free is not None:
        lines.append(
            f"free disk at the output: {_size(free)}"
            + ("" if free >= est.disk_needed else f" - BELOW the {_size(est.disk_needed)} needed")
        )
    return "\n".join(lines)


def check_disk(est: Estimate, output: str | Path, command: str) -> None:
    """Refuse to start (SystemExit) when the output's file system has less free space than needed."""
    free = free_disk(output)
    if free < est.disk_needed:
        raise SystemExit(
            f"{command}: not enough free disk at {output}: {_size(free)} free, the preflight "
            f"estimates {_size(est.disk_needed)} (peak {_size(est.disk_peak)}); free space, "
            "choose another output, or pass --ignore-disk-estimate to start anyway\n" + format_estimate(est, free)
        )


def quick_bound(input_bytes: int, n_segments: int) -> int:
    """A generous upper bound of a curation run's disk use, used to skip the calibration when the
    free space is far above it: every segment writes at most its input again (kept + rejected, both
    compressed), and inputs may be compressed more strongly than our zstd level 3 (x2)."""
    return 2 * input_bytes * (n_segments + 1) + (64 << 20)


def preflight_disk_check(recipe, workers: int, strict: bool, command: str = "anvil data run") -> None:
    """The check before a real run: nothing to do when the free disk exceeds `quick_bound`,
    else calibrate (estimate_recipe) and refuse to start below the estimate."""
    from data_pipeline.pipeline import make_plan

    plan = make_plan(recipe, strict)
    input_bytes = sum(os.path.getsize(f) for g in plan.inputs for f in g)
    if free_disk(recipe.output) >= quick_bound(input_bytes, len(plan.segments)):
        return
    check_disk(estimate_recipe(recipe, workers, strict), recipe.output, command)


def preflight_dedup_check(inputs: list[str], output: str, cfg, command: str = "anvil data dedup") -> None:
    """`preflight_disk_check` for dedup: the quick bound allows for signatures and band records
    of documents as small as 64 bytes, else the calibrated estimate decides."""
    from data_pipeline.io import expand_inputs

    input_bytes = sum(os.path.getsize(p) for p in expand_inputs(list(inputs)))
    per_doc = 2 * (cfg.num_perm * 8) + 2 * 16 * cfg.num_perm + 256
    if free_disk(output) >= 4 * input_bytes + input_bytes // 64 * per_doc + (64 << 20):
        return
    check_disk(estimate_dedup(inputs, cfg), output, command)
