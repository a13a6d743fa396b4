"""Paper figures from tidy rows and run directories, as PNG and PDF, sized for a column (3.3 in)
or a page (6.9 in).

Per-class AUROC dot plots (self-supervised and classical apart, one colour per method), OOD heat
maps on a scale centred at chance, ROC curves and score histograms of a job, training-loss curves,
the critical-difference diagram, ablation curves of a --set sweep, and a t-SNE of the test
embeddings a job kept. Figures read only what jobs wrote: nothing here trains a model or loads a
data set. A figure that cannot be drawn is skipped with the reason (`draw_all`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from bench.files import load_npz
from bench.reporting.leaderboard import (  # noqa: E402
    TABLE_KEYS,
    column_key,
    entry_label,
    table_name,
    table_where,
)

sns.set_theme(context="paper", style="whitegrid", font_scale=0.9)
plt.rcParams.update({"figure.dpi": 100, "savefig.bbox": "tight", "pdf.fonttype": 42,
                     "ps.fonttype": 42, "figure.constrained_layout.use": True,
                     "text.parse_math": False})  # labels come from data: '$' is plain text

WIDTHS = {"column": 3.3, "page": 6.9}  # inches
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
PUBLISHED_MARKERS = ["_", "x", "+", "1"]  # published per-class values: grey, behind ours
LINESTYLES = ["-", "--", ":", "-."]


from bench.reporting.stats import (  # noqa: E402 - the tables the significance figure draws
    MAX_DRAWN_ENTRIES,
    NotDrawn,
    _default_configs,
    missing_seeds,
    significance_frame,
    significance_note,
    significance_of,
    significance_tables,
)


def class_names(dataset: str) -> tuple[str, ...] | None:
    """Names of a data set's classes for axis labels (None when they are just numbers)."""
    from bench.registry import DATASETS

    return DATASETS.entry(dataset).names_of_classes() if dataset in DATASETS else None


def method_colours(methods: list[str]) -> dict[str, tuple]:
    """One distinct colour per method (its scores differ by marker), in the registry's order
    (methods it does not know, from someone else's rows, after it)."""
    from bench.registry import METHODS

    order = METHODS.names()
    ordered = sorted(set(methods), key=lambda m: (order.index(m) if m in order else 99, m))
    palette = sns.color_palette("colorblind", 10)
    order = [0, 1, 2, 4, 3, 5, 7, 8, 9, 6]  # blue, orange, green, purple first: far apart
    colours = [palette[i] for i in order] + sns.color_palette("husl", max(0, len(ordered) - 10))
    return dict(zip(ordered, colours))


def save(fig, out: Path, stem: str) -> list[Path]:
    """Write `stem`.png (300 dpi) and `stem`.pdf (fonts embedded) under `out`, deterministic
    and atomic: each is drawn in memory, then written to a temporary and renamed, so a killed
    process leaves the old figure or the new one, never a truncated file."""
    import io

    from bench.files import atomic_write_bytes, inside

    paths = [inside(out, f"{stem}.png"), inside(out, f"{stem}.pdf")]
    try:
        for path, kwargs in zip(paths, [
                {"format": "png", "dpi": 300, "metadata": {"Software": None}},
                {"format": "pdf", "metadata": {"CreationDate": None, "Creator": None,
                                               "Producer": None}}]):
            buffer = io.BytesIO()
            fig.savefig(buffer, **kwargs)
            atomic_write_bytes(path, buffer.getvalue())
    finally:
        plt.close(fig)
    return paths


def _auroc(rows: pd.DataFrame) -> pd.DataFrame:
    part = rows[rows["metric"] == "auroc"]
    return part.assign(entry=entry_label(part), column=column_key(part).astype(str),
                       percent=100 * part["value"])


def _entry_method(entry: str) -> str:
    return entry.split("/", 1)[0]


def _classical_entries(frame: pd.DataFrame) -> set[str]:
    """Entries of classical detectors: their rows say what they saw (`features` is pixel or
    <encoder>:penultimate); a method scoring with its own network leaves it empty."""
    return set(frame.loc[frame["features"].fillna("").astype(str) != "", "entry"])


def _class_order(columns) -> list[str]:
    return sorted(columns, key=lambda c: (0, int(c), "") if c.isdigit() else (1, 0, c))


