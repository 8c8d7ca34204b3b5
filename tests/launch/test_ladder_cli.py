"""`anvil ladder` end to end: the sample corpus against a copy with 40% of its documents'
words shuffled, ranked clean-first with p_correct printed; a rerun trains, tokenizes and scores nothing.

The yardstick is the clean copies of the held-out documents (`heldout_from: [clean]`): the default,
the union, is ~30% shuffled text here, which a model trained on the damaged copy predicts better
once it is large enough (README "Data ladders" has the numbers)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_pipeline.sample import write_sample_corpus

ROOT = Path(__file__).resolve().parents[2]

# The cheapest sweep that still separates the two corpora: word-level tokens (vocabulary 1024, so
# shuffled words change what the model sees per token) and runs up to ~100K tokens (below that the
# tiny models have not yet learned word order, and both corpora score the same). 3 shapes x 2 token
# counts = 6 runs per corpus, the fewest for the five-parameter law.
SWEEP = """name: ladder_ci
base_config: configs/train/tiny.yaml
family: {head_dim: 16, vocab_size: 1024, seq_len: 64, shapes: [[1, 16], [1, 32], [2, 32]]}
rules: {global_batch_size: 16, micro_batch_size: 16, evals: 1, eval_iters: 1, checkpoints: 1, lr: 1.0e-2}
grid: {kind: explicit, tokens: [25600, 102400], min_steps: 1}
run: {final_evals: 1, wandb: false, threads: 1}
"""
LADDER = """corpora: {{clean: {clean}, shuffled: {shuffled}}}
sweep: {sweep}
target_flops: 1.0e11
output: {out}
heldout_fraction: 0.1
heldout_from: [clean]
eval_tokens: 0
bootstrap: 10
fit_starts: 8
jobs: 2
tasks: [anvil_mc]
task_include_paths: [configs/eval]
task_limit: 16
"""


def _anvil(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "launch.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def _state(out: Path) -> dict:
    """mtimes of everything a rerun must not redo: tokens, tokenizer, run results, evaluations, checkpoints."""
    files = [out / "data" / "tokenizer.json", *sorted((out / "data" / "tokens").glob("*.bin"))]
    for pattern in ("sweep_result.json", "metrics.jsonl", "ladder_eval.json"):
        files += sorted((out / "sweeps").glob(f"*/runs/*/{pattern}"))
    return {str(f): f.stat().st_mtime_ns for f in files}


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ladder")
    write_sample_corpus(tmp / "clean", limit=600)
    write_sample_corpus(tmp / "shuffled", limit=600, shuffle_fraction=0.4)
    (tmp / "sweep.yaml").write_text(SWEEP)
    out = tmp / "out"
    cfg = tmp / "ladder.yaml"
    cfg.write_text(LADDER.format(clean=tmp / "clean", shuffled=tmp / "shuffled", sweep=tmp / "sweep.yaml", out=out))
    first = _anvil("ladder", str(cfg))
    return cfg, out, first


@pytest.mark.slow  # ~12 training runs: ~90 s on two idle cores, each run's start-up dominates
def test_ladder_ranks_the_clean_corpus_first_and_writes_the_contract_fields(ladder):
    cfg, out, proc = ladder
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "ladder.json").read_text())
    assert result["ranking"] == ["clean", "shuffled"]
    assert set(result) >= {"ranking", "predicted_loss", "interval", "p_correct"}
    for name in ("clean", "shuffled"):
        lo, hi = result["interval"][name]
        assert lo <= hi and isinstance(result["predicted_loss"][name], float)
        assert result["runs"][name] == 6
        assert result["corpora"][name]["documents"]["heldout"] > 0
    assert result["predicted_loss"]["clean"] < result["predicted_loss"]["shuffled"]
    assert 0.0 <= result["p_correct"] <= 1.0
    assert f"p_correct = {result['p_correct']:.3f}" in proc.stdout
    assert "ranking (best first): clean, shuffled" in proc.stdout
    # one held-out set for both: every run scored on the same number of tokens
    evals = {json.loads(p.read_text())["tokens"] for p in (out / "sweeps").glob("*/runs/*/ladder_eval.json")}
    assert len(evals) == 1 and result["heldout"]["scored_tokens"] == list(evals)
    page = (out / "report.html").read_text()
    assert "p_correct" in page and "clean" in page
    for img in ("frontiers.png", "p_correct.png", "predictions.png", "isoflop_clean.png", "isoflop_shuffled.png"):
        assert f'src="{img}"' in page and (out / img).stat().st_size > 1000
    assert (out / "sweeps" / "clean" / "fit.json").is_file()
    # the task every run also answered: the same 16 examples for both corpora, a column per metric
    header = (out / "sweeps" / "clean" / "heldout_results.csv").read_text().splitlines()[0]
    assert "anvil_mc/acc" in header.split(",")
    task = result["tasks"]["anvil_mc/acc"]
    assert task["higher_is_better"] is True and set(task["corpora"]) == {"clean", "shuffled"}
    for entry in task["corpora"].values():
        assert entry["runs"] == 6 and 0 <= entry["at_largest_compute"] <= 1
        assert (entry["predicted"] is None) == (entry["interval"] is None)
    assert "anvil_mc/acc (higher is better)" in proc.stdout and "Task anvil_mc/acc" in page


@pytest.mark.slow
def test_rerun_trains_tokenizes_and_scores_nothing(ladder):
    cfg, out, first = ladder
    assert first.returncode == 0
    before = _state(out)
    report = json.loads((out / "ladder.json").read_text())
    again = _anvil("ladder", str(cfg))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert _state(out) == before  # no run, tokenization or evaluation was redone
    assert again.stderr.count("every run finished before; skipped") == 2
    assert "scored" not in again.stderr
    assert json.loads((out / "ladder.json").read_text()) == report


def test_bad_inputs_fail_before_any_work_with_the_key(tmp_path):
    cfg = tmp_path / "ladder.yaml"
    cfg.write_text(
        LADDER.format(
            clean=tmp_path / "missing",
            shuffled=tmp_path / "missing2",
            sweep="configs/sweeps/demo.yaml",
            out=tmp_path / "o",
        )
    )
    proc = _anvil("ladder", str(cfg))
    assert proc.returncode != 0 and "corpora.clean" in proc.stderr and "input not found" in proc.stderr
    proc = _anvil("ladder", str(cfg), "target_flops=0")
    assert proc.returncode == 2 and "target_flops" in proc.stderr
    proc = _anvil("ladder", str(cfg), "tasks=[no_such_task]")
    assert proc.returncode == 2 and "config key 'tasks'" in proc.stderr and "no_such_task" in proc.stderr
    assert not (tmp_path / "o" / "data").exists()
