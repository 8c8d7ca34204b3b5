"""The one multi-rank test harness: run a function on N gloo ranks as separate processes.

`run_distributed(fn, world_size, *args)` spawns `world_size` processes, initialises a gloo process
group in each, calls `fn(*args)` and returns the per-rank results in rank order. A rank that raises
fails the test with that rank's traceback; a rank that hangs (a collective nobody else joins) fails
it within `timeout` seconds, naming the stuck rank(s) and showing where each was stuck (a
faulthandler stack dump taken just before the deadline). CI never hangs.

`fn` must be importable (a module-level function), because workers are spawned, not forked.
"""

from __future__ import annotations

import faulthandler
import multiprocessing as mp
import os
import pickle
import signal
import socket
import tempfile
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable


class DistributedTestError(AssertionError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(
    rank: int,
    world_size: int,
    port: int,
    fn: Callable,
    args: tuple,
    kwargs: dict,
    out_dir: str,
    timeout: float,
    env: dict,
) -> None:
    os.environ.update({k: str(v) for k, v in env.items()})
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(world_size),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    out = Path(out_dir)
    stack_file = open(out / f"stack_{rank}.txt", "w")
    # On SIGUSR1 (sent by the parent at its deadline) dump this rank's stack, even when the rank
    # is blocked inside a C++ collective: a hang then names its place.
    faulthandler.register(signal.SIGUSR1, file=stack_file, all_threads=True)
    result: dict[str, Any]
    try:
        import torch.distributed as dist

        dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=timedelta(seconds=max(timeout, 10)))
        result = {"ok": True, "value": fn(*args, **kwargs)}
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    tmp = out / f"result_{rank}.tmp"
    with open(tmp, "wb") as f:
        pickle.dump(result, f)  # test-internal channel between our own processes
    os.replace(tmp, out / f"result_{rank}.pkl")
    stack_file.close()
    # Stay connected until every rank is done: a rank that exits early would turn its peers' hang
    # into a misleading "connection closed" error. The parent releases or kills us.
    while not (out / "release").exists():
        time.sleep(0.05)
    os._exit(
        0
    )  # skip atexit handlers of C++ extensions that sometimes abort after destroy  # skip atexit handlers of C++ extensions that sometimes abort after destroy


def run_distributed(
    fn: Callable, world_size: int, *args: Any, timeout: float = 120.0, env: dict | None = None, **kwargs: Any
) -> list[Any]:
    ctx = mp.get_context("spawn")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="anvil-dist-") as out_dir:
        procs = [
            ctx.Process(
                target=_worker, daemon=True, args=(r, world_size, port, fn, args, kwargs, out_dir, timeout, env or {})
            )
            for r in range(world_size)
        ]
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout
        results: dict[int, dict] = {}
        failed: list[int] = []
        while time.monotonic() < deadline:
            for r in range(world_size):
                if r not in results and (Path(out_dir) / f"result_{r}.pkl").exists():
                    with open(Path(out_dir) / f"result_{r}.pkl", "rb") as f:
                        results[r] = pickle.load(f)
                    if not results[r]["ok"]:
                        failed.append(r)
                elif r not in results and not procs[r].is_alive() and procs[r].exitcode not in (0, None):
                    results[r] = {
                        "ok": False,
                        "error": f"process died with exit code {procs[r].exitcode}",
                        "traceback": "",
                    }
                    failed.append(r)
            if failed or len(results) == world_size:
                break
            time.sleep(0.05)
        stuck = [r for r in range(world_size) if r not in results]
        if not failed and stuck:
            for r in stuck:
                if procs[r].is_alive():
                    os.kill(procs[r].pid, signal.SIGUSR1)
            time.sleep(1.0)
        (Path(out_dir) / "release").touch()
        for p in procs:
            p.join(timeout=0.5 if failed or len(results) < world_size else 10)
            if p.is_alive():
                p.kill()
                p.join()
        if failed:
            r = failed[0]
            raise DistributedTestError(
                f"rank {r} of {world_size} failed: {results[r]['error']}\n{results[r]['traceback']}"
            )
        if stuck:
            stacks = "\n".join(
                f"--- rank {r} ---\n{(Path(out_dir) / f'stack_{r}.txt').read_text()[-3000:]}" for r in stuck
            )
            raise DistributedTestError(
                f"rank(s) {stuck} of {world_size} hung: did not finish within {timeout:.0f}s\n{stacks}"
            )
        return [results[r]["value"] for r in range(world_size)]
