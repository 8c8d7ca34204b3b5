"""Does training learn? A checkpoint's held-out loss against a unigram model's on the same tokens.

    python benchmarks/learning.py --train                 # anvil train configs/train/10m.yaml, then compare
    python benchmarks/learning.py --run-dir runs/10m      # compare an existing run's latest checkpoint

The unigram model is fitted (add-one smoothing) on every training sample of the run (at least the
tokens the checkpoint saw, so the baseline is never starved); both are scored on the trainer's fixed validation samples. A model that only learned token
frequencies would match the unigram loss; "well below" means it learned context.

Then the downstream check: the shipped multiple-choice task `anvil_mc` (configs/eval, chance 0.25)
and the cloze task `anvil_cloze` through lm-evaluation-harness on the same checkpoint. "Above
chance" means acc - 2 standard errors > 0.25. Results go to benchmarks/results/learning.json.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def compare(run_dir: str) -> dict:
    from framework.checkpoint.store import read_meta, resolve
    from framework.config import load_run_config
    from framework.eval.generate import load_model
    from framework.training.data import TrainingData

    ckpt = resolve(run_dir)
    meta = read_meta(ckpt)
    cfg = load_run_config(str(Path(run_dir) / "config.yaml"))
    data = TrainingData(cfg, 0, 1)
    V = cfg.model.vocab_size
    counts = np.ones(V, dtype=np.float64)
    for i in range(len(data.train)):
        counts += np.bincount(data.train[i][1:], minlength=V)
    logp = np.log(counts / counts.sum())
    model, _ = load_model(ckpt)
    uni, mod, n = 0.0, 0.0, 0
    with torch.no_grad():
        for x, y in data.valid_micro_batches():
            uni += float(-logp[y.numpy()].sum())
            mod += float(model(x, y)) * y.numel()
            n += y.numel()
    return {
        "checkpoint": ckpt.name,
        "model train tokens": meta["tokens"],
        "unigram train tokens": int(counts.sum()) - V,
        "held-out tokens": n,
        "unigram loss": uni / n,
        "model loss": mod / n,
        "model ppl": math.exp(mod / n),
        "unigram ppl": math.exp(uni / n),
    }


def downstream(run_dir: str) -> dict:
    from framework.eval.harness import run_tasks
    from framework.eval.lm_adapter import from_scorer
    from framework.eval.perplexity import load_scorer

    out = run_tasks(from_scorer(load_scorer(run_dir)), ["anvil_mc", "anvil_cloze"], [str(ROOT / "configs/eval")])
    mc, cloze = out["results"]["anvil_mc"], out["results"]["anvil_cloze"]
    return {
        "anvil_mc acc": mc["acc,none"],
        "anvil_mc stderr": mc["acc_stderr,none"],
        "anvil_mc chance": 0.25,
        "anvil_mc examples": mc["sample_len"],
        "above chance (acc - 2 se > 0.25)": mc["acc,none"] - 2 * mc["acc_stderr,none"] > 0.25,
        "anvil_cloze acc": cloze["acc,none"],
        "anvil_cloze perplexity": cloze["perplexity,none"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs/train/10m.yaml"))
    ap.add_argument("--run-dir", default=None, help="run folder (default: the config's run_dir)")
    ap.add_argument("--train", action="store_true", help="train first (resumes if the run exists)")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    args = ap.parse_args()
    from framework.config import load_run_config
    from framework.runtime import print_table

    run_dir = args.run_dir or load_run_config(args.config, args.overrides).run_dir
    if args.train:
        anvil = str(Path(sys.executable).parent / "anvil")
        subprocess.run([anvil, "train", args.config, f"run_dir={run_dir}", *args.overrides], check=True)
    row = compare(run_dir)
    print_table([row], title="held-out loss: trained model vs unigram")
    tasks = downstream(run_dir)
    print_table([tasks], title="downstream tasks (lm-evaluation-harness, configs/eval)")
    import json
    import platform

    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    record = {
        "script": "benchmarks/learning.py",
        "run_dir": str(run_dir),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "loss": row,
        "tasks": tasks,
    }
    (results / "learning.json").write_text(json.dumps(record, indent=2) + "\n")
    ok = row["model loss"] < row["unigram loss"] and tasks["above chance (acc - 2 se > 0.25)"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
