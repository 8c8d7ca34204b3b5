"""benchmarks/parallel.py: per-layout step cost and the most loaded rank's model state, measured next
to the planner's closed form; a world size that fails is a labelled row, not a crash."""

from __future__ import annotations

import argparse

import pytest

from benchmarks import parallel


def _layout(dp, tp, pp, zero, steps, measured, formula):
    return {
        "layout": [dp, tp, pp, zero],
        "step_s": steps,
        "comm_s": [s / 4 for s in steps],
        "model_state_bytes_measured": measured,
        "model_state_bytes_formula": formula,
    }


def test_summary_takes_rank0_time_and_the_most_loaded_rank():
    per_rank = [
        [_layout(4, 1, 1, 3, [0.2, 0.4, 0.3], 9_000_000, 4_900_000)],
        [_layout(4, 1, 1, 3, [9.0, 9.0, 9.0], 9_200_000, 4_900_000)],
    ]
    (s,) = parallel.summarise(4, per_rank)
    assert s["layout"] == "DP4 Z3" and s["step ms"] == 300.0 and s["tokens/s"] == round(512 / 0.3)
    assert s["state MB/rank measured"] == 9.2 and s["state MB/rank formula"] == 4.9
    assert s["comm share"] == 0.25


def test_rows_label_cost_and_formula_and_failures():
    per4 = [[_layout(4, 1, 1, 0, [0.5], 15_800_000, 15_750_000), _layout(2, 2, 1, 1, [1.0], 6_000_000, 5_900_000)]]
    rows = parallel.table_rows(parallel.summarise(4, per4), {8: "rank 3 of 8 failed: timeout"})
    step, state, failed = rows
    assert "oversubscribed" in step["what"] and "not speed-up" in step["what"]
    assert "DP4 Z0 500 ms" in step["anvil"] and "DP2xTP2 Z1 1000 ms" in step["anvil"]
    assert "measured" in state["quantity"] and "formula (planner closed form)" in state["quantity"]
    assert "DP4 Z0 15.8 [15.8]" in state["anvil"] and state["ratio"] == "measured/formula 1.00-1.02"
    assert failed["anvil"].startswith("not measured: rank 3 of 8")


def test_layout_argument_is_checked():
    assert parallel.parse_layout("2,1,2,1") == (2, 1, 2, 1)
    for bad in ("2,1,2", "1,1,1,0", "2,x,1,1", "4,1,1,5"):
        with pytest.raises(argparse.ArgumentTypeError):
            parallel.parse_layout(bad)
