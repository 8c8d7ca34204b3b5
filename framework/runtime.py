"""Runtime basics shared by every long job: rank-aware logging, progress, seeding.

Rank 0 speaks by default; `ANVIL_LOG_ALL_RANKS=1` (or `setup_logging(all_ranks=True)`) lets every
rank log with its rank in the prefix. Progress bars are drawn by rank 0 only. `seed_everything`
seeds Python, NumPy and torch (CPU and CUDA) so the same config and seed give the same numbers.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def get_rank() -> int:
    if "torch" not in sys.modules:  # no torch yet, so no process group: do not pay its import
        return int(os.environ.get("RANK", "0"))
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    return int(os.environ.get("RANK", "0"))


def is_rank0() -> bool:
    return get_rank() == 0


class _RankFilter(logging.Filter):
    def __init__(self, all_ranks: bool):
        super().__init__()
        self.all_ranks = all_ranks

    def filter(self, record: logging.LogRecord) -> bool:
        rank = get_rank()
        record.rank = rank
        return self.all_ranks or rank == 0 or record.levelno >= logging.ERROR


def setup_logging(level: str | int = "INFO", all_ranks: bool | None = None) -> logging.Logger:
    if all_ranks is None:
        all_ranks = os.environ.get("ANVIL_LOG_ALL_RANKS", "0") == "1"
    logger = logging.getLogger("anvil")
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    fmt = "[%(asctime)s rank%(rank)s] %(message)s" if all_ranks else "[%(asctime)s] %(message)s"
    handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))
    handler.addFilter(_RankFilter(all_ranks))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


def get_logger(name: str = "anvil") -> logging.Logger:
    logger = logging.getLogger("anvil")
    if not logger.handlers:
        setup_logging()
    return logging.getLogger(name if name.startswith("anvil") else f"anvil.{name}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
    except ImportError:  # pragma: no cover
        pass


def progress(
    items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it", enabled: bool | None = None
) -> Iterator[T]:
    """Iterate with a progress bar (rank 0 only, stderr, only when it is a terminal or forced)."""
    if enabled is None:
        enabled = is_rank0() and (sys.stderr.isatty() or os.environ.get("ANVIL_PROGRESS") == "1")
    if not enabled:
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    ]
    start = time.perf_counter()
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(desc, total=total, rate="")
        for i, item in enumerate(items, 1):
            yield item
            elapsed = max(time.perf_counter() - start, 1e-9)
            bar.update(task, advance=1, rate=f"{i / elapsed:,.1f} {unit}/s")


@contextmanager
def timed(label: str, logger: logging.Logger | None = None):
    start = time.perf_counter()
    yield
    (logger or get_logger()).info("%s: %.2fs", label, time.perf_counter() - start)


def print_table(rows: list[dict], title: str | None = None, file=None) -> None:
    """A short summary table (rank 0 only): the end of every long job."""
    if not rows or not is_rank0():
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for key in rows[0]:
        table.add_column(str(key))
    for row in rows:
        table.add_row(*(f"{v:,.4g}" if isinstance(v, float) else str(v) for v in row.values()))
    Console(file=file or sys.stdout, width=200).print(table)
