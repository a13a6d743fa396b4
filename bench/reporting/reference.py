"""Published numbers and their comparison with ours, cell by cell, like with like.

The tables ship with the package (`bench/reference/*.csv`; the repository's results/reference
is the editable copy, kept identical by a test); ``--reference-dir`` reads another folder. A
reference row names, in its `ours` column, the entry of this suite it is compared with (e.g.
GEOM -> rotnet/rot, the closest transformation-prediction detector here). Cells are normal
classes, OOD sets, or `mean`: the mean over classes is compared only over the same classes (the
published per-class values averaged over the classes we ran when we ran a subset; skipped where
only the published mean exists). Settings too: a published number whose settings were chosen on
validation data (`setting` = tuned, as OpenOOD v1.5's evaluator does) is compared only with rows
whose settings were chosen the same way (`tuning`), and a number of fixed settings only with
rows of fixed settings; a pair that is not like for like is named, not compared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import BenchError, unknown_name
from bench.metrics import LOWER_IS_BETTER
from bench.reporting.leaderboard import column_key, entry_label, table_where
from bench.reporting.stats import seed_summary


def packaged_reference_dir() -> Path:
    """The reference tables installed with the package."""
    from importlib import resources

    return Path(str(resources.files("bench.reference")))


def reference_names(directory: Path | str | None = None) -> list[str]:
    return sorted(p.stem for p in Path(directory or packaged_reference_dir()).glob("*.csv"))


def load_reference(names: list[str] | None = None, directory: Path | str | None = None
                   ) -> pd.DataFrame:
    directory = Path(directory) if directory else packaged_reference_dir()
    if not directory.is_dir():
        raise BenchError(f"--reference-dir {directory}: not a folder")
    available = reference_names(directory)
    if not available:
        raise BenchError(f"no reference tables in {directory}")
    for name in names or []:
        if name not in available:
            raise unknown_name("reference table", name, available)
    return pd.concat([read_reference(directory / f"{n}.csv") for n in (names or available)],
                     ignore_index=True)


REFERENCE_COLUMNS = ("paper", "method", "ours", "protocol", "dataset", "normal_class",
                     "ood_dataset", "metric", "value", "source", "confirmed")


def read_reference(path: Path) -> pd.DataFrame:
    """One published table; a BenchError naming the file when it is not one (wrong columns,
    values that are not fractions)."""
    try:
        table = pd.read_csv(path, dtype={"normal_class": str, "ours": str, "ood_dataset": str,
                                         "ood_table": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
            ValueError) as exc:
        raise BenchError(f"{path}: not a reference table ({type(exc).__name__})") from None
    missing = [c for c in REFERENCE_COLUMNS if c not in table.columns]
    if missing:
        raise BenchError(f"{path}: not a reference table (it lacks the columns "
                         f"{', '.join(missing)}; a table has {', '.join(REFERENCE_COLUMNS)})")
    if "ood_table" not in table.columns:  # a table of the default OOD sets
        table["ood_table"] = np.where(table["protocol"] == "one-class", "", "bench")
    if "setting" not in table.columns:  # the published settings were fixed
        table["setting"] = ""
    bad = ~table["setting"].isin(["", "tuned"])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise BenchError(f"{path}: column setting, line {i + 2}: {table['setting'].iloc[i]!r} is "
                         "not a setting kind ('tuned': chosen on validation data; empty: fixed)")
    values = pd.to_numeric(table["value"], errors="coerce")
    bad = ~values.between(0, 1)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise BenchError(f"{path}: column value, line {i + 2}: {table['value'].iloc[i]!r} is not "
                         "a fraction in [0, 1]")
    return table.assign(value=values)


CELL_KEYS = ["protocol", "dataset", "preset", "ood_table", "entry", "tuned", "cell", "seed"]


def _our_cells(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (protocol, dataset, preset, OOD table, entry, cell, seed) values; OOD protocols add
    the cells `near` and `far`, each seed's mean over its table's near or far sets."""
    from bench.protocols import ood_group

    picked = rows[rows["metric"] == metric]
    if picked.empty:
        return pd.DataFrame(columns=[*CELL_KEYS, "value"])
    tuning = picked["tuning"] if "tuning" in picked else pd.Series("", index=picked.index)
    setting = picked["setting"] if "setting" in picked else pd.Series("", index=picked.index)
    picked = picked.assign(entry=entry_label(picked), cell=column_key(picked).astype(str),
                           ood_table=picked["ood_table"].fillna(""),
                           tuned=tuning.fillna("").astype(str) != "",
                           setting=setting.fillna("").astype(str))
    cells = picked.groupby(CELL_KEYS, as_index=False).agg(
        value=("value", "mean"), setting=("setting", _settings))
    ood = cells[cells["protocol"] != "one-class"]
    if ood.empty:
        return cells
    group = [ood_group(d, c, t or "bench") for d, c, t in
             zip(ood["dataset"], ood["cell"], ood["ood_table"])]
    grouped = ood.assign(cell=group)
    grouped = grouped[grouped["cell"].isin(["near", "far"])]
    return pd.concat([cells, grouped.groupby(CELL_KEYS, as_index=False).agg(
        value=("value", "mean"), setting=("setting", _settings))], ignore_index=True)


