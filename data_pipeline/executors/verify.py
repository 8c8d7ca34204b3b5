"""`anvil data verify OUTPUT`: check a finished (or interrupted) output against its markers, rerunning nothing.

A curation output folder (`OUTPUT/.anvil/recipe.json` + markers): every finished task's files
that are still needed are re-read and compared with the size and checksum its marker recorded
(the same test a rerun applies before reusing a task, base.pending_work). A tokenized prefix
(`PREFIX.json` sidecar, and `PREFIX.parts/*.done.json` while a run is unfinished): `PREFIX.bin/.idx`
and the finished parts are checked the same way.

    report = verify_output("clean/")     # -> VerifyReport(problems=[(task, "clean/part-00003.jsonl.zst: truncated ...")], ...)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from data_pipeline.executors.integrity import check_files


@dataclass
class VerifyReport:
    kind: str  # "curation" | "tokens"
    finished: int = 0  # finished tasks (or parts) whose files were checked
    unfinished: int = 0
    files: int = 0  # files recorded by the finished tasks
    problems: list = field(default_factory=list)  # (task, problem), first found first


def verify_output(output: str | Path) -> VerifyReport:
    """Raises FileNotFoundError when `output` is neither a curation output nor a token prefix."""
    output = Path(output)
    if (output / ".anvil" / "recipe.json").is_file():
        return _verify_curation(output)
    prefix = str(output)
    for ext in (".bin", ".idx", ".json"):
        prefix = prefix.removesuffix(ext)
    if Path(prefix + ".json").is_file() or Path(prefix + ".parts").is_dir():
        return _verify_tokens(prefix)
    raise FileNotFoundError(
        f"{output}: not an `anvil data run` output (no .anvil/recipe.json) nor a tokenized "
        "prefix (no PREFIX.json or PREFIX.parts/)"
    )


def _verify_curation(output: Path) -> VerifyReport:
    from data_pipeline.executors.tasks import MapTask, Plan, pending_work

    ident = json.loads((output / ".anvil" / "recipe.json").read_text())
    plan = Plan(
        inputs=ident["inputs"],
        output=str(output),
        segments=ident["segments"],
        rejected_text=ident.get("rejected_text", False),
        max_doc_bytes=ident.get("max_doc_bytes", 10 * 1024 * 1024),
    )
    todo = pending_work(plan, fix=False)
    report = VerifyReport("curation", finished=todo.finished, problems=todo.problems)
    report.unfinished = sum(
        not plan.marker(MapTask(k, i)).exists() for k in range(len(plan.segments)) for i in range(len(plan.inputs))
    )
    for marker in (output / ".anvil" / "markers").glob("*.json"):
        try:
            report.files += len(json.loads(marker.read_text()).get("files", {}))
        except ValueError:
            pass
    # pending_work walks the segments backwards; report the earliest task first
    report.problems.sort(key=lambda p: _task_order(p[0]))
    return report


def _task_order(name: str) -> tuple:
    if name.startswith("reduce"):
        return int(name[6:]), -1
    seg, shard = name[3:].split("-")
    return int(seg), int(shard)


def _verify_tokens(prefix: str) -> VerifyReport:
    report = VerifyReport("tokens")
    sidecar = Path(prefix + ".json")
    if sidecar.is_file():
        recorded = json.loads(sidecar.read_text()).get("files", {})  # {".bin": record, ".idx": record}
        files = {Path(prefix).name + ext: rec for ext, rec in recorded.items()}
        report.finished += 1
        report.files += len(files)
        problem = check_files(files, sidecar.parent)
        if problem:
            report.problems.append((Path(prefix).name, problem))
    parts = Path(prefix + ".parts")
    for marker in sorted(parts.glob("*.done.json")) if parts.is_dir() else []:
        try:
            files = json.loads(marker.read_text()).get("files", {})
        except ValueError:
            report.problems.append((marker.name, f"{marker}: not valid JSON"))
            continue
        report.finished += 1
        report.files += len(files)
        problem = check_files(files, parts)
        if problem:
            report.problems.append((f"part {marker.name.split('.')[0]}", problem))
    if not report.finished:
        report.unfinished += 1
    return report
