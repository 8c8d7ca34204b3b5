"""Per-phase host memory peaks (framework.training.memory): exact peaks from /proc, max over repeated
visits, nesting, and the gather to {name: [GB per rank]} in one process and on 2 gloo ranks."""

import math

import pytest

from framework.training import memory
from framework.training.memory import GB, HostMemory, gather
from tests.helpers.dist import run_distributed

MB = 2**20
needs_proc = pytest.mark.skipif(
    not memory.supported() or not memory.reset_peak(),
    reason="needs /proc/self/status and a writable /proc/self/clear_refs (Linux)",
)


def _allocate(n_bytes: int) -> None:
    block = bytearray(b"\x01") * n_bytes  # written, so resident (bytearray(n) alone may stay untouched)
    assert block[-1] == 1
    del block  # large blocks are mmapped: freeing returns them to the OS


@needs_proc
def test_a_phase_peak_sees_a_freed_allocation_and_a_later_quiet_phase_does_not():
    mem = HostMemory()
    base = mem.record("baseline")
    with mem.phase("alloc"):
        _allocate(200 * MB)
    with mem.phase("quiet"):
        pass
    peaks = mem.peaks()
    assert peaks["baseline"] == base > 0
    assert peaks["alloc"] - base >= 150 * MB, (peaks, base)
    assert peaks["quiet"] - base < 50 * MB, (peaks, base)
    assert memory.rss_bytes() - base < 50 * MB  # gone again: the phase peak did not come from leftovers


@needs_proc
def test_repeated_visits_keep_the_max_and_nested_phases_feed_the_outer_one():
    mem = HostMemory()
    base = mem.record("baseline")
    with mem.phase("steps"):
        _allocate(200 * MB)
    for _ in range(3):
        with mem.phase("steps"):
            pass
    assert mem.peaks()["steps"] - base >= 150 * MB
    with mem.phase("outer"):
        with mem.phase("inner"):
            _allocate(120 * MB)
        with mem.phase("after"):
            pass
    peaks = mem.peaks()
    assert peaks["inner"] - base >= 90 * MB and peaks["outer"] >= peaks["inner"]
    assert peaks["after"] - base < 50 * MB


def test_without_proc_nothing_is_recorded_and_gather_says_none(monkeypatch):
    monkeypatch.setattr(memory, "_STATUS", "/nonexistent/status")
    monkeypatch.setattr(memory, "_CLEAR_REFS", "/nonexistent/clear_refs")
    assert memory.rss_bytes() == 0 and memory.peak_bytes() == 0 and memory.reset_peak() is False
    mem = HostMemory()
    mem.record("baseline")
    with mem.phase("steps"):
        pass
    assert mem.peaks() == {}
    assert gather(mem, ["baseline", "steps"]) == {"baseline": [None], "steps": [None]}


@needs_proc
def test_gather_in_one_process_gives_gb_and_none_for_unvisited_phases():
    mem = HostMemory()
    base = mem.record("baseline")
    with mem.phase("steps"):
        pass
    out = gather(mem, ["baseline", "steps", "load"])
    assert list(out) == ["baseline", "steps", "load"]
    assert out["baseline"] == [pytest.approx(base / GB)]
    assert out["steps"][0] >= out["baseline"][0] and out["load"] == [None]


def _two_ranks() -> dict:
    import torch.distributed as dist

    mem = HostMemory()
    mem.record("baseline")
    with mem.phase("work"):
        if dist.get_rank() == 1:
            _allocate(200 * MB)  # rank 1 only: the gathered lists must keep rank order
    if dist.get_rank() == 0:
        with mem.phase("only0"):
            pass
    return {"mine": mem.peaks(), "gathered": gather(mem, ["baseline", "work", "only0"])}


@needs_proc
def test_gather_on_two_gloo_ranks_returns_every_rank_in_rank_order():
    results = run_distributed(_two_ranks, 2, timeout=120)
    for res in results:
        assert res["gathered"] == results[0]["gathered"]  # every rank gets the same table
    g = results[0]["gathered"]
    for rank, res in enumerate(results):
        assert g["baseline"][rank] == pytest.approx(res["mine"]["baseline"] / GB)
        assert g["work"][rank] == pytest.approx(res["mine"]["work"] / GB)
    assert (g["work"][1] - g["baseline"][1]) * GB >= 150 * MB
    assert (g["work"][0] - g["baseline"][0]) * GB < 50 * MB
    assert g["only0"][1] is None and g["only0"][0] is not None and not math.isnan(g["only0"][0])
