"""Wall time of a whole `bench run` under `--precision auto` against `--precision fp32`, back to
back in one invocation, each into a fresh run directory (nothing resumed, nothing shared).

By default it times the default run (digits, every method, quick preset). The ratio it prints is auto / fp32 wall time; below it, the same split into the self-supervised
networks' jobs (train + scoring seconds recorded in the rows) and everything else (classical
methods, data, start-up), which shows where a ratio above the network's own comes from.

    python benchmarks/whole_run.py                                    # the default bench run
    python benchmarks/whole_run.py --rounds 2                         # auto, fp32, fp32, auto
    python benchmarks/whole_run.py -- --datasets fashion-mnist --no-download --classes 0,4,6
    python benchmarks/whole_run.py -- --workers 2                     # 2 jobs at once, 1 thread each

Everything after `--` is passed to `bench run` unchanged (both precisions get the same args).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, os.path.dirname(__file__))
from _common import bench_run, cpu_name  # noqa: E402

NETWORK_METHODS = ("mcl", "csi", "simclr", "rotnet")


def one_run(precision: str, bench_args: list[str], workdir: Path) -> dict:
    """Run `bench run` once into a fresh directory; its wall time and the rows' per-job split."""
    out, wall = bench_run(precision, bench_args, workdir)
    rows = pd.read_csv(out / "results.csv").drop_duplicates("job_id")
    seconds = rows["train_seconds"].fillna(0) + rows["eval_seconds"].fillna(0)
    per_method = seconds.groupby(rows["method"]).sum()
    network = float(per_method[per_method.index.isin(NETWORK_METHODS)].sum())
    return {"wall": wall, "network": network, "jobs": len(rows), "per_method": per_method,
            "chosen": sorted(rows["precision"].astype(str).unique())}


def parallel_workers(bench_args: list[str]) -> int:
    """The --workers the runs were given (1 when not given)."""
    for i, arg in enumerate(bench_args):
        if arg == "--workers" and i + 1 < len(bench_args) and bench_args[i + 1].isdigit():
            return int(bench_args[i + 1])
        if arg.startswith("--workers=") and arg.split("=", 1)[1].isdigit():
            return int(arg.split("=", 1)[1])
    return 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1,
                        help="pairs of runs; the order alternates (auto first, then fp32 first)")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER,
                        help="arguments for bench run, after --")
    args = parser.parse_args()
    bench_args = [a for a in args.bench_args if a != "--"]

    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs")
    print(f"bench run {' '.join(bench_args) or '(defaults)'}")
    results: dict[str, list[dict]] = {"auto": [], "fp32": []}
    with tempfile.TemporaryDirectory(prefix="whole-run-") as tmp:
        for r in range(args.rounds):
            order = ("auto", "fp32") if r % 2 == 0 else ("fp32", "auto")
            for precision in order:
                res = one_run(precision, bench_args, Path(tmp))
                results[precision].append(res)
                print(f"round {r + 1} {precision:4s} (rows say {'/'.join(res['chosen'])}): "
                      f"{res['wall']:7.1f} s wall, {res['network']:7.1f} s in the network jobs, "
                      f"{res['jobs']} jobs", flush=True)

    def best(precision: str, key: str) -> float:
        return min(r[key] for r in results[precision])

    print("per method, train + scoring seconds summed over its jobs (fastest round):")
    for method in results["fp32"][0]["per_method"].index:
        a = min(float(r["per_method"].get(method, 0.0)) for r in results["auto"])
        f = min(float(r["per_method"].get(method, 0.0)) for r in results["fp32"])
        print(f"  {method:10s} auto {a:7.1f} s  fp32 {f:7.1f} s"
              + (f"  ratio {a / f:.2f}" if f > 0 else ""))
    auto_wall, fp32_wall = best("auto", "wall"), best("fp32", "wall")
    auto_net, fp32_net = best("auto", "network"), best("fp32", "network")
    print(f"network jobs (train + scoring): auto {auto_net:.1f} s, fp32 {fp32_net:.1f} s, "
          f"ratio {auto_net / fp32_net:.2f}")
    workers = parallel_workers(bench_args)
    if workers > 1:  # the jobs' seconds overlap: wall minus their sum means nothing
        print(f"everything else: not shown ({workers} workers ran jobs at once)")
    else:
        print(f"everything else: auto {auto_wall - auto_net:.1f} s, "
              f"fp32 {fp32_wall - fp32_net:.1f} s")
    print(f"auto_wall_s: {auto_wall:.2f}")
    print(f"fp32_wall_s: {fp32_wall:.2f}")
    print(f"whole_run_ratio: {auto_wall / fp32_wall:.2f}")


if __name__ == "__main__":
    main()