def _settings(values: pd.Series) -> str:
    """The distinct settings chosen for a cell, in order ('' for fixed settings)."""
    return "; ".join(v for v in dict.fromkeys(values.astype(str)) if v)




def _class_count(dataset: str) -> int:
    """Classes of a one-class data set (a published mean without per-class values is compared
    only with a run over all of them); 0 for a name the registry does not know."""
    from bench.registry import DATASETS

    return DATASETS.entry(dataset).n_classes if dataset in DATASETS else 0


def _mean_cell(ours: pd.DataFrame, refs: pd.DataFrame) -> tuple[pd.Series, float, str] | None:
    """Our per-seed means over our classes, the published mean over the same classes, and the
    cell's name; None when the two cannot be compared like with like."""
    classes = sorted(set(ours["cell"]), key=lambda c: (len(c), c))
    per_seed = ours.groupby("seed")["value"].mean()
    published = refs[refs["normal_class"] != "mean"].set_index("normal_class")["value"]
    stated = refs[refs["normal_class"] == "mean"]["value"]
    every = {str(c) for c in range(_class_count(str(refs["dataset"].iloc[0])))}
    if not stated.empty and every and set(classes) == every:
        return per_seed, float(stated.iloc[0]), "mean"
    if set(classes) <= set(published.index) and classes:
        same = float(published.loc[classes].mean())
        if set(classes) == set(published.index):
            return per_seed, same, "mean"
        return per_seed, same, f"mean of {','.join(classes)}"
    return None


ALL_ENTRIES = "all"


def compare(rows: pd.DataFrame, reference: pd.DataFrame, ours: list[str] | None = None
            ) -> pd.DataFrame:
    """Our numbers beside each published cell we have: mean over seeds, 95% interval, difference,
    and whether the published value lies outside our interval (needs two seeds or more).

    Each published method is compared with the entry its table names in `ours` (like with like),
    or, when `ours` is given, with each of those entries (``["all"]``: every entry of ours on
    that protocol and data set).
    """
    if ours and list(ours) != [ALL_ENTRIES]:
        known = sorted(set(entry_label(rows))) if not rows.empty else []
        for name in ours:
            if name not in known:
                raise unknown_name("entry of ours", name, known)
    out, not_compared = [], []
    if "setting" not in reference.columns:
        reference = reference.assign(setting="")
    for metric, refs in reference.groupby("metric"):
        cells = _our_cells(rows, metric)
        keys = ["protocol", "dataset", "ood_table", "paper", "method", "ours"]
        for (protocol, dataset, table, _, _, named), group in refs.groupby(keys, sort=False):
            here = cells[(cells["protocol"] == protocol) & (cells["dataset"] == dataset)
                         & (cells["ood_table"] == (table if protocol != "one-class" else ""))]
            if ours is None:
                entries = [named] if named else []
            elif list(ours) == [ALL_ENTRIES]:
                entries = sorted(set(here["entry"]))
            else:
                entries = list(ours)
            tuned = group["setting"].iloc[0] == "tuned"
            for entry in entries:
                mine = here[here["entry"] == entry]
                alike = mine[mine["tuned"] == tuned]
                if alike.empty and not mine.empty:
                    not_compared.append(_not_alike(group.iloc[0], entry, tuned))
                out.extend(_compare_entry(alike, group, entry, metric))
    table = pd.DataFrame(out)
    table.attrs["not_compared"] = list(dict.fromkeys(not_compared))
    return table


