"""Pre-launch checks that turn a minutes-later crash on N nodes into a one-line error now.

`anvil launch` runs them on every node before starting torchrun (in hostfile and Slurm modes each
node's own `anvil launch` runs them locally, so "the run folder is writable" is checked from every
node). Each check returns a message or None; `run_checks` collects all failures at once.
"""

from __future__ import annotations

import errno
import os
import socket
import uuid
from pathlib import Path
from typing import Optional

from framework.config import RunConfig
from framework.configtree import ConfigError


class EnvCheckError(RuntimeError):
    """One or more pre-launch checks failed; the message lists every failure."""


def check_layout(cfg: RunConfig, world_size: int) -> Optional[str]:
    try:
        cfg.check_layout(world_size)
    except ConfigError as exc:
        return f"layout does not fit {world_size} processes: {exc}"
    return None


def check_run_dir_writable(run_dir: str, node_rank: int = 0) -> Optional[str]:
    path = Path(run_dir)
    probe = path / f".anvil-write-test-node{node_rank}-{uuid.uuid4().hex[:8]}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        return (
            f"run_dir '{run_dir}' is not writable from node {node_rank} ({socket.gethostname()}): {exc.strerror or exc}"
        )
    return None


def check_port_free(port: int, host: str = "") -> Optional[str]:
    """The rendezvous store binds this port on node 0; a busy port fails only after a long timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"rendezvous port {port} is already in use on {socket.gethostname()}; pass --master-port"
            return f"cannot bind rendezvous port {port} on {socket.gethostname()}: {exc.strerror or exc}"
    return None


def check_data_paths(cfg: RunConfig) -> list[str]:
    problems = []
    for i, prefix in enumerate(cfg.data.paths):
        missing = [ext for ext in (".bin", ".idx") if not os.path.isfile(prefix + ext)]
        if missing:
            problems.append(f"config key 'data.paths[{i}]': {prefix}{'/'.join(missing)} not found")
    if cfg.data.tokenizer and not os.path.isfile(cfg.data.tokenizer):
        problems.append(f"config key 'data.tokenizer': {cfg.data.tokenizer} not found")
    return problems


def run_checks(cfg: RunConfig, world_size: int, node_rank: int, port: Optional[int]) -> None:
    """Raise EnvCheckError listing every failed check (layout, run dir, port on node 0, data)."""
    problems = [p for p in (check_layout(cfg, world_size), check_run_dir_writable(cfg.run_dir, node_rank)) if p]
    if port is not None and node_rank == 0:
        busy = check_port_free(port)
        if busy:
            problems.append(busy)
    problems += check_data_paths(cfg)
    if problems:
        raise EnvCheckError("; ".join(problems))
