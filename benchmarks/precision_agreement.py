"""bf16 against fp32 on the committed rows: the same jobs (precision is not part of a job's
identity, so a job id names the same job under both) paired by job, score and normal class;
mean AUROC (%) per seed over the normal classes, then over the seeds. A method/score holds
when the two means differ by at most 1.5 points or twice the larger std over seeds.

    python benchmarks/precision_agreement.py                 # results/rows, the committed rows
    python benchmarks/precision_agreement.py --rows DIR      # another rows folder, same layout

Reads `DIR/*.csv` and `DIR/precision/auto/*.csv` (auto side) against
`DIR/precision/fp32/*.csv`; prints one markdown table per data set and exits 1 if a pair does
not hold.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

FLOOR_POINTS = 1.5  # the least difference allowed, in AUROC points
STD_FACTOR = 2.0  # or this many times the larger std over seeds


def _read(files: list[Path]) -> pd.DataFrame:
    frames = [pd.read_csv(f, dtype={"features": str, "variant": str}) for f in files]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if rows.empty:
        return rows
    rows = rows[rows.metric == "auroc"]
    return rows.drop_duplicates(["job_id", "score", "normal_class", "ood_dataset"])


def agreement(rows_dir: Path) -> dict[str, pd.DataFrame]:
    """Per data set: method/score, seeds, auto, fp32, difference, allowed, holds."""
    auto = _read(sorted(rows_dir.glob("*.csv")) + sorted((rows_dir / "precision" / "auto")
                                                         .glob("*.csv")))
    fp32 = _read(sorted((rows_dir / "precision" / "fp32").glob("*.csv")))
    if auto.empty or fp32.empty:
        sys.exit(f"{rows_dir}: no rows on one side (auto: {len(auto)}, fp32: {len(fp32)})")
    keys = ["job_id", "score", "normal_class", "ood_dataset"]
    both = fp32.merge(auto, on=keys, suffixes=("_fp32", "_auto"))
    both = both[both.precision_auto != "fp32"]
    alone = sorted(set(fp32.job_id) - set(both.job_id))
    if alone:  # a job id is the job's config: other ids mean other code made one side
        sys.exit(f"{rows_dir}: {len(alone)} fp32 jobs have no auto row of the same job (e.g. "
                 f"{alone[0]}): the two sides were made by code whose jobs differ; make both "
                 "again (bench reproduce experiments/precision-fp32.toml "
                 "experiments/precision-auto.toml and the auto experiments they pair with)")
    tables = {}
    for dataset, part in both.groupby("dataset_fp32"):
        part = part.assign(entry=part.method_fp32 + "/" + part.score)
        per_seed = part.groupby(["entry", "seed_fp32"])[["value_auto", "value_fp32"]].mean() * 100
        out = []
        for entry, seeds in per_seed.groupby(level=0, sort=False):
            std = seeds.std(ddof=1).max() if len(seeds) > 1 else 0.0
            auto_mean, fp32_mean = seeds.value_auto.mean(), seeds.value_fp32.mean()
            allowed = max(FLOOR_POINTS, STD_FACTOR * std)
            out.append({"method/score": entry, "seeds": len(seeds),
                        "classes": part[part.entry == entry].normal_class.nunique(),
                        "auto": auto_mean, "fp32": fp32_mean,
                        "difference": auto_mean - fp32_mean, "allowed": allowed,
                        "holds": abs(auto_mean - fp32_mean) <= allowed})
        tables[dataset] = pd.DataFrame(out)
    return tables


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="results/rows", type=Path)
    args = parser.parse_args()
    ok = True
    for dataset, table in agreement(args.rows).items():
        print(f"| {dataset} | seeds | classes | auto | fp32 | difference | allowed | holds |")
        print("|---|---|---|---|---|---|---|---|")
        for r in table.itertuples():
            print(f"| {r[1]} | {r.seeds} | {r.classes} | {r.auto:.1f} | {r.fp32:.1f} | "
                  f"{r.difference:+.1f} | {r.allowed:.1f} | {'yes' if r.holds else 'NO'} |")
        print()
        ok = ok and bool(table.holds.all())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
