"""Leaderboards from tidy rows: one table per (protocol, dataset), percent with one decimal.

Rows of a table are method/score entries; columns are normal classes (one-class) or OOD sets,
each the mean over seeds; then `mean` (over columns, averaged over seeds), `std` (over seeds of
the per-seed mean; blank for one seed) and `seeds`. The same rows always give the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.store import RunStore, atomic_write_csv, atomic_write_text

DEDUP_KEYS = ["job_id", "score", "ood_dataset", "metric"]


def load_runs(runs: list[str | Path]) -> pd.DataFrame:
    """Rows of every finished job under the given run directories (duplicates dropped)."""
    frames = [RunStore(r).rows() for r in runs]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return RunStore(runs[0] if runs else ".").rows()
    rows = pd.concat(frames, ignore_index=True)
    return rows.drop_duplicates(DEDUP_KEYS, keep="first").reset_index(drop=True)


def entry_label(frame: pd.DataFrame) -> pd.Series:
    """``method/score``; a method run with several configs gets ``@<config hash>`` appended."""
    label = frame["method"].astype(str) + "/" + frame["score"].astype(str)
    n_configs = frame.groupby("method")["config_hash"].transform("nunique")
    suffix = np.where(n_configs > 1, "@" + frame["config_hash"].astype(str).str[:6], "")
    return label + suffix


def column_key(frame: pd.DataFrame) -> pd.Series:
    """Columns: the normal class (one-class) or the OOD set (OOD protocols)."""
    return frame["normal_class"].where(frame["normal_class"] != "all", frame["ood_dataset"])


def _sort_columns(columns) -> list:
    def key(c):
        s = str(c)
        return (0, int(s), "") if s.isdigit() else (1, 0, s)
    return sorted(columns, key=key)


def pivot(rows: pd.DataFrame, metric: str = "auroc") -> dict[tuple[str, str], pd.DataFrame]:
    """{(protocol, dataset): table of fractions} with columns, mean, std, seeds."""
    picked = rows[rows["metric"] == metric]
    out = {}
    for (protocol, dataset), part in picked.groupby(["protocol", "dataset"], sort=True):
        part = part.assign(entry=entry_label(part), column=column_key(part))
        per_seed = part.pivot_table(index=["entry", "seed"], columns="column", values="value",
                                    aggfunc="mean")
        columns = _sort_columns(per_seed.columns)
        table = per_seed.groupby(level="entry").mean()[columns]
        seed_means = per_seed[columns].mean(axis=1).groupby(level="entry")
        table["mean"] = seed_means.mean()
        table["std"] = seed_means.std(ddof=1)
        table["seeds"] = seed_means.count()
        table = table.reset_index().sort_values(["mean", "entry"], ascending=[False, True])
        out[(protocol, dataset)] = table.set_index("entry")
    return out


def _percent(table: pd.DataFrame) -> pd.DataFrame:
    shown = table.copy()
    for col in shown.columns:
        if col == "seeds":
            shown[col] = shown[col].astype(int).astype(str)
        else:
            shown[col] = [("" if pd.isna(v) else f"{100 * v:.1f}") for v in shown[col]]
    shown.index.name = "method/score"
    shown.columns = [str(c) for c in shown.columns]
    return shown


def to_markdown(table: pd.DataFrame, title: str) -> str:
    shown = _percent(table).reset_index()
    header = "| " + " | ".join(shown.columns) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    lines = ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    return f"### {title}\n\n" + "\n".join([header, rule, *lines]) + "\n"


def console_table(rows: pd.DataFrame, metric: str = "auroc") -> str:
    """The leaderboards as text blocks, for the terminal."""
    if rows.empty:
        return "(no results)"
    blocks = []
    for (protocol, dataset), table in pivot(rows, metric).items():
        shown = _percent(table)
        shown.index.name = None
        title = f"{protocol} / {dataset}: {metric.upper()} (%), columns averaged over seeds"
        blocks.append(title + "\n" + shown.to_string())
    return "\n\n".join(blocks)


def write_leaderboards(rows: pd.DataFrame, out: str | Path, metric: str = "auroc") -> list[Path]:
    """One CSV and one Markdown file per (protocol, dataset), and README.md with all tables."""
    out = Path(out)
    written, sections = [], []
    for (protocol, dataset), table in pivot(rows, metric).items():
        stem = f"{protocol}_{dataset}" + ("" if metric == "auroc" else f"_{metric}")
        shown = _percent(table).reset_index()
        atomic_write_csv(out / f"{stem}.csv", shown)
        title = f"{protocol} / {dataset} ({metric.upper()} %, mean over seeds)"
        md = to_markdown(table, title)
        atomic_write_text(out / f"{stem}.md", md)
        written += [out / f"{stem}.csv", out / f"{stem}.md"]
        sections.append(md)
    if sections:
        atomic_write_text(out / ("README.md" if metric == "auroc" else f"README_{metric}.md"),
                          "# Leaderboards\n\n" + "\n".join(sections))
        written.append(out / "README.md")
    return written