def _published_per_class(reference: pd.DataFrame | None, dataset: str
                         ) -> dict[str, dict[str, float]]:
    """{published method: {class: AUROC %}} of the one-class reference rows of a data set."""
    if reference is None or reference.empty:
        return {}
    ref = reference[(reference["protocol"] == "one-class") & (reference["dataset"] == dataset)
                    & (reference["metric"] == "auroc") & (reference["normal_class"] != "mean")]
    return {method: dict(zip(part["normal_class"].astype(str), 100 * part["value"]))
            for method, part in ref.groupby("method", sort=True)}


def auroc_per_class(rows: pd.DataFrame, out: Path, size: str = "page",
                    reference: pd.DataFrame | None = None) -> list[Path]:
    """One-class: AUROC per normal class, self-supervised and classical in two panels; one
    colour per method, one marker per score; bars are +-1 std over seeds (none for one seed).
    Each method's default config only, where there is one (`--set` variants: the leaderboards
    and the ablation figures).
    Published per-class values (`reference`) are drawn as grey ticks in the self-supervised
    panel when the data set has them."""
    paths = []
    part = _auroc(rows[rows["protocol"] == "one-class"])
    if part.empty:
        raise NotDrawn("no one-class rows")
    for (dataset, preset), d in part.groupby(["dataset", "preset"]):
        d, variants_left_out = _default_configs(d)
        fig = _per_class_figure(d, dataset, size, _published_per_class(reference, dataset))
        fig.suptitle(f"One-class {dataset}" + (f", {preset} preset" if preset else "")
                     + ": AUROC per normal class (mean over seeds, bars: +-1 std)"
                     + ("\ndefault configs; --set variants are in the leaderboard"
                        if variants_left_out else ""))
        paths += save(fig, out, f"auroc_per_class_{dataset}" + (f"_{preset}" if preset else ""))
    return paths


def _per_class_figure(d: pd.DataFrame, dataset: str, size: str,
                      published: dict[str, dict[str, float]]):
    """The panels of one data set: its own-network entries (with the published marks), then its
    classical ones."""
    per_seed = d.groupby(["entry", "column", "seed"])["percent"].mean().reset_index()
    stats = per_seed.groupby(["entry", "column"])["percent"].agg(["mean", "std", "count"])
    stats = stats.reset_index()
    classes = _class_order(d["column"].unique())
    entries = d.groupby("entry")["percent"].mean().sort_values(ascending=False).index
    classical = _classical_entries(d)
    panels = [("self-supervised (own network)", [e for e in entries if e not in classical]),
              ("classical (pixels or learned features)", [e for e in entries if e in classical])]
    panels = [(t, e) for t, e in panels if e]
    fig, axes = plt.subplots(len(panels), 1, figsize=(WIDTHS[size], 3.3 * len(panels) + 0.4),
                             squeeze=False)
    for ax, (title, chosen) in zip(axes[:, 0], panels):
        marks = published if title.startswith("self-supervised") else {}
        _per_class_panel(ax, title, stats, chosen, classes, class_names(dataset), marks)
    fig.get_layout_engine().set(h_pad=0.12)  # room between a legend and the next panel
    return fig


def _per_class_panel(ax, title: str, stats: pd.DataFrame, chosen: list[str], classes: list[str],
                     names: tuple[str, ...] | None, published: dict[str, dict[str, float]]) -> None:
    """One panel: a dot (+-1 std) per entry and class, published values as grey marks behind."""
    n = len(chosen)
    for k, (method, values) in enumerate(published.items()):
        y = [values.get(c, np.nan) for c in classes]
        ax.plot(np.arange(len(classes)), y, ls="none", marker=PUBLISHED_MARKERS[
            k % len(PUBLISHED_MARKERS)], ms=7, mew=1.1, color="0.35",
            label=f"{method} (published)", zorder=1)
    colours = method_colours([_entry_method(e) for e in chosen])
    scores_of: dict[str, int] = {}
    for j, entry in enumerate(chosen):
        method = _entry_method(entry)
        marker = MARKERS[scores_of.setdefault(method, 0) % len(MARKERS)]
        scores_of[method] += 1
        s = stats[stats["entry"] == entry].set_index("column").reindex(classes)
        x = np.arange(len(classes)) + (j - (n - 1) / 2) * min(0.8 / max(n, 1), 0.12)
        yerr = s["std"].where(s["count"] > 1).fillna(0).to_numpy()
        ax.errorbar(x, s["mean"], yerr=yerr if yerr.any() else None, fmt=marker, ms=3.5,
                    lw=0.8, capsize=1.5, color=colours.get(method, "grey"), label=entry)
    ax.axhline(50, color="grey", lw=0.7, ls="--")
    ax.set_xticks(np.arange(len(classes) + 1) - 0.5, minor=True)
    ax.grid(False, axis="x", which="major")
    ax.grid(True, axis="x", which="minor", lw=0.6)
    ax.set(ylabel="AUROC (%)", title=title)
    low = float(np.nanmin(stats[stats["entry"].isin(chosen)]["mean"]))
    if published:
        low = min(low, min(v for values in published.values() for v in values.values()))
    ax.set_ylim(max(0, low - 5), 100.5)
    labels = [names[int(c)] if names and c.isdigit() and int(c) < len(names) else c
              for c in classes]
    ax.set_xticks(np.arange(len(classes)), labels, rotation=30 if names else 0,
                  ha="right" if names else "center")
    ax.set_xlabel("normal class")
    ax.legend(fontsize=6, ncol=3, loc="upper center",
              bbox_to_anchor=(0.5, -0.36 if names else -0.2), frameon=False)


