"""benchmarks/memory.py: the default profile stays bounded (one 4-rank layout, its cross-layout resume,
the single-process reference with its resume) and its table rows compare the largest rank's measured
whole-run peak with the single-process run of the same invocation and with the planner."""

from __future__ import annotations

import pytest

from benchmarks import memory


def test_default_profile_is_bounded_and_full_keeps_the_long_measurement():
    d, full = memory.PROFILES["default"], memory.PROFILES["full"]
    layouts = [l for w in sorted(d.layouts) for l in d.layouts[w]]
    runs = memory.plan_runs(layouts, d.cross, d.steps, d.same_layout_resumes)
    assert [r.name for r in runs] == [
        "1 process",
        "1 process resume",
        "DP4xTP1xPP1 Z3",
        "DP4xTP1xPP1 Z3 -> DP2xTP1xPP2 Z1",
    ]
    assert d.output == "memory.json" and full.output == "memory-full.json"
    full_runs = memory.plan_runs([l for w in full.layouts for l in full.layouts[w]], full.cross, 4, True)
    assert len(full_runs) == 18 and sum(r.kind == "cross" for r in full_runs) == 4


def _run(name, world, kind, peaks, planner=None, source=None, status="ok"):
    base = [0.4] * world
    mem = {"baseline": base, "startup": [0.5] * world, "steps": [b + p for b, p in zip(base, peaks)]}
    if kind != "fresh":
        mem["load"] = [0.6] * world
    return {
        "name": name,
        "world": world,
        "kind": kind,
        "source": source,
        "status": status,
        "memory": {"host_memory_gb": mem} if status == "ok" else None,
        "planner": planner,
    }


def test_rows_judge_the_largest_rank_against_the_single_process_run():
    gb = memory.GB
    results = [
        _run("1 process", 1, "fresh", [1.0], {"startup": 0.1 * gb, "steps": 1.1 * gb}),
        _run("1 process resume", 1, "resume", [1.2]),
        _run("DP4 Z3", 4, "fresh", [0.40, 0.40, 0.41, 0.40], {"startup": 0.1 * gb, "steps": 0.3 * gb}),
        _run("DP4 Z3 -> DP2xPP2", 4, "cross", [0.5, 0.5, 0.5, 0.5], source="DP4 Z3"),
        _run("DP2xTP2 Z1", 4, "fresh", [0.0] * 4, status="failed (exit 1)"),
    ]
    rows = memory.table_rows({"parameters": 26_742_528, "results": {"current": results}})
    assert len(rows) == 3
    fresh, cross, failed = rows
    assert fresh["met"] is True and fresh["ratio"] == "41.0% of 1 process"
    assert "planner 0.30 GB" in fresh["anvil"] and "1 process: 1.00 GB (planner 1.10 GB)" == fresh["peer"]
    assert "measured" in fresh["quantity"] and "formula (planner closed form)" in fresh["quantity"]
    # a cross-layout resume is compared with the single-process resume (it loads a checkpoint)
    assert cross["ratio"] == f"{100 * 0.5 / 1.2:.1f}% of 1 process" and cross["met"] is True
    assert "resumed from DP4 Z3's checkpoint" in cross["what"]
    assert failed["anvil"] == "not measured: failed (exit 1)" and failed["met"] is None


def test_share_over_45_percent_is_a_miss():
    results = [_run("1 process", 1, "fresh", [1.0]), _run("DP4 Z3", 4, "fresh", [0.46, 0.46, 0.46, 0.46])]
    (r,) = memory.table_rows({"parameters": 1, "results": {"current": results}})
    assert r["met"] is False and r["ratio"] == "46.0% of 1 process"


def test_bad_layout_is_refused():
    with pytest.raises(Exception, match="expected DP,TP,PP,ZeRO"):
        memory.parse_layout("4,1,1")
