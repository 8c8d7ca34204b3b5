"""`make demo`'s path at the smallest sizes: every stage runs through the real `anvil` commands,
the report links images that exist, and a rerun reuses every finished stage."""

import json
import math
import re
import shutil
import sys
from pathlib import Path

import pytest

from launch import demo

pytestmark = pytest.mark.slow


def test_demo_small_end_to_end_and_rerun(tmp_path, capsys, monkeypatch):
    # The demo runs the console script next to this interpreter; the test venv has it.
    if not (Path(sys.executable).parent / "anvil").exists():
        pytest.skip("the anvil console script is not installed next to this python (pip install -e .)")
    out = tmp_path / "demo"
    assert demo.main(["--small", "--output", str(out)]) == 0
    first = capsys.readouterr().out
    for stage in (
        "sample",
        "curate",
        "split",
        "tokenizer",
        "tokenize",
        "train",
        "evaluate",
        "generate",
        "export",
        "sweep",
    ):
        assert (out / ".done" / f"{stage}.json").exists(), stage
    stats = json.loads((out / "curated" / "stats.json").read_text())
    assert stats["docs_out"] > 0 and "funnel" in first
    # It learned: training loss fell, and held-out loss beats the uniform guess over the vocabulary.
    losses = [json.loads(line)["loss"] for line in (out / "run" / "metrics.jsonl").open() if '"loss"' in line]
    assert len(losses) >= 2 and losses[-1] < losses[0], losses
    vocab = json.loads((out / "tokens" / "train.json").read_text()).get("vocab_size", demo.SMALL.vocab)
    assert 0 < json.loads((out / "eval.json").read_text())["loss"] < math.log(vocab)
    task = [json.loads(line) for line in (out / "run" / "metrics.jsonl").open() if "eval/anvil_mc/acc" in line]
    assert [t["step"] for t in task] == [5, 10, 15, 20]  # the in-loop task curve of the report
    assert all(0 <= t["eval/anvil_mc/acc"] <= 1 for t in task)
    assert (out / "hf" / "config.json").exists()
    fit = json.loads((out / "sweep" / "fit.json").read_text())
    assert {"E", "A", "B", "alpha", "beta", "a", "b", "G"} <= set(fit)
    report = (out / "report.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', report)
    assert "training_curves.png" in images
    for rel in images + re.findall(r'<a href="([^"]+)"', report):
        assert (out / rel).is_file(), rel
    for png in images:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if shutil.which("chromium"):
        assert demo.check_report_in_chromium(out / "report.html") == []
        (out / "training_curves.png").write_bytes(b"not a png")
        assert len(demo.check_report_in_chromium(out / "report.html")) == 1
        demo.Demo(out, demo.SMALL, True).plot_curves([json.loads(l) for l in (out / "run" / "metrics.jsonl").open()])
    # Rerun: every stage is reused, nothing runs again.
    assert demo.main(["--small", "--output", str(out)]) == 0
    second = capsys.readouterr().out
    assert second.count(": reused") == 10 and "$ anvil" not in second


def test_sweep_summary_states_E_interval_and_interior_optima():
    fit = {"E": 2.02, "A": 352.0, "B": 134.0, "alpha": 0.787, "beta": 0.367, "a": 0.318}
    fit |= {"ci": {"E": [1e-9, 2.78], "level": 0.95}}
    fit |= {"approach2": {"parabola_in_log_N": {"budgets": [{"C": 1e10}, {"C": 3e10}], "skipped_budgets": 1}}}
    text = demo.sweep_summary(fit)
    assert "L = 2.02 + 352/N^0.787 + 134/D^0.367" in text
    assert "E 95% interval 0.00-2.78" in text and "inside the sampled sizes at 2 of 3 budgets" in text
    assert "interval" not in demo.sweep_summary({k: v for k, v in fit.items() if k != "ci"})  # no bootstrap
