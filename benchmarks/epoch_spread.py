"""How much one job's epoch time varies from process to process, under auto and under fp32.

Runs the same short quick-preset job (`bench run --methods M --classes C --set epochs=E`) in a
fresh process again and again, alternating `--precision auto` and `--precision fp32`, each into a
fresh run directory, and reads the median epoch (the first two skipped) from the job's record.
On a small shared machine the same job's epochs differ between processes by more than a
precision's gain between two single runs; the ratio of the medians over processes is the
in-job figure to compare with `benchmarks/train_throughput.py`.

    python benchmarks/epoch_spread.py                        # mcl, digits class 0, 5 processes each
    python benchmarks/epoch_spread.py --method csi --processes 8
    python benchmarks/epoch_spread.py -- --datasets fashion-mnist --no-download
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _common import bench_run, cpu_name  # noqa: E402

SKIP_EPOCHS = 2  # the first epochs include one-off start-up costs


def median_epoch(precision: str, args, bench_args: list[str], workdir: Path) -> float:
    """The median epoch seconds of one fresh `bench run` of the job under `precision`."""
    out, _ = bench_run(precision, ["--methods", args.method, "--classes", args.classes, "--set",
                                   f"epochs={args.epochs}", *bench_args], workdir)
    records = sorted(out.glob("jobs/*/record.json"))
    if not records:
        sys.exit(f"bench run --precision {precision} wrote no job record in {out}")
    history = json.loads(records[0].read_text())["history"][SKIP_EPOCHS:]
    return statistics.median(h["seconds"] for h in history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="mcl")
    parser.add_argument("--classes", default="0", help="one normal class")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--processes", type=int, default=5, help="fresh processes per precision")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER,
                        help="more arguments for bench run, after --")
    args = parser.parse_args()
    if args.epochs <= SKIP_EPOCHS:
        parser.error(f"--epochs must be above {SKIP_EPOCHS}")
    bench_args = [a for a in args.bench_args if a != "--"]
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs")
    print(f"bench run --methods {args.method} --classes {args.classes} --set epochs={args.epochs}"
          + (f" {' '.join(bench_args)}" if bench_args else ""))
    epochs: dict[str, list[float]] = {"auto": [], "fp32": []}
    with tempfile.TemporaryDirectory(prefix="epoch-spread-") as tmp:
        for i in range(args.processes):
            for precision in (("auto", "fp32") if i % 2 == 0 else ("fp32", "auto")):
                epochs[precision].append(median_epoch(precision, args, bench_args, Path(tmp)))
    for precision, values in epochs.items():
        ms = sorted(1000 * v for v in values)
        print(f"{precision}: median epoch per process {', '.join(f'{v:.1f}' for v in ms)} ms; "
              f"spread (max / min) {ms[-1] / ms[0]:.2f}")
    auto, fp32 = (statistics.median(epochs[p]) for p in ("auto", "fp32"))
    print(f"auto_epoch_ms: {1000 * auto:.1f}")
    print(f"fp32_epoch_ms: {1000 * fp32:.1f}")
    print(f"epoch_ratio: {auto / fp32:.2f}")


if __name__ == "__main__":
    main()
