"""`make demo`: the end-to-end path on CPU, stage by stage, reusing finished stages on rerun.

Each stage is a function that returns a short key figure; a stage whose output already exists
is reported as reused. The demo ends with a summary table (stage, seconds, key figure).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

from framework.runtime import print_table

OUT = Path("demo_output")
STAGES: list[tuple[str, Callable[[Path], str]]] = []


def main() -> int:
    OUT.mkdir(exist_ok=True)
    rows = []
    if not STAGES:
        print("demo: no end-to-end stages are available yet")
    for name, stage in STAGES:
        start = time.perf_counter()
        figure = stage(OUT)
        rows.append({"stage": name, "seconds": round(time.perf_counter() - start, 1), "result": figure})
    print_table(rows, title="Anvil demo")
    print(f"demo outputs: {OUT.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
