"""DeepSpeed-style hostfiles: parse `HOST slots=N` lines and validate host names.

Split from the command builder (launch/launcher.py) so the one piece that reads user files owns
its errors (file:line, what was expected). Nothing here touches the network or starts processes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

from framework.configtree import ConfigError

# A host name, an IPv4 address or user@host: letters, digits, '.', '-', '_' and nothing a shell or
# ssh could interpret (no leading '-', which ssh would read as an option).
_HOST_RE = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_.-]{0,31}@)?[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Host:
    name: str  # as written: host or user@host (the ssh target)
    slots: int

    @property
    def address(self) -> str:
        return self.name.split("@", 1)[-1]


def check_host(name: str, where: str = "host") -> str:
    if not _HOST_RE.match(name) or ".." in name:
        raise ConfigError(
            f"{where}: invalid host name {name!r}; expected letters, digits, '.', '-', '_' "
            "(optionally user@host), not starting with '-'"
        )
    return name


def parse_hostfile(text: str, source: str = "hostfile") -> list[Host]:
    """Parse DeepSpeed's hostfile format: one `HOST slots=N` per line, `#` comments, blank lines."""
    hosts: list[Host] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{lineno}"
        parts = line.split()
        if len(parts) != 2 or not parts[1].startswith("slots="):
            raise ConfigError(f"{where}: expected 'HOST slots=N', got {raw.strip()!r}")
        name, slots_text = parts[0], parts[1][len("slots=") :]
        check_host(name, where)
        if not slots_text.isdigit() or int(slots_text) <= 0:
            raise ConfigError(f"{where}: slots must be a positive integer, got {slots_text!r}")
        if name in seen:
            raise ConfigError(f"{where}: host {name!r} already listed on line {seen[name]}")
        seen[name] = lineno
        hosts.append(Host(name, int(slots_text)))
    if not hosts:
        raise ConfigError(f"{source}: no hosts (expected lines like 'worker-1 slots=8')")
    return hosts


def hostfile_nproc(hosts: Sequence[Host], nproc_per_node: Optional[int], source: str = "hostfile") -> int:
    """Processes per node for a hostfile: torchrun needs the same count on every node."""
    slots = {h.slots for h in hosts}
    if nproc_per_node is not None:
        short = [h.name for h in hosts if h.slots < nproc_per_node]
        if short:
            raise ConfigError(f"{source}: --nproc-per-node {nproc_per_node} exceeds the slots of {', '.join(short)}")
        return nproc_per_node
    if len(slots) != 1:
        raise ConfigError(
            f"{source}: hosts have different slots {sorted(slots)}; every node runs the same number of "
            "processes (pass --nproc-per-node to use fewer)"
        )
    return slots.pop()
