"""Heartbeat watchdog: a dead, frozen or failed rank ends the whole job with its name, fast.

Without it, a rank that dies or freezes leaves the others blocked in a collective until the
backend timeout (10-30 minutes for NCCL by default) and the log says nothing about who is to blame.
Each rank runs one daemon thread that bumps a counter in the job's key-value store (its own
connection to the torch.distributed store, so no collective is involved) every `interval_s` and
reads its peers' counters. A peer whose counter has not moved for `timeout_s` (measured on the
reader's own monotonic clock, so clock skew between nodes does not matter) is declared dead and
this rank exits at once with EXIT_RETRY, naming the rank, its node, host and last step. A rank
that fails with an exception marks itself failed, so its peers stop immediately too.

When the main thread's collective fails first (a peer's socket closed), the exception hook waits
briefly for the verdict so the message names the culprit instead of "connection reset by peer".
Under `anvil launch` (ANVIL_STATUS_DIR set) every abort leaves a small JSON record that the launcher
turns into an exit code telling the scheduler whether to retry.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable, Optional

# Exit codes shared with `anvil launch` (launch/exits.py re-exports them): a scheduler retries 75.
EXIT_FAILED = 1  # the training itself failed (an exception in the trainer): retrying will not help
EXIT_RETRY = 75  # EX_TEMPFAIL: a rank died, hung or lost its peers; rerun resumes from the checkpoint

PREFIX = "anvil/watchdog"
DONE, FAILED = "done", "failed"
MAX_WATCHED = 128  # beyond this many ranks each rank watches a ring of neighbours only
COMM_ERROR_WORDS = ("gloo", "nccl", "connection", "timed out", "timeout", "socket", "peer", "broken pipe")


@dataclass
class Verdict:
    kind: str  # "dead" (no heartbeat), "failed" (exception on that rank), "store_lost"
    ranks: list[int]
    message: str

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.kind == "failed" else EXIT_RETRY


@dataclass
class PeerTracker:
    """Pure bookkeeping: which watched ranks stopped beating (testable without processes)."""

    watched: list[int]
    timeout_s: float
    start: float
    last_value: dict[int, Optional[str]] = field(default_factory=dict)
    last_change: dict[int, float] = field(default_factory=dict)

    def update(self, values: dict[int, Optional[str]], now: float) -> None:
        for rank in self.watched:
            value = values.get(rank)
            if rank not in self.last_change or value != self.last_value.get(rank):
                self.last_value[rank] = value
                self.last_change[rank] = now

    def failed(self) -> list[int]:
        return [r for r in self.watched if (self.last_value.get(r) or "").startswith(FAILED)]

    def silent(self, now: float, threshold: Optional[float] = None) -> list[int]:
        """Ranks whose heartbeat has not changed for timeout_s (never seen counts from `start`)."""
        threshold = self.timeout_s if threshold is None else threshold
        out = []
        for rank in self.watched:
            value = self.last_value.get(rank)
            if value == DONE or (value or "").startswith(FAILED):
                continue
            since = self.last_change.get(rank, self.start) if value is not None else self.start
            if now - since > threshold:
                out.append(rank)
        return out

    def silence(self, rank: int, now: float) -> float:
        return now - self.last_change.get(rank, self.start)


def watched_ranks(rank: int, world: int) -> list[int]:
    if world <= MAX_WATCHED:
        return [r for r in range(world) if r != rank]
    return [(rank + i) % world for i in range(1, MAX_WATCHED + 1)]


def is_comm_error(exc: BaseException) -> bool:
    try:
        import torch.distributed as dist

        if isinstance(exc, getattr(dist, "DistError", ())):
            return True
    except ImportError:  # pragma: no cover
        pass
    text = f"{type(exc).__name__} {exc}".lower()
    return isinstance(exc, (RuntimeError, OSError)) and any(w in text for w in COMM_ERROR_WORDS)


class Watchdog:
    """Start after `init_distributed`, call `beat(step)` as training progresses, `stop()` at the end."""

    def __init__(
        self,
        timeout_s: float,
        interval_s: Optional[float] = None,
        on_abort: Optional[Callable[[Verdict], None]] = None,
        prefix: str = PREFIX,
    ):
        self.prefix = prefix
        self.timeout_s = float(timeout_s)
        self.interval_s = interval_s or min(2.0, max(0.25, self.timeout_s / 20))
        self.on_abort = on_abort or self._exit
        # Once a collective has failed, a peer is already suspect: name it after this shorter silence
        # (a live rank beats every interval_s) instead of waiting for the full timeout.
        self.suspect_after = min(self.timeout_s, max(10.0, 5 * self.interval_s))
        self._collective_failed = False
        self.step = -1
        self.active = False
        self.verdict: Optional[Verdict] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._prev_hook = None

    # ---- public API -------------------------------------------------------------------------
    def start(self) -> "Watchdog":
        import torch.distributed as dist

        if not dist.is_initialized() or dist.get_world_size() == 1:
            return self
        from torch.distributed import distributed_c10d

        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        base = distributed_c10d._get_default_store()
        try:
            self.store = base.clone()  # its own connection: never waits behind the main thread
        except (AttributeError, RuntimeError):
            self.store = base
        self.store.set_timeout(timedelta(seconds=max(2 * self.interval_s, 5.0)))
        self.info = {
            "rank": self.rank,
            "node": int(os.environ.get("ANVIL_NODE_RANK", os.environ.get("GROUP_RANK", 0))),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        self.store.set(f"{self.prefix}/info/{self.rank}", json.dumps(self.info))
        self._beats = 0
        self._publish()
        self.tracker = PeerTracker(watched_ranks(self.rank, self.world), self.timeout_s, time.monotonic())
        self.active = True
        self._prev_hook = sys.excepthook
        sys.excepthook = self._excepthook
        atexit.register(self._atexit)
        self._thread = threading.Thread(target=self._run, name="anvil-watchdog", daemon=True)
        self._thread.start()
        return self

    def beat(self, step: int) -> None:
        self.step = step

    def stop(self) -> None:
        if not self.active:
            return
        self.active = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s * 4)
        try:
            self.store.set(f"{self.prefix}/beat/{self.rank}", DONE)
        except Exception:  # noqa: BLE001 - the store may already be gone at shutdown
            pass
        if sys.excepthook is self._excepthook:
            sys.excepthook = self._prev_hook
        atexit.unregister(self._atexit)

    def __enter__(self) -> "Watchdog":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None and self.active:
            self._handle_exception(exc)
        self.stop()

    # ---- the thread -------------------------------------------------------------------------
    def _publish(self) -> None:
        self._beats += 1
        self.store.set(f"{self.prefix}/beat/{self.rank}", f"{self._beats}:{self.step}")

    def _read_peers(self) -> dict[int, Optional[str]]:
        keys = {r: f"{self.prefix}/beat/{r}" for r in self.tracker.watched}
        present = [r for r in keys if self.tracker.last_value.get(r) is not None or self.store.check([keys[r]])]
        values = self.store.multi_get([keys[r] for r in present]) if present else []
        out: dict[int, Optional[str]] = {r: None for r in keys}
        out.update({r: v.decode() for r, v in zip(present, values)})
        return out

    def _run(self) -> None:
        lost_since: Optional[float] = None
        while not self._stop.wait(self.interval_s):
            now = time.monotonic()
            try:
                self._publish()
                self.tracker.update(self._read_peers(), time.monotonic())
                lost_since = None
            except Exception as exc:  # noqa: BLE001 - any store failure counts as losing contact
                lost_since = lost_since or now
                if now - lost_since > self.timeout_s and self.active:
                    addr = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
                    self._abort(
                        Verdict(
                            "store_lost",
                            [],
                            f"rank {self.rank} lost the job's store at {addr} for "
                            f"{now - lost_since:.1f} s (it is hosted by rank 0: rank 0 or its node died?): {exc}",
                        )
                    )
                continue
            verdict = self._judge(time.monotonic())
            if verdict and self.active:
                self._abort(verdict)
                return

    def _judge(self, now: float) -> Optional[Verdict]:
        failed = self.tracker.failed()
        if failed:
            return Verdict(
                "failed",
                failed,
                f"{self._describe(failed)} failed with an exception (see its log); stopping rank {self.rank}",
            )
        threshold = self.suspect_after if self._collective_failed else self.timeout_s
        silent = self.tracker.silent(now, threshold)
        if silent:
            ago = max(self.tracker.silence(r, now) for r in silent)
            why = "after a failed collective" if self._collective_failed else f"timeout {self.timeout_s:g} s"
            return Verdict(
                "dead",
                silent,
                f"{self._describe(silent)} sent no heartbeat for {ago:.1f} s "
                f"({why}): died or hung; stopping rank {self.rank}",
            )
        return None

    def _describe(self, ranks: list[int]) -> str:
        parts = []
        for r in ranks:
            try:
                info = (
                    json.loads(self.store.get(f"{self.prefix}/info/{r}"))
                    if self.store.check([f"{self.prefix}/info/{r}"])
                    else {}
                )
            except Exception:  # noqa: BLE001
                info = {}
            value = self.tracker.last_value.get(r) or ""
            step = value.split(":", 1)[1] if ":" in value else "?"
            where = f"node {info['node']}, host {info['host']}, pid {info['pid']}" if info else "never reported"
            parts.append(f"rank {r} ({where}, last step {step})")
        return ", ".join(parts)

    # ---- failure paths ----------------------------------------------------------------------
    def _abort(self, verdict: Verdict) -> None:
        self.verdict = verdict
        self.active = False
        self._record(verdict.kind, verdict.message, verdict.exit_code)
        self.on_abort(verdict)

    def _exit(self, verdict: Verdict) -> None:
        print(f"anvil watchdog: {verdict.message}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(verdict.exit_code)

    def _handle_exception(self, exc: BaseException) -> None:
        if is_comm_error(exc):
            # A peer vanished under a collective: give the thread time to say which one.
            self._collective_failed = True
            deadline = time.monotonic() + self.suspect_after + 3 * self.interval_s
            while self.verdict is None and time.monotonic() < deadline and self._thread and self._thread.is_alive():
                time.sleep(self.interval_s / 2)
            if self.verdict is None:
                self._record("comm_error", f"rank {self.rank}: {type(exc).__name__}: {exc}", EXIT_RETRY)
                self.active = False
            return
        self.active = False
        self._stop.set()  # the beat thread must not overwrite the failure mark
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval_s * 4)
        try:
            self.store.set(f"{self.prefix}/beat/{self.rank}", f"{FAILED}:{type(exc).__name__}")
        except Exception:  # noqa: BLE001
            pass
        self._record("error", f"rank {self.rank}: {type(exc).__name__}: {exc}", EXIT_FAILED)

    def _atexit(self) -> None:
        """Exiting while still watched (SystemExit, a handled error) is a failure, not a lost rank."""
        if self.active:
            self._handle_exception(SystemExit("exited before training finished"))

    def _excepthook(self, exc_type, exc, tb) -> None:
        if self.active:
            self._handle_exception(exc)
        (self._prev_hook or sys.__excepthook__)(exc_type, exc, tb)

    def _record(self, kind: str, message: str, exit_code: int) -> None:
        folder = os.environ.get("ANVIL_STATUS_DIR")
        if not folder:
            return
        record = {
            **self.info,
            "kind": kind,
            "exit_code": exit_code,
            "message": message,
            "step": self.step,
            "attempt": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)),
            "time": time.time(),
        }
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            tmp = Path(folder) / f".rank{self.rank}.json.tmp"
            tmp.write_text(json.dumps(record))
            os.replace(tmp, Path(folder) / f"rank{self.rank}.json")
        except OSError:
            pass


def start_watchdog(timeout_s: float = 0.0) -> Watchdog:
    """The trainer's one call: a started watchdog using the job's collective timeout."""
    from framework.distributed import default_timeout_s

    return Watchdog(default_timeout_s(timeout_s)).start()


def read_status(folder: str) -> list[dict]:
    """Records left by this node's ranks (for the launcher's exit code), newest attempt only."""
    records = []
    for path in sorted(Path(folder).glob("rank*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    if not records:
        return []
    last = max(r.get("attempt", 0) for r in records)
    return [r for r in records if r.get("attempt", 0) == last]