def _not_alike(ref, entry: str, tuned: bool) -> str:
    """Why a published method and an entry of ours are not compared: their settings were not
    chosen alike."""
    where = table_where(ref.protocol, ref.dataset, "", ref.ood_table)
    if tuned:
        why = ("its settings were chosen on validation data, ours are fixed (the OpenOOD table "
               "chooses them: --ood-table openood-v1.5)")
    else:
        why = "its settings are fixed, ours were chosen on validation data"
    return f"{where}: {ref.method} not compared with ours {entry}: {why}"


def _compare_entry(matching: pd.DataFrame, group: pd.DataFrame, entry: str, metric: str
                   ) -> list[dict]:
    """The rows of one published method (`group`) against one entry of ours, per preset."""
    out: list[dict] = []
    if matching.empty:
        return out
    first = group.iloc[0]
    protocol, dataset, paper, method = first.protocol, first.dataset, first.paper, first.method
    for preset, mine in matching.groupby("preset", sort=True):
        base = {"protocol": protocol, "dataset": dataset, "preset": preset,
                "ood_table": first.ood_table if protocol != "one-class" else "",
                "metric": metric, "published_method": method, "paper": paper,
                "confirmed": first.confirmed, "ours": entry,
                "setting": "tuned" if first.setting == "tuned" else "fixed",
                "ours_setting": _settings(mine["setting"])}
        for ref in group.itertuples(index=False):
            if ref.normal_class == "mean":
                continue
            cell = ref.normal_class if ref.normal_class != "all" else ref.ood_dataset
            values = mine[mine["cell"] == str(cell)]["value"].to_numpy()
            if values.size:
                out.append(_row(base, str(cell), ref.value, ref.confirmed, values))
        if protocol == "one-class":
            found = _mean_cell(mine, group)
            if found is not None:
                per_seed, published, name = found
                out.append(_row(base, name, published, first.confirmed,
                                per_seed.to_numpy()))
    return out


def _row(base: dict, cell: str, published: float, confirmed, values: np.ndarray) -> dict:
    s = seed_summary(values)
    # a fraction's interval stays within [0, 1]: t intervals of few seeds reach past 100%
    low, high = (s.low, s.high) if np.isnan(s.low) else (max(0.0, s.low), min(1.0, s.high))
    outside = (not np.isnan(low)) and not (low <= published <= high)
    return {**base, "cell": cell, "published": published, "confirmed": confirmed,
            "ours_mean": s.mean, "ours_low": low, "ours_high": high, "seeds": s.n,
            "difference": s.mean - published, "outside_interval": outside}


def _cell_order(c) -> tuple:
    """Classes in numeric order, then OOD sets, then the near and far means, then the means."""
    c = str(c)
    if c.isdigit():
        return (0, int(c), "")
    return ({"near": 2, "far": 3}.get(c, 4 if c.startswith("mean") else 1), 0, c)


