"""`make demo`: Anvil's whole path on CPU, stage by stage, through the public `anvil` commands.

sample corpus -> curation (filters, exact + MinHash dedup) -> tokenizer -> tokenize -> train on 2
CPU ranks through `anvil launch` -> eval -> generate -> export to Hugging Face and load back with
transformers -> micro scaling sweep (run, fit, plot) -> one HTML report.

Every stage runs real commands and reads its key figure back from the files they wrote; nothing is
taken from the repository. A stage that finished before (its marker under OUT/.done/) is reused.
`python -m launch.demo --small` runs the same stages at the smallest sizes (the CI test does this).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Sizes:
    docs: int  # sample documents
    vocab: int  # tokenizer vocabulary
    steps: int  # training steps
    sweep: str  # sweep config
    sweep_overrides: tuple[str, ...] = ()
    fit_bootstrap: int = 0  # bootstrap resamples of the sweep fit (intervals of E and the exponents)


FULL = Sizes(docs=2000, vocab=2048, steps=300, sweep="configs/sweeps/demo.yaml", fit_bootstrap=100)
SMALL = Sizes(
    docs=300,
    vocab=512,
    steps=20,
    sweep="configs/sweeps/demo.yaml",
    # one size on each side of each budget's optimum, at D/N = 10 and 16 sequences a step (not the
    # prior fit's D/N of 150-500 at 4): ~600 short steps in all
    sweep_overrides=(
        "grid.budgets=[1.0e10,2.0e10,4.0e10]",
        "grid.sizes_per_budget=2",
        "grid.min_steps=10",
        "grid.prior_fit=null",
        "grid.tokens_per_param=10",
        "grid.min_each_side=1",
        "rules.global_batch_size=16",
        "rules.micro_batch_size=16",
    ),
)


def sweep_summary(fit: dict) -> str:
    """The law, E's bootstrap interval (when resampled) and how many budgets have an isoFLOP
    optimum inside their sampled sizes: what a scaling law should show."""
    # null = not finite: a handful of tiny runs can leave a parameter unidentified (fit.json says so)
    f = {k: ("n/a" if fit[k] is None else f"{fit[k]:.3g}") for k in ("E", "A", "B", "alpha", "beta", "a")}
    text = f"L = {f['E']} + {f['A']}/N^{f['alpha']} + {f['B']}/D^{f['beta']}"
    if "ci" in fit:
        lo, hi = fit["ci"]["E"]
        text += f" (E {fit['ci']['level']:.0%} interval {lo:.2f}-{hi:.2f})"
    iso = fit.get("approach2", {}).get("parabola_in_log_N", {})
    inside = len(iso.get("budgets", []))
    text += f"; N_opt ~ C^{f['a']}; isoFLOP optimum inside the sampled sizes at {inside} of {inside + iso.get('skipped_budgets', 0)} budgets"
    return text


class Demo:
    def __init__(self, out: Path, sizes: Sizes, small: bool):
        self.out, self.sizes, self.small = out, sizes, small
        self.done = out / ".done"
        self.done.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        self.env = dict(
            os.environ,
            WANDB_MODE=os.environ.get("WANDB_MODE", "offline"),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            OMP_NUM_THREADS="1",
        )

    def anvil(self, *args: str, log: str) -> str:
        """Run `anvil ARGS` (the installed console script), tee its output to OUT/logs/LOG."""
        exe = shutil.which("anvil", path=str(Path(sys.executable).parent)) or "anvil"
        cmd = [exe, *map(str, args)]
        logs = self.out / "logs"
        logs.mkdir(exist_ok=True)
        print(f"$ anvil {' '.join(map(str, args))}", flush=True)
        proc = subprocess.run(cmd, cwd=ROOT, env=self.env, capture_output=True, text=True)
        (logs / f"{log}.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
            raise SystemExit(
                f"demo: `anvil {' '.join(map(str, args))}` failed (exit {proc.returncode}); "
                f"log: {logs / (log + '.log')}\n{tail}"
            )
        return proc.stdout

    def stage(self, name: str, fn) -> None:
        marker = self.done / f"{name}.json"
        start = time.perf_counter()
        if marker.exists():
            figure = json.loads(marker.read_text())["figure"]
            self.rows.append({"stage": name, "seconds": "reused", "result": figure})
            print(f"[demo] {name}: reused ({figure})", flush=True)
            return
        figure = fn()
        seconds = round(time.perf_counter() - start, 1)
        marker.write_text(json.dumps({"figure": figure, "seconds": seconds}))
        self.rows.append({"stage": name, "seconds": seconds, "result": figure})
        print(f"[demo] {name}: {figure} ({seconds}s)", flush=True)

    # ---- stages ------------------------------------------------------------------------------
    def sample(self) -> str:
        self.anvil("data", "sample", "--output", self.out / "raw", "--limit", self.sizes.docs, log="sample")
        n = sum(1 for f in (self.out / "raw").glob("*.jsonl") for _ in f.open())
        return f"{n} real documents"

    def curate(self) -> str:
        self.anvil(
            "data",
            "run",
            "configs/data/demo.yaml",
            f"input={self.out / 'raw'}",
            f"output={self.out / 'curated'}",
            "--workers",
            "2",
            log="curate",
        )
        stats = json.loads((self.out / "curated" / "stats.json").read_text())
        print("  funnel:")
        for step in stats["steps"]:
            dropped = ", ".join(f"{k}={v}" for k, v in sorted(step["dropped"].items())) or "-"
            print(f"    {step['name']:<22} {step['docs_in']:>6} -> {step['docs_out']:>6}   dropped: {dropped}")
        return f"{stats['docs_in']} -> {stats['docs_out']} documents"

    def split(self) -> str:
        """Hold out every 20th curated document for evaluation; the rest is training text."""
        from data_pipeline.io.readers import iter_documents

        n_train = n_held = 0
        with open(self.out / "train.jsonl", "w") as train, open(self.out / "heldout.jsonl", "w") as held:
            for i, doc in enumerate(iter_documents([str(self.out / "curated")])):
                line = json.dumps({"id": doc.id, "text": doc.text}, ensure_ascii=False) + "\n"
                if i % 20 == 19:
                    held.write(line)
                    n_held += 1
                else:
                    train.write(line)
                    n_train += 1
        return f"{n_train} training / {n_held} held-out documents"

    def tokenizer(self) -> str:
        self.anvil(
            "tokenizer",
            "train",
            self.out / "train.jsonl",
            "--vocab-size",
            self.sizes.vocab,
            "--output",
            self.out / "tokenizer.json",
            log="tokenizer",
        )
        vocab = json.loads((self.out / "tokenizer.json").read_text())["model"]["vocab"]
        return f"vocabulary {len(vocab)}"

    def tokenize(self) -> str:
        counts = []
        for name in ("train", "heldout"):
            self.anvil(
                "data",
                "tokenize",
                self.out / f"{name}.jsonl",
                "--tokenizer",
                self.out / "tokenizer.json",
                "--output-prefix",
                self.out / "tokens" / name,
                "--workers",
                "2",
                log=f"tokenize_{name}",
            )
            side = json.loads((self.out / "tokens" / f"{name}.json").read_text())
            counts.append(f"{side.get('tokens', side.get('num_tokens')):,} {name}")
        return " + ".join(counts) + " tokens"

    def train_overrides(self) -> list[str]:
        vocab = json.loads((self.out / "tokens" / "train.json").read_text()).get("vocab_size", self.sizes.vocab)
        return [
            f"run_dir={self.out / 'run'}",
            f"data.paths=[{self.out / 'tokens' / 'train'}]",
            f"data.tokenizer={self.out / 'tokenizer.json'}",
            f"model.vocab_size={vocab}",
            f"train.steps={self.sizes.steps}",
            f"eval.include_path={ROOT / 'configs' / 'eval'}",
            f"eval.interval={max(1, self.sizes.steps // 4)}",
            f"eval.limit={200 if not self.small else 40}",
        ]

    def train(self) -> str:
        self.anvil("launch", "--nproc-per-node", "2", "configs/train/demo.yaml", *self.train_overrides(), log="train")
        metrics = [json.loads(l) for l in (self.out / "run" / "metrics.jsonl").open()]
        losses = [m["loss"] for m in metrics if "loss" in m]
        self.plot_curves(metrics)
        acc = [m["eval/anvil_mc/acc"] for m in metrics if "eval/anvil_mc/acc" in m]
        task = f"; in-loop anvil_mc acc {acc[0]:.2f} -> {acc[-1]:.2f} (chance 0.25)" if acc else ""
        return f"loss {losses[0]:.2f} -> {losses[-1]:.2f} over {self.sizes.steps} steps on 2 ranks{task}"

    def evaluate(self) -> str:
        out = self.out / "eval.json"
        self.anvil(
            "eval",
            "--checkpoint",
            self.out / "run",
            "--data",
            self.out / "tokens" / "heldout",
            "--output",
            out,
            log="eval",
        )
        result = json.loads(out.read_text())
        return f"held-out loss {result['loss']:.3f}, perplexity {result['perplexity']:.1f}"

    def generate(self) -> str:
        text = self.anvil(
            "generate",
            "--checkpoint",
            self.out / "run",
            "--prompt",
            "The module",
            "--max-new-tokens",
            "40",
            "--temperature",
            "0",
            log="generate",
        )
        (self.out / "sample.txt").write_text("The module" + text)
        return repr(("The module" + text.strip())[:60])

    def export(self) -> str:
        self.anvil("export", "hf", "--checkpoint", self.out / "run", "--output", self.out / "hf", log="export")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(self.out / "hf")
        tok = AutoTokenizer.from_pretrained(self.out / "hf")
        ids = tok("The module provides functions", return_tensors="pt").input_ids
        with torch.no_grad():
            loss = model(ids, labels=ids).loss.item()
        return f"{type(model).__name__} loads in transformers (loss {loss:.2f} on a test sentence)"

    def sweep(self) -> str:
        sweep_dir = self.out / "sweep"
        self.anvil(
            "sweep", "run", self.sizes.sweep, f"output_dir={sweep_dir}", *self.sizes.sweep_overrides, log="sweep_run"
        )
        self.anvil(
            "sweep",
            "fit",
            sweep_dir / "results.csv",
            "--output",
            sweep_dir / "fit.json",
            "--plot",
            sweep_dir / "fit.png",
            "--bootstrap",
            str(self.sizes.fit_bootstrap),
            log="sweep_fit",
        )
        self.anvil(
            "sweep",
            "plot",
            sweep_dir / "results.csv",
            "--fit",
            sweep_dir / "fit.json",
            "--output",
            sweep_dir / "plots",
            log="sweep_plot",
        )
        fit = json.loads((sweep_dir / "fit.json").read_text())
        runs = sum(1 for _ in (sweep_dir / "results.csv").open()) - 1
        return f"{runs} runs; " + sweep_summary(fit)

    # ---- report ------------------------------------------------------------------------------
    def plot_curves(self, metrics: list[dict]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        task = [(m["step"], m["eval/anvil_mc/acc"]) for m in metrics if "eval/anvil_mc/acc" in m]
        fig, axes = plt.subplots(1, 2 if task else 1, figsize=(10 if task else 6, 3.5), squeeze=False)
        ax = axes[0][0]
        train = [(m["step"], m["loss"]) for m in metrics if "loss" in m]
        val = [(m["step"], m["val_loss"]) for m in metrics if "val_loss" in m]
        ax.plot(*zip(*train), label="train loss")
        if val:
            ax.plot(*zip(*val), "o-", label="validation loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend()
        if task:  # the in-loop lm-eval task (eval.tasks), scored on the live model
            ax = axes[0][1]
            ax.plot(*zip(*task), "o-", color="tab:green", label="anvil_mc acc (in-loop)")
            ax.axhline(0.25, color="grey", linestyle="--", label="chance")
            ax.set_xlabel("step")
            ax.set_ylabel("accuracy")
            ax.legend()
        fig.tight_layout()
        fig.savefig(self.out / "training_curves.png", dpi=100)
        plt.close(fig)

    def report(self) -> Path:
        rows = "".join(
            f"<tr><td>{html.escape(str(r['stage']))}</td><td>{r['seconds']}</td>"
            f"<td>{html.escape(str(r['result']))}</td></tr>"
            for r in self.rows
        )
        links = []
        for rel, label in [("curated/report.html", "Curation report"), ("sweep/plots/report.html", "Sweep report")]:
            if (self.out / rel).exists():
                links.append(f'<li><a href="{rel}">{label}</a></li>')
        images = "".join(
            f'<h2>{label}</h2><img src="{rel}" alt="{label}" '
            f'onload="this.setAttribute(\'data-loaded\', this.naturalWidth)">'
            for rel, label in [("training_curves.png", "Training curves"), ("sweep/fit.png", "Scaling-law fit")]
            if (self.out / rel).exists()
        )
        sample = (self.out / "sample.txt").read_text() if (self.out / "sample.txt").exists() else ""
        page = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>Anvil demo</title>"
            "<style>img{max-width:100%;height:auto}</style></head><body>"
            f"<h1>Anvil demo</h1><table border='1'><tr><th>stage</th><th>seconds</th><th>result</th></tr>"
            f"{rows}</table><ul>{''.join(links)}</ul>{images}<h2>Sample text</h2><pre>{html.escape(sample)}</pre>"
            f"</body></html>"
        )
        path = self.out / "report.html"
        path.write_text(page)
        return path


def check_report_in_chromium(report: Path, chromium: str | None = None) -> list[str]:
    """Open the report in headless Chromium; return the images that did not load (empty = all good).

    Each <img> records its natural width on load; Chromium's dumped DOM shows which ones did."""
    chromium = chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise FileNotFoundError("chromium not found (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--allow-file-access-from-files",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=10000",
                "--dump-dom",
                report.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    images = re.findall(r"<img [^>]*>", proc.stdout)
    if not images:
        return [f"no images in the rendered page (chromium exit {proc.returncode}): {proc.stderr[-300:]}"]
    return [img for img in images if not re.search(r'data-loaded="[1-9]', img)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launch.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="demo_output", help="demo folder (default demo_output)")
    parser.add_argument("--small", action="store_true", help="smallest sizes (what the CI test runs)")
    parser.add_argument("--fresh", action="store_true", help="redo every stage")
    parser.add_argument(
        "--check-report",
        action="store_true",
        help="only open OUTPUT/report.html in headless Chromium and check every image loads",
    )
    args = parser.parse_args(argv)
    if args.check_report:
        broken = check_report_in_chromium(Path(args.output) / "report.html")
        print("report: every image loads in headless Chromium" if not broken else f"report: broken: {broken}")
        return 1 if broken else 0
    out = Path(args.output).resolve()
    if args.fresh and out.exists():
        shutil.rmtree(out)
    demo = Demo(out, SMALL if args.small else FULL, args.small)
    for name in (
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
        demo.stage(name, getattr(demo, name))
    report = demo.report()
    from framework.runtime import print_table

    print_table(demo.rows, title="Anvil demo")
    print(f"report: {report}")
    if shutil.which("chromium") or shutil.which("chromium-browser"):
        broken = check_report_in_chromium(report)
        print("report opens in headless Chromium with every image" if not broken else f"report: broken: {broken}")
        return 1 if broken else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
