"""Ray executor: the local executor's task units (base.py) as Ray tasks, on one machine or a cluster.

Same `MapTask`s, same atomic outputs and completion markers as `run_local`, so a job started here
can be finished by the local executor and the other way round. Each corpus stage's reduce runs as
one Ray task that reserves the stage's memory budget (`memory=`), after all of its scans.
`anvil data dedup --executor ray` maps the dedup phases to Ray tasks: signatures and band keys per
input file (the local command's shards), then, after the driver has appended them to the store and
cut the band records into sorted runs per band (the shuffle), one task per band merges its runs,
buckets them and verifies the candidate pairs, reserving --memory-budget each (`memory=`); the
driver unions the verified pairs (the partition does not depend on their order) and writes the
filtered output.

Failures are handled on the driver, not by Ray: tasks are submitted with max_retries=0, and a task
that raises or whose worker dies is resubmitted up to `retries` times (each failure logged with
its shard), then the job stops with `TaskFailed` naming the input shard and the traceback.
Finished tasks whose files still verify are skipped (tasks.pending_work), so a stopped job resumes
where it was.

    run_ray(plan, RayOptions(address=None, retries=2))   # None: a local runtime on this machine

The output folder must be on storage every node sees (NFS, Lustre, ...): workers write their
shard outputs and markers there directly, nothing bulky goes through the object store.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from data_pipeline.executors.tasks import MapTask, Plan, pending_work, run_map_task, run_reduce
from framework.runtime import get_logger

log = get_logger("data")
CRASH_ENV = "ANVIL_TEST_CRASH_DIR"  # tests only: see _maybe_crash


@dataclass
class RayOptions:
    address: str | None = None  # None: start a local runtime; "auto" or "HOST:PORT": join a cluster
    retries: int = 2  # resubmissions of a failed task before the job stops
    num_cpus: int | None = None  # local runtime only (default: this machine's CPUs)


class TaskFailed(RuntimeError):
    """A task failed `retries + 1` times; the message names its input shard and the traceback."""


def init_ray(opts: RayOptions) -> bool:
    """Connect to `opts.address` or start a small local runtime; returns whether this call started it."""
    import ray

    if ray.is_initialized():
        return False
    common = dict(include_dashboard=False, configure_logging=False, log_to_driver=True)
    if opts.address:
        _check_reachable(opts.address)
        try:
            ray.init(address=opts.address, **common)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SystemExit(f"anvil: --ray-address {opts.address}: cannot connect to a Ray cluster ({exc})") from None
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private runtime: no token set-up
        ray.init(num_cpus=opts.num_cpus or os.cpu_count() or 1, **common)
    return True


def _check_reachable(address: str) -> None:
    """Fail in seconds on a HOST:PORT nobody listens on (Ray itself retries for minutes)."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and friends: Ray resolves those itself
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise SystemExit(
            f"anvil: --ray-address {address}: no Ray head answers there ({exc}); start one with "
            "`ray start --head` or pass the right HOST:PORT"
        ) from None


def memory_request(nbytes: int, what: str) -> int | None:
    """Ray's `memory=` for a task that needs `nbytes`; refuses a request no node can meet (Ray would
    otherwise wait for such a node forever)."""
    import ray

    if not nbytes:
        return None
    largest = max((n["Resources"].get("memory", 0) for n in ray.nodes() if n.get("Alive")), default=0)
    if nbytes > largest:
        raise ValueError(
            f"{what} needs {nbytes / 2**30:.1f} GiB, more than the largest Ray node offers "
            f"({largest / 2**30:.1f} GiB); lower the memory budget"
        )
    return nbytes


def _maybe_crash(key: str, stage: str) -> bool:
    """Test hook: when $ANVIL_TEST_CRASH_DIR/KEY exists, the first attempt of task KEY removes it and
    kills its own worker process half-way through, as a node or OOM kill would: a curation task
    after its output is written as .tmp files (before they are renamed into place), a dedup scan
    after its first shard; for a dedup band this returns True and the task dies after writing its
    pairs, before its marker. A file reading "raise" makes the attempt raise instead."""
    folder = os.environ.get(CRASH_ENV)
    if not folder:
        return False
    flag = Path(folder) / key
    try:
        mode = flag.read_text()
        os.unlink(flag)
    except FileNotFoundError:
        return False
    if mode == "raise":
        raise RuntimeError(f"injected failure of task {key} (test hook {CRASH_ENV})")
    if stage == "curate":
        import data_pipeline.executors.tasks as base

        class Dying(base.JsonlZstWriter):
            def close(self):
                self._out.flush()
                self._raw.flush()
                os._exit(1)

        base.JsonlZstWriter = Dying
    elif stage == "scan":
        import data_pipeline.dedup.api as api

        original = api.scan_texts

        def dying(*args, **kwargs):
            original(*args, **kwargs)
            os._exit(1)

        api.scan_texts = dying
    return True


