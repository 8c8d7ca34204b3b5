"""Process-group start-up for every multi-rank entry point (trainer, eval, launch checks).

Chooses the device and backend at run time (NCCL on GPUs, gloo on CPU), applies the collective
timeout, and keeps DeepSpeed from compiling its shared-memory comm op on CPU: that first-use C++
build costs about a minute per cold `TORCH_EXTENSIONS_DIR` and gloo does the same job for the small
CPU runs Anvil does there. `ANVIL_DS_SHM_COMM=1` re-enables it (worth it for large CPU-only jobs).
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch

SHM_OP_NAME = "deepspeed_shm_comm"


def device_type() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_timeout_s(configured: float = 0.0) -> float:
    if configured and configured > 0:
        return configured
    env = os.environ.get("ANVIL_COLLECTIVE_TIMEOUT_S")
    if env:
        return float(env)
    return 1800.0 if torch.cuda.is_available() else 120.0


def disable_deepspeed_cpu_builds() -> None:
    """Mark DeepSpeed's shm comm op as unavailable on CPU so `init_distributed` never builds it."""
    if torch.cuda.is_available() or os.environ.get("ANVIL_DS_SHM_COMM") == "1":
        return
    import deepspeed.ops

    # DeepSpeed caches this probe in the module and documents that edits to it persist.
    deepspeed.ops.__compatible_ops__[SHM_OP_NAME] = False


MMAP_THRESHOLD = 1 << 20  # bytes


def release_freed_memory_to_os() -> bool:
    """Make glibc serve every allocation of >= 1 MiB with its own mmap, returned to the OS on free.

    By default glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), after
    which same-sized blocks come from the heap and stay resident once freed. Building a model shard
    by shard frees many such blocks (initial values, ZeRO-3 units once partitioned), and the heap
    then kept ~2x the shard resident (measured: 93 MB instead of 53 MB for a 32 MB ZeRO-3 share,
    tests/framework/parallel/test_construction.py). A fixed threshold stops that. No-op off glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, MMAP_THRESHOLD))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def init_distributed(timeout_s: float = 0.0) -> tuple[int, int, torch.device]:
    """Initialise torch.distributed through DeepSpeed; return (rank, world_size, device).

    Works with torchrun / deepspeed launchers (env:// variables) and for a plain single process
    (a 1-rank group on a free local port), so every code path is the same.
    """
    import deepspeed
    import torch.distributed as dist

    release_freed_memory_to_os()  # ranks build their shards piece by piece: keep freed pieces off the heap
    if "RANK" not in os.environ:
        from socket import socket

        with socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(
            {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        device = torch.device("cuda", torch.cuda.current_device())
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        disable_deepspeed_cpu_builds()
        deepspeed.init_distributed(
            dist_backend=backend, timeout=timedelta(seconds=default_timeout_s(timeout_s)), verbose=False
        )
    return dist.get_rank(), dist.get_world_size(), device
