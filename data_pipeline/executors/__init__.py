"""Executors run a curation `Plan` (data_pipeline/executors/tasks.py: map tasks per segment, one
reduce per corpus stage, markers) on some compute, behind one interface:

    class Executor(Protocol):
        def run(self, plan: Plan) -> list[list[dict]] | None

`run` returns every map task's counters per segment (in shard order), or None when the work was
handed to a scheduler whose last job finishes the run (Slurm). `LocalExecutor` (a process pool),
`RayExecutor` and `SlurmExecutor` implement it; `data_pipeline.pipeline.run_recipe` takes one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from data_pipeline.executors.ray import RayOptions
    from data_pipeline.executors.slurm import SlurmOptions
    from data_pipeline.executors.tasks import Plan


class Executor(Protocol):
    def run(self, plan: Plan) -> list[list[dict]] | None: ...


class LocalExecutor:
    """Processes on this machine (`--workers N`)."""

    def __init__(self, workers: int = 1):
        self.workers = workers

    def run(self, plan: Plan) -> list[list[dict]]:
        from data_pipeline.executors.local import run_local

        return run_local(plan, self.workers)


class RayExecutor:
    """Tasks on a Ray cluster (or a local Ray instance), retried per task."""

    def __init__(self, opts: RayOptions | None = None):
        self.opts = opts

    def run(self, plan: Plan) -> list[list[dict]]:
        from data_pipeline.executors.ray import run_ray

        return run_ray(plan, self.opts)


class SlurmExecutor:
    """An sbatch job chain (array per segment, a reduce job per stage, a finishing `anvil data run`
    that aggregates); `run` submits (or, with `dry_run`, prints) and returns None."""

    def __init__(self, opts: SlurmOptions, finish: list[str], dry_run: bool = False):
        self.opts, self.finish, self.dry_run = opts, finish, dry_run

    def run(self, plan: Plan) -> None:
        from data_pipeline.executors.slurm import submit_plan

        submit_plan(plan, self.finish, self.opts, self.dry_run)
        return None
