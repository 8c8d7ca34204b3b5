"""The Slurm array executor: the scripts against golden files, --dry-run writes nothing, and a
stand-in `sbatch` (runs each script at once, every array element in turn, refusing a job whose
afterok dependency did not succeed) gives the local executor's bytes for curation and dedup."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from data_pipeline.executors.tasks import Plan
from data_pipeline.executors.slurm import SlurmOptions, curation_jobs, dedup_jobs, submit
from launch.cli import main
from tests.data_pipeline.executors.common import (
    DEMO,
    assert_same_output,
    curate,
    dedup_config,
    dedup_local,
    make_corpus,
    overrides,
)

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("ANVIL_UPDATE_GOLDEN") == "1"
OPTS = SlurmOptions(
    retries=2,
    partition="cpu",
    time="04:00:00",
    cpus_per_task=2,
    max_parallel=64,
    python="/opt/anvil/.venv/bin/python",
    chdir="/home/me/project",
)

FAKE_SBATCH = r"""#!/bin/bash
# stand-in sbatch: --parsable [--dependency=afterok:ID] SCRIPT; runs SCRIPT now and prints a job id
state="$FAKE_SLURM_STATE"
dep=""
for a in "$@"; do case "$a" in --dependency=afterok:*) dep="${a#--dependency=afterok:}";; esac; done
script="${@: -1}"
touch "$state/ok" "$state/failed"
if [ -n "$dep" ] && ! grep -qx "$dep" "$state/ok"; then echo "afterok:$dep not satisfied" >&2; exit 1; fi
id=$(( $(cat "$state/ok" "$state/failed" | wc -l) + 100 ))
last=$(sed -n 's/^#SBATCH --array=0-\([0-9]*\).*/\1/p' "$script")
chdir=$(sed -n 's/^#SBATCH --chdir=//p' "$script")
status=0
for i in $(if [ -n "$last" ]; then seq 0 "$last"; else echo none; fi); do
  (cd "$chdir" && SLURM_ARRAY_TASK_ID=$i bash "$script") >> "$state/job-$id.log" 2>&1 || status=1
done
if [ $status = 0 ]; then echo "$id" >> "$state/ok"; else echo "$id" >> "$state/failed"; fi
echo "$id"
"""


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"{path} missing; run with ANVIL_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), f"{name} changed; if on purpose, rerun with ANVIL_UPDATE_GOLDEN=1"


def test_curation_scripts_golden(capsys):
    plan = Plan(
        inputs=[["/data/crawl/a.warc.gz"], ["/data/crawl/b.warc.gz"], ["/data/crawl/c.warc.gz"]],
        output="/data/clean",
        segments=[
            [{"extract": {}}, {"language": {"languages": ["en"]}}],
            [{"exact_dedup": {}}, {"pii": {}}],
            [{"minhash_dedup": {"memory_budget": "2GB"}}],
        ],
    )
    folder = Path("/data/clean/.anvil/slurm")
    finish = [
        OPTS.python,
        "-m",
        "launch.cli",
        "data",
        "run",
        "/home/me/project/configs/data/web.yaml",
        "input=/data/crawl",
        "output=/data/clean",
    ]
    jobs = curation_jobs(plan, folder / "plan.json", finish, OPTS)
    assert [(j.name, j.array, j.after) for j in jobs] == [
        ("seg0", 3, None),
        ("reduce1", 0, "seg0"),
        ("seg1", 3, "reduce1"),
        ("reduce2", 0, "seg1"),
        ("seg2", 3, "reduce2"),
        ("finish", 0, "seg2"),
    ]
    assert jobs[3].mem_mb == 2048 + 256  # the minhash stage's memory_budget
    assert submit(jobs, folder, OPTS, "anvil-curate", dry_run=True) == {}
    golden("curation.sbatch.txt", capsys.readouterr().out)


def test_dedup_scripts_golden(capsys):
    jobs = dedup_jobs(Path("/data/deduped/.dedup-slurm/spec.json"), 5, 1536, OPTS)
    submit(jobs, Path("/data/deduped/.dedup-slurm"), OPTS, "anvil-dedup", dry_run=True)
    golden("dedup.sbatch.txt", capsys.readouterr().out)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm")
    raw = make_corpus(root, limit=120, shard_docs=60)  # 2 input files
    curate(raw, root / "local")
    dedup_local(raw, root / "local-dedup")
    return root, raw


@pytest.fixture
def fake_sbatch(work, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(0o755 | stat.S_IEXEC)
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_STATE", str(state))
    monkeypatch.chdir(work[0])
    return state


def test_dry_run_prints_scripts_and_writes_nothing(work, capsys):
    root, raw = work
    assert main(["data", "run", str(DEMO), *overrides(raw, root / "dry"), "--executor", "slurm", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("#!/bin/bash") == 6 and "#SBATCH --array=0-1" in out and "afterok:$REDUCE2" in out
    assert not (root / "dry").exists()


def test_curation_on_slurm_matches_local(work, fake_sbatch, capsys):
    root, raw = work
    assert main(["data", "run", str(DEMO), *overrides(raw, root / "slurm"), "--executor", "slurm"]) == 0
    logs = "".join(p.read_text() for p in sorted(fake_sbatch.glob("job-*.log")))
    assert (fake_sbatch / "failed").read_text() == "", logs
    assert len((fake_sbatch / "ok").read_text().split()) == 6
    assert "submitted finish" in capsys.readouterr().out
    assert_same_output(root / "local", root / "slurm")


def test_dedup_on_slurm_matches_local(work, fake_sbatch):
    root, raw = work
    cfg = dedup_config()
    assert (
        main(
            [
                "data",
                "dedup",
                str(raw),
                "--output",
                str(root / "slurm-dedup"),
                "--threshold",
                str(cfg.threshold),
                "--memory-budget",
                cfg.memory_budget,
                "--executor",
                "slurm",
            ]
        )
        == 0
    )
    logs = "".join(p.read_text() for p in sorted(fake_sbatch.glob("job-*.log")))
    assert (fake_sbatch / "failed").read_text() == "", logs
    assert_same_output(root / "local-dedup", root / "slurm-dedup")
    assert not (root / "slurm-dedup" / ".dedup-slurm" / "scan").exists()


def test_submission_verifies_finished_tasks(work, tmp_path, monkeypatch):
    """Before submitting, the finished tasks are verified: a damaged one loses its marker, so its
    array element redoes it (the elements of intact ones skip, as the end-to-end test shows)."""
    import shutil

    root, raw = work
    out = tmp_path / "slurm-damaged"
    shutil.copytree(root / "local", out)
    part = out / "part-00000.jsonl.zst"
    data = bytearray(part.read_bytes())
    data[40] ^= 2
    part.write_bytes(bytes(data))
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch: stops right after writing the scripts
    with pytest.raises(SystemExit, match="sbatch not found"):
        main(["data", "run", str(DEMO), *overrides(raw, out), "--executor", "slurm"])
    markers = out / ".anvil" / "markers"
    assert not (markers / "seg2-00000.json").exists()  # the damaged task
    assert not (markers / "reduce2.json").exists()  # its input, removed when the run ended
    assert (markers / "seg2-00001.json").exists()  # intact: its array element skips it
    assert (out / ".anvil" / "slurm" / "seg2.sbatch").exists()
