"""The preflight (`--plan`, the free-disk check): its disk estimate, calibrated on a quarter of
the input, is within 30% of what the run writes; `--plan` runs nothing; a run refuses to start
when the free disk is below the estimate unless --ignore-disk-estimate."""

from __future__ import annotations

import json
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

import data_pipeline.preflight as preflight
from data_pipeline.pipeline import load_recipe, run_recipe
from launch.cli import main
from tests.data_pipeline.corpus import real_docs

ROOT = Path(__file__).parents[3]
RECIPE = ROOT / "configs" / "data" / "jsonl.yaml"
STEPS = "steps=[gopher_repetition, exact_dedup, normalize]"
Usage = namedtuple("Usage", "total used free")


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    folder = tmp_path_factory.mktemp("preflight") / "raw"
    folder.mkdir()
    docs = real_docs()[:480]
    for f in range(8):
        with open(folder / f"in-{f}.jsonl", "w") as fh:
            for d in docs[f::8]:
                fh.write(json.dumps({"id": d.id, "text": d.text}) + "\n")
    return folder


def _task_bytes(out: Path) -> int:
    """Bytes of the files the tasks wrote (not stats.json, markers or recipe.json)."""
    return sum(
        p.stat().st_size
        for p in out.rglob("*")
        if p.is_file() and p.name != "stats.json" and "markers" not in p.parts and p.name != "recipe.json"
    )


def test_disk_estimate_within_30_percent_of_the_run(raw, tmp_path):
    total = sum(p.stat().st_size for p in raw.iterdir())
    overrides = [STEPS, f"input={raw}", f"output={tmp_path / 'out'}", "keep_work=true", "report=false"]
    est = preflight.estimate_recipe(load_recipe(RECIPE, overrides), target=total // 4)
    assert 2.5 <= est.scale <= 5, est.scale
    assert not (tmp_path / "out").exists()  # the estimate wrote nothing there
    assert [s.name.split(" (")[0] for s in est.stages] == ["segment 0", "reduce 1", "segment 1"]
    run_recipe(load_recipe(RECIPE, overrides))
    measured = _task_bytes(tmp_path / "out")
    assert abs(est.disk_peak - measured) <= 0.3 * measured, (est.disk_peak, measured)
    final = sum(p.stat().st_size for p in (tmp_path / "out").rglob("*.jsonl.zst") if ".anvil" not in p.parts)
    assert abs(est.disk_final - final) <= 0.3 * final, (est.disk_final, final)


def test_plan_prints_stages_and_runs_nothing(raw, tmp_path, capsys):
    out = tmp_path / "planned"
    assert main(["data", "run", str(RECIPE), STEPS, f"input={raw}", f"output={out}", "--plan"]) == 0
    text = capsys.readouterr().out
    for needle in (
        "preflight (curation)",
        "segment 0 (gopher_repetition)",
        "reduce 1 (exact_dedup)",
        "segment 1 (exact_dedup, normalize)",
        "disk",
        "memory",
        "CPU time",
        "free disk at the output",
    ):
        assert needle in text, text
    assert not out.exists()


def test_run_refuses_when_free_disk_is_below_the_estimate(raw, tmp_path, monkeypatch):
    out = tmp_path / "small-disk"
    argv = ["data", "run", str(RECIPE), STEPS, f"input={raw}", f"output={out}", "report=false"]
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: Usage(10 << 20, 10 << 20, 20_000))
    with pytest.raises(SystemExit) as info:
        main(argv)
    msg = str(info.value)
    assert "not enough free disk" in msg and "--ignore-disk-estimate" in msg and "segment 0" in msg, msg
    assert not out.exists()
    assert main(argv + ["--ignore-disk-estimate"]) == 0
    assert (out / "stats.json").exists()


def test_plenty_of_disk_skips_the_calibration(raw, tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "estimate_recipe", lambda *a, **k: pytest.fail("calibrated needlessly"))
    recipe = load_recipe(RECIPE, [STEPS, f"input={raw}", f"output={tmp_path / 'o'}"])
    preflight.preflight_disk_check(recipe, workers=1, strict=False)  # this disk has room


def test_resumed_run_needs_only_what_is_left(raw, tmp_path):
    overrides = [STEPS, f"input={raw}", f"output={tmp_path / 'out'}", "keep_work=true", "report=false"]
    run_recipe(load_recipe(RECIPE, overrides))
    est = preflight.estimate_recipe(load_recipe(RECIPE, overrides), target=1 << 30)
    assert est.already_written > 0.7 * est.disk_peak and est.disk_needed < 0.3 * est.disk_peak


def test_dedup_plan_and_refusal(raw, tmp_path, capsys, monkeypatch):
    out = tmp_path / "dedup"
    assert main(["data", "dedup", str(raw), "--output", str(out), "--plan"]) == 0
    text = capsys.readouterr().out
    assert "preflight (dedup)" in text and "num_perm 128" in text and "signatures" in text, text
    assert not out.exists()
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: Usage(10 << 20, 10 << 20, 1000))
    with pytest.raises(SystemExit, match="not enough free disk"):
        main(["data", "dedup", str(raw), "--output", str(out)])
    assert not out.exists()


def test_dedup_disk_estimate_within_30_percent(raw, tmp_path):
    from data_pipeline.dedup.api import run_dedup
    from data_pipeline.dedup.index import DedupConfig

    cfg = DedupConfig(threshold=0.8, memory_budget="8MB")
    total = sum(p.stat().st_size for p in raw.iterdir())
    est = preflight.estimate_dedup([str(raw)], cfg, target=total // 3)
    full = preflight.estimate_dedup([str(raw)], cfg, target=total)  # x1: the measured run itself
    assert full.scale == 1 and 2 <= est.scale <= 4
    assert abs(est.disk_peak - full.disk_peak) <= 0.3 * full.disk_peak, (est.disk_peak, full.disk_peak)
    out = tmp_path / "d"
    run_dedup([str(raw)], out, cfg)
    final = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert abs(est.disk_final - final) <= 0.3 * final, (est.disk_final, final)
    shutil.rmtree(out)
