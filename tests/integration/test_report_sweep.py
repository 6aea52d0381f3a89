"""Reviewing a real 2x3 sweep: `python -m esper.report` over its directory prints the table and
renders one self-contained HTML file, which a real headless Chromium opens with every image
loaded and the results table shown; the W&B Report for the same sweep is built up to the
object it would save (no server is reachable here)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, own_env, run_cli

pytestmark = pytest.mark.slow  # a 6-job sweep in a subprocess
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    result = run_cli(
        "-m",
        f"hydra.sweep.dir={root / 'sweep'}",
        "policy=none,random",
        "seed=0,1,2",
        "trainer.max_epochs=12",
        "trainer.quiet=true",
        cwd=root,
        env={"ESPER_KERNEL_STORE": str(root / "kernels")},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[epoch" not in result.stdout, "quiet: no adaptation lines on the console"
    return root / "sweep"


@pytest.fixture(scope="module")
def report(sweep: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("report")
    result = subprocess.run(
        [sys.executable, "-m", "esper.report", str(sweep), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=own_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


def test_the_table_has_a_row_per_policy_over_three_seeds(sweep: Path, report) -> None:
    _, stdout = report
    rows = [line for line in stdout.splitlines() if line.startswith("| policy=")]
    assert [r.split("|")[1].strip() for r in rows] == ["policy=none", "policy=random"]
    assert all("| 0,1,2 |" in r for r in rows)
    summaries = [json.loads(p.read_text()) for p in sweep.glob("*/summary.json")]
    assert len(summaries) == 6 and all(s["status"] == "completed" for s in summaries)
    grown = [s for s in summaries if s["choices"]["policy"] == "random"]
    assert all(s["adaptations"] for s in grown), "the random runs grew"


def test_the_html_is_self_contained_and_the_pngs_are_written(report) -> None:
    out, _ = report
    page = (out / "report.html").read_text()
    for name in ("accuracy_vs_params", "val_curves", "seed_timeline", "kernel_latency"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'id="{name}"' in page
    sources = re.findall(r'src="([^"]+)"', page)
    assert len(sources) == 4 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in page and "https://" not in page, "nothing is fetched"


def test_a_headless_browser_loads_every_image_and_the_table(report) -> None:
    if CHROMIUM is None:
        pytest.skip("no Chromium here (Debian package chromium); the browser check did not run")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    out, _ = report
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page()
        failed: list[str] = []
        page.on("requestfailed", lambda request: failed.append(request.url[:60]))
        page.goto((out / "report.html").as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate(
            "Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])"
        )
        cells = page.locator("#results tbody tr").evaluate_all(
            "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText))"
        )
        visible = page.locator("#results").is_visible()
        browser.close()
    assert not failed
    assert len(images) == 4
    assert all(complete and width > 100 for _, complete, width in images), images
    assert visible and [row[0] for row in cells] == ["policy=none", "policy=random"]
    assert all(re.fullmatch(r"0\.\d{4} ± 0\.\d{4}", row[2]) for row in cells)


def test_the_wandb_report_has_the_same_views() -> None:
    pytest.importorskip("wandb_workspaces", reason="the reports extra is not installed")
    from esper.report.wandb_report import build

    report = build("my-team", "esper", "2026-11-27-sweep")
    assert report.title == "Esper sweep 2026-11-27-sweep"
    grid = report.blocks[-1]
    [runset] = grid.runsets
    assert (runset.entity, runset.project) == ("my-team", "esper")
    assert runset.filters == "Metric('Group') == '2026-11-27-sweep'"
    kinds = [type(panel).__name__ for panel in grid.panels]
    assert kinds.count("ScatterPlot") == 1 and kinds.count("WeavePanelSummaryTable") == 2
    scatter = grid.panels[0]
    assert (scatter.x.name, scatter.y.name) == ("params/seeds", "metrics/test_accuracy")
    assert {p.table_name for p in grid.panels if hasattr(p, "table_name")} == {
        "adaptations",
        "seed_timeline",
    }
    queried = {y for p in grid.panels if type(p).__name__ == "LinePlot" for y in p.y}
    assert "val/accuracy" in queried
    bars = next(p for p in grid.panels if type(p).__name__ == "BarPlot")
    assert "kernel/residual_mlp/latency_us_p50" in bars.metrics
