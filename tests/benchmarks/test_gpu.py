"""benchmarks/gpu.py without CUDA: exit 0 and a results file with no rows saying it was not run;
with results, one row per preset and the MFU target judged only at 1.3B on H100/H200."""

from __future__ import annotations

import json
import math

from benchmarks import gpu


def test_no_cuda_writes_not_run(tmp_path, monkeypatch):
    class Rec(gpu.Recorder):
        def write(self, record, rows, input_label, results_dir=None):
            return super().write(record, rows, input_label, tmp_path)

    monkeypatch.setattr(gpu, "Recorder", Rec)
    monkeypatch.setattr(gpu.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("sys.argv", ["gpu.py"])
    assert gpu.main() == 0
    out = json.loads((tmp_path / "gpu.json").read_text())
    assert out["rows"] == [] and out["status"] == "not run: no CUDA GPU"


def test_rows_pick_the_fastest_and_judge_mfu_at_1_3b():
    def r(preset, zero, tps, mfu):
        return {
            "preset": preset,
            "ZeRO": zero,
            "act ckpt": False,
            "micro batch": 8,
            "step s": 1.0,
            "tokens/s": tps,
            "TFLOP/s": 400.0,
            "MFU %": mfu,
        }

    res = [
        r("125m", 0, 1e5, 30.0),
        r("125m", 1, 2e5, 35.0),
        r("1.3b", 0, 3e4, 47.0),
        {"preset": "1.3b", "ZeRO": 1, "act ckpt": True, "micro batch": 8, "step s": "OOM"},
    ]
    small, big = gpu.table_rows(res, "NVIDIA H200")
    assert "200,000 tokens/s" in small["anvil"] and small["met"] is None and small["target"] == ""
    assert big["met"] is True and "MFU 47.0%" in big["anvil"]
    (other,) = gpu.table_rows([r("1.3b", 0, 3e4, 47.0)], "NVIDIA A10")
    assert other["met"] is None
    (nan,) = gpu.table_rows([r("1.3b", 0, 3e4, math.nan)], "NVIDIA H100")
    assert nan["met"] is None