def ood_heatmaps(rows: pd.DataFrame, out: Path, size: str = "page") -> list[Path]:
    """OOD protocols: AUROC (%) of each method/score against each OOD set, on a diverging scale
    centred at chance (50): below-chance cells are red, not the colour of 50."""
    from bench.protocols import ood_group

    paths = []
    part = _auroc(rows[rows["protocol"] != "one-class"])
    if part.empty:
        raise NotDrawn("no OOD rows")
    for key, d in part.groupby(TABLE_KEYS):
        dataset, ood_table = key[1], key[3] or "bench"
        table = d.pivot_table(index="entry", columns="column", values="percent", aggfunc="mean")
        order = sorted(table.columns, key=lambda c: ({"near": 0, "far": 1}.get(
            ood_group(dataset, c, ood_table), 2), c))
        table = table[order]
        table.columns = [f"{c} ({ood_group(dataset, c, ood_table)})" for c in order]
        table = table.loc[table.mean(axis=1).sort_values(ascending=False).index]
        width = WIDTHS[size]
        fig, ax = plt.subplots(figsize=(width, 0.28 * table.shape[0] + 1.6))
        with warnings.catch_warnings():  # seaborn 0.13 calls matplotlib 3.11's deprecated set_bad
            warnings.filterwarnings("ignore", message="The set_bad function")
            sns.heatmap(table, annot=True, fmt=".1f", cmap="RdBu", center=50, vmin=0, vmax=100,
                        ax=ax, annot_kws={"fontsize": 6},
                        cbar_kws={"label": "AUROC (%), 50 = chance"})
        ax.set(xlabel="OOD set (group)", ylabel="method/score",
               title=f"{table_where(*key)}: in-distribution vs OOD sets")
        ax.tick_params(axis="y", rotation=0)
        ax.tick_params(axis="x", rotation=30)
        paths += save(fig, out, f"ood_heatmap_{table_name(*key)}")
    return paths


def _job_record(job_dir: Path) -> dict:
    from bench.store import RunStore

    record = RunStore(job_dir.parent.parent).record(job_dir.name)
    if record is None:
        raise NotDrawn(f"{job_dir / 'record.json'} is missing or not a record")
    return record


NORMAL_GROUPS = ("normal", "in-distribution")  # what a t-SNE and a histogram call the normal


def group_colours(groups) -> dict[str, tuple]:
    """One colour for the normal (in-distribution) images and one per anomalous group, the
    same in every figure: normal is the colourblind palette's blue, the first anomalous group
    its orange, further OOD sets its other colours."""
    palette = sns.color_palette("colorblind", 10)
    others = iter(palette[1:] + sns.color_palette("husl", max(0, len(groups) - 9)))
    return {g: palette[0] if g in NORMAL_GROUPS else next(others)
            for g in dict.fromkeys(groups)}


NORMAL_COLOUR, ANOMALOUS_COLOUR = sns.color_palette("colorblind", 2)


def _job_scores(job_dir: Path) -> tuple[dict, dict]:
    record = _job_record(job_dir)
    path = job_dir / "scores.npz"
    if not path.exists():
        raise NotDrawn(f"{path} is missing; `bench run` with the same arguments redoes the job")
    return record, load_npz(path)


def _job_title(record: dict) -> str:
    where = (f"class {record['normal_class']}" if record.get("normal_class") is not None
             else "all classes")
    return (f"{record['method']} on {record['dataset']} ({record['protocol']}, {where}, "
            f"seed {record['seed']})")


