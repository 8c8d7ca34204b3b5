"""benchmarks/ray_overhead.py's output comparison: any differing or missing output file is named;
only run metadata (stats.json, timings.json) is left out."""

from __future__ import annotations

from benchmarks import ray_overhead


def _tree(root, files):
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_differences_name_what_differs(tmp_path):
    same = {"part-00000.jsonl": "a\n", "rejected/x.jsonl": "r\n"}
    a = _tree(tmp_path / "local", {**same, "timings.json": "1", "stats.json": "{}"})
    b = _tree(tmp_path / "ray", {**same, "timings.json": "2", "stats.json": "{ }"})
    assert ray_overhead.differences(a, b) == []
    (b / "rejected/x.jsonl").write_text("other\n")
    (b / "extra.jsonl").write_text("")
    assert ray_overhead.differences(a, b) == ["only in ray: extra.jsonl", "rejected/x.jsonl"]
    assert ray_overhead.differences(tmp_path / "empty", b) == [f"no output files in {tmp_path / 'empty'}"]
