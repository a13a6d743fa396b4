"""Wall time of N independent quick jobs on 1 and on 2 local workers, side by side in one run.

Each configuration runs the same jobs (MCL, quick preset, one-class digits, N normal classes) into
its own fresh run directory; the last line is `speedup_2_workers: <t1 / t2>`.

    python benchmarks/scaling.py            # N = 4 classes, about 2 minutes on 2 cores
    python benchmarks/scaling.py --jobs 8 --workers 1,2,4
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=4, help="one-class jobs (normal classes)")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--method", default="mcl")
    p.add_argument("--epochs", type=int, default=20)
    args = p.parse_args()
    classes = f"0-{args.jobs - 1}"
    times = {}
    for w in (int(x) for x in args.workers.split(",")):
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "-m", "bench", "run", "--methods", args.method, "--datasets",
                   "digits", "--classes", classes, "--preset", "quick", "--out", out,
                   "--set", f"epochs={args.epochs}", "--workers", str(w)]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times[w] = time.perf_counter() - t0
        print(f"{w} worker(s): {args.jobs} jobs in {times[w]:.1f} s", flush=True)
    if 1 in times and 2 in times:
        print(f"speedup_2_workers: {times[1] / times[2]:.2f}")


if __name__ == "__main__":
    main()
