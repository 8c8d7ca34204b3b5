"""`make bench`'s driver, results format and generated README table (benchmarks/bench.py, common.py,
report.py). The scripts themselves are measured by `make bench`, not here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmarks import bench, report
from benchmarks.common import Recorder, row

ROOT = Path(__file__).resolve().parents[2]


def _script(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.py").write_text(body)


WRITES_RESULTS = """
import json, sys
from pathlib import Path
out = Path(sys.argv[0]).parent / "results" / "{name}.json"
out.parent.mkdir(exist_ok=True)
print("measuring {name}")
out.write_text(json.dumps({{"rows": [], "machine": {{}}}}))
"""


def test_every_script_runs_whatever_happens_to_the_others(tmp_path):
    _script(tmp_path, "fails", "import sys; print('boom'); sys.exit(3)")
    _script(tmp_path, "hangs", "import time; print('partial line', end='', flush=True); time.sleep(60)")
    _script(tmp_path, "silent", "print('no results written')")
    _script(tmp_path, "good", WRITES_RESULTS.format(name="good"))
    scripts = [
        bench.Script("fails", 30),
        bench.Script("hangs", 2),
        bench.Script("silent", 30),
        bench.Script("good", 30),
    ]
    entries = bench.run_all(scripts, bench_dir=tmp_path, results_dir=tmp_path / "results", logs=tmp_path / "logs")
    status = {e["name"]: e["status"] for e in entries}
    assert status == {
        "fails": "failed (exit 3)",
        "hangs": "timed out after 2 s",
        "silent": "exit 0 but no silent.json written",
        "good": "ok",
    }
    assert entries[1]["wall_s"] < 10  # killed at its deadline although it printed no newline
    assert (tmp_path / "logs" / "fails.log").read_text() == "boom\n"
    assert (tmp_path / "logs" / "good.log").read_text() == "measuring good\n"
    assert all(len(e["load_before"]) == 3 and len(e["load_after"]) == 3 for e in entries)
    assert "timed out" in bench.summary(entries)


def test_a_stale_results_file_does_not_count_as_written(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "stale.json").write_text("{}")
    _script(tmp_path, "stale", "print('forgot to write')")
    [entry] = bench.run_all([bench.Script("stale", 30)], tmp_path, tmp_path / "results", tmp_path / "logs")
    assert entry["status"] == "exit 0 but no stale.json written"


def test_selection_names_unknown_scripts():
    assert [s.name for s in bench._selected("dedup,gpu", None)] == ["dedup", "gpu"]
    assert "dedup" not in [s.name for s in bench._selected(None, "dedup")]
    with pytest.raises(SystemExit, match="unknown script.*nope"):
        bench._selected("nope", None)


def test_every_benchmark_script_is_run_by_make_bench():
    helpers = {"bench", "common", "report", "dedup_inputs", "dedup_peers"}
    on_disk = {p.stem for p in (ROOT / "benchmarks").glob("*.py")} - helpers
    assert on_disk == {s.name for s in bench.SCRIPTS}


def test_recorder_writes_header_rows_and_record(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["x.py", "--docs", "10"])
    rec = Recorder("demo")
    rows = [row("4 filters", "wall s, whole process", "10.4 s", "DataTrove 121 s", "11.7x", ">= 10x", True)]
    path = rec.write({"speed": {"anvil": 10.4}}, rows, "sample corpus (fallback)", results_dir=tmp_path)
    data = json.loads(path.read_text())
    assert data["script"] == "benchmarks/demo.py" and data["command"].endswith("benchmarks/demo.py --docs 10")
    assert data["input"] == "sample corpus (fallback)" and data["speed"] == {"anvil": 10.4}
    assert data["machine"]["cores"] >= 1 and len(data["machine"]["load_before"]) == 3
    assert data["rows"] == rows
    with pytest.raises(ValueError, match="reserved"):
        rec.write({"rows": 1}, rows, "x", results_dir=tmp_path)
    with pytest.raises(ValueError, match="needs what, quantity"):
        row("x", "", "1 s")


def _results(folder: Path, name: str, rows: list[dict], **extra) -> None:
    machine = {"cores": 2, "load_before": [0.1, 0.1, 0.1], "load_after": [1.5, 0.5, 0.2]}
    data = {"rows": rows, "machine": machine, "input": "real: 3,000 pages", "wall_s": 12.5, **extra}
    (folder / f"{name}.json").write_text(json.dumps(data))


def test_table_rows_in_run_order_with_targets_and_provenance(tmp_path):
    _results(tmp_path, "dedup", [row("MinHash | LSH", "wall s", "6.4 s", "datasketch 26 s", "4.1x", ">= 3x", True)])
    _results(
        tmp_path, "datatrove_compat", [row("4 filters", "wall s", "20.9 s", "DataTrove 121 s", "5.9x", ">= 10x", False)]
    )
    _results(tmp_path, "gpu", [], status="not run: no CUDA GPU")
    (tmp_path / "tokenize.json").write_text(json.dumps({"old": "format"}))
    text = report.table(tmp_path)
    lines = text.splitlines()
    assert lines[0].startswith("| script | what | quantity | Anvil")
    assert lines[2].startswith("| `datatrove_compat.py` | 4 filters") and lines[2].endswith(">= 10x: **missed** |")
    assert lines[3] == "| `dedup.py` | MinHash \\| LSH | wall s | 6.4 s | datasketch 26 s | 4.1x | >= 3x: met |"
    assert "- `dedup.py`: input real: 3,000 pages; 2 cores, load 0.1 -> 1.5; 12.5 s wall" in text
    assert "- `gpu.py`: input" in text and "not run: no CUDA GPU" in text
    assert "- `tokenize.py`: input n/a" in text and "predates the rows format" in text
    assert "- `trainer.py`: no results file (not run)" in text


def test_malformed_results_are_named(tmp_path):
    (tmp_path / "dedup.json").write_text('{"rows": [}')
    with pytest.raises(ValueError, match=r"dedup.json: line 1: not JSON"):
        report.table(tmp_path)
    (tmp_path / "dedup.json").write_text(json.dumps({"rows": [{"what": "x"}], "machine": {}}))
    with pytest.raises(ValueError, match=r"dedup.json: rows\[0\] lacks quantity"):
        report.table(tmp_path)


def test_readme_block_replaced_between_markers_only(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# X\n\nbefore\n{report.BEGIN}\nold table\n{report.END}\nafter\n")
    assert report.update_readme(readme, "| new |\n") is True
    assert readme.read_text() == f"# X\n\nbefore\n{report.BEGIN}\n| new |\n{report.END}\nafter\n"
    assert report.update_readme(readme, "| new |\n") is False
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="expected one"):
        report.update_readme(readme, "| new |\n")


def test_readme_performance_table_is_the_generated_one():
    """The README's table is benchmarks/report.py's output on the committed results files: edit a
    results file or the README by hand and this fails (regenerate: python -P benchmarks/report.py)."""
    text = (ROOT / "README.md").read_text()
    assert report.replace_between_markers(text, report.table()) == text
