"""Verified task outputs and disk-full safety of the curation executors (base.py, local executor).

A truncated and a bit-flipped part file are found by `anvil data verify` and redone by a rerun;
a write that fails with ENOSPC half-way through one task fails only that task (file named, no
marker, no half-file), and the rerun writes the bytes of an uninterrupted run. Same for an I/O
error inside a stage's reduce."""

from __future__ import annotations

import errno
import json
import logging
import shutil
from pathlib import Path

import pytest

from data_pipeline.executors.tasks import MapTask, Plan, TaskIOError, pending_work
from data_pipeline.executors.integrity import check_file, record_files
from data_pipeline.executors.verify import verify_output
from data_pipeline.io import writers
from data_pipeline.pipeline import load_recipe, run_recipe
from launch.cli import main
from tests.data_pipeline.corpus import real_docs

STEPS = "steps=[gopher_repetition, exact_dedup, normalize]"  # two segments: filter | exact_dedup


def _corpus(folder: Path, files: int = 3, per: int = 40) -> Path:
    folder.mkdir(parents=True)
    docs = real_docs()[: files * per]
    for f in range(files):
        with open(folder / f"in-{f}.jsonl", "w") as fh:
            for d in docs[f * per : (f + 1) * per] + docs[:3]:  # exact duplicates across files
                fh.write(json.dumps({"id": f"{f}-{d.id}", "text": d.text}) + "\n")
    return folder


def _recipe(raw: Path, out: Path, *extra: str):
    return load_recipe(
        Path(__file__).parents[3] / "configs" / "data" / "jsonl.yaml",
        [STEPS, f"input={raw}", f"output={out}", "shard_bytes=1", "report=false", *extra],
    )


def _outputs(out: Path) -> dict[str, bytes]:
    """Kept and rejected files (stats.json carries timings, compared without them)."""
    files = {
        str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.jsonl.zst")) if ".anvil" not in p.parts
    }
    stats = json.loads((out / "stats.json").read_text())
    for s in stats["steps"]:
        s.pop("seconds", None)
    files["stats"] = json.dumps(stats, sort_keys=True).encode()
    return files


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    raw = _corpus(root / "raw")
    run_recipe(_recipe(raw, root / "ref"))
    return root, raw, _outputs(root / "ref")


def test_markers_record_size_and_checksum(reference):
    root, _, _ = reference
    marker = json.loads((root / "ref" / ".anvil" / "markers" / "seg1-00001.json").read_text())
    rec = marker["files"]["part-00001.jsonl.zst"]
    assert rec["size"] == (root / "ref" / "part-00001.jsonl.zst").stat().st_size
    assert "xxh3_64" in rec or "blake2b_64" in rec
    seg0 = json.loads((root / "ref" / ".anvil" / "markers" / "seg0-00000.json").read_text())["files"]
    assert "rejected/seg0-00000.jsonl.zst" in seg0 and ".anvil/seg0/00000.jsonl.zst" in seg0
    assert any(k.startswith(".anvil/stage1/scan-00000") for k in seg0)  # the exact_dedup scan
    reduce1 = json.loads((root / "ref" / ".anvil" / "markers" / "reduce1.json").read_text())["files"]
    assert ".anvil/stage1/drop-00002.json" in reduce1
    assert verify_output(root / "ref").problems == []


@pytest.fixture
def warnings_log():
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("anvil.data")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def test_truncated_and_bit_flipped_parts_are_found_and_redone(reference, capsys, warnings_log):
    root, raw, expected = reference
    out = root / "damaged"
    shutil.copytree(root / "ref", out)
    part1, part2 = out / "part-00001.jsonl.zst", out / "part-00002.jsonl.zst"
    part1.write_bytes(part1.read_bytes()[:-7])  # truncated
    data = bytearray(part2.read_bytes())
    data[len(data) // 2] ^= 0x10  # one bit flipped, same size
    part2.write_bytes(bytes(data))

    assert main(["data", "verify", str(out)]) == 1
    msg = capsys.readouterr().out
    assert "part-00001.jsonl.zst: truncated" in msg and "1 more damaged" in msg, msg
    problems = verify_output(out).problems
    assert [t for t, _ in problems] == ["seg1-00001", "seg1-00002"]
    assert "changed" in problems[1][1] and "checksum" in problems[1][1]

    run_recipe(_recipe(raw, out))
    warned = [r.getMessage() for r in warnings_log if "redoing it" in r.getMessage()]
    assert any("part-00001.jsonl.zst: truncated" in m for m in warned), warned
    assert any("part-00002.jsonl.zst: changed" in m for m in warned), warned
    assert _outputs(out) == expected
    assert main(["data", "verify", str(out)]) == 0
    assert "ok:" in capsys.readouterr().out


def test_rerun_of_an_intact_finished_run_redoes_nothing(reference, monkeypatch):
    root, raw, expected = reference
    out = root / "intact"
    shutil.copytree(root / "ref", out)
    plan = Plan(**{**json.loads((out / ".anvil" / "recipe.json").read_text()), "output": str(out)})
    todo = pending_work(plan, fix=False)
    assert todo.tasks == [[], []] and not todo.reduces and not todo.problems
    import data_pipeline.executors.local as local

    monkeypatch.setattr(local, "run_map_task", lambda *a: pytest.fail("an intact task was redone"))
    run_recipe(_recipe(raw, out))
    assert _outputs(out) == expected


def test_unfinished_run_checks_the_files_its_next_tasks_read(reference):
    """While a run is unfinished, a damaged file between segments redoes the task that wrote it."""
    root, raw, _ = reference
    out = root / "unfinished"
    run_recipe(_recipe(raw, out, "keep_work=true"))
    (out / ".anvil" / "markers" / "seg1-00000.json").unlink()  # segment 1, shard 0 still to do
    inter = out / ".anvil" / "seg0" / "00000.jsonl.zst"
    inter.write_bytes(inter.read_bytes()[:10])
    plan = Plan(**{**json.loads((out / ".anvil" / "recipe.json").read_text()), "output": str(out)})
    todo = pending_work(plan, fix=False)
    assert todo.tasks == [[MapTask(0, 0)], [MapTask(1, 0)]]
    assert todo.problems[0][0] == "seg0-00000" and "truncated" in todo.problems[0][1]


class _FullDisk:
    """A file of the writers whose file system fills after `limit` bytes: writes past that raise
    OSError(ENOSPC) without a file name, as the OS reports it (the writer must add the name)."""

    def __init__(self, fh, limit: int):
        self.fh, self.left = fh, limit

    def write(self, data) -> int:
        if len(data) > self.left:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.left -= len(data)
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)


