"""Published numbers (results/reference/*.csv) and their comparison with ours, cell by cell.

A reference row names, in its `ours` column, the entry of this suite it is compared with (e.g.
GEOM -> rotnet/rot, the closest transformation-prediction detector here). Cells are normal classes,
OOD sets, or `mean` (the mean over classes, compared with our per-seed mean over classes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import BenchError, unknown_name
from bench.report.leaderboard import column_key, entry_label
from bench.report.stats import seed_summary

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "results" / "reference"


def reference_names(directory: Path = REFERENCE_DIR) -> list[str]:
    return sorted(p.stem for p in Path(directory).glob("*.csv"))


def load_reference(names: list[str] | None = None, directory: Path = REFERENCE_DIR) -> pd.DataFrame:
    available = reference_names(directory)
    if not available:
        raise BenchError(f"no reference tables in {directory}")
    for name in names or []:
        if name not in available:
            raise unknown_name("reference table", name, available)
    frames = [pd.read_csv(Path(directory) / f"{n}.csv", dtype={"normal_class": str, "ours": str},
                          keep_default_na=False) for n in (names or available)]
    return pd.concat(frames, ignore_index=True)


def _our_cells(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (protocol, dataset, entry, cell, seed) values, plus a `mean` cell over classes."""
    picked = rows[rows["metric"] == metric]
    if picked.empty:
        return pd.DataFrame(columns=["protocol", "dataset", "entry", "cell", "seed", "value"])
    picked = picked.assign(entry=entry_label(picked), cell=column_key(picked).astype(str))
    cells = picked.groupby(["protocol", "dataset", "entry", "cell", "seed"], as_index=False)["value"].mean()
    one_class = cells[cells["protocol"] == "one-class"]
    means = one_class.groupby(["protocol", "dataset", "entry", "seed"], as_index=False)["value"].mean()
    return pd.concat([cells, means.assign(cell="mean")], ignore_index=True)


def compare(rows: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Our numbers beside each published cell we have: mean over seeds, 95% interval, difference,
    and whether the published value lies outside our interval (needs two seeds or more)."""
    out = []
    for metric, refs in reference.groupby("metric"):
        cells = _our_cells(rows, metric)
        for ref in refs.itertuples(index=False):
            cell = ref.normal_class if ref.normal_class != "all" else ref.ood_dataset
            if ref.metric == "accuracy":
                cell = ref.ood_dataset
            ours = cells[(cells["protocol"] == ref.protocol) & (cells["dataset"] == ref.dataset)
                         & (cells["entry"] == ref.ours) & (cells["cell"] == str(cell))]
            if not ref.ours or ours.empty:
                continue
            s = seed_summary(ours["value"].to_numpy())
            outside = (not np.isnan(s.low)) and not (s.low <= ref.value <= s.high)
            out.append({
                "protocol": ref.protocol, "dataset": ref.dataset, "cell": str(cell),
                "metric": metric, "published_method": ref.method, "paper": ref.paper,
                "published": ref.value, "confirmed": ref.confirmed, "ours": ref.ours,
                "ours_mean": s.mean, "ours_low": s.low, "ours_high": s.high, "seeds": s.n,
                "difference": s.mean - ref.value, "outside_interval": outside,
            })
    return pd.DataFrame(out)


def format_comparison(table: pd.DataFrame) -> str:
    """Text blocks per (protocol, dataset, published method), percent with one decimal."""
    if table.empty:
        return "(no cell of the runs matches a published cell)"

    def pct(v):
        return "" if pd.isna(v) else f"{100 * v:.1f}"

    def cell_order(c):
        return (0, int(c), "") if str(c).isdigit() else (1 if c != "mean" else 2, 0, str(c))

    blocks = []
    keys = ["protocol", "dataset", "published_method", "ours"]
    for (protocol, dataset, method, ours), part in table.groupby(keys, sort=True):
        part = part.iloc[sorted(range(len(part)), key=lambda i: cell_order(part["cell"].iloc[i]))]
        lines = [f"{protocol} / {dataset}: {method} ({part['paper'].iloc[0]}) vs ours {ours} "
                 f"({part['metric'].iloc[0].upper()} %)",
                 f"  {'cell':<16}{'published':>10}{'ours':>8}{'95% interval':>16}{'seeds':>7}"
                 f"{'diff':>8}"]
        for r in part.itertuples(index=False):
            interval = "" if pd.isna(r.ours_low) else f"[{pct(r.ours_low)}, {pct(r.ours_high)}]"
            mark = " *" if r.outside_interval else ""
            mark += " (unconfirmed)" if str(r.confirmed) in ("False", "false", "0") else ""
            lines.append(f"  {r.cell:<16}{pct(r.published):>10}{pct(r.ours_mean):>8}"
                         f"{interval:>16}{r.seeds:>7}{100 * r.difference:>+8.1f}{mark}")
        blocks.append("\n".join(lines))
    note = ("* the published value lies outside our seeds' 95% interval "
            "(intervals need two seeds or more)")
    return "\n\n".join(blocks) + "\n\n" + note
