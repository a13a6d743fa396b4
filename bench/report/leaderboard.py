"""Leaderboards from tidy rows: one table per (protocol, dataset), percent with one decimal.

Rows of a table are method/score entries; columns are normal classes (one-class) or OOD sets,
each the mean over seeds; then `mean` (over columns, averaged over seeds), `std` (over seeds of
the per-seed mean; blank for one seed) and `seeds`. A seed that misses some of its entry's columns
is left out (and named by `incomplete_seeds`). The same rows always give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    """``method/score``; a method run with several configs on one (protocol, data set) gets
    ``@<config hash>`` appended there (its labeled jobs may carry another config than its
    one-class jobs without splitting either entry)."""
    label = frame["method"].astype(str) + "/" + frame["score"].astype(str)
    keys = [k for k in ("protocol", "dataset") if k in frame.columns] + ["method"]
    n_configs = frame.groupby(keys)["config_hash"].transform("nunique")
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


def _per_seed_tables(rows: pd.DataFrame, metric: str):
    """(protocol, dataset, per-seed table [entry, seed] x column, its sorted columns) per table."""
    picked = rows[rows["metric"] == metric]
    for (protocol, dataset), part in picked.groupby(["protocol", "dataset"], sort=True):
        part = part.assign(entry=entry_label(part), column=column_key(part))
        per_seed = part.pivot_table(index=["entry", "seed"], columns="column", values="value",
                                    aggfunc="mean")
        yield protocol, dataset, per_seed, _sort_columns(per_seed.columns)


def _complete(per_seed: pd.DataFrame) -> pd.Series:
    """Per (entry, seed): does the seed cover every column its entry has?

    An entry none of whose seeds is complete (seeds run on different classes) keeps them all.
    """
    present = per_seed.notna()
    covered = present.groupby(level="entry").transform("any")
    complete = (present == covered).all(axis=1)
    return complete | ~complete.groupby(level="entry").transform("any")


def _left_out_notes(protocol: str, dataset: str, per_seed: pd.DataFrame,
                    complete: pd.Series) -> list[str]:
    notes = []
    for (entry, seed), ok in complete.items():
        if not ok:
            have = int(per_seed.loc[(entry, seed)].notna().sum())
            total = int(per_seed.loc[entry].notna().any().sum())
            notes.append(f"{protocol} / {dataset}: {entry} seed {seed} left out "
                         f"({have} of {total} columns)")
    return notes


def _table(per_seed: pd.DataFrame, columns: list) -> pd.DataFrame:
    table = per_seed.groupby(level="entry").mean()[columns]
    seed_means = per_seed[columns].mean(axis=1).groupby(level="entry")
    table["mean"] = seed_means.mean()
    table["std"] = seed_means.std(ddof=1)
    table["seeds"] = seed_means.count()
    table = table.reset_index().sort_values(["mean", "entry"], ascending=[False, True])
    return table.set_index("entry")


@dataclass
class Summary:
    """The leaderboard tables of one metric and what to say under them."""

    metric: str = "auroc"
    tables: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)  # seeds that miss some columns
    below_chance: list[str] = field(default_factory=list)  # AUROC entries with mean < 50%

    @property
    def notes(self) -> list[str]:
        return self.left_out + self.below_chance


def summarise(rows: pd.DataFrame, metric: str = "auroc") -> Summary:
    """The tables of `pivot` and the notes under them, from one pass over the rows: the seeds
    left out (`incomplete_seeds`) and, for AUROC, the entries whose mean is below chance (an
    inverted score is a finding to read about in docs/methods.md, not a number to rank)."""
    out = Summary(metric)
    for protocol, dataset, per_seed, columns in _per_seed_tables(rows, metric):
        complete = _complete(per_seed)
        out.left_out += _left_out_notes(protocol, dataset, per_seed, complete)
        table = _table(per_seed[complete], columns)
        out.tables[(protocol, dataset)] = table
        if metric == "auroc":
            out.below_chance += [f"{protocol} / {dataset}: {entry} is below chance "
                                 f"(mean AUROC {100 * mean:.1f}%)"
                                 for entry, mean in table["mean"].items() if mean < 0.5]
    return out


def incomplete_seeds(rows: pd.DataFrame, metric: str = "auroc") -> list[str]:
    """One line per seed the leaderboard leaves out because it misses some of its entry's columns
    (a killed run, a `--classes` subset): the table would otherwise mix unequal seeds."""
    return summarise(rows, metric).left_out


def pivot(rows: pd.DataFrame, metric: str = "auroc") -> dict[tuple[str, str], pd.DataFrame]:
    """{(protocol, dataset): table of fractions} with columns, mean, std, seeds.

    Only seeds that cover every column of their entry count (see `incomplete_seeds`), so each
    cell, the mean and the std are over the same seeds.
    """
    return summarise(rows, metric).tables


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
    return console_text(summarise(rows, metric))


def console_text(summary: Summary) -> str:
    """`console_table` of rows already summarised."""
    if not summary.tables:
        return "(no results)"
    blocks = []
    for (protocol, dataset), table in summary.tables.items():
        shown = _percent(table)
        shown.index.name = None
        title = (f"{protocol} / {dataset}: {summary.metric.upper()} (%), "
                 "columns averaged over seeds")
        blocks.append(title + "\n" + shown.to_string())
    if summary.notes:
        blocks.append("\n".join(f"note: {line}" for line in summary.notes))
    return "\n\n".join(blocks)


def _notes_markdown(summary: Summary) -> str:
    out = ""
    for title, lines in (("Left out", summary.left_out), ("Below chance", summary.below_chance)):
        if lines:
            out += f"\n### {title}\n\n" + "".join(f"- {line}\n" for line in lines)
    return out


def write_leaderboards(rows: pd.DataFrame, out: str | Path, metric: str = "auroc") -> list[Path]:
    """One CSV and one Markdown file per (protocol, dataset), and README.md with all tables."""
    return write_summary(summarise(rows, metric), out)


def write_summary(summary: Summary, out: str | Path) -> list[Path]:
    """`write_leaderboards` of rows already summarised."""
    out = Path(out)
    metric = summary.metric
    written, sections = [], []
    for (protocol, dataset), table in summary.tables.items():
        stem = f"{protocol}_{dataset}" + ("" if metric == "auroc" else f"_{metric}")
        shown = _percent(table).reset_index()
        atomic_write_csv(out / f"{stem}.csv", shown)
        title = f"{protocol} / {dataset} ({metric.upper()} %, mean over seeds)"
        md = to_markdown(table, title)
        atomic_write_text(out / f"{stem}.md", md)
        written += [out / f"{stem}.csv", out / f"{stem}.md"]
        sections.append(md)
    if sections:
        readme = out / ("README.md" if metric == "auroc" else f"README_{metric}.md")
        atomic_write_text(readme, "# Leaderboards\n\n" + "\n".join(sections)
                          + _notes_markdown(summary))
        written.append(readme)
    return written
