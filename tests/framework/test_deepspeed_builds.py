"""No test may pay DeepSpeed's first-use C++ builds: init_distributed on a cold extensions dir is fast."""

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import time
from framework.distributed import init_distributed
t = time.perf_counter()
rank, world, device = init_distributed(timeout_s=30)
print("INIT_SECONDS", time.perf_counter() - t, rank, world, device)
"""


def test_init_distributed_on_cold_extensions_dir_builds_nothing(tmp_path):
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(tmp_path / "cold"), PYTHONPATH=str(ROOT))
    env.pop("RANK", None)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - start
    assert out.returncode == 0, out.stderr[-2000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("INIT_SECONDS")][0]
    init_s = float(line.split()[1])
    assert init_s < 10, f"init_distributed took {init_s:.1f}s: a C++ op was probably built"
    assert wall < 60
    built = list((tmp_path / "cold").rglob("*.so")) if (tmp_path / "cold").exists() else []
    assert not built, f"DeepSpeed compiled {built}"
    assert "built successfully" not in out.stdout
