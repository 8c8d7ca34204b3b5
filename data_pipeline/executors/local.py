"""Local executor: a pool of processes runs the map tasks of each segment, the main process runs
the reduce barrier of each corpus stage between them. Finished tasks (markers) whose files still
verify are skipped (tasks.pending_work), so a rerun after a crash, Ctrl-C or a full disk redoes
only what is missing or damaged. Progress (rank 0, stderr) shows
documents per second.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time

from data_pipeline.executors.tasks import MapTask, Plan, pending_work, run_map_task, run_reduce
from framework.runtime import get_logger


def _task_entry(args):
    plan, task = args
    return run_map_task(plan, task)


class _Progress:
    def __init__(self, label: str, total: int):
        self.label, self.total, self.done, self.docs = label, total, 0, 0
        self.start = time.perf_counter()
        self.last = 0.0
        self.tty = sys.stderr.isatty()

    def update(self, result: dict) -> None:
        self.done += 1
        steps = result["steps"]
        self.docs += result["read"]["docs_in"] if "read" in result else (steps[0]["docs_in"] if steps else 0)
        now = time.perf_counter()
        rate = self.docs / max(now - self.start, 1e-9)
        line = f"{self.label}: {self.done}/{self.total} shards, {self.docs:,} docs, {rate:,.0f} docs/s"
        if self.tty:
            print("\r" + line, end="" if self.done < self.total else "\n", file=sys.stderr, flush=True)
        elif now - self.last > 5 or self.done == self.total:
            get_logger("data").info(line)
            self.last = now


def run_local(plan: Plan, workers: int = 1) -> list[list[dict]]:
    """Run every task of `plan`; returns the markers' counters per segment, in shard order."""
    import json

    n_shards = len(plan.inputs)
    results: list[list[dict]] = []
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    todo = pending_work(plan, fix=True, log=get_logger("data"))
    pool = ctx.Pool(workers) if workers > 1 else None
    try:
        for seg in range(len(plan.segments)):
            if seg in todo.reduces:
                t0 = time.perf_counter()
                run_reduce(plan, seg, n_shards)
                get_logger("data").info(
                    "stage %d (%s) barrier: %.1fs", seg, next(iter(plan.segments[seg][0])), time.perf_counter() - t0
                )
            tasks = [MapTask(seg, s) for s in range(n_shards)]
            pending = todo.tasks[seg]
            progress = _Progress(f"segment {seg + 1}/{len(plan.segments)}", len(pending))
            if pending:
                if pool is None:
                    for task in pending:
                        progress.update(run_map_task(plan, task))
                else:
                    for result in pool.imap_unordered(_task_entry, [(plan, t) for t in pending]):
                        progress.update(result)
            results.append([json.loads(plan.marker(t).read_text()) for t in tasks])
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return results
