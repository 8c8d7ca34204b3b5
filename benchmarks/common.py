"""What every benchmark script writes, so `make bench` can build one table from all of them.

Each script ends with `Recorder.write(...)`: benchmarks/results/NAME.json holds the script's own
measurements plus, at the top, the command, the input it ran on (real inputs or the labelled
sample-corpus fallback), the machine (cores, CPU model, memory) with the load average before and
after, the script's wall seconds, and `rows`: the lines it contributes to the README's performance
table. A row names the quantity it reports (wall s of whole processes, docs per CPU-second, a
formula, ...), Anvil's figure, the peer measured in the same run, the ratio and the target with
whether it was met. benchmarks/report.py turns every results file's rows into the Markdown table.

Scripts import it as `from benchmarks.common import Recorder, row` with the repository root on
sys.path (they already keep benchmarks/ itself off it: benchmarks/tokenize.py shadows the stdlib).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROW_KEYS = ("what", "quantity", "anvil", "peer", "ratio", "target", "met")


def load_average() -> list[float]:
    """1, 5 and 15-minute load averages, rounded (noise on a shared machine made visible)."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    """Cores (usable by this process and online), CPU model, memory: enough to compare two runs."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem_gb = round(kb / 2**20, 1)
    except (OSError, IndexError, ValueError):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cores": usable,
        "cpus_online": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def row(
    what: str,
    quantity: str,
    anvil: str,
    peer: str = "",
    ratio: str = "",
    target: str = "",
    met: bool | None = None,
) -> dict:
    """One line of the performance table; figures already formatted (units included).

    `quantity` says what kind of number it is ("wall s, whole process", "docs per CPU-s",
    "formula", ...). `met` is None where the row has no target.
    """
    if not what or not quantity or anvil in (None, ""):
        raise ValueError(f"a row needs what, quantity and Anvil's figure: {what!r}, {quantity!r}, {anvil!r}")
    return {
        "what": what,
        "quantity": quantity,
        "anvil": str(anvil),
        "peer": peer,
        "ratio": ratio,
        "target": target,
        "met": met,
    }


@dataclass
class Recorder:
    """Created when a benchmark starts (load average and clock), written when it ends."""

    name: str
    started: float = field(default_factory=time.monotonic)
    load_before: list[float] = field(default_factory=load_average)
    started_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def write(self, record: dict, rows: list[dict], input_label: str, results_dir: Path = RESULTS) -> Path:
        """Write results_dir/NAME.json: header, rows, then the script's own `record`."""
        for r in rows:
            missing = [k for k in ROW_KEYS if k not in r]
            if missing:
                raise ValueError(f"{self.name}: row {r!r} lacks {missing}")
        header = {
            "script": f"benchmarks/{self.name}.py",
            "command": " ".join(["python", "-P", f"benchmarks/{self.name}.py", *sys.argv[1:]]),
            "input": input_label,
            "started_at": self.started_at,
            "wall_s": round(time.monotonic() - self.started, 1),
            "machine": {**machine(), "load_before": self.load_before, "load_after": load_average()},
            "rows": rows,
        }
        clash = sorted(set(header) & set(record))
        if clash:
            raise ValueError(f"{self.name}: record keys {clash} are reserved for the header")
        results_dir.mkdir(parents=True, exist_ok=True)
        path = results_dir / f"{self.name}.json"
        path.write_text(json.dumps({**header, **record}, indent=1, default=str) + "\n")
        print(f"wrote {path}")
        return path


def fmt_ratio(anvil: float, peer: float, lower_is_better: bool = True) -> str:
    """'4.1x' meaning Anvil is that many times better (faster time, or higher rate)."""
    if not anvil or not peer:
        return ""
    return f"{(peer / anvil if lower_is_better else anvil / peer):.1f}x"