def _map_entry(plan: Plan, task: MapTask) -> dict:
    _maybe_crash(f"seg{task.segment}-{task.shard:05d}", "curate")
    return run_map_task(plan, task)


def _scan_entry(path: str, index: int, work: str, cfg) -> tuple:
    from data_pipeline.dedup.api import scan_file

    _maybe_crash(f"scan-{index:05d}", "scan")
    shards, counts, rejects = scan_file(Path(path), index, Path(work), cfg)
    return [str(s) for s in shards], counts, rejects


def _traceback(exc: BaseException) -> str:
    """The remote traceback of a failed task (Ray's text without its colour codes)."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return (
        f"Traceback (most recent call last), on the worker:\n{text}"
        if "File \"" in text
        else f"{type(exc).__name__}: {text}"
    )


def _short(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else type(exc).__name__


def run_tasks(submit: Callable, keys: list, describe: Callable[[object], str], retries: int) -> Iterator[tuple]:
    """Submit `submit(key)` for every key, yield (key, result) as they finish; resubmit failures up
    to `retries` times, then cancel the rest and raise TaskFailed with the task's traceback."""
    import ray
    from ray.exceptions import RayError

    pending = {submit(k): (k, 0) for k in keys}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            key, attempt = pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except RayError as exc:
                if attempt < retries:
                    log.warning(
                        "%s failed (attempt %d of %d): %s; retrying",
                        describe(key),
                        attempt + 1,
                        retries + 1,
                        _short(exc),
                    )
                    pending[submit(key)] = (key, attempt + 1)
                    continue
                raise TaskFailed(
                    f"{describe(key)} failed {attempt + 1} time(s); last error:\n{_traceback(exc)}"
                ) from None
            yield key, result
    finally:
        if pending:  # stopping: interrupt the other tasks and wait until they no longer write
            # Not force=True: that kills the workers, and Ray could still hand a dying worker the
            # next job's first task (WorkerCrashedError when a stopped job is resumed in the same
            # process). A KeyboardInterrupt in the task leaves the worker alive; outputs are
            # atomic (.tmp, then renamed with a marker), so an interrupted task leaves nothing half-done.
            for ref in pending:
                ray.cancel(ref, force=False)
            ray.wait(list(pending), num_returns=len(pending), timeout=60)


def stage_memory(plan: Plan, stage: int) -> int:
    """Bytes a stage's reduce may use: its memory_budget parameter (plus interpreter headroom)."""
    from data_pipeline.dedup.index import parse_size

    (params,) = plan.segments[stage][0].values()
    budget = (params or {}).get("memory_budget")
    return parse_size(budget) + (256 << 20) if budget else 0


def run_ray(plan: Plan, opts: RayOptions | None = None) -> list[list[dict]]:
    """Run every task of `plan` on Ray; returns the markers' counters per segment, in shard order."""
    import ray

    from data_pipeline.executors.local import _Progress

    opts = opts or RayOptions()
    if opts.retries < 0:
        raise ValueError(f"--retries must be >= 0, got {opts.retries}")
    started = init_ray(opts)
    try:
        plan_ref = ray.put(plan)
        map_fn = ray.remote(max_retries=0)(_map_entry)
        reduce_fn = ray.remote(max_retries=0)(run_reduce)
        n_shards = len(plan.inputs)

        def describe(task: MapTask) -> str:
            files = plan.inputs[task.shard]
            shown = ", ".join(files[:3]) + (f" (+{len(files) - 3} more)" if len(files) > 3 else "")
            return f"task seg{task.segment}-{task.shard:05d} (input shard {task.shard}: {shown})"

        results: list[list[dict]] = []
        todo = pending_work(plan, fix=True, log=log)
        for seg in range(len(plan.segments)):
            if seg in todo.reduces:
                t0 = time.perf_counter()
                what = f"reduce of stage {seg} ({next(iter(plan.segments[seg][0]))})"
                mem = memory_request(stage_memory(plan, seg), f"the {what}")
                for _ in run_tasks(
                    lambda k: reduce_fn.options(memory=mem).remote(plan_ref, k, n_shards),
                    [seg],
                    lambda k: what,
                    opts.retries,
                ):
                    pass
                log.info("%s (barrier): %.1fs", what, time.perf_counter() - t0)
            tasks = [MapTask(seg, s) for s in range(n_shards)]
            pending = todo.tasks[seg]
            progress = _Progress(f"segment {seg + 1}/{len(plan.segments)} (ray)", len(pending))
            for _, result in run_tasks(lambda t: map_fn.remote(plan_ref, t), pending, describe, opts.retries):
                progress.update(result)
            results.append([json.loads(plan.marker(t).read_text()) for t in tasks])
        return results
    finally:
        if started:
            ray.shutdown()


