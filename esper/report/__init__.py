"""Reviewing a sweep: `python -m esper.report <sweep dir ... | entity/project/group>`.

Offline (sweep directories): prints the results table and writes one self-contained HTML file
with the figures (and the PNGs beside it). Online (a W&B group): builds and saves a W&B Report
with the same views as live panels.
"""

from esper.report.runs import load_runs
from esper.report.table import labels, rows, table

__all__ = ["labels", "load_runs", "rows", "table"]