def roc_and_histograms(job_dir: Path, out: Path, size: str = "page") -> list[Path]:
    """ROC curves (every score variant and test group; AUROC in the legend, line styles per
    score) and anomaly-score histograms of one job."""
    from sklearn.metrics import roc_auc_score, roc_curve

    record, arrays = _job_scores(job_dir)
    groups = sorted({k.split("/")[0] for k in arrays})
    scores = sorted({k.split("/", 1)[1] for k in arrays if not k.endswith("/is_anomaly")})
    title = _job_title(record)
    width = WIDTHS[size]
    fig, ax = plt.subplots(figsize=(min(width, 4.2), min(width, 4.2)))
    colours = sns.color_palette("colorblind", len(groups))
    for gi, g in enumerate(groups):
        y = arrays[f"{g}/is_anomaly"].astype(bool)
        for si, s in enumerate(scores):
            v = arrays[f"{g}/{s}"]
            fpr, tpr, _ = roc_curve(y, v)
            ax.plot(fpr, tpr, lw=1.2, ls=LINESTYLES[si % len(LINESTYLES)], color=colours[gi],
                    label=f"{s} vs {g} (AUROC {100 * roc_auc_score(y, v):.1f})",
                    zorder=3 + si)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.7, ls="--", label="chance (50.0)")
    ax.set(xlabel="false positive rate (normal flagged)", ylabel="true positive rate (anomalies)",
           title="ROC: " + title)
    ax.title.set_fontsize(7)
    ax.legend(fontsize=6, loc="lower right")
    paths = save(fig, out, f"roc_{job_dir.name}")

    ncols = min(len(scores), 4)
    nrows = len(groups) * math.ceil(len(scores) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, 1.9 * nrows + 0.5), squeeze=False)
    cells = [(g, s) for g in groups for s in scores]
    for ax, (g, s) in zip(axes.flat, cells):
        y = arrays[f"{g}/is_anomaly"].astype(bool)
        v = arrays[f"{g}/{s}"]
        heavy_tail = v.min() > 0 and v.max() > 20 * np.median(v)  # e.g. Mahalanobis distances
        bins = (np.geomspace(v.min(), v.max(), 41) if heavy_tail
                else np.histogram_bin_edges(v, bins=40))
        ax.hist(v[~y], bins=bins, alpha=0.6, density=True, label="normal", color=NORMAL_COLOUR)
        ax.hist(v[y], bins=bins, alpha=0.6, density=True, label=f"anomalous ({g})",
                color=ANOMALOUS_COLOUR)
        if heavy_tail:
            ax.set_xscale("log")
        ax.set(xlabel=f"anomaly score '{s}'" + (" (log)" if heavy_tail else ""),
               ylabel="density")
        ax.legend(fontsize=5)
    for ax in list(axes.flat)[len(cells):]:
        ax.axis("off")
    fig.suptitle("Score histograms (higher = more anomalous): " + title, fontsize=8)
    return paths + save(fig, out, f"score_hist_{job_dir.name}")


def training_curves(records: list[dict], out: Path, size: str = "page") -> list[Path]:
    """Training loss per epoch, one figure per data set and preset, one panel per method in a
    grid of at most 4 columns (mean over jobs; band = min to max). A model shared by several
    jobs (variants that only change scoring) counts once, under its default config's name."""
    done = [r for r in records if r.get("status") == "done"
            and r.get("features", "pixel") == "pixel" and r.get("history")]
    done.sort(key=lambda r: (bool(r.get("variant")), r.get("job_id", "")))
    seen: set[str] = set()
    rows = []
    for r in done:
        model = r.get("train_id") or r.get("job_id", "")
        if model in seen:
            continue
        seen.add(model)
        label = (r["method"] + (f" [{r['variant']}]" if r.get("variant") else "")
                 + (f" ({r['protocol']})" if r.get("protocol", "one-class") != "one-class" else ""))
        rows += [{"method": label, "dataset": r["dataset"], "preset": r.get("preset", ""),
                  "epoch": h["epoch"], "loss": h["loss"]} for h in r["history"]]
    if not rows:
        raise NotDrawn("no job kept a training history (classical methods do not train)")
    frame = pd.DataFrame(rows)
    paths = []
    for (dataset, preset), d in frame.groupby(["dataset", "preset"]):
        methods = sorted(d["method"].unique())
        ncols = min(4, len(methods))
        nrows = math.ceil(len(methods) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(WIDTHS[size], 1.8 * nrows + 0.5),
                                 squeeze=False)
        for ax, m in zip(axes.flat, methods):
            g = d[d["method"] == m].groupby("epoch")["loss"]
            ax.plot(g.mean().index, g.mean().values, lw=1.2)
            ax.fill_between(g.min().index, g.min().values, g.max().values, alpha=0.25)
            ax.set(xlabel="epoch", ylabel="training loss")
            ax.set_title("\n".join(_wrap(m, 28)), fontsize=8)
        for ax in list(axes.flat)[len(methods):]:
            ax.axis("off")
        fig.suptitle(f"Training loss on {dataset}" + (f", {preset} preset" if preset else "")
                     + " (line: mean over jobs; band: min to max)")
        paths += save(fig, out, f"training_loss_{dataset}" + (f"_{preset}" if preset else ""))
    return paths


