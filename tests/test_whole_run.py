"""The whole-run and epoch-spread benchmarks (auto vs fp32 wall times) cannot rot: tiny runs in
CI."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_whole_run_times_auto_and_fp32_runs_and_prints_the_ratio():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "whole_run.py"), "--",
         "--methods", "rotnet,knn", "--classes", "0", "--set", "epochs=1"],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"fp32 \(rows say fp32\): .* 2 jobs", out), out
    assert re.search(r"auto \(rows say (bf16|fp32)\): .* 2 jobs", out), out
    auto, fp32, ratio = (float(re.search(rf"^{key}: ([0-9.]+)$", out, re.M).group(1))
                         for key in ("auto_wall_s", "fp32_wall_s", "whole_run_ratio"))
    assert auto > 0 and fp32 > 0
    # the three are printed rounded (2 decimals): allow exactly the rounding's worst case
    assert abs(ratio - auto / fp32) <= 0.005 + 0.005 / fp32 * (1 + auto / fp32) + 1e-9
    assert out.strip().splitlines()[-1].startswith("whole_run_ratio: ")


def test_whole_run_reads_the_workers_so_it_does_not_print_an_overlapping_split():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from whole_run import parallel_workers
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert parallel_workers([]) == 1
    assert parallel_workers(["--classes", "0", "--workers", "2"]) == 2
    assert parallel_workers(["--workers=3"]) == 3


@pytest.mark.slow
def test_epoch_spread_prints_each_process_and_the_ratio_of_the_medians():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "epoch_spread.py"), "--method", "rotnet",
         "--epochs", "3", "--processes", "2", "--", "--set", "backbone=resnet-tiny"],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for precision in ("auto", "fp32"):
        per_process = re.search(rf"^{precision}: median epoch per process (.*) ms;", out, re.M)
        assert per_process and len(per_process.group(1).split(", ")) == 2, out
    auto, fp32, ratio = (float(re.search(rf"^{key}: ([0-9.]+)$", out, re.M).group(1))
                         for key in ("auto_epoch_ms", "fp32_epoch_ms", "epoch_ratio"))
    assert auto > 0 and fp32 > 0
    assert abs(ratio - auto / fp32) <= 0.005 + 0.05 / fp32 * (1 + auto / fp32) + 1e-9