def _disk_fills(monkeypatch, name: str, limit: int) -> None:
    """Every file named `name` that the writers open gets only `limit` bytes."""

    def fake_open(path, mode="r", *a, **k):
        fh = open(path, mode, *a, **k)
        return _FullDisk(fh, limit) if Path(path).name == name + ".tmp" else fh

    monkeypatch.setattr(writers, "open", fake_open, raising=False)


def test_disk_full_fails_one_task_then_rerun_equals_uninterrupted(reference, monkeypatch, capsys):
    root, raw, expected = reference
    out = root / "full"
    _disk_fills(monkeypatch, "part-00001.jsonl.zst", 4_000)
    argv = [
        "data",
        "run",
        str(Path(__file__).parents[3] / "configs/data/jsonl.yaml"),
        STEPS,
        f"input={raw}",
        f"output={out}",
        "shard_bytes=1",
        "report=false",
        "--ignore-disk-estimate",
    ]
    with pytest.raises(SystemExit) as info:
        main(argv)
    msg = str(info.value)
    assert "task seg1-00001" in msg and "part-00001.jsonl.zst" in msg and "No space left" in msg, msg
    assert "free disk space and rerun" in msg
    assert not (out / "part-00001.jsonl.zst").exists()  # no half-file under its name
    assert not list(out.rglob("*.tmp"))
    assert not (out / ".anvil" / "markers" / "seg1-00001.json").exists()
    assert (out / ".anvil" / "markers" / "seg1-00000.json").exists()  # finished tasks keep theirs
    assert not (out / "stats.json").exists()

    monkeypatch.undo()  # space freed
    assert main(argv) == 0
    assert _outputs(out) == expected


def test_io_error_in_a_reduce_fails_it_cleanly(reference, monkeypatch):
    root, raw, expected = reference
    out = root / "eio"
    from data_pipeline.steps.exact_dedup import ExactDedup

    original = ExactDedup.reduce

    def broken(self, num_shards, workdir):
        (Path(workdir) / "drop-00000.json").write_text("{")  # a half-written file, then EIO
        raise OSError(errno.EIO, "Input/output error", str(Path(workdir) / "drop-00001.json"))

    monkeypatch.setattr(ExactDedup, "reduce", broken)
    with pytest.raises(TaskIOError) as info:
        run_recipe(_recipe(raw, out))
    assert "task reduce1" in str(info.value) and "drop-00001.json" in str(info.value)
    assert info.value.errno == errno.EIO
    assert not (out / ".anvil" / "markers" / "reduce1.json").exists()
    monkeypatch.setattr(ExactDedup, "reduce", original)
    run_recipe(_recipe(raw, out))
    assert _outputs(out) == expected


def test_writer_abort_survives_a_failing_close(tmp_path, monkeypatch):
    """A full disk can also fail the final flush: the .tmp goes, nothing appears under the name."""
    w = writers.JsonlZstWriter(tmp_path / "x.jsonl.zst")
    w.write_line("hello")

    def full(*a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writers.os, "fsync", full)
    with pytest.raises(OSError) as info:
        w.close()
    assert info.value.filename == str(tmp_path / "x.jsonl.zst")
    assert list(tmp_path.iterdir()) == []


def test_checksum_records_and_fallback(tmp_path, monkeypatch):
    import framework.checksums as checksums

    f = tmp_path / "a.bin"
    f.write_bytes(b"abc" * 1000)
    rec = record_files([f], tmp_path)["a.bin"]
    monkeypatch.setattr(checksums, "_xxhash", None)  # xxhash not installed
    blake = record_files([f], tmp_path)["a.bin"]
    assert "blake2b_64" in blake and blake["size"] == 3000
    assert check_file("a.bin", blake, tmp_path) is None
    if "xxh3_64" in rec:
        with pytest.raises(RuntimeError, match="pip install xxhash"):
            check_file("a.bin", rec, tmp_path)
    f.write_bytes(b"abd" + b"abc" * 999)
    assert "changed" in check_file("a.bin", blake, tmp_path)
    f.unlink()
    assert check_file("a.bin", blake, tmp_path).endswith("missing")


def test_verify_rejects_a_folder_that_is_no_output(tmp_path, capsys):
    with pytest.raises(SystemExit, match="not an `anvil data run` output"):
        main(["data", "verify", str(tmp_path)])