def cd_diagram(rows: pd.DataFrame, out: Path, alpha: float = 0.05, size: str = "page",
               control: str | None = None) -> list[Path]:
    """Critical-difference diagrams, one per preset (Demsar 2006; scikit-posthocs' layout):
    average ranks over blocks (data set x class or OOD set), Friedman first, bars joining
    entries whose Nemenyi test is not significant, the CD bar, and Holm's comparisons of each
    entry with the control (MCL's entry unless `control` names another). Writes the p-values
    beside each figure (.csv) and the significant differences as a note (.md). Each method's
    default config only, where there is one."""
    paths, reasons = [], []
    for key, part in significance_tables(rows):
        try:
            paths += _cd_diagram(part, out, alpha, size, key, control)
        except NotDrawn as exc:
            reasons.append(f"{table_where(*key)}: {exc}")
    if not paths:
        raise NotDrawn("; ".join(reasons))
    return paths


def _cd_diagram(rows: pd.DataFrame, out: Path, alpha: float, size: str, key: tuple,
                control: str | None) -> list[Path]:
    import scikit_posthocs as sp

    from bench.files import atomic_write_csv, atomic_write_text, inside

    result, table, dropped, control_note = significance_of(rows, alpha, control)
    entries = list(result.ranks.index)
    if len(entries) > MAX_DRAWN_ENTRIES:
        raise NotDrawn(f"{len(entries)} entries, more than the {MAX_DRAWN_ENTRIES} one diagram "
                       "can show: choose fewer (bench.significance gives every p-value)")
    p = result.nemenyi if result.friedman_rejects else pd.DataFrame(  # no post-hoc: one clique
        1.0, index=result.nemenyi.index, columns=result.nemenyi.columns)
    versus = result.versus_control
    colours = {e: ("tab:blue" if e == result.control else
                   "tab:red" if versus.loc[e, "significant"] else "#222222") for e in entries}
    fig, ax = plt.subplots(figsize=(WIDTHS[size], 0.9 + 0.16 * len(entries)))
    ax.grid(False)
    bar_style = {"color": "tab:gray", "linewidth": 2.5}
    drawn = sp.critical_difference_diagram(  # without cd=: it would draw the CD bar among the
        result.ranks, p, alpha=alpha, ax=ax, color_palette=colours,  # tick labels, to 2 digits
        label_props={"fontsize": 6}, label_fmt_left="{label} ({rank:.2f})",
        label_fmt_right="({rank:.2f}) {label}", crossbar_props=bar_style)
    for (bar, *_) in drawn["crossbars"]:  # its points come from a set: same bytes every run
        bar.set_data(sorted(bar.get_xdata()), bar.get_ydata())
    _draw_cd_bar(ax, result.ranks.min(), result.cd, bar_style)
    sets = sorted({b.rsplit("/", 1)[0] for b in table.index})
    k = len(entries)
    where = table_where(*key)
    caption = (f"{where}: average rank over N = {table.shape[0]} blocks "
               f"({', '.join(sets)}; 1 = best AUROC), k = {k}. Friedman chi2({k - 1}) = "
               f"{result.friedman_statistic:.1f}, p = {result.friedman_p:.2g}. "
               + (f"Grey bars join entries Nemenyi does not separate at alpha = {alpha} "
                  f"(CD = {result.cd:.2f}). " if result.friedman_rejects else
                  f"Not significant at alpha = {alpha}: no post-hoc test. ")
               + f"Blue: control {result.control}{control_note}; red: different from it "
               f"(Holm, alpha = {alpha}).")
    if dropped:
        caption += f" Left out (not run on every block): {', '.join(dropped)}."
    fewer = missing_seeds(rows)
    if fewer:
        caption += f" Fewer seeds: {'; '.join(fewer)}."
    ax.set_title("\n".join(_wrap(caption, 130 if size == "page" else 60)), fontsize=6)
    stem = "critical_difference_" + table_name(*key)
    paths = save(fig, out, stem)
    atomic_write_csv(inside(out, f"{stem}.csv"), significance_frame(result))
    atomic_write_text(inside(out, f"{stem}.md"), significance_note(result, where, fewer))
    return [*paths, Path(out) / f"{stem}.csv", Path(out) / f"{stem}.md"]


