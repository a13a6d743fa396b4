"""bench report: one self-contained page, checked in a real browser (headless Chromium from
disk): no console error, every figure loads, a click on a column header re-sorts the table."""

import re

import numpy as np
import pandas as pd
import pytest

from bench.store import ROW_COLUMNS, RunStore
from browser import Browser, find_chromium
from helpers import run_cli


def _rows(run_id: str = "r1") -> pd.DataFrame:
    """Three methods over 6 classes and 2 seeds, one clearly best; an OOD table too."""
    rng = np.random.default_rng(0)
    out = []
    for i, method in enumerate(("mcl", "knn", "csi")):
        for c in range(6):
            for seed in (0, 1):
                row = dict.fromkeys(ROW_COLUMNS, "")
                row.update(run_id=run_id, job_id=f"{method}-{c}-{seed}", method=method,
                           score="sei" if method == "mcl" else "s", protocol="one-class",
                           protocol_version="2", dataset="fashion-mnist", normal_class=str(c),
                           ood_dataset="rest", seed=seed, metric="auroc", preset="quick",
                           value=0.95 - 0.1 * i + rng.normal(0, 0.01), config_hash=method,
                           code_version="0.1.0+abc", precision="bf16", device="cpu",
                           created_at="2026-12-01T00:00:00+00:00")
                out.append(row)
    return pd.DataFrame(out)


@pytest.fixture
def report(tmp_path, capsys):
    rows = tmp_path / "rows.csv"
    _rows().to_csv(rows, index=False)
    run = RunStore(tmp_path / "run")  # a run directory: its records name the machine
    record = {"job_id": "mcl-0-0", "run_id": "r1", "method": "mcl", "status": "done",
              "machine": "Test CPU, 2 torch threads (torch x)", "dataset": "fashion-mnist",
              "protocol": "one-class", "normal_class": 0, "seed": 0,
              "history": [{"epoch": e, "loss": 3.0 / e} for e in range(1, 4)]}
    run.write_job("mcl-0-0", record, _rows().iloc[:1], None)
    out = tmp_path / "report"
    code, stdout, err = run_cli(["report", "--rows", rows, "--runs", tmp_path / "run",
                                 "--out", out], capsys)
    assert code == 0, err
    return out / "index.html"


def test_report_is_one_self_contained_page(report):
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>")
    for section in ("Leaderboards", "Beside published numbers", "Significance", "Figures",
                    "Runs"):
        assert f">{section}</h2>" in page
    # nothing loads from elsewhere: no external script, stylesheet, image or frame
    assert not re.search(r'(src|href)="(?!data:|#)', page)
    assert "<link" not in page and "<iframe" not in page
    assert page.count('src="data:image/png;base64,') >= 3  # per-class, CD diagram, losses
    assert "Test CPU, 2 torch threads" in page and "0.1.0+abc" in page
    assert "Friedman chi2(2)" in page and "control mcl/sei" in page


@pytest.mark.skipif(find_chromium() is None, reason="chromium not installed")
def test_report_in_a_real_browser(report, tmp_path):
    with Browser() as browser:
        browser.open(report)
        n_images, loaded = browser.evaluate(
            "[document.images.length, Array.from(document.images).filter("
            "i => i.complete && i.naturalWidth > 0).length]")
        assert n_images >= 3 and loaded == n_images
        table = "document.querySelector('table.sortable')"
        first_column = (f"Array.from({table}.tBodies[0].rows).map(r => r.cells[0].textContent)")
        before = browser.evaluate(first_column)
        assert before == ["mcl/sei", "knn/s", "csi/s"]  # best mean first
        # a user's click on the "mean" header, at its place on the screen
        x, y = browser.evaluate(
            f"(() => {{ const th = Array.from({table}.tHead.rows[0].cells).find("
            "c => c.textContent === 'mean'); th.scrollIntoView(); "
            "const r = th.getBoundingClientRect(); return [r.x + r.width / 2, "
            "r.y + r.height / 2]; })()")
        browser.click(x, y)
        assert browser.evaluate(first_column) == ["mcl/sei", "knn/s", "csi/s"]  # descending
        browser.click(x, y)
        assert browser.evaluate(first_column) == ["csi/s", "knn/s", "mcl/sei"]  # ascending
        assert browser.errors() == []
        browser.screenshot(tmp_path / "shot.png")
    assert (tmp_path / "shot.png").stat().st_size > 10_000