def format_comparison(table: pd.DataFrame) -> str:
    """Text blocks per (protocol, dataset, published method), percent with one decimal."""
    if table.empty:
        return _with_not_compared(table, ["(no cell of the runs matches a published cell)"],
                                  "\n")

    def pct(v):
        return "" if pd.isna(v) else f"{100 * v:.1f}"

    blocks = []
    keys = ["protocol", "dataset", "preset", "ood_table", "published_method", "ours"]
    for (protocol, dataset, preset, ood_table, method, ours), part in table.groupby(keys,
                                                                                    sort=True):
        part = part.iloc[sorted(range(len(part)), key=lambda i: _cell_order(part["cell"].iloc[i]))]
        where = table_where(protocol, dataset, preset, ood_table)
        lines = [f"{where}: {method} ({part['paper'].iloc[0]}) vs ours {ours} "
                 f"({part['metric'].iloc[0].upper()} %; {_setting_words(part)})",
                 f"  {'cell':<16}{'published':>10}{'ours':>8}{'95% interval':>16}{'seeds':>7}"
                 f"{'diff':>8}"]
        for r in part.itertuples(index=False):
            interval = "" if pd.isna(r.ours_low) else f"[{pct(r.ours_low)}, {pct(r.ours_high)}]"
            mark = " *" if r.outside_interval else ""
            mark += " (unconfirmed)" if str(r.confirmed) in ("False", "false", "0") else ""
            lines.append(f"  {r.cell:<16}{pct(r.published):>10}{pct(r.ours_mean):>8}"
                         f"{interval:>16}{r.seeds:>7}{100 * r.difference:>+8.1f}{mark}")
        blocks.append("\n".join(lines))
    note = ("* the published value lies outside our seeds' 95% interval (intervals need two "
            "seeds or more, clipped to [0, 100]). (unconfirmed): the published number's source "
            "could not be read to confirm it. Means compare the same classes: 'mean of 0,3' "
            "averages the published per-class values of the classes we ran. Settings: 'tuned' "
            "pairs are both chosen on validation data (ours: OpenOOD v1.5's search on its "
            "validation lists; the values chosen per seed listed), 'fixed' pairs both fixed.")
    return _with_not_compared(table, [*blocks, note])


def _setting_words(part: pd.DataFrame) -> str:
    if "setting" not in part or part["setting"].iloc[0] != "tuned":
        return "settings fixed"
    chosen = "; ".join(v for v in dict.fromkeys(part["ours_setting"]) if v)
    return "settings tuned" + (f", ours chose {chosen}" if chosen else "")


def _with_not_compared(table: pd.DataFrame, blocks: list[str], sep: str = "\n\n") -> str:
    """Text blocks, then a line per published method not compared (settings not alike)."""
    return sep.join([*blocks, *(f"not like for like: {line}"
                                for line in table.attrs.get("not_compared", []))])


def side_by_side_frames(table: pd.DataFrame) -> dict[tuple[str, ...], pd.DataFrame]:
    """Per (protocol, data set, preset, OOD table, metric): the published methods, then ours
    (best mean first), cell by cell in percent, with `seeds` (ours), `unconfirmed` (a source not
    confirmed) and `ours` (a row of ours) columns; what the Markdown, LaTeX and HTML tables
    show."""
    frames = {}
    if table.empty:  # no cell of ours matches a published one
        return frames
    for key, part in table.groupby(["protocol", "dataset", "preset", "ood_table", "metric"],
                                   sort=True):
        cells = sorted(set(part["cell"]), key=_cell_order)
        rows = []
        published = part.drop_duplicates(["published_method", "cell"])
        for (method, paper), got in published.groupby(["published_method", "paper"], sort=False):
            values = dict(zip(got["cell"], 100 * got["published"]))
            rows.append({"row": f"{method} ({paper})", **values, "seeds": np.nan,
                         "unconfirmed": str(got["confirmed"].iloc[0]) in ("False", "false", "0"),
                         "ours": False})
        mine = part.drop_duplicates(["ours", "cell"])
        order = mine[mine["cell"].str.startswith("mean")].sort_values("ours_mean", ascending=False)
        for entry in dict.fromkeys(list(order["ours"]) + list(mine["ours"])):
            got = mine[mine["ours"] == entry]
            rows.append({"row": f"ours: {entry}", **dict(zip(got["cell"], 100 * got["ours_mean"])),
                         "seeds": int(got["seeds"].max()), "unconfirmed": False, "ours": True})
        frame = pd.DataFrame(rows).set_index("row")
        frames[key] = frame.reindex(columns=[*cells, "seeds", "unconfirmed", "ours"])
    return frames