def _draw_cd_bar(ax, start: float, cd: float, style: dict) -> None:
    """The critical difference as a bar from the best rank, labelled as in the caption, above
    the rank axis' tick labels (the axis line is at y = 0, rows of entries below it)."""
    from matplotlib import transforms

    y = 1.5  # rank-axis rows above the axis line: clears the tick labels of the sizes drawn here
    ax.plot([start, start + cd], [y, y], **style)
    ax.text(start + cd / 2, y, f"CD = {cd:.2f}", fontsize=6, ha="center", va="bottom",
            transform=transforms.offset_copy(ax.transData, fig=ax.figure, y=2.5, units="points"))
    ax.set_ylim(ax.get_ylim()[0], y + 1.0)


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width)


def _assignments(variant: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in variant.split(","))


def _swept(part: pd.DataFrame) -> list[pd.DataFrame]:
    """Per (protocol, data set, preset, method, fields set): the rows where exactly one field
    takes several values (an ablation), with that field, its value and the fields held fixed."""
    found = []
    part = part.assign(_keys=part["variant"].map(lambda v: ",".join(sorted(_assignments(v)))))
    for _, d in part.groupby(["protocol", "dataset", "preset", "method", "_keys"]):
        assigned = d["variant"].map(_assignments)
        keys = sorted({k for a in assigned for k in a})
        varying = [k for k in keys if assigned.map(lambda a, k=k: a.get(k)).nunique() > 1]
        if len(varying) != 1:  # not one swept field: not an ablation
            continue
        key = varying[0]
        fixed = assigned.map(lambda a, key=key: ",".join(f"{k}={v}" for k, v in sorted(a.items())
                                                         if k != key))
        found.append(d.assign(key=key, value_text=assigned.map(lambda a, key=key: a.get(key)),
                              panel=d["method"] + "/" + d["score"], fixed=fixed,
                              base=d["method"] + "/" + d["score"]
                              + np.where(fixed != "", " [" + fixed + "]", "")))
    return found


def _ablation_table(d: pd.DataFrame, key: str) -> pd.DataFrame:
    """Mean over classes and 95% interval over seeds, per entry and value of `key`."""
    from bench.reporting.stats import seed_summary

    per_seed = d.groupby(["panel", "fixed", "base", "value_text", "seed"])["percent"] \
        .mean().reset_index()
    lines = []
    for (panel, fixed, base, value_text), g in per_seed.groupby(
            ["panel", "fixed", "base", "value_text"]):
        s = seed_summary(g["percent"].to_numpy())
        lines.append({"method/score": base, key: value_text, "mean": s.mean, "low": s.low,
                      "high": s.high, "seeds": s.n, "_panel": panel, "_fixed": fixed})
    table = pd.DataFrame(lines)
    return table.assign(_x=pd.to_numeric(table[key], errors="coerce")).sort_values(
        ["method/score", "_x", key])


def _ablation_figure(table: pd.DataFrame, key: str, size: str, title: str):
    panels = sorted(table["_panel"].unique(), key=lambda p: (not p.endswith(("/sei", "/csi",
                                                                              "/rot")), p))
    fig, axes = plt.subplots(1, len(panels), figsize=(WIDTHS[size], 2.6), squeeze=False)
    numeric = table["_x"]
    log_x = numeric.notna().all() and numeric.min() > 0 and numeric.max() / numeric.min() >= 10
    values = table.drop_duplicates(key).sort_values(["_x", key])
    for ax, panel in zip(axes[0], panels):
        for i, (fixed, g) in enumerate(table[table["_panel"] == panel].groupby("_fixed")):
            x = g["_x"] if g["_x"].notna().all() else np.arange(len(g))
            ax.plot(x, g["mean"], marker=MARKERS[i % len(MARKERS)], lw=1.2, ms=4,
                    label=fixed or "preset defaults")
            if g["low"].notna().any():
                ax.fill_between(x, g["low"], g["high"], alpha=0.15)
        if log_x:
            ax.set_xscale("log")
        ax.set_xticks(values["_x"] if values["_x"].notna().all() else np.arange(len(values)),
                      values[key])
        ax.minorticks_off()
        ax.set(xlabel=key, ylabel="mean AUROC (%)", title=panel)
        ax.legend(fontsize=6, title="other fields", title_fontsize=6)
    fig.suptitle(title, fontsize=8)
    return fig


