"""Completion markers that make `anvil data dedup` resumable.

Every unit of dedup work (a scan shard, an input file's scan, a group of sorted band runs, the
duplicate-id pass, one LSH band, one chunk of verified pairs, the decisions) writes its files
first, each as `NAME.tmp` renamed into place, and then a small JSON *marker* naming every file it covers with its size and
checksum, plus a *tag*: a hash of everything the unit depends on (input file sizes and mtimes, the
dedup settings, the store's state). A rerun reuses a unit only when its marker exists, carries the
same tag, and every covered file still has the recorded size and checksum (xxh3_128 when the
xxhash package is importable, else blake2b_128; the marker names which); otherwise the unit is
redone and the log says why (missing, truncated or changed file, other settings).

Test hook: `ANVIL_TEST_DEDUP_FAULT=POINT` (or `POINT:exit`) makes the unit named POINT fail after
writing its files and before its marker - raising `InjectedFault`, or with `:exit` killing the
process on the spot as a node loss or OOM kill would. Points: `scan:SHARD_DIR_NAME`,
`append:GROUP`, `ids`, `band:J`, `verify:CHUNK`, `decide`, `commit`, `output`. Tests only; unset,
it costs one dictionary lookup per unit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

from framework.checksums import default_algorithm, hasher
from framework.runtime import get_logger

log = get_logger("anvil.dedup")
FAULT_ENV = "ANVIL_TEST_DEDUP_FAULT"
CHUNK = 1 << 20


class InjectedFault(RuntimeError):
    """Raised by `fault()` under the test hook."""


def fault(point: str) -> None:
    """Test hook (see the module docstring): fail the unit `point` here when asked to."""
    want = os.environ.get(FAULT_ENV)
    if not want:
        return
    hard = want.endswith(":exit")
    if (want[:-5] if hard else want) != point:
        return
    if hard:
        os._exit(17)
    raise InjectedFault(f"injected dedup failure at {point} (test hook {FAULT_ENV})")


ALGO = default_algorithm(128)


def digest(path: Path, start: int = 0, end: int | None = None, algo: str | None = None) -> str:
    """ "ALGO:HEX" checksum of the file's bytes [start, end) (xxh3_128 when the xxhash package is
    importable, else blake2b_128); `check(digest_string, ...)` recomputes it with the same algorithm."""
    algo = algo or ALGO
    h = hasher(algo)
    with open(path, "rb") as f:
        f.seek(start)
        left = (end - start) if end is not None else None
        while left is None or left > 0:
            chunk = f.read(CHUNK if left is None else min(CHUNK, left))
            if not chunk:
                break
            h.update(chunk)
            if left is not None:
                left -= len(chunk)
    return f"{algo}:{h.hexdigest()}"


def same_digest(recorded: str, path: Path, start: int = 0, end: int | None = None) -> bool:
    algo, _, _ = str(recorded).partition(":")
    return digest(path, start, end, algo) == recorded


def tag_of(obj) -> str:
    """A short hash of a JSON-able description of what a unit depends on."""
    return hashlib.blake2b(json.dumps(obj, sort_keys=True, default=str).encode(), digest_size=12).hexdigest()


def input_identity(files: Iterable[Path]) -> list[list]:
    out = []
    for p in files:
        st = Path(p).stat()
        out.append([str(Path(p).resolve()), st.st_size, st.st_mtime_ns])
    return out


@contextlib.contextmanager
def atomic(path: Path):
    """Yields `PATH.tmp` to write; renames it to PATH when the block succeeds."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def write_json(path: Path, data) -> None:
    with atomic(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1))


def covering(files: Iterable[Path], root: Path) -> dict[str, list]:
    """{path relative to root: [size, checksum]} of the files a marker covers."""
    out = {}
    for p in files:
        p = Path(p)
        out[os.path.relpath(p, root)] = [p.stat().st_size, digest(p)]
    return out


def write_marker(marker: Path, tag: str, files: Iterable[Path], **data) -> dict:
    """Write the marker of a finished unit (after its files): tag, covered files, extra data."""
    record = {"tag": tag, "files": covering(files, marker.parent), **data}
    write_json(marker, record)
    return record


def check_files(root: Path, files: dict[str, list]) -> str | None:
    """None when every recorded file is intact, else why not."""
    for rel, (size, check) in files.items():
        p = root / rel
        if not p.exists():
            return f"{p} is missing"
        have = p.stat().st_size
        if have != size:
            return f"{p} has {have} bytes, {size} were recorded (truncated or rewritten)"
        if not same_digest(check, p):
            return f"{p} does not match its recorded checksum (changed on disk)"
    return None


def read_marker(marker: Path, tag: str, what: str) -> dict | None:
    """The marker's record when the unit can be reused; None (and a log line saying why, unless
    the unit simply never finished) when it must be redone."""
    marker = Path(marker)
    try:
        record = json.loads(marker.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("dedup: redoing %s: its marker %s is unreadable (%s)", what, marker, exc)
        return None
    if record.get("tag") != tag:
        log.info("dedup: redoing %s: it was made from other inputs or settings", what)
        return None
    problem = check_files(marker.parent, record.get("files", {}))
    if problem:
        log.warning("dedup: redoing %s: %s", what, problem)
        marker.unlink(missing_ok=True)
        return None
    return record


class Tally:
    """How many units of each phase a run reused and redid (returned in the stats as `resume`)."""

    def __init__(self):
        self.reused: dict[str, int] = {}
        self.done: dict[str, int] = {}

    def add(self, phase: str, reused: bool, count: int = 1) -> None:
        if count:
            d = self.reused if reused else self.done
            d[phase] = d.get(phase, 0) + count

    def as_dict(self) -> dict:
        phases = sorted(set(self.reused) | set(self.done))
        return {p: {"reused": self.reused.get(p, 0), "done": self.done.get(p, 0)} for p in phases}

    def log(self) -> None:
        if self.reused:
            log.info(
                "dedup: resumed; reused units: %s",
                ", ".join(
                    f"{p} {self.reused.get(p, 0)}/{self.reused.get(p, 0) + self.done.get(p, 0)}"
                    for p in sorted(set(self.reused) | set(self.done))
                ),
            )
