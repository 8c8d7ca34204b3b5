"""Exit codes of `anvil launch` and how a failed torchrun is classified into one of them.

Schedulers act on these codes (README "Launching"): EXIT_RETRY (75) requeues, EXIT_FAILED does
not. Pure functions of torchrun's return code and the watchdog records; split from the command
builder (launch/launcher.py).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

# One definition, shared with the trainer's watchdog.
from framework.training.watchdog import EXIT_FAILED, EXIT_RETRY

EXIT_OK = 0
EXIT_BAD_INPUT = 2  # bad command line, config or hostfile: nothing was started
EXIT_ENV_CHECK = 3  # a pre-launch check failed (port in use, run dir not writable, data missing)
EXIT_INTERRUPTED = 130

__all__ = [
    "EXIT_OK",
    "EXIT_BAD_INPUT",
    "EXIT_ENV_CHECK",
    "EXIT_INTERRUPTED",
    "EXIT_FAILED",
    "EXIT_RETRY",
    "root_cause",
    "describe_failure",
    "classify_exit",
    "combine_exit_codes",
]


def root_cause(failures: Mapping[int, Mapping]) -> Optional[dict]:
    """The failed rank that explains the others: not one the agent itself stopped with SIGTERM."""
    if not failures:
        return None
    own = {r: f for r, f in failures.items() if f.get("exitcode") != -15} or dict(failures)
    rank = min(own, key=lambda r: (own[r].get("timestamp", 0), r))
    return {"rank": rank, **own[rank]}


def describe_failure(root: Mapping, node_rank: int) -> str:
    how = (
        f"was killed by {root.get('signal') or 'signal ' + str(-root['exitcode'])}"
        if root["exitcode"] < 0
        else f"exited with code {root['exitcode']}"
    )
    return f"rank {root['rank']} (node {node_rank}, local rank {root.get('local_rank')}, pid {root.get('pid')}) {how}"


def classify_exit(
    returncode: int, records: Sequence[Mapping], root: Optional[Mapping] = None, node_rank: int = 0
) -> tuple[int, str]:
    """Map torchrun's outcome and the watchdog records of this node to a scheduler exit code.

    A watchdog record decides when there is one (an exception in training: do not retry; a lost
    or hung peer: retry). Without records, a rank killed by a signal (SIGKILL, out of memory) is
    retryable and a rank that exited with an error code before its watchdog started is not.
    """
    if returncode == 0:
        return EXIT_OK, "job finished"
    errors = [r for r in records if r.get("exit_code") == EXIT_FAILED]
    chosen = errors or [r for r in records if r.get("kind") != "comm_error"] or list(records)
    own_exit = root is not None and root["exitcode"] in (EXIT_RETRY, EXIT_FAILED) and records
    parts = [describe_failure(root, node_rank)] if root and not own_exit else []
    parts += list(dict.fromkeys(str(r.get("message", "")) for r in chosen[:4]))
    detail = "; ".join(parts) or f"torchrun exited with {returncode}"
    if errors:
        return EXIT_FAILED, f"training failed: {detail}"
    if records or root is None or root["exitcode"] < 0 or root["exitcode"] == EXIT_RETRY:
        return EXIT_RETRY, f"job failed (retryable): {detail}"
    if root["exitcode"] == EXIT_BAD_INPUT:
        return EXIT_BAD_INPUT, f"bad input: {detail}"
    return EXIT_FAILED, f"training failed: {detail}"


def combine_exit_codes(codes: Sequence[int]) -> int:
    """One exit code for a fan-out: a real training failure wins, then bad input, then retry."""
    for code in (EXIT_FAILED, EXIT_BAD_INPUT, EXIT_ENV_CHECK):
        if code in codes:
            return code
    return EXIT_OK if all(c == 0 for c in codes) else EXIT_RETRY
