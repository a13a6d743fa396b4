"""The GPU check script cannot rot: its smoke mode runs every stage on the CPU in CI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_stage_on_cpu(tmp_path):
    # a budget no stage's estimate can exceed, so that a busy CPU does not skip one (the skips
    # themselves: the next test)
    env = {**os.environ, "OUT": str(tmp_path / "out")}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device",
                           "cpu", "--smoke", "--budget-s", "3000"], capture_output=True,
                          text=True, env=env, timeout=3000)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    over_budget = [line for line in report["skipped"] if "of the budget left" in line]
    assert not over_budget, over_budget  # --smoke skips only the compiled steps, by design
    assert {t["method"] for t in report["training"]} == {"mcl", "csi", "simclr", "rotnet", "ce"}
    assert all(t["images_per_s"] > 0 and t["gflop_per_step"] > 0 for t in report["training"])
    assert all(t["ops_per_step"] > 0 and t["host_ms"] > 0 and t["checkpoint_sync_s"] > 0
               for t in report["training"])
    assert [s["jobs_per_device"] for s in report["jobs_per_device"]] == [1, 2, 4]
    assert all(s["exit_code"] == 0 for s in report["jobs_per_device"])
    assert report["resume_after_kill"]["same_rows"]
    assert len(report["projection"]) == 5
    assert [e["exit_code"] for e in report["end_to_end"]] == [0, 0]
    assert all(e["auroc_finite"] and e["leaderboard"] for e in report["end_to_end"])
    assert set(report["benchmarks"]) == {"train_throughput", "score_throughput"}
    assert "speedup_vs_loop" in report["benchmarks"]["score_throughput"]["ratios"]
    assert "fraction_of_ceiling" in report["benchmarks"]["train_throughput"]["ratios"]
    md = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "## Training steps" in md and "## Projected" in md


def test_gpu_check_skips_stages_that_do_not_fit_the_budget(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check

    budget, skipped = gpu_check.Budget(10), []
    assert budget.fits("a", 5, skipped) and not budget.fits("b", 50, skipped)
    assert skipped and skipped[0].startswith("skipped b: needs ~50 s")
