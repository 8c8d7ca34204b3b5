"""Pictures of a scaling-law fit: isoFLOP curves, the compute-optimal frontier, L(N, D) contours.

`plot_fit` draws the three panels into one PNG (`anvil sweep fit --plot`); `write_report` writes
each panel as its own PNG plus report.html with the fitted law and a table of the points
(`anvil sweep plot`). matplotlib runs headless (Agg).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from framework.scaling.fit import Points, group_budgets


def _law(fit: dict):
    def loss(N, D):
        return (
            fit["E"] + fit["A"] / np.asarray(N, float) ** fit["alpha"] + fit["B"] / np.asarray(D, float) ** fit["beta"]
        )

    def n_opt(C):
        return fit["G"] * (np.asarray(C, float) / 6) ** fit["a"]

    return loss, n_opt


def _isoflop_panel(ax, points: Points, fit: dict) -> None:
    import matplotlib

    loss, n_opt = _law(fit)
    labels = group_budgets(points.C)
    cmap = matplotlib.colormaps["viridis"]
    lo, hi = np.log(points.C.min()), np.log(points.C.max())

    def colour(c):
        return cmap(0.0 if hi == lo else (np.log(c) - lo) / (hi - lo))

    if labels.max() < 10:  # a planned sweep: one curve per budget
        budgets = [float(np.exp(np.mean(np.log(points.C[labels == g])))) for g in range(labels.max() + 1)]
    else:  # scattered budgets (e.g. digitised points): curves at a few representative ones
        budgets = list(np.geomspace(points.C.min(), points.C.max(), 6))
    ax.scatter(points.N, points.loss, c=[colour(c) for c in points.C], s=14)
    for c in budgets:
        near = np.abs(np.log(points.C) - np.log(c)) < 0.35
        span = points.N[near] if near.any() else points.N
        n = np.geomspace(span.min() / 2, span.max() * 2, 100)
        ax.plot(n, loss(n, c / (6 * n)), color=colour(c), lw=1, label=f"C={c:.2g}")
        ax.plot([n_opt(c)], [loss(n_opt(c), c / (6 * n_opt(c)))], marker="*", color=colour(c), ms=10)
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("final loss")
    ax.set_title("isoFLOP curves (fit: lines, optimum: stars)")
    ax.legend(fontsize=7)


def _frontier_panel(ax, points: Points, fit: dict) -> None:
    loss, n_opt = _law(fit)
    ax.scatter(points.C, points.loss, s=14, c="grey", label="runs")
    c = np.geomspace(points.C.min() / 3, points.C.max() * 30, 100)
    ax.plot(c, loss(n_opt(c), c / (6 * n_opt(c))), color="C3", label="compute-optimal frontier")
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs C = 6ND")
    ax.set_ylabel("loss")
    ax.set_title(f"L*(C); N_opt = {fit['G']:.3g} (C/6)^{fit['a']:.3f}")
    ax.legend(fontsize=7)


def _contour_panel(ax, points: Points, fit: dict) -> None:
    loss, n_opt = _law(fit)
    n = np.geomspace(points.N.min() / 3, points.N.max() * 3, 120)
    d = np.geomspace(points.D.min() / 3, points.D.max() * 3, 120)
    nn, dd = np.meshgrid(n, d)
    cs = ax.contour(nn, dd, loss(nn, dd), levels=12, cmap="magma")
    ax.clabel(cs, fontsize=6, fmt="%.2f")
    c = np.geomspace((6 * nn * dd).min(), (6 * nn * dd).max(), 50)
    ax.plot(n_opt(c), c / (6 * n_opt(c)), "C0--", label="N_opt(C), D_opt(C)")
    ax.scatter(points.N, points.D, s=10, c="k", label="runs")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(n[0], n[-1])
    ax.set_ylim(d[0], d[-1])
    ax.set_xlabel("N")
    ax.set_ylabel("tokens D")
    ax.set_title("L(N, D) contours")
    ax.legend(fontsize=7)


PANELS = {"isoflop": _isoflop_panel, "frontier": _frontier_panel, "contours": _contour_panel}


def plot_fit(points: Points, fit: dict, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for ax, draw in zip(axes, PANELS.values()):
        draw(ax, points, fit)
    fig.suptitle(f"L = {fit['E']:.3f} + {fit['A']:.3g}/N^{fit['alpha']:.3f} + {fit['B']:.3g}/D^{fit['beta']:.3f}")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(points: Points, fit: dict, out_dir: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = []
    for name, draw in PANELS.items():
        fig, ax = plt.subplots(figsize=(6.4, 4.8))
        draw(ax, points, fit)
        fig.tight_layout()
        fig.savefig(out_dir / f"{name}.png", dpi=110)
        plt.close(fig)
        images.append(f"{name}.png")
    keys = ("E", "A", "B", "alpha", "beta", "a", "b", "G", "objective")
    law = "".join(
        f"<tr><td>{k}</td><td>{fit[k]:.6g}</td>"
        + (
            f"<td>{fit['ci'][k][0]:.4g} .. {fit['ci'][k][1]:.4g}</td>"
            if "ci" in fit and k in fit["ci"]
            else "<td></td>"
        )
        + "</tr>"
        for k in keys
        if k in fit
    )
    rows = "".join(
        f"<tr><td>{n:,.0f}</td><td>{d:,.0f}</td><td>{c:.3g}</td><td>{l:.4f}</td></tr>"
        for n, d, c, l in zip(points.N, points.D, points.C, points.loss)
    )
    iso = html.escape(json.dumps(fit.get("approach2", {}), indent=1)[:4000])
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Anvil scaling-law fit</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{padding:2px 8px;border-bottom:1px solid #ddd}}
.panels{{display:flex;flex-wrap:wrap;gap:1%}} .panels img{{width:32%;min-width:280px;max-width:100%;height:auto}}</style></head><body>
<h1>Scaling-law fit</h1><p>L(N, D) = E + A/N<sup>alpha</sup> + B/D<sup>beta</sup>;
N<sub>opt</sub>(C) = G (C/6)<sup>a</sup>, D<sub>opt</sub>(C) = (C/6)<sup>b</sup> / G.</p>
<table><tr><th>parameter</th><th>value</th><th>CI</th></tr>{law}</table>
<div class="panels">{"".join(f'<img src="{img}" alt="{img}">' for img in images)}</div>
<h2>isoFLOP (approach 2)</h2><pre>{iso}</pre>
<h2>Points ({len(points.N)})</h2><table><tr><th>N</th><th>D</th><th>C</th><th>loss</th></tr>{rows}</table>
</body></html>"""
    report = out_dir / "report.html"
    report.write_text(page)
    return report
