"""The offline review: one self-contained HTML file (the figures embedded as data URIs, no
network, no account) plus the PNG files beside it."""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path
from typing import Any

from esper.report.figures import FIGURES
from esper.report.table import COLUMNS, rows

CAPTIONS = {
    "accuracy_vs_params": "Test accuracy against the parameters seeds added, a point per run.",
    "val_curves": "Validation accuracy per epoch, a panel per configuration, with adaptations.",
    "seed_timeline": "Each slot's lifecycle, a bar per state interval.",
    "kernel_latency": "Forward latency of the attached kernels, by blueprint.",
}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1.5em 0; } img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
"""


def render(runs: list[dict[str, Any]], out_dir: Path, title: str) -> Path:
    """Write the PNGs and `report.html` into `out_dir`; returns the HTML file's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    for name, draw in FIGURES.items():
        png = draw(runs, out_dir / f"{name}.png")
        data = base64.b64encode(png.read_bytes()).decode()
        figures.append(
            f'<figure id="{name}"><img alt="{name}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(CAPTIONS[name])}</figcaption></figure>"
        )
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in rows(runs)
    )
    completed = sum(r["status"] == "completed" for r in runs)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(runs)} runs ({completed} completed), generated {time.strftime("%Y-%m-%d %H:%M")} by
<code>python -m esper.report</code>. Rows group runs by their configuration less the seed
(config hash); test accuracy is mean ± std over seeds, read once at the end of each run.</p>
<h2>Results</h2>
<table id="results"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<h2>Views</h2>
{"".join(figures)}
</body></html>
"""
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
