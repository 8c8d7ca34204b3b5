"""report.html: one self-contained page that explains a curation run.

The funnel (documents and bytes after each step, and the CPU seconds each step took, summed over
tasks), drops by step and reason, a few example documents per reason, the language and length
histograms of the kept documents. Timings are the only part that differs between two runs of the
same recipe; they sit in elements of class `cpu`. Charts are matplotlib SVGs
inlined in the page, rendered without dates or random ids so the same stats give the same bytes.
"""

from __future__ import annotations

import html
import io
from pathlib import Path


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _charts(stats: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "anvil-report"
    import matplotlib.pyplot as plt

    steps = stats["steps"]
    names = [s["name"] for s in steps]
    charts = {}
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(names) + 1.5))
    for ax, key, label in ((axes[0], "docs_out", "documents kept"), (axes[1], "bytes_out", "MB kept")):
        values = [s.get(key, 0) / (1e6 if key == "bytes_out" else 1) for s in steps]
        ax.barh(range(len(names)), values, color="#4a7ab5")
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        ax.set_xlabel(label)
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:,.0f}" if key == "docs_out" else f" {v:,.2f}", va="center", fontsize=8)
    axes[1].set_yticks([])
    fig.suptitle("Funnel: what is left after each step")
    charts["funnel"] = _svg(fig)

    lang = stats.get("lang", {})
    if lang:
        top = list(lang.items())[:20]
        fig, ax = plt.subplots(figsize=(8, 3))
        ax.bar([k for k, _ in top], [v for _, v in top], color="#5b9e5b")
        ax.set_ylabel("documents kept")
        ax.set_title("Languages (kept documents)")
        charts["lang"] = _svg(fig)

    hist = stats.get("length_hist", {})
    if hist and sum(hist.get("docs", [])):
        edges, counts = hist["bin_start_chars"], hist["docs"]
        fig, ax = plt.subplots(figsize=(8, 3))
        ax.bar(range(len(counts)), counts, color="#b5824a")
        ticks = list(range(0, len(counts), 4))
        ax.set_xticks(ticks, [f"{edges[i]:,}" for i in ticks], rotation=30)
        ax.set_xlabel("characters (bin start, log scale)")
        ax.set_ylabel("documents kept")
        ax.set_title("Document lengths (kept documents)")
        charts["length"] = _svg(fig)
    return charts


def _cpu_cell(seconds: float, total: float) -> str:
    return f'<td class="cpu">{seconds:,.2f} ({seconds / total if total > 0 else 0.0:.0%})</td>'


def _contamination(stats: dict, examples: dict) -> str:
    """Per benchmark (evaluation file): documents that shared an n-gram with it, and examples."""
    if "contamination" not in stats:
        return ""
    esc = html.escape
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{v:,}</td></tr>" for k, v in stats["contamination"].items())
    items = []
    for by_reason in examples.values():
        for reason, found in sorted(by_reason.items()):
            if reason.startswith("contamination:"):
                items.append(f"<h3>{esc(reason.split(':', 1)[1])}</h3>")
                items += [f"<p>{esc(str(e['id']))}: <code>{esc(e['text'])}</code></p>" for e in found]
    return (
        f"<h2>Benchmark contamination</h2><table><tr><th>benchmark (file)</th><th>documents matched</th></tr>"
        f"{rows}</table>{''.join(items)}"
    )


def write_report(stats: dict, examples: dict, path: str | Path) -> Path:
    charts = _charts(stats)
    esc = html.escape
    rows = []
    for s in stats["steps"]:
        for reason, n in sorted(s["dropped"].items(), key=lambda kv: -kv[1]):
            share = n / max(s["docs_in"], 1)
            rows.append(f"<tr><td>{esc(s['name'])}</td><td>{esc(reason)}</td><td>{n:,}</td><td>{share:.1%}</td></tr>")
    ex_html = []
    for step, by_reason in examples.items():
        for reason, items in sorted(by_reason.items()):
            ex_html.append(f"<h3>{esc(step)} / {esc(reason)}</h3>")
            for item in items:
                ex_html.append(
                    f"<details><summary>{esc(str(item['id']))}</summary><pre>{esc(item['text'])}</pre></details>"
                )
    cpu_total = sum(s.get("seconds", 0.0) for s in stats["steps"])
    funnel_rows = "".join(
        f"<tr><td>{esc(s['name'])}</td><td>{s['docs_in']:,}</td><td>{s['docs_out']:,}</td>"
        f"<td>{s.get('bytes_out', 0) / 1e6:,.2f}</td>{_cpu_cell(s.get('seconds', 0.0), cpu_total)}"
        f"<td>{esc(', '.join(f'{k}: {v:,}' for k, v in s.get('edits', {}).items()))}</td></tr>"
        for s in stats["steps"]
    )
    skipped = stats.get("skipped_records") or {}
    contamination = _contamination(stats, examples)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Anvil curation report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}pre{{white-space:pre-wrap;background:#f6f6f6;padding:6px}}</style>
</head><body>
<h1>Curation report</h1>
<p>{stats['docs_in']:,} records in, {stats['docs_out']:,} documents kept
({stats['docs_out'] / max(stats['docs_in'], 1):.1%}), {stats.get('bytes_out', 0) / 1e6:,.2f} MB of text out,
from {stats.get('shards', 0)} input shards.{' Skipped records (not documents): ' + esc(', '.join(f'{k}: {v:,}' for k, v in skipped.items())) if skipped else ''}</p>
<h2>Funnel</h2>{charts['funnel']}
<table><tr><th>step</th><th>docs in</th><th>docs out</th><th>MB out</th><th>CPU seconds (share)</th><th>edits</th></tr>{funnel_rows}</table>
<p>CPU seconds: each step's own work summed over all tasks and workers (read: parsing the input files;
a corpus-wide step: its scans, reduce and application). Total <span class="cpu">{cpu_total:,.2f}</span> s.</p>
<h2>Drops by reason</h2>
<table><tr><th>step</th><th>reason</th><th>documents</th><th>of step input</th></tr>{''.join(rows)}</table>
{contamination}<h2>Languages</h2>{charts.get('lang', '<p>no language step in this recipe</p>')}
<h2>Lengths</h2>{charts.get('length', '<p>no documents kept</p>')}
<h2>Examples per reason</h2>{''.join(ex_html)}
</body></html>
"""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