def _side_cells(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in ("seeds", "unconfirmed", "ours")]


def side_by_side_text(frame: pd.DataFrame, unconfirmed: str) -> pd.DataFrame:
    """A side-by-side frame as text: one decimal, `unconfirmed` after a value whose source is
    not confirmed, seeds for ours only."""
    cells = _side_cells(frame)
    shown = pd.DataFrame(index=frame.index, columns=[*cells, "seeds"], dtype=object)
    for label, r in frame.iterrows():
        mark = unconfirmed if r["unconfirmed"] else ""
        for c in cells:
            shown.loc[label, c] = "" if pd.isna(r[c]) else f"{r[c]:.1f}{mark}"
        shown.loc[label, "seeds"] = str(int(r["seeds"])) if r["ours"] else ""
    return shown


def side_by_side_marks(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Best / second of each column as shown (one decimal); none for seeds."""
    from bench.reporting.leaderboard import best_two

    marks = best_two(frame[_side_cells(frame)].round(1), metric in LOWER_IS_BETTER)
    marks["seeds"] = ""
    return marks


def format_side_by_side(table: pd.DataFrame) -> str:
    """One markdown table per (protocol, data set, preset, metric): the published methods, then
    ours, cell by cell in percent (ours: mean over seeds; a mean over a subset of classes is
    compared with the published values of those classes). `?` marks an unconfirmed source."""
    if table.empty:
        return _with_not_compared(table, ["(no cell of the runs matches a published cell)"],
                                  "\n")
    blocks = []
    for (protocol, dataset, preset, ood_table, metric), frame in side_by_side_frames(
            table).items():
        shown = side_by_side_text(frame, " ?")
        cells = list(shown.columns[:-1])
        lines = [f"{table_where(protocol, dataset, preset, ood_table)} ({metric.upper()} %)", "",
                 "| method | " + " | ".join(cells) + " | seeds |",
                 "|---" * (len(cells) + 2) + "|"]
        for label, r in shown.iterrows():
            lines.append(f"| {label} | " + " | ".join(r[cells]) + f" | {r['seeds']} |")
        blocks.append("\n".join(lines))
    legend = ("? after a published method: its source could not be read to confirm the number. "
              "Ours: the mean over seeds; a mean over some classes is compared with the "
              "published values of those classes. Published numbers whose settings were "
              "chosen on validation data sit beside rows of ours chosen the same way, fixed "
              "beside fixed.")
    return _with_not_compared(table, [*blocks, legend])


def side_by_side_latex(table: pd.DataFrame) -> str:
    """The side-by-side tables as booktabs LaTeX (pandas' Styler): published and ours in one
    table per data set, the best of each column in bold and the second underlined."""
    from bench.reporting.leaderboard import styled_latex

    if table.empty:
        return "% no cell of the runs matches a published cell\n"
    out = []
    for (protocol, dataset, preset, ood_table, metric), frame in side_by_side_frames(
            table).items():
        shown, marks = side_by_side_text(frame, "$^?$"), side_by_side_marks(frame, metric)
        where = table_where(protocol, dataset, preset, ood_table)
        caption = (f"{where}: {metric.upper()} (\\%), published methods and ours (mean over "
                   "the seeds given); best of each column in bold, second underlined"
                   + ("; $^?$: source not confirmed" if frame["unconfirmed"].any() else "")
                   + ".")
        label = "tab:compare-" + "-".join(x for x in (protocol, dataset, ood_table, preset) if x)
        out.append(styled_latex(shown, marks, caption, label))
    return "\n".join(out)
