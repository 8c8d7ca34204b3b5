"""Loss-spike rollback: restore the last good checkpoint, skip the data that caused it, continue.

With `train.spike_action: rollback`, a loss spike (the z-score monitor of
`framework.training.stability`) or `train.max_consecutive_skips` non-finite steps in a row no
longer just log or stop: the engine reloads the newest intact checkpoint in-process, the step goes
back to it, and the data position does not: the samples consumed since that checkpoint (the
*window*, global sample indices FIRST..LAST) are never trained on again. At most
`train.max_rollbacks` rollbacks per run; the next trigger stops the run with the list.

Every decision is a record `{"step": S, "rollback_to": N, "skipped_samples": [FIRST, LAST]}`: a
line of metrics.jsonl, an entry of the run summary, the `rollbacks` list carried in every later
checkpoint, and a line of `RUN_DIR/rollbacks.jsonl`. A rerun that resumes from a checkpoint
written before a recorded decision takes that decision again at the same step for the same window
even if its losses differ in the last bits (another GPU, nondeterministic kernels), so reruns
reproduce the same rollbacks; delete the file to let a changed run decide afresh.

Injected faults (`train.inject_nan_at`) fire once per run: a step re-trained after a rollback does
not replay them. The steps that fired travel in checkpoints, so a resume from before a fault
replays it exactly as the uninterrupted run did.
"""

from __future__ import annotations

import json
from pathlib import Path

from framework.runtime import get_logger
from framework.training.stability import TrainingDiverged

log = get_logger("anvil.train")
RECORD_FILE = "rollbacks.jsonl"


class RollbackGuard:
    """The trainer's rollback and fault-injection state: decisions made, faults fired, and where
    the current data window started (the checkpoint step and the data position after it)."""

    def __init__(self, action: str, max_rollbacks: int, inject_nan_at, run_dir: str | Path, rank: int):
        self.enabled = action == "rollback"
        self.max_rollbacks = max_rollbacks
        self.inject = {int(s) for s in inject_nan_at}
        self.path = Path(run_dir) / RECORD_FILE
        self.rank = rank
        self.applied: list[dict] = []  # decisions taken so far in this run (checkpointed)
        self.pending: list[dict] = []  # recorded decisions a resumed run has not reached yet
        self.fired: set[int] = set()
        self.window_step, self.window_first = 0, 0

    # -- state
    def start(self, meta: dict | None) -> None:
        """A new run (meta None: forget earlier decisions) or a resume from a checkpoint's metadata."""
        if meta is None:
            if self.rank == 0:
                self.path.unlink(missing_ok=True)
            return
        self.applied = [dict(r) for r in meta.get("rollbacks", [])]
        self.fired = set(meta.get("faults_fired", []))
        self.window_step, self.window_first = meta["step"], meta["consumed_samples"]
        if self.enabled:
            self.pending = [r for r in self._read_records() if r not in self.applied]

    def state_dict(self) -> dict:
        return {"rollbacks": list(self.applied), "faults_fired": sorted(self.fired)}

    def saved(self, step: int, consumed: int) -> None:
        """A checkpoint of `step` was written: the next window starts after it."""
        self.window_step, self.window_first = step, consumed

    def _read_records(self) -> list[dict]:
        if not self.path.is_file():
            return []
        out = []
        for n, line in enumerate(self.path.read_text().splitlines(), 1):
            try:
                rec = json.loads(line)
                if isinstance(rec, dict) and {"step", "rollback_to", "skipped_samples"} <= set(rec):
                    out.append(rec)
                    continue
            except json.JSONDecodeError:
                pass
            log.warning("%s:%d: not a rollback record, ignored (a line cut by a kill?)", self.path, n)
        return out

    # -- decisions
    def fire(self, step: int) -> bool:
        """Whether the injected fault of `step` fires now (once per run)."""
        if step not in self.inject or step in self.fired:
            return False
        self.fired.add(step)
        return True

    def reason(self, step: int, consumed: int, flags: dict, consecutive_skips: int, max_skips: int) -> str | None:
        """Why step `step` (data position now `consumed`) must roll back; None if it need not."""
        if not self.enabled:
            return None
        if flags.get("spike"):
            return f"loss spike (z-score {flags['loss_z']:.1f})"
        if consecutive_skips >= max_skips:
            return f"{consecutive_skips} consecutive skipped steps (train.max_consecutive_skips={max_skips})"
        if self._window_record(step, consumed) in self.pending:
            return f"the decision recorded in {self.path}"
        return None

    def _window_record(self, step: int, consumed: int) -> dict:
        return {"step": step, "rollback_to": self.window_step, "skipped_samples": [self.window_first, consumed - 1]}

    def check_budget(self, step: int, why: str) -> None:
        if len(self.applied) >= self.max_rollbacks:
            done = ", ".join(f"step {r['step']} -> {r['rollback_to']}" for r in self.applied) or "none"
            raise TrainingDiverged(
                f"step {step}: {why}, and train.max_rollbacks={self.max_rollbacks} rollbacks were already made "
                f"({done}); stopping. Lower train.lr, raise warmup, or check the data."
            )

    def record(self, step: int, consumed: int, meta: dict) -> dict:
        """Register the rollback of `step` to the checkpoint whose metadata is `meta`."""
        first = self.window_first if meta["step"] == self.window_step else meta["consumed_samples"]
        rec = {"step": step, "rollback_to": meta["step"], "skipped_samples": [first, consumed - 1]}
        self.applied.append(rec)
        self.pending = [r for r in self.pending if r != rec]
        self.window_step, self.window_first = meta["step"], consumed
        if self.rank == 0 and rec not in self._read_records():
            with open(self.path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        return rec

    def summary(self) -> dict:
        skipped = sum(r["skipped_samples"][1] - r["skipped_samples"][0] + 1 for r in self.applied)
        return {"rollbacks": len(self.applied), "skipped_samples": skipped}
