"""Resumable dedup: killed in any phase (the resume.py fault hook), the same call continues from
its finished units - counted in stats["resume"] - and writes the bytes of an uninterrupted run;
damaged units are redone, changed inputs or settings reuse nothing, an incremental store survives."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_pipeline.dedup.api import run_dedup
from data_pipeline.dedup.index import DedupConfig
from data_pipeline.dedup.resume import FAULT_ENV, InjectedFault
from data_pipeline.dedup.synthetic import generate

ROOT = Path(__file__).resolve().parents[3]
CLI = "import sys; from launch.cli import main; sys.exit(main(sys.argv[1:]))"


def _cfg(**kw) -> DedupConfig:
    # 64KB: a run group holds about 120 documents (4-5 shards), so phase 1 has 3 units
    return DedupConfig(**{"shard_docs": 31, "memory_budget": "64KB", **kw})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    recs = [r for r, _ in generate(300, family_fraction=0.4, edit_rates=(0.0, 0.01, 0.05), words=(40, 90), seed=7)]
    inp = root / "in"
    inp.mkdir()
    for k, part in enumerate((recs[:150], recs[150:])):
        (inp / f"f{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part) + "{bad json\n")
    ref = root / "ref"
    stats = run_dedup([str(inp)], ref, _cfg())
    assert stats["duplicates"] > 10 and stats["sorted_runs"] >= 3 * (stats["bands"] + 1)
    return root, inp, ref


def _files(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "timings.json"
    }


def _same(a: Path, b: Path) -> None:
    fa, fb = _files(a), _files(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        assert fa[name] == fb[name], name


def _killed_at(point: str, fn):
    os.environ[FAULT_ENV] = point
    try:
        with pytest.raises(InjectedFault, match=point):
            fn()
    finally:
        del os.environ[FAULT_ENV]


# point -> units the rerun must reuse (at least), by phase; bands=16 for the default settings
@pytest.mark.parametrize(
    "point, reused",
    [
        ("scan:shard-000001-000002", {"scan": 7}),  # file 0: 5 shards, file 1: 2
        ("append:1", {"scan": 10, "append": 1}),
        ("ids", {"scan": 10, "append": 3}),
        ("band:5", {"scan": 10, "append": 3, "ids": 1, "bands": 5}),
        ("verify:0", {"scan": 10, "append": 3, "ids": 1, "bands": 16, "verify": 0}),
        ("decide", {"scan": 10, "append": 3, "ids": 1, "bands": 16}),
        ("commit", {"scan": 10, "decide": 1}),  # the commit is rolled forward
        ("output", {"scan": 10, "decide": 1}),
    ],
)
def test_killed_in_each_phase_resumes_to_identical_output(corpus, tmp_path, point, reused):
    _, inp, ref = corpus
    out = tmp_path / "out"
    _killed_at(point, lambda: run_dedup([str(inp)], out, _cfg()))
    assert not (out / "stats.json").exists() and (out / ".dedup-work").exists()
    stats = run_dedup([str(inp)], out, _cfg())
    _same(ref, out)
    assert not (out / ".dedup-work").exists()
    for phase, n in reused.items():
        assert stats["resume"][phase]["reused"] == n, (phase, stats["resume"])
    # what was not finished was done again, and nothing after the fault point was reused
    assert sum(v["done"] for v in stats["resume"].values()) >= 1 or point in ("commit", "output")


def test_reader_path_with_worker_processes_resumes(corpus, tmp_path):
    """workers=2 and two files: this process reads and cuts shards, spawned workers scan them."""
    _, inp, ref = corpus
    out = tmp_path / "out"
    _killed_at("scan:shard-000006", lambda: run_dedup([str(inp)], out, _cfg(workers=2)))
    stats = run_dedup([str(inp)], out, _cfg(workers=2))
    assert stats["resume"]["scan"]["reused"] >= 6 and stats["resume"]["scan"]["done"] >= 1, stats["resume"]
    want, have = _files(ref), _files(out)
    assert json.loads(want.pop("stats.json")) | {"workers": 2} == json.loads(have.pop("stats.json"))
    assert want == have


def test_damaged_units_are_redone_and_logged(corpus, tmp_path, caplog):
    _, inp, ref = corpus
    out = tmp_path / "out"
    _killed_at("decide", lambda: run_dedup([str(inp)], out, _cfg()))
    work = out / ".dedup-work"
    sig = work / "scan" / "shard-000000-000003" / "sig.u64"
    data = bytearray(sig.read_bytes())
    data[100] ^= 0x01  # one flipped bit
    sig.write_bytes(bytes(data))
    run = work / "reduce" / "runs" / "band7-run1.keys"
    run.write_bytes(run.read_bytes()[:-8])  # truncated by one record
    (work / "reduce" / "cand-002-000.keys").unlink()  # gone
    with caplog.at_level(logging.INFO, logger="anvil.dedup"):
        stats = run_dedup([str(inp)], out, _cfg())
    _same(ref, out)
    msgs = "\n".join(r.getMessage() for r in caplog.records)
    assert "shard-000000-000003" in msgs and "checksum" in msgs, msgs
    assert "run group 1" in msgs and "truncated" in msgs, msgs
    assert "band 2" in msgs and "missing" in msgs, msgs
    r = stats["resume"]
    assert r["scan"] == {"reused": 9, "done": 1}
    # a redone scan shard changes no bytes, but group 1 (damaged run) and group 2 after it are redone
    assert r["append"] == {"reused": 1, "done": 2}
    assert r["bands"]["done"] >= 1 and r["decide"] == {"reused": 0, "done": 1}


@pytest.mark.parametrize("change, point", [("input", "band:3"), ("settings", "band:3"), ("budget", "output")])
def test_changed_input_or_settings_reuse_nothing_stale(corpus, tmp_path, change, point):
    _, inp, _ = corpus
    src = tmp_path / "in"
    src.mkdir()
    for p in inp.iterdir():
        (src / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "out"
    _killed_at(point, lambda: run_dedup([str(src)], out, _cfg()))
    cfg = _cfg()
    if change == "input":
        with open(src / "f1.jsonl", "a") as f:
            f.write(json.dumps({"id": "late", "text": "a late document with enough words in it to count"}) + "\n")
    elif change == "settings":
        cfg = _cfg(threshold=0.7)
    else:  # killed after its store was committed; a reduce setting changes: scans stay valid
        cfg = _cfg(memory_budget="1MB")
    stats = run_dedup([str(src)], out, cfg)
    r = stats["resume"]
    if change == "budget":
        assert r["scan"] == {"reused": 10, "done": 0} and r["decide"] == {"reused": 0, "done": 1}, r
        assert r["append"]["reused"] == 0 and r["bands"]["reused"] == 0, r
    else:
        assert all(v["reused"] == 0 for v in r.values()), r
    fresh = tmp_path / "fresh"
    run_dedup([str(src)], fresh, cfg)
    _same(fresh, out)


def test_incremental_store_survives_a_kill_in_the_reduce(corpus, tmp_path):
    _, inp, _ = corpus
    files = sorted(str(p) for p in inp.glob("*.jsonl"))
    run_dedup(files[:1], tmp_path / "ref1", _cfg(), incremental_store=tmp_path / "ref-store")
    run_dedup(files[1:], tmp_path / "ref2", _cfg(), incremental_store=tmp_path / "ref-store")
    run_dedup(files[:1], tmp_path / "b1", _cfg(), incremental_store=tmp_path / "store")
    for point in ("band:4", "commit"):
        _killed_at(point, lambda: run_dedup(files[1:], tmp_path / "b2", _cfg(), incremental_store=tmp_path / "store"))
    stats = run_dedup(files[1:], tmp_path / "b2", _cfg(), incremental_store=tmp_path / "store")
    assert stats["resume"]["decide"]["reused"] == 1 and stats["batch"] == 2
    _same(tmp_path / "ref2", tmp_path / "b2")
    state, ref_state = (json.loads((tmp_path / d / "state.json").read_text()) for d in ("store", "ref-store"))
    assert state.pop("last_batch") != ref_state.pop("last_batch") and state == ref_state  # the token names the store
    for name in ("signatures.u64", "ids.jsonl", "rep.npy", "root.npy", "ids.off.npy", "band3.keys", "idhash.docs"):
        assert (tmp_path / "store" / name).read_bytes() == (tmp_path / "ref-store" / name).read_bytes(), name


def test_cli_process_killed_mid_band_then_rerun(corpus, tmp_path):
    """A real kill (os._exit in the middle of the band phase, no cleanup) of `anvil data dedup`."""
    _, inp, _ = corpus
    ref, out = tmp_path / "ref", tmp_path / "out"
    run_dedup([str(inp)], ref, DedupConfig(memory_budget="64KB"))  # the CLI's defaults
    argv = [sys.executable, "-c", CLI, "data", "dedup", str(inp), "--output", str(out), "--memory-budget", "64KB"]
    env = {**os.environ, FAULT_ENV: "band:9:exit", "PYTHONPATH": str(ROOT)}
    killed = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert killed.returncode == 17, killed.stderr[-2000:]
    assert len(list((out / ".dedup-work" / "reduce").glob("band-*.json"))) == 9
    env.pop(FAULT_ENV)
    rerun = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "reused units" in rerun.stderr + rerun.stdout and "bands 9/16" in rerun.stderr + rerun.stdout
    _same(ref, out)


@pytest.mark.parametrize("algo", ["xxh3_128", "blake2b_128"])
def test_markers_detect_truncation_and_bit_flips(tmp_path, monkeypatch, algo):
    from data_pipeline.dedup import resume

    if algo == "xxh3_128":
        pytest.importorskip("xxhash")
    monkeypatch.setattr(resume, "ALGO", algo)
    data = tmp_path / "data.bin"
    data.write_bytes(bytes(range(256)) * 4096)
    resume.write_marker(tmp_path / "done.json", "t1", [data])
    assert json.loads((tmp_path / "done.json").read_text())["files"]["data.bin"][1].startswith(algo + ":")
    monkeypatch.setattr(resume, "ALGO", "blake2b_128" if algo == "xxh3_128" else algo)  # verified by its own name
    assert resume.read_marker(tmp_path / "done.json", "t1", "unit") is not None
    assert resume.read_marker(tmp_path / "done.json", "other-settings", "unit") is None
    raw = bytearray(data.read_bytes())
    raw[500_000] ^= 0x10
    data.write_bytes(bytes(raw))
    assert resume.read_marker(tmp_path / "done.json", "t1", "unit") is None
    assert not (tmp_path / "done.json").exists()  # a damaged unit loses its marker
    resume.write_marker(tmp_path / "done.json", "t1", [data])
    data.write_bytes(bytes(raw[:-1]))
    assert resume.read_marker(tmp_path / "done.json", "t1", "unit") is None
