"""Peak host memory of this process per phase (start-up, steps, checkpoint save / load), from /proc.

"No rank ever holds the whole model" is a claim about host RSS, so it has to be measured per rank
and per phase: a rank whose steady state is small can still spike while it builds the model or
writes a checkpoint. Linux keeps the resident-set high-water mark (VmHWM in /proc/self/status) and
lets a process reset it to the current RSS (write "5" to /proc/self/clear_refs), which makes a
phase's peak exact and cheap, with no sampling thread:

    mem = HostMemory()
    mem.record("baseline")           # current RSS, e.g. after imports and process-group start
    with mem.phase("startup"):       # peak reset at entry, the phase's peak recorded at exit
        model = build()
    for _ in range(steps):
        with mem.phase("steps"):     # repeated visits keep the max; ~two small /proc accesses
            step()
    peaks = gather(mem, ["baseline", "startup", "steps"])   # {name: [GB per rank, rank order]}

Phases may nest (a save inside "steps"): before a reset, the high-water mark so far is folded into
every open phase, so an outer phase still sees the inner one's peak. Anything else that writes
/proc/self/clear_refs in this process breaks that bookkeeping.

Without /proc (macOS, some sandboxes) `rss_bytes` and `peak_bytes` return 0, `reset_peak` does
nothing and `HostMemory` records nothing, so `gather` reports None for every name instead of
inventing a figure. GB here is 2**30 bytes, as `mem_gb` in metrics.jsonl.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

GB = 2**30
_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _status_kib() -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in KiB from one read of /proc/self/status; None where there is no /proc."""
    try:
        with open(_STATUS, "rb") as f:
            text = f.read()
    except OSError:
        return None
    rss = hwm = None
    for line in text.splitlines():
        if line.startswith(b"VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith(b"VmHWM:"):
            hwm = int(line.split()[1])
    if rss is None or hwm is None:  # kernel threads, exotic kernels
        return None
    return rss, max(rss, hwm)


def supported() -> bool:
    """True where this process can read its RSS and high-water mark from /proc."""
    return _status_kib() is not None


def rss_bytes() -> int:
    """Current resident set size (VmRSS) in bytes; 0 without /proc."""
    s = _status_kib()
    return s[0] * 1024 if s else 0


def peak_bytes() -> int:
    """Resident-set high-water mark (VmHWM) since process start or the last `reset_peak`; 0 without /proc."""
    s = _status_kib()
    return s[1] * 1024 if s else 0


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS; False (and nothing done) where the kernel does not allow it."""
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class HostMemory:
    """Named peaks and point values of this process's host RSS, in bytes."""

    def __init__(self) -> None:
        self.enabled = supported()
        self._values: dict[str, int] = {}
        self._open: list[list] = []  # [name, running peak in bytes] of the phases entered, innermost last

    def record(self, name: str) -> int:
        """Store the current RSS under `name` (replacing an earlier value); return it."""
        value = rss_bytes()
        if self.enabled:
            self._values[name] = value
        return value

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Record the peak RSS while the block runs, as the max with earlier visits of `name`."""
        if not self.enabled:
            yield
            return
        if self._open:  # the high-water mark so far belongs to every phase already open
            so_far = peak_bytes()
            for entry in self._open:
                entry[1] = max(entry[1], so_far)
        reset_peak()
        entry = [name, 0]
        self._open.append(entry)
        try:
            yield
        finally:
            peak = max(entry[1], peak_bytes())
            self._open = [e for e in self._open if e is not entry]
            self._values[name] = max(self._values.get(name, 0), peak)

    def peaks(self) -> dict[str, int]:
        """Every recorded phase peak and point value, bytes."""
        return dict(self._values)


def gather(mem: HostMemory, names: list[str]) -> dict[str, list[float | None]]:
    """{name: [GB on rank 0, rank 1, ...]} over the default process group (this process alone when
    there is none); None where a rank never visited or recorded `name` (or has no /proc).

    A collective: every rank of the default group must call it with the same `names`. One
    all_gather of a float64 tensor of len(names) values (NaN = missing); on the current CUDA device
    when the backend is NCCL, on the CPU otherwise (gloo).
    """
    import torch

    peaks = mem.peaks()
    local = torch.tensor([peaks[n] / GB if n in peaks else math.nan for n in names], dtype=torch.float64)
    rows = [local]
    try:
        import torch.distributed as dist

        distributed = dist.is_available() and dist.is_initialized()
    except ImportError:  # pragma: no cover - torch builds without distributed
        distributed = False
    if distributed and dist.get_world_size() > 1:
        if "nccl" in str(dist.get_backend()) and torch.cuda.is_available():
            local = local.to(torch.device("cuda", torch.cuda.current_device()))
        rows = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(rows, local)
    table = torch.stack([r.cpu() for r in rows])  # (world, len(names))
    return {n: [None if math.isnan(v) else v for v in table[:, i].tolist()] for i, n in enumerate(names)}


def live_cpu_tensor_bytes() -> int:
    """Bytes of every live CPU tensor storage in this process, each storage counted once (views
    share theirs): model states measured, where the planner's figure is a formula."""
    import gc

    import torch

    seen = {}

    def count(t) -> None:
        if t.device.type == "cpu":
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()

    for o in gc.get_objects():
        try:
            if isinstance(o, torch.Tensor):
                count(o)
                # A gradient that autograd wrote and no Python code has read yet has no Python
                # object, so gc cannot see it: reach it through its parameter.
                if o.is_leaf and o.requires_grad and o.grad is not None:
                    count(o.grad)
        except Exception:  # noqa: BLE001 - some tensor subclasses have no storage
            pass
    return sum(seen.values())
