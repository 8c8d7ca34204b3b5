"""OUTPUT/report.html of `anvil ladder`: the ranking, its confidence, and each corpus's frontier.

Panels (PNG files beside the page, matplotlib headless): every corpus's runs and fitted
compute-optimal frontier on one loss-vs-compute plot with the target and the bootstrap intervals
marked; p_correct and the predicted losses against the compute used for the decision; one
isoFLOP panel per corpus (`framework.scaling.plot`'s). Images sit in a grid whose cells shrink
with the window, so no panel is wider than the page.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from framework.scaling.fit import Points
from framework.scaling.ladder_stats import CorpusRuns, law_from_fit, predict
from framework.scaling.plot import PANELS

CSS = """body{font-family:sans-serif;margin:2em;max-width:1400px}
td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}
.panels{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:12px}
.panels img{width:100%;height:auto}"""


def _fmt(x, spec: str = ".4f") -> str:
    return "n/a" if x is None else format(x, spec)


def _frontier_panel(ax, ladder: dict, corpora: list[CorpusRuns], fits: dict) -> None:
    target = ladder["target_flops"]
    c_min = min(float(r.C.min()) for r in corpora)
    grid = np.geomspace(c_min / 2, max(target, c_min) * 2, 80)
    for i, runs in enumerate(corpora):
        colour = f"C{i}"
        ax.scatter(runs.C, runs.loss, s=14, color=colour, alpha=0.7)
        law = law_from_fit(fits[runs.name], len(runs.N))
        r_star = (fits[runs.name].get("repetition") or {}).get("R_star")
        curve = [predict(law, c, runs.unique_tokens, r_star) for c in grid]
        ax.plot(grid, curve, color=colour, label=runs.name)
        pred, (lo, hi) = ladder["predicted_loss"][runs.name], ladder["interval"][runs.name]
        if pred is not None and lo is not None:
            x = target * (1 + 0.06 * i)  # side by side, not on top of each other
            ax.errorbar([x], [pred], yerr=[[pred - lo], [hi - pred]], color=colour, capsize=4, marker="o")
    ax.axvline(target, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs C = 6ND")
    ax.set_ylabel("held-out loss")
    ax.set_title(f"frontiers; target {target:.3g} FLOPs (bars: {ladder['level']:.0%} interval)")
    ax.legend(fontsize=7)


def _compute_panel(ax, ladder: dict) -> None:
    levels = [e for e in ladder["by_compute"] if e.get("ranking")]
    ax.plot([e["max_flops"] for e in levels], [e["p_correct"] for e in levels], "o-", color="C3")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("largest training compute used (FLOPs)")
    ax.set_ylabel("p_correct")
    stable = ladder.get("stable_from_flops")
    if stable:
        ax.axvline(stable, color="grey", ls=":", lw=1, label=f"stable from {stable:.3g}")
        ax.legend(fontsize=7)
    ax.set_title("confidence in the ranking vs compute")


def _predictions_panel(ax, ladder: dict) -> None:
    levels = [e for e in ladder["by_compute"] if e.get("ranking")]
    for i, name in enumerate(sorted(ladder["predicted_loss"])):
        xs, ys, lo, hi = [], [], [], []
        for e in levels:
            p, (a, b) = e["predicted_loss"].get(name), e["interval"].get(name, [None, None])
            if p is None or a is None:
                continue
            xs.append(e["max_flops"] * (1 + 0.04 * i))  # side by side, not on top of each other
            ys.append(p)
            lo.append(p - a)
            hi.append(b - p)
        ax.errorbar(xs, ys, yerr=[lo, hi], color=f"C{i}", marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("largest training compute used (FLOPs)")
    ax.set_ylabel("predicted loss at target")
    ax.set_title("prediction at the target vs compute")
    ax.legend(fontsize=7)


def write_report(ladder: dict, corpora: list[CorpusRuns], fits: dict, out_dir: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    panels = [
        ("frontiers.png", lambda ax: _frontier_panel(ax, ladder, corpora, fits)),
        ("p_correct.png", lambda ax: _compute_panel(ax, ladder)),
        ("predictions.png", lambda ax: _predictions_panel(ax, ladder)),
    ]
    for runs in corpora:
        points = Points(runs.N, runs.D, runs.loss, runs.C)
        panels.append((f"isoflop_{runs.name}.png", lambda ax, p=points, n=runs.name: _isoflop(ax, p, fits[n], n)))
    for name, draw in panels:
        fig, ax = plt.subplots(figsize=(6.4, 4.8))
        draw(ax)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
    rows = "".join(
        f"<tr><td>{i + 1}</td><td>{html.escape(n)}</td><td>{_fmt(ladder['predicted_loss'][n])}</td>"
        f"<td>{_fmt(ladder['interval'][n][0])} .. {_fmt(ladder['interval'][n][1])}</td>"
        f"<td>{ladder['runs'][n]}</td><td>{ladder['corpora'][n]['train_tokens']:,}</td>"
        f"<td>{ladder['corpora'][n]['max_epochs']:.2f}</td></tr>"
        for i, n in enumerate(ladder["ranking"])
    )
    levels = "".join(
        f"<tr><td>{e['max_flops']:.3g}</td><td>{', '.join(f'{k}: {v}' for k, v in e['runs'].items())}</td>"
        f"<td>{html.escape(', '.join(e['ranking']) if e.get('ranking') else e.get('note', 'too few runs'))}</td>"
        f"<td>{_fmt(e.get('p_correct'), '.2f')}</td></tr>"
        for e in ladder["by_compute"]
    )
    stable = ladder.get("stable_from_flops")
    held = ladder["heldout"]
    tasks = "".join(_task_table(name, task, ladder["target_flops"]) for name, task in ladder.get("tasks", {}).items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Anvil ladder</title>
<style>{CSS}</style></head><body>
<h1>Data ladder: which corpus is better at {ladder['target_flops']:.3g} FLOPs</h1>
<p>Ranking (best, i.e. lowest predicted held-out loss, first): <b>{html.escape(', '.join(ladder['ranking']))}</b>;
probability that this ranking is right (bootstrap over runs, {ladder['bootstrap']} resamples):
<b>p_correct = {_fmt(ladder['p_correct'], '.3f')}</b>.
{f'The ranking has not changed since the runs up to {stable:.3g} FLOPs.' if stable else 'The ranking changed at the last compute level: not yet stable.'}</p>
<p>Every run is scored on the same {', '.join(f'{t:,}' for t in held['scored_tokens'])} held-out tokens ({held['documents']:,} documents of
{html.escape(', '.join(held['from']))}, drawn by id; those ids left every corpus's training set), with one tokenizer
trained on the union of the corpora.</p>
<table><tr><th>rank</th><th>corpus</th><th>predicted loss</th><th>{ladder['level']:.0%} interval</th><th>runs</th>
<th>training tokens</th><th>max epochs</th></tr>{rows}</table>
<div class="panels">{''.join(f'<img src="{name}" alt="{name}">' for name, _ in panels)}</div>
<h2>Decision by compute</h2>
<table><tr><th>runs up to (FLOPs)</th><th>runs per corpus</th><th>ranking (best first)</th><th>p_correct</th></tr>{levels}</table>
{tasks}</body></html>"""
    report = out_dir / "report.html"
    report.write_text(page)
    return report


