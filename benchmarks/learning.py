"""Does training learn? A checkpoint's held-out loss against a unigram model's on the same tokens.

    python benchmarks/learning.py                      # train the 10M preset (150 steps), then compare
    python benchmarks/learning.py --steps 300          # longer run (its own run folder)
    python benchmarks/learning.py --no-train --run-dir runs/10m   # compare an existing run only

By default it trains `configs/train/10m.yaml` (the ~10M-parameter preset on the built-in sample
corpus) for `--steps` steps into benchmarks/.cache/learning-10m-sSTEPS (resuming when that run is
there: an interrupted `make bench` does not start over), then compares. 150 steps (153,600
tokens) keep the whole script within a few minutes on 2 cores; the preset's own 300 steps are one
flag away (`--steps 300`: held-out loss 4.99 against the unigram model's 6.84, anvil_mc 0.794).

The unigram model is fitted (add-one smoothing) on every training sample of the run (at least the
tokens the checkpoint saw, so the baseline is never starved); both are scored on the trainer's
fixed validation samples. A model that only learned token frequencies would match the unigram
loss; "well below" means it learned context.

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
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# One intra-op thread (the training child inherits it) unless the caller chose: on 2 cores two
# threads gain little, and on a busy machine oversubscribed threads spin (measured: 9 s a step
# instead of 2-3 s at load 10).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import Recorder, row  # noqa: E402

DEFAULT_STEPS = 150


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


def train(config: str, run_dir: str, steps: int, overrides: list[str]) -> dict:
    """`anvil train` in a child process (resumes when run_dir holds a checkpoint); its CPU time."""
    before = os.times()
    cmd = [sys.executable, "-m", "launch.cli", "train", config, f"run_dir={run_dir}", f"train.steps={steps}"]
    start = time.perf_counter()
    subprocess.run([*cmd, *overrides], check=True, cwd=ROOT)
    after = os.times()
    return {
        "command": " ".join(["anvil", *cmd[3:], *overrides]),
        "wall_s": round(time.perf_counter() - start, 1),
        "cpu_s": round(after.children_user + after.children_system - before.children_user - before.children_system, 1),
    }


def rows_for(loss: dict, tasks: dict) -> list[dict]:
    steps = f"{loss['checkpoint']}, {loss['model train tokens']:,} tokens"
    acc, se = tasks["anvil_mc acc"], tasks["anvil_mc stderr"]
    return [
        row(
            f"Learning: 10M preset ({steps}), held-out loss vs a unigram model on the same tokens",
            "loss, nats/token (held-out, lower is better)",
            f"{loss['model loss']:.2f}",
            f"{loss['unigram loss']:.2f} (unigram, add-one, fitted on the training samples)",
            f"{loss['unigram loss'] - loss['model loss']:.2f} nats/token below",
            "below the unigram model",
            loss["model loss"] < loss["unigram loss"],
        ),
        row(
            f"Learning: anvil_mc word-order multiple choice ({tasks['anvil_mc examples']} examples, "
            "lm-evaluation-harness), same checkpoint",
            "accuracy (acc +- 1 standard error)",
            f"{acc:.3f} +- {se:.3f}",
            "0.250 (chance, 4 choices)",
            f"{acc / 0.25:.1f}x chance",
            "acc - 2 se > chance",
            bool(tasks["above chance (acc - 2 se > 0.25)"]),
        ),
    ]


def main() -> int:
    rec = Recorder("learning")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs/train/10m.yaml"))
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"training steps (default {DEFAULT_STEPS})")
    ap.add_argument(
        "--run-dir", default=None, help="run folder (default: benchmarks/.cache/learning-10m-sSTEPS, resumed if there)"
    )
    ap.add_argument("--no-train", action="store_true", help="compare the run folder's latest checkpoint only")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for the training run")
    args = ap.parse_args()
    if args.steps < 1:
        ap.error(f"--steps must be at least 1, got {args.steps}")
    from framework.runtime import print_table

    run_dir = args.run_dir or str(ROOT / "benchmarks" / ".cache" / f"learning-10m-s{args.steps}")
    record: dict = {"run_dir": run_dir}
    if not args.no_train:
        record["training"] = train(args.config, run_dir, args.steps, args.overrides)
    elif not Path(run_dir).is_dir():
        ap.error(f"--no-train: {run_dir} is not a run folder")
    start, cpu = time.perf_counter(), time.process_time()
    loss = compare(run_dir)
    print_table([loss], title="held-out loss: trained model vs unigram")
    tasks = downstream(run_dir)
    print_table([tasks], title="downstream tasks (lm-evaluation-harness, configs/eval)")
    record.update(
        loss=loss,
        tasks=tasks,
        evaluation={"wall_s": round(time.perf_counter() - start, 1), "cpu_s": round(time.process_time() - cpu, 1)},
    )
    label = "built-in sample corpus (stdlib docstrings, package READMEs and licences; no download)"
    rec.write(record, rows_for(loss, tasks), label)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
