"""Leaderboards from tidy rows: one table per (protocol, dataset, preset), percent with one
decimal (numbers from different presets are not comparable, so they never share a table).

Rows of a table are method/score entries; columns are normal classes (one-class) or OOD sets,
each the mean over seeds; OOD tables add the `near` and `far` means (the protocol's groups); then
`mean` (over columns, averaged over seeds), `std` (over seeds of the per-seed mean; blank for one
seed) and `seeds`. A seed that misses some of its entry's columns is left out; an entry that ran
on fewer columns than the table has is listed after the complete ones, its mean marked `*`.
Rows of an older protocol version are left out (the OOD tables changed). The same rows always
give the same bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.files import atomic_write_csv, atomic_write_text, clean_stale_temporaries, inside
from bench.schema import read_rows, sort_rows
from bench.store import RunStore

# one measurement of one job; the preset is part of it because a job whose config no preset
# changes (the classical methods) has the same job id under every preset, and each preset's
# table must keep its own rows
DEDUP_KEYS = ["job_id", "preset", "score", "ood_dataset", "metric"]
from bench.metrics import LOWER_IS_BETTER  # noqa: E402


def load_rows(runs: list[str | Path], rows_files: list[str | Path] = (),
              problems: list[str] | None = None) -> pd.DataFrame:
    """Rows of every finished job under the run directories and of the rows files. A
    measurement read twice (the same job's same score, OOD set and metric under the same preset,
    e.g. from a rows file and the run it came from) counts once, the first read; two copies that
    disagree are named in `problems`."""
    files = []
    for f in map(Path, rows_files):  # a folder stands for the rows files in it
        files += sorted(f.glob("*.csv")) if f.is_dir() else [f]
    return merge_rows([RunStore(r).rows(problems) for r in runs] + [read_rows(f) for f in files],
                      problems)


def merge_rows(frames: list[pd.DataFrame], problems: list[str] | None = None) -> pd.DataFrame:
    """Tidy rows of several reads as one, sorted: a measurement given twice counts once, the
    first given; two copies that disagree are named in `problems`."""
    frames = [f for f in frames if not f.empty]
    if not frames:
        return sort_rows(pd.DataFrame())
    rows = pd.concat(frames, ignore_index=True)
    repeated = rows[rows.duplicated(DEDUP_KEYS, keep=False)]
    if problems is not None and not repeated.empty:
        spread = repeated.groupby(DEDUP_KEYS)["value"].agg(lambda v: v.max() - v.min())
        for key, gap in spread[spread > 1e-12].head(5).items():
            problems.append(f"job {key[0]} ({key[1]} preset, {key[2]} vs {key[3]}, {key[4]}) "
                            f"is given twice with values {gap:.4g} apart; the first read is kept")
    return sort_rows(rows.drop_duplicates(DEDUP_KEYS, keep="first"))


TABLE_KEYS = ["protocol", "dataset", "preset", "ood_table"]  # one leaderboard each


def _named_table(ood_table: str) -> bool:
    from bench.protocols import named_table

    return named_table(ood_table)


def table_name(protocol: str, dataset: str, preset: str, ood_table: str = "") -> str:
    """The file stem of a table: <protocol>_<dataset>[_<OOD table>]_<preset> (the default
    OOD table is not named)."""
    return (f"{protocol}_{dataset}" + (f"_{ood_table}" if _named_table(ood_table) else "")
            + (f"_{preset}" if preset else ""))


def write_rows_files(rows: pd.DataFrame, out: str | Path) -> list[Path]:
    """One sorted rows file per (protocol, dataset, preset, OOD table): what results/rows/
    commits."""
    written = []
    clean_stale_temporaries(out, recursive=False)
    for key, part in rows.groupby(TABLE_KEYS, sort=True):
        path = inside(out, f"{table_name(*key)}.csv")
        atomic_write_csv(path, sort_rows(part))
        written.append(path)
    return written


def entry_label(frame: pd.DataFrame) -> pd.Series:
    """``method/score``, with `` [variant]`` for a --set config; a label still shared by several
    configs within one (protocol, data set) gets ``@<config hash>``."""
    label = frame["method"].astype(str) + "/" + frame["score"].astype(str)
    if "variant" in frame.columns:
        variant = frame["variant"].fillna("").astype(str)
        label = label + np.where(variant != "", " [" + variant + "]", "")
    keys = [k for k in ("protocol", "dataset", "preset") if k in frame.columns]
    n_configs = frame.assign(_label=label).groupby(keys + ["_label"])["config_hash"] \
        .transform("nunique")
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


def _newest_version(part: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    versions = sorted(part["protocol_version"].astype(str).unique(), key=lambda v: (len(v), v))
    if len(versions) < 2:
        return part, []
    keep = part[part["protocol_version"].astype(str) == versions[-1]]
    old = part[part["protocol_version"].astype(str) != versions[-1]]
    return keep, [f"rows of protocol version {', '.join(versions[:-1])} left out "
                  f"({old['job_id'].nunique()} jobs; the protocol's tables changed since)"]


def _complete(per_seed: pd.DataFrame) -> pd.Series:
    """Per (entry, seed): does the seed cover every column its entry has?

    An entry none of whose seeds is complete (seeds run on different classes) keeps them all.
    """
    present = per_seed.notna()
    covered = present.groupby(level="entry").transform("any")
    complete = (present == covered).all(axis=1)
    return complete | ~complete.groupby(level="entry").transform("any")


def _left_out_notes(where: str, per_seed: pd.DataFrame, complete: pd.Series) -> list[str]:
    notes = []
    for (entry, seed), ok in complete.items():
        if not ok:
            have = int(per_seed.loc[(entry, seed)].notna().sum())
            total = int(per_seed.loc[entry].notna().any().sum())
            notes.append(f"{where}: {entry} seed {seed} left out ({have} of {total} columns)")
    return notes


def _table(per_seed: pd.DataFrame, columns: list, groups: dict[str, list], metric: str
           ) -> tuple[pd.DataFrame, dict[str, list]]:
    """The table, complete entries ranked first; and {entry: columns it misses}."""
    table = per_seed.groupby(level="entry").mean()[columns]
    for name, members in groups.items():
        present = [c for c in members if c in columns]
        if present:
            table[name] = per_seed[present].mean(axis=1).groupby(level="entry").mean()
    seed_means = per_seed[columns].mean(axis=1).groupby(level="entry")
    table["mean"] = seed_means.mean()
    table["std"] = seed_means.std(ddof=1)
    table["seeds"] = seed_means.count()
    missing = {e: [c for c in columns if pd.isna(table.loc[e, c])] for e in table.index}
    missing = {e: m for e, m in missing.items() if m}
    ascending = metric in LOWER_IS_BETTER
    table = table.reset_index().assign(_partial=lambda t: t["entry"].isin(list(missing)))
    table = table.sort_values(["_partial", "mean", "entry"],
                              ascending=[True, ascending, True]).drop(columns="_partial")
    return table.set_index("entry"), missing


def _accuracy(rows: pd.DataFrame) -> pd.Series:
    """Per entry: the in-distribution accuracy, mean over seeds (one value per job)."""
    rows = rows.assign(entry=entry_label(rows))
    return rows.groupby(["entry", "seed"])["value"].mean().groupby(level="entry").mean()


def _cell_stds(per_seed: pd.DataFrame, columns: list, groups: dict[str, list]) -> pd.DataFrame:
    """The std over seeds (ddof 1) of each cell and group mean: what LaTeX shows after the ±."""
    stds = per_seed.groupby(level="entry")[columns].std(ddof=1)
    for name, members in groups.items():
        present = [c for c in members if c in columns]
        if present:
            stds[name] = per_seed[present].mean(axis=1).groupby(level="entry").std(ddof=1)
    return stds


@dataclass
class Summary:
    """The leaderboard tables of one metric and what to say under each."""

    metric: str = "auroc"
    tables: dict[tuple[str, ...], pd.DataFrame] = field(default_factory=dict)
    partial: dict[tuple[str, ...], dict[str, list]] = field(default_factory=dict)
    table_notes: dict[tuple[str, ...], list[str]] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)  # seeds that miss some columns
    below_chance: list[str] = field(default_factory=list)  # AUROC entries with mean < 50%
    stds: dict[tuple[str, ...], pd.DataFrame] = field(default_factory=dict)  # per cell, seeds
    seeds_left_out: dict[tuple[str, ...], dict[str, list]] = field(default_factory=dict)
    # per table: entries x columns, the number of seeds each cell is the mean of
    cell_seeds: dict[tuple[str, ...], pd.DataFrame] = field(default_factory=dict)

    @property
    def notes(self) -> list[str]:
        return [n for key in self.tables for n in self.table_notes.get(key, [])]


def _ood_groups(protocol: str, dataset: str, columns: list, ood_table: str = "") -> dict[str, list]:
    if protocol == "one-class":
        return {}
    from bench.protocols import ood_group

    groups: dict[str, list] = {"near": [], "far": []}
    for c in columns:
        g = ood_group(dataset, str(c), ood_table or "bench")
        if g in groups:
            groups[g].append(c)
    return {k: v for k, v in groups.items() if v}


def summarise(rows: pd.DataFrame, metric: str = "auroc") -> Summary:
    """Every table of one metric and the notes under it, from one pass over the rows."""
    out = Summary(metric)
    picked = rows[rows["metric"] == metric]
    accuracy = {key: part for key, part in
                rows[rows["metric"] == "accuracy"].groupby(TABLE_KEYS, sort=True)}
    for key, part in picked.groupby(TABLE_KEYS, sort=True):
        protocol, dataset, preset, ood_table = key
        where = table_where(*key)
        part, version_notes = _newest_version(part)
        part = part.assign(entry=entry_label(part), column=column_key(part))
        per_seed = part.pivot_table(index=["entry", "seed"], columns="column", values="value",
                                    aggfunc="mean")
        columns = _sort_columns(per_seed.columns)
        complete = _complete(per_seed)
        left_out = _left_out_notes(where, per_seed, complete)
        table, missing = _table(per_seed[complete], columns,
                                _ood_groups(protocol, dataset, columns, ood_table), metric)
        if metric != "accuracy" and key in accuracy:  # OpenOOD's ACC column, beside each network
            table.insert(table.columns.get_loc("seeds"), "accuracy",
                         _accuracy(accuracy[key]).reindex(table.index))
        out.tables[key], out.partial[key] = table, missing
        out.cell_seeds[key] = per_seed[complete][columns].notna().groupby(level="entry").sum()
        out.stds[key] = _cell_stds(per_seed[complete], columns,
                                   _ood_groups(protocol, dataset, columns, ood_table))
        out.seeds_left_out[key] = {e: [s for (e2, s), ok in complete.items() if e2 == e and not ok]
                                   for e in {e for (e, _), ok in complete.items() if not ok}}
        partial_notes = [f"{where}: {e} ran on {len(columns) - len(m)} of {len(columns)} "
                         f"columns (missing {', '.join(map(str, m))}); its mean (*) is not "
                         "comparable and it is listed after the complete entries"
                         for e, m in missing.items()]
        below = []
        if metric == "auroc":
            below = [f"{where}: {entry} is below chance (mean AUROC {100 * mean:.1f}%)"
                     for entry, mean in table["mean"].items() if mean < 0.5]
        out.left_out += left_out
        out.below_chance += below
        out.table_notes[key] = [f"{where}: {n}" for n in version_notes] + left_out \
            + partial_notes + below
    return out


def with_class_names(summary: Summary) -> Summary:
    """The summary with each one-class table's columns named by the data set's classes (as
    papers print them: 'T-shirt/top' for 0), where the data set names them."""
    from dataclasses import replace

    from bench.registry import DATASETS

    renamed = replace(summary, tables=dict(summary.tables), stds=dict(summary.stds),
                      cell_seeds=dict(summary.cell_seeds))
    for key in summary.tables:
        protocol, dataset = key[0], key[1]
        names = (DATASETS.entry(dataset).names_of_classes()
                 if protocol == "one-class" and dataset in DATASETS else None)
        if not names:
            continue
        mapping = {str(i): name for i, name in enumerate(names)}
        for part in (renamed.tables, renamed.stds, renamed.cell_seeds):
            if key in part:
                part[key] = part[key].rename(
                    columns={c: mapping.get(str(c), c) for c in part[key].columns})
    return renamed


def as_text(numbers: pd.DataFrame) -> pd.DataFrame:
    """The numeric table as the text Markdown and the terminal show: one decimal, a blank for
    a missing cell, `*` after a mean over fewer columns than the table has."""
    shown = numbers.drop(columns=NOTE_COLUMNS).copy()
    for col in shown.columns:
        if col == "seeds":
            shown[col] = shown[col].astype(int).astype(str)
        else:
            shown[col] = [("" if pd.isna(v) else f"{v:.1f}") for v in shown[col]]
    partial = numbers["mean_partial"].to_numpy(bool)
    shown.loc[partial, "mean"] = shown.loc[partial, "mean"] + " *"
    return shown


NOTE_COLUMNS = ["mean_partial", "missing_columns", "below_chance", "seeds_left_out"]


def numeric_table(summary: Summary, key: tuple[str, ...]) -> pd.DataFrame:
    """A table in numbers, what every format is made from (CSV, Markdown, LaTeX, HTML): percent
    (cells, near / far, mean, std), seeds, then the notes in their own columns: whether the mean
    is over fewer columns than the table has (Markdown's `*`) and which it misses, whether the
    entry is below chance (AUROC), and the seeds left out for missing columns."""
    table = summary.tables[key]
    values = table.drop(columns="seeds") * 100
    values["seeds"] = table["seeds"].astype(int)
    missing = summary.partial.get(key, {})
    left = summary.seeds_left_out.get(key, {})
    values["mean_partial"] = [e in missing for e in table.index]
    values["missing_columns"] = [";".join(map(str, missing.get(e, []))) for e in table.index]
    values["below_chance"] = ([bool(m < 0.5) for m in table["mean"]] if summary.metric == "auroc"
                              else False)
    values["seeds_left_out"] = [";".join(map(str, left.get(e, []))) for e in table.index]
    values.index.name = "method/score"
    values.columns = [str(c) for c in values.columns]
    return values


def best_two(values: pd.DataFrame, lower_is_better: bool) -> pd.DataFrame:
    """'best' / 'second' / '' per cell of each column, by competition ranking (ties share a
    place; after two tied best there is no second)."""
    places = values.rank(axis=0, method="min", ascending=lower_is_better)
    marks = pd.DataFrame("", index=values.index, columns=values.columns)
    return marks.mask(places == 1, "best").mask(places == 2, "second")


def to_latex(summary: Summary, key: tuple[str, ...], label: str = "") -> str:
    """One booktabs table (pandas' Styler): mean ± std over seeds in percent, the best of each
    column in bold and the second underlined, a caption naming protocol, data set, preset and
    seeds; a mean over fewer columns than the table has is marked * and explained."""
    numbers = numeric_table(summary, key)
    stds = summary.stds.get(key, pd.DataFrame()).mul(100)
    shown_cols = [c for c in numbers.columns if c not in ("std", "seeds", *NOTE_COLUMNS)]
    values = numbers[shown_cols]
    cells = pd.DataFrame(index=values.index, columns=shown_cols, dtype=object)
    for entry in values.index:
        for col in shown_cols:
            v = values.loc[entry, col]
            sd = numbers.loc[entry, "std"] if col == "mean" else (
                stds.loc[entry, col] if col in stds.columns and entry in stds.index else np.nan)
            cells.loc[entry, col] = "" if pd.isna(v) else (
                f"{v:.1f}" + ("" if pd.isna(sd) else f" $\\pm$ {sd:.1f}"))
        if numbers.loc[entry, "mean_partial"]:
            cells.loc[entry, "mean"] += "$^*$"
    cells["seeds"] = numbers["seeds"].astype(str)
    ranked = values.round(1).where(~numbers["mean_partial"].to_numpy()[:, None] |
                                   (np.array(shown_cols) != "mean")[None, :])
    marks = best_two(ranked, summary.metric in LOWER_IS_BETTER)  # as shown: ties share
    marks["seeds"] = ""
    counts = summary.cell_seeds.get(key)
    if counts is None or counts.empty:
        counts = numbers[["seeds"]]
    low, high = int(counts.to_numpy().min()), int(counts.to_numpy().max())
    seed_text = f"{low}" if low == high else f"{low}-{high} per cell"
    better = "lower" if summary.metric in LOWER_IS_BETTER else "higher"
    caption = (f"{table_where(*key)}: {summary.metric.upper()} (\\%, {better} is better), mean "
               f"$\\pm$ std over seeds ({seed_text}); best of each column in bold, second "
               "underlined.")
    if numbers["mean_partial"].any():
        caption += " $^*$: mean over fewer columns than the table has, not ranked."
    return styled_latex(cells, marks, caption, label or f"tab:{table_name(*key)}")


LATEX_MARKS = {"best": "textbf:--rwrap;", "second": "underline:--rwrap;", "": ""}


def styled_latex(cells: pd.DataFrame, marks: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs table of text `cells` through pandas' Styler: the cells marked best in bold,
    second underlined, row and column names escaped, the caption escaped outside math."""
    cells = cells.rename_axis(None)
    styler = cells.style.apply(lambda _: marks.replace(LATEX_MARKS), axis=None)
    styler = styler.format_index(escape="latex", axis=0).format_index(escape="latex", axis=1)
    return styler.to_latex(hrules=True, caption=_latex_escape(caption), label=label,
                           column_format="l" + "r" * len(cells.columns), position="t")


def _latex_escape(text: str) -> str:
    """Escape LaTeX's specials outside math ($...$) in a caption."""
    parts = text.split("$")
    for i in range(0, len(parts), 2):
        for ch, rep in (("_", "\\_"), ("&", "\\&"), ("#", "\\#")):
            parts[i] = parts[i].replace(ch, rep)
    return "$".join(parts)


def _cell(value: object) -> str:
    """A Markdown cell: a '|' escaped, a line break or control character shown as its escape
    (a value never splits the table or forges a row)."""
    from bench.console import printable

    return printable(value, one_line=True).replace("|", "\\|")


def neutralised(frame: pd.DataFrame) -> pd.DataFrame:
    """A table to write as CSV for spreadsheets: a text cell or header that starts like a
    formula (=, +, -, @) gets a leading apostrophe, so it is shown, never evaluated."""
    def safe(v: object) -> object:
        return "'" + v if isinstance(v, str) and v[:1] in ("=", "+", "-", "@") else v

    out = frame.copy()
    out.columns = [safe(str(c)) for c in out.columns]
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(safe)
    return out


def to_markdown(numbers: pd.DataFrame, title: str, notes: list[str] = ()) -> str:
    """A Markdown table of `numeric_table`'s numbers, the notes as a list under it."""
    shown = as_text(numbers).reset_index()
    header = "| " + " | ".join(map(_cell, shown.columns)) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    lines = ["| " + " | ".join(_cell(v) for v in row) + " |"
             for row in shown.itertuples(index=False)]
    text = f"### {title}\n\n" + "\n".join([header, rule, *lines]) + "\n"
    if notes:
        text += "\n" + "".join(f"- {line}\n" for line in notes)
    return text


def table_where(protocol: str, dataset: str, preset: str, ood_table: str = "") -> str:
    """How notes and titles name a table: ``one-class / digits, quick preset``, ``ood-labeled
    / cifar10 (openood-v1.5), paper preset``."""
    return (f"{protocol} / {dataset}" + (f" ({ood_table})" if _named_table(ood_table) else "")
            + (f", {preset} preset" if preset else ""))


def table_title(summary: Summary, key: tuple[str, ...]) -> str:
    best = "lower is better" if summary.metric in LOWER_IS_BETTER else "higher is better"
    return f"{table_where(*key)} ({summary.metric.upper()} %, mean over seeds; {best})"


def console_text(summary: Summary) -> str:
    """The leaderboards as text blocks, for the terminal."""
    if not summary.tables:
        return "(no results)"
    blocks = []
    for key in summary.tables:
        shown = as_text(numeric_table(summary, key))
        shown.index.name = None
        blocks.append(table_title(summary, key) + "\n" + shown.to_string())
    if summary.notes:
        blocks.append("\n".join(f"note: {line}" for line in summary.notes))
    return "\n\n".join(blocks)


SECTION = re.compile(r"^### (.+?) \(", re.MULTILINE)


def _readme_sections(text: str) -> dict[str, str]:
    """The per-table sections of an existing leaderboard README, by the table's name."""
    starts = list(SECTION.finditer(text))
    sections = {}
    for i, m in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        sections[m.group(1)] = text[m.start():end].rstrip("\n") + "\n"
    return sections


LEADERBOARD_FORMATS = ("csv", "markdown", "latex")  # the files a leaderboard can be written as


def check_formats(formats: tuple[str, ...]) -> None:
    """Every format is a leaderboard format (did-you-mean otherwise)."""
    from bench.errors import unknown_name

    for kind in formats:
        if kind not in LEADERBOARD_FORMATS:
            raise unknown_name("leaderboard format", kind, LEADERBOARD_FORMATS)


def publish_summary(summary: Summary, out: str | Path, sources: list[str | Path],
                    formats: tuple[str, ...] = ("csv", "markdown"), force: bool = False,
                    keep_other_sections: bool = True) -> list[Path]:
    """`write_summary` into a staged folder (with the README files already in `out`, whose
    other sections are kept), then `publish` into `out`: files made from other sources are
    replaced only with `force`."""
    import shutil

    from bench.files import publish, staged_folder

    check_formats(formats)
    with staged_folder(out, "leaderboard") as tmp:
        for readme in Path(out).glob("README*.md"):
            shutil.copyfile(readme, Path(tmp) / readme.name)
        write_summary(summary, tmp, keep_other_sections=keep_other_sections, formats=formats)
        return publish(tmp, out, sources, force)


def write_summary(summary: Summary, out: str | Path, keep_other_sections: bool = True,
                  formats: tuple[str, ...] = ("csv", "markdown")) -> list[Path]:
    """Per table, in each of `formats`: <stem>.csv (numbers, notes in their own columns),
    <stem>.md (percent, notes under the table) and <stem>.tex (booktabs); with Markdown also
    README.md with every table, which keeps the sections of tables these rows do not make
    (other runs' tables) unless `keep_other_sections` is False."""
    out = Path(out)
    clean_stale_temporaries(out, recursive=False)
    metric = summary.metric
    written, sections = [], {}
    for key in summary.tables:
        stem = table_name(*key) + ("" if metric == "auroc" else f"_{metric}")
        numbers = numeric_table(summary, key)
        if "csv" in formats:
            atomic_write_csv(inside(out, f"{stem}.csv"), neutralised(numbers.round(4).reset_index()))
            written.append(out / f"{stem}.csv")
        if "latex" in formats:
            atomic_write_text(inside(out, f"{stem}.tex"), to_latex(summary, key))
            written.append(out / f"{stem}.tex")
        if "markdown" in formats:
            md = to_markdown(numbers, table_title(summary, key),
                             summary.table_notes.get(key, []))
            atomic_write_text(inside(out, f"{stem}.md"), md)
            written.append(out / f"{stem}.md")
            sections[table_where(*key)] = md
    if sections:
        readme = inside(out, "README.md" if metric == "auroc" else f"README_{metric}.md")
        if keep_other_sections and readme.exists():
            kept = _readme_sections(readme.read_text())
            sections = {**{k: v for k, v in kept.items() if k not in sections}, **sections}
        body = "\n".join(sections[k] for k in sorted(sections))
        atomic_write_text(readme, "# Leaderboards\n\n" + body)
        written.append(readme)
    return written