def _task_table(name: str, task: dict, target: float) -> str:
    """One task metric: each corpus's score at its largest compute and the sigmoid-of-loss prediction."""
    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{_fmt(e['at_largest_compute'])} ({e['largest_compute']:.3g} FLOPs)</td>"
        f"<td>{_fmt(e['predicted'])}{' (extrapolated)' if e.get('extrapolated') else ''}</td>"
        f"<td>{' .. '.join(_fmt(v) for v in e['interval']) if e['interval'] else html.escape(e.get('note', ''))}</td>"
        f"<td>{e['runs']}</td></tr>"
        for c, e in task["corpora"].items()
    )
    better = "higher" if task["higher_is_better"] else "lower"
    return (
        f"<h2>Task {html.escape(name)} ({better} is better)</h2><p>Predicted at {target:.3g} FLOPs from each corpus's "
        f"predicted loss through a sigmoid of the metric in loss fitted on its runs; ranking: "
        f"<b>{html.escape(', '.join(task['ranking']) or 'n/a')}</b>.</p>"
        "<table><tr><th>corpus</th><th>at the largest compute trained</th><th>predicted at the target</th>"
        f"<th>interval</th><th>runs</th></tr>{rows}</table>"
    )


def _isoflop(ax, points: Points, fit: dict, name: str) -> None:
    PANELS["isoflop"](ax, points, fit)
    ax.set_title(f"{name}: isoFLOP curves (fit: lines, optimum: stars)", fontsize=9)
