"""Leaderboards from tidy rows: one table per (protocol, dataset), percent with one decimal."""

from __future__ import annotations

import pandas as pd


def entry_label(frame: pd.DataFrame) -> pd.Series:
    """``method/score`` (``method`` alone when it has a single score variant named like it)."""
    return frame["method"].astype(str) + "/" + frame["score"].astype(str)


def column_key(frame: pd.DataFrame) -> pd.Series:
    """Columns: the normal class (one-class) or the OOD set (OOD protocols)."""
    return frame["normal_class"].where(frame["normal_class"] != "all", frame["ood_dataset"])


def _sort_columns(columns) -> list:
    def key(c):
        s = str(c)
        return (0, int(s), "") if s.isdigit() else (1, 0, s)
    return sorted(columns, key=key)


def console_table(rows: pd.DataFrame, metric: str = "auroc") -> str:
    """One text block per (protocol, dataset): entries x columns, mean over seeds, in percent."""
    if rows.empty:
        return "(no results)"
    blocks = []
    picked = rows[rows["metric"] == metric].copy()
    for (protocol, dataset), part in picked.groupby(["protocol", "dataset"], sort=True):
        part = part.assign(entry=entry_label(part), column=column_key(part))
        table = part.pivot_table(index="entry", columns="column", values="value", aggfunc="mean")
        table = table[_sort_columns(table.columns)]
        table["mean"] = table.mean(axis=1)
        seeds = part.groupby("entry")["seed"].nunique()
        table = (table * 100).round(1)
        table["seeds"] = seeds
        table = table.sort_values("mean", ascending=False)
        table.index.name = None
        table.columns.name = None
        title = f"{protocol} / {dataset}: {metric.upper()} (%), mean over seeds"
        blocks.append(title + "\n" + table.to_string(float_format=lambda v: f"{v:.1f}"))
    return "\n\n".join(blocks)


def write_leaderboards(rows: pd.DataFrame, out) -> list:
    """Placeholder until the leaderboard module is complete: the console tables as text."""
    from pathlib import Path

    from bench.store import atomic_write_text

    out = Path(out)
    atomic_write_text(out / "leaderboard.txt", console_table(rows) + "\n")
    return [out / "leaderboard.txt"]