def ablation(rows: pd.DataFrame, out: Path, size: str = "page") -> list[Path]:
    """AUROC against the value of a --set sweep (variants `key=value`, with other fields held
    fixed in the label), per method/score, mean over classes with a 95% interval over seeds; a
    figure, a CSV and a Markdown table per (protocol, data set, preset, swept field)."""
    from bench.files import atomic_write_csv, atomic_write_text, inside

    part = _auroc(rows)
    found = _swept(part[part["variant"].astype(str) != ""])
    if not found:
        raise NotDrawn("no --set sweep among the rows (variants like alpha=0.05)")
    paths = []
    for (protocol, dataset, preset, key), d in pd.concat(found, ignore_index=True).groupby(
            ["protocol", "dataset", "preset", "key"]):
        if d["value_text"].nunique() < 2:
            continue
        where = table_where(protocol, dataset, preset)
        table = _ablation_table(d, key)
        fig = _ablation_figure(table, key, size, f"{where}: AUROC against {key} (mean over "
                               "classes; band: 95% interval over seeds)")
        stem = f"ablation_{table_name(protocol, dataset, preset)}_{key}"
        paths += save(fig, out, stem)
        shown = table.drop(columns=["_panel", "_fixed", "_x"]).round(
            {"mean": 1, "low": 1, "high": 1})
        atomic_write_csv(inside(out, f"{stem}.csv"), shown)
        md = "| " + " | ".join(shown.columns) + " |\n|" + "---|" * len(shown.columns) + "\n"
        md += "".join("| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |\n"
                      for row in shown.itertuples(index=False))
        atomic_write_text(inside(out, f"{stem}.md"), f"### {where}: AUROC (%) against {key}, "
                          "mean over classes; low/high: 95% interval over seeds\n\n" + md)
        paths += [out / f"{stem}.csv", out / f"{stem}.md"]
    if not paths:
        raise NotDrawn("no swept field with two values or more")
    return paths


def tsne(job_dir: Path, out: Path, size: str = "page", max_points: int = 2000) -> list[Path]:
    """t-SNE of the penultimate features the job kept of its test images (embedding.npz)."""
    from sklearn.manifold import TSNE

    record = _job_record(job_dir)
    path = job_dir / "embedding.npz"
    if not path.exists():
        raise NotDrawn(f"{job_dir.name} kept no embeddings (classical methods, or a job from an "
                       "older version: `bench run --retry-failed` does not redo it; delete its "
                       "folder and run again)")
    arrays = load_npz(path)
    feats, groups = arrays["features"], arrays["group"].astype(str)
    keep = np.arange(len(feats))[:max_points * 2]
    sample = np.asarray(feats[keep], dtype=float) if np.ndim(feats) == 2 else np.zeros((0, 0))
    if len(sample) < 5 or len(groups) != len(feats):
        raise NotDrawn(f"{job_dir.name}: its embedding.npz holds {len(sample)} points of "
                       "features (at least 5 rows of features, one group each, are drawn)")
    if not np.isfinite(sample).all() or np.ptp(sample, axis=0).max() == 0:
        raise NotDrawn(f"{job_dir.name}: its features are constant or not finite; a t-SNE of "
                       "them means nothing")
    xy = TSNE(n_components=2, init="pca", random_state=0,
              perplexity=min(30, len(keep) - 1)).fit_transform(feats[keep])
    width = min(WIDTHS[size], 4.2)
    fig, ax = plt.subplots(figsize=(width, width * 0.9))
    order = sorted(dict.fromkeys(groups[keep]), key=lambda g: (g not in NORMAL_GROUPS, g))
    sns.scatterplot(x=xy[:, 0], y=xy[:, 1], hue=groups[keep], hue_order=order, s=5,
                    linewidth=0, alpha=0.7, ax=ax, palette=group_colours(order))
    ax.set(xlabel="t-SNE 1", ylabel="t-SNE 2",
           title=f"t-SNE of {record['method']} features: " + _job_title(record))
    ax.title.set_fontsize(7)
    ax.legend(title="test sample", fontsize=6, title_fontsize=6)
    return save(fig, out, f"tsne_{job_dir.name}")