def _band_entry(task, j: int) -> dict:
    """One LSH band of the dedup reduce (dedup.reduce.BandTask: merge the band's sorted runs, bucket,
    verify; the pairs and a marker go to the work folder, so a finished band is not redone after a
    failure). Bands touch only their own files, so they run in parallel."""
    crash = _maybe_crash(f"band-{j:03d}", "band")
    return task.run(j, before_marker=(lambda: os._exit(1)) if crash else None)


def map_bands_ray(opts: RayOptions):
    """A `map_bands` for dedup.reduce.reduce: one Ray task per band, each reserving the memory budget."""

    def map_bands(task, bands: list[int]):
        import ray

        from data_pipeline.dedup.index import parse_size

        band_fn = ray.remote(max_retries=0)(_band_entry)
        task_ref = ray.put(task)
        mem = memory_request(parse_size(task.cfg.memory_budget), "a dedup band task (--memory-budget)")
        t0 = time.perf_counter()
        for k, (j, _) in enumerate(
            run_tasks(
                lambda j: band_fn.options(memory=mem).remote(task_ref, j),
                bands,
                lambda j: f"dedup band {j}",
                opts.retries,
            )
        ):
            if k + 1 == len(bands) or time.perf_counter() - t0 > 5:
                log.info("dedup: bands (ray) %d/%d", k + 1, len(bands))
            yield j

    return map_bands


def scan_inputs_ray(opts: RayOptions):
    """A `scan` for dedup.api.run_dedup: one Ray task per input file, results in file order."""

    def scan(inputs, work: Path, cfg, rejected):
        import ray

        from data_pipeline.io import expand_inputs

        files = [str(p) for p in expand_inputs(list(inputs))]
        counts = {"files": len(files), "docs_in": 0, "bytes_in": 0, "rejected_read": 0}
        scan_fn = ray.remote(max_retries=0)(_scan_entry)
        rcfg = cfg.resolved()
        done: dict[int, tuple] = {}
        t0 = time.perf_counter()
        for k, (i, result) in enumerate(
            run_tasks(
                lambda i: scan_fn.remote(files[i], i, str(work), rcfg),
                list(range(len(files))),
                lambda i: f"dedup scan of input {files[i]}",
                opts.retries,
            )
        ):
            done[i] = result
            docs = sum(r[1]["docs_in"] for r in done.values())
            log.info(
                "dedup: scan (ray) %d/%d files, %d docs, %.0f docs/s",
                k + 1,
                len(files),
                docs,
                docs / max(time.perf_counter() - t0, 1e-9),
            )
        shard_dirs = []
        for i in range(len(files)):
            shards, c, rejects = done[i]
            shard_dirs += [Path(s) for s in shards]
            counts["docs_in"] += c["docs_in"]
            counts["bytes_in"] += c["bytes_in"]
            counts["shards_reused"] = counts.get("shards_reused", 0) + c.get("shards_reused", 0)
            for rec in rejects:
                counts["rejected_read"] += 1
                rejected.write_record(rec)
        return shard_dirs, counts

    return scan


def run_dedup_ray(inputs, output, cfg, incremental_store=None, opts: RayOptions | None = None) -> dict:
    """`anvil data dedup --executor ray`: the local command with its scan phase on Ray."""
    from data_pipeline.dedup.api import run_dedup

    opts = opts or RayOptions()
    if opts.retries < 0:
        raise ValueError(f"--retries must be >= 0, got {opts.retries}")
    started = init_ray(opts)
    try:
        return run_dedup(
            inputs,
            output,
            cfg,
            incremental_store=incremental_store,
            scan=scan_inputs_ray(opts),
            map_bands=map_bands_ray(opts),
        )
    finally:
        if started:
            import ray

            ray.shutdown()