def pick_job(records: list[dict]) -> str | None:
    """A representative finished job: the first of the featured method (MCL), else of any method
    with its own network (registry order), else any; a job with the method's own settings
    before one of a `--set` variant (an ablation's alpha=0.05 is not MCL's figure)."""
    from bench.registry import FEATURED_METHOD, METHODS

    done = [r for r in records if r.get("status") == "done"
            and r.get("features", "pixel") == "pixel"]
    networks = [m for m in METHODS.names() if METHODS.kind(m) != "classical"]
    for m in [FEATURED_METHOD, *networks]:
        of_m = [r for r in done if r.get("method") == m]
        for r in [r for r in of_m if not r.get("variant")] + of_m:
            return r["job_id"]
    return done[0]["job_id"] if done else None


def _reference(skipped: list[str]) -> pd.DataFrame | None:
    """The published tables shipped with the package; None, with the reason added to `skipped`,
    when they cannot be read (the per-class figure is still drawn, without the published marks)."""
    from bench.reporting.reference import load_reference

    try:
        return load_reference()
    except Exception as exc:  # noqa: BLE001 - reported, not swallowed: see draw_all's skipped lines
        skipped.append(f"published per-class marks: not drawn ({type(exc).__name__}: {exc})")
        return None


@dataclass
class Inputs:
    """What the figures are drawn from, and the lines of those not drawn."""

    rows: pd.DataFrame
    records: list[dict]
    out: Path
    size: str
    skipped: list[str]
    control: str | None = None  # the significance tests' control entry (default: MCL's)


# the figures drawn from rows and records (--figure NAME); "jobs" adds a job's own figures
FIGURES: dict[str, tuple[str, Callable[[Inputs], list[Path]]]] = {
    "per-class": ("AUROC per class",
             lambda i: auroc_per_class(i.rows, i.out, i.size, _reference(i.skipped))),
    "heatmaps": ("OOD heat maps", lambda i: ood_heatmaps(i.rows, i.out, i.size)),
    "losses": ("training curves", lambda i: training_curves(i.records, i.out, i.size)),
    "cd": ("critical-difference diagram",
           lambda i: cd_diagram(i.rows, i.out, size=i.size, control=i.control)),
    "ablation": ("ablation", lambda i: ablation(i.rows, i.out, i.size)),
}
JOB_FIGURES = "jobs"  # ROC curves, score histograms and t-SNE of --job (default: an MCL job)
FIGURE_NAMES = (*FIGURES, JOB_FIGURES)


def _job_steps(records: list[dict], runs: list[str], job_ids: list[str], inputs: Inputs,
               with_tsne: bool) -> list[tuple[str, Callable[[], list[Path]]]]:
    from bench.errors import BenchError
    from bench.store import RunStore

    steps = []
    for job_id in list(job_ids) or [j for j in [pick_job(records)] if j]:
        home = next((d for d in runs if RunStore(d).record(job_id)), None)
        if home is None:
            raise BenchError(f"--job {job_id}: no such job in {', '.join(runs) or 'the runs'}")
        job_dir = RunStore(home).job_dir(job_id)
        steps.append((f"ROC and histograms of {job_id}",
                      lambda d=job_dir: roc_and_histograms(d, inputs.out, inputs.size)))
        if with_tsne:
            steps.append((f"t-SNE of {job_id}", lambda d=job_dir: tsne(d, inputs.out, inputs.size)))
    return steps


def draw_all(rows: pd.DataFrame, records: list[dict], runs: list[str], out: Path,
             job_ids: list[str], with_tsne: bool = True, size: str = "page",
             only: set[str] | None = None, control: str | None = None
             ) -> tuple[list[Path], list[str]]:
    """Every figure the rows and run directories allow (or those named in `only`): (paths
    written, one line per figure not drawn and why)."""
    from bench.files import clean_stale_temporaries

    clean_stale_temporaries(out, recursive=False)
    inputs = Inputs(rows, records, Path(out), size, [], control)
    steps: list[tuple[str, Callable[[], list[Path]]]] = [
        (title, lambda draw=draw: draw(inputs)) for name, (title, draw) in FIGURES.items()
        if only is None or name in only]
    if only is None or JOB_FIGURES in only:
        steps += _job_steps(records, runs, job_ids, inputs, with_tsne)
    paths: list[Path] = []
    for name, draw in steps:
        try:
            paths += draw()
        except NotDrawn as exc:
            inputs.skipped.append(f"{name}: not drawn ({exc})")
        except Exception as exc:  # noqa: BLE001 - one figure's failure must not stop the rest
            plt.close("all")
            inputs.skipped.append(f"{name}: not drawn ({type(exc).__name__}: {exc})")
    return paths, inputs.skipped
