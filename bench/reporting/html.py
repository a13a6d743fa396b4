"""One self-contained HTML page (`bench report`): every leaderboard (sortable by any column),
the comparison with published numbers, the significance tests, every figure the rows and runs
allow (embedded as PNG data), and what each run ran on. No network: no CDN, no external file;
the page opens from disk. Made from the same summaries as the CSV, Markdown and LaTeX tables."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
import pandas as pd

from bench.reporting.leaderboard import (
    NOTE_COLUMNS,
    as_text,
    numeric_table,
    summarise,
    table_name,
    table_title,
    table_where,
)

FIGURE_WIDTH_PX = 1600  # embedded figures are downscaled to this width (the files keep 300 dpi)
METRICS = ("auroc", "fpr95")  # the leaderboards shown: AUROC, and FPR95 (lower is better)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; padding: 0 1.5em;
       max-width: 1300px; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
h3 { font-size: 1.05em; margin-top: 1.5em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border-bottom: 1px solid #e4e4e4; padding: 0.2em 0.55em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
table.sortable th { cursor: pointer; user-select: none; background: #f3f3f3; }
th[data-dir="desc"]::after { content: " \\25BE"; } th[data-dir="asc"]::after { content: " \\25B4"; }
td.best { font-weight: bold; } td.ours:first-child { color: #1f4e96; }
ul.notes { font-size: 0.85em; color: #555; } figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; } figcaption { font-size: 0.85em; }
.scroll { overflow-x: auto; }
"""

# click a header: sort by that column (numbers by value, blanks last; a second click reverses)
SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('thead th').forEach(function (th, i) {
    th.addEventListener('click', function () {
      var dir = th.dataset.dir === 'desc' ? 'asc' : 'desc';
      table.querySelectorAll('thead th').forEach(function (h) { delete h.dataset.dir; });
      th.dataset.dir = dir;
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var v = row.cells[i].dataset.v;
        if (v === undefined || v === '') { return null; }
        return isNaN(Number(v)) ? v : Number(v);
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null) { return y === null ? 0 : 1; }
        if (y === null) { return -1; }
        var c = x < y ? -1 : (x > y ? 1 : 0);
        return dir === 'asc' ? c : -c;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def sortable_table(numbers: pd.DataFrame, shown: pd.DataFrame, index_name: str,
                   best: pd.DataFrame | None = None, ours: pd.Series | None = None) -> str:
    """An HTML table: `shown`'s text in the cells, `numbers` as each cell's sort key (data-v),
    `best` marking cells in bold, `ours` marking rows of ours."""
    head = "".join(f"<th>{_e(c)}</th>" for c in [index_name, *shown.columns])
    body = []
    for label in shown.index:
        mine = ' class="ours"' if ours is not None and bool(ours.get(label, False)) else ""
        cells = [f'<td data-v="{_e(label)}"{mine}>{_e(label)}</td>']
        for col in shown.columns:
            v = numbers.loc[label, col] if col in numbers.columns else shown.loc[label, col]
            key = "" if v is None or (isinstance(v, float) and np.isnan(v)) else v
            mark = ' class="best"' if best is not None and col in best.columns and \
                best.loc[label, col] == "best" else ""
            cells.append(f'<td data-v="{_e(key)}"{mark}>{_e(shown.loc[label, col])}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _notes(lines) -> str:
    return ('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in lines) + "</ul>"
            if lines else "")


def leaderboards_html(rows: pd.DataFrame) -> str:
    """Every leaderboard of each metric in METRICS, from the leaderboard's numeric tables."""
    from bench.reporting.leaderboard import LOWER_IS_BETTER, best_two

    parts = []
    for metric in METRICS:
        summary = summarise(rows, metric)
        for key in summary.tables:
            numbers = numeric_table(summary, key)
            shown = as_text(numbers)
            values = numbers.drop(columns=["std", "seeds", *NOTE_COLUMNS])
            best = best_two(values.round(1), metric in LOWER_IS_BETTER)
            parts.append(f'<h3 id="{_e(table_name(*key))}-{metric}">{_e(table_title(summary, key))}'
                         "</h3>" + sortable_table(numbers, shown, "method/score", best)
                         + _notes(summary.table_notes.get(key, [])))
    return "".join(parts) or "<p>No finished jobs.</p>"


def comparison_html(rows: pd.DataFrame, skipped: list[str]) -> str:
    """Ours beside the published numbers (`bench compare --ours all --side-by-side`)."""
    from bench.reporting.reference import (
        compare,
        load_reference,
        side_by_side_frames,
        side_by_side_marks,
        side_by_side_text,
    )

    try:
        table = compare(rows, load_reference(), ours=["all"])
    except Exception as exc:  # noqa: BLE001 - the rest of the report still stands
        skipped.append(f"comparison with published numbers: {type(exc).__name__}: {exc}")
        return "<p>Not made (see the notes of bench report).</p>"
    parts = []
    for (protocol, dataset, preset, ood_table, metric), frame in side_by_side_frames(
            table).items():
        shown, best = side_by_side_text(frame, " ?"), side_by_side_marks(frame, metric)
        parts.append(f"<h3>{_e(table_where(protocol, dataset, preset, ood_table))} "
                     f"({_e(metric.upper())} %)</h3>"
                     + sortable_table(frame, shown, "method", best, frame["ours"]))
    if not parts:
        return "<p>No cell of these rows matches a published cell.</p>"
    return ("<p>Published methods, then ours (mean over seeds); ? marks a source not "
            "confirmed; bold: the best of each column.</p>" + "".join(parts))


def significance_html(rows: pd.DataFrame, control: str | None, skipped: list[str]) -> str:
    """Per table (protocol, data set, preset, OOD table): Friedman, the average ranks, Holm
    against the control, Nemenyi's pairs."""
    from bench.reporting.leaderboard import table_where
    from bench.reporting.stats import (
        MAX_DRAWN_ENTRIES,
        NotDrawn,
        missing_seeds,
        significance_note,
        significance_of,
        significance_tables,
    )

    parts = []
    for key, part in significance_tables(rows):
        where = table_where(*key)
        try:
            result, table, dropped, control_note = significance_of(part, control=control)
            if len(result.ranks) > MAX_DRAWN_ENTRIES:
                raise NotDrawn(f"{len(result.ranks)} entries, more than the "
                               f"{MAX_DRAWN_ENTRIES} one table shows")
        except NotDrawn as exc:
            skipped.append(f"significance, {where}: {exc}")
            continue
        versus = result.versus_control
        ranks = pd.DataFrame({"average rank": result.ranks})
        ranks["vs control: z"] = versus["z"]
        ranks["p (Holm)"] = versus["p_holm"]
        ranks["significant"] = versus["significant"]
        shown = ranks.copy().astype(object)
        shown["average rank"] = [f"{v:.2f}" for v in ranks["average rank"]]
        shown["vs control: z"] = ["control" if pd.isna(v) else f"{v:+.2f}"
                                  for v in ranks["vs control: z"]]
        shown["p (Holm)"] = ["" if pd.isna(v) else f"{v:.3g}" for v in ranks["p (Holm)"]]
        shown["significant"] = ["" if pd.isna(v) else ("yes" if v else "no")
                                for v in ranks["significant"]]
        numbers = ranks.assign(significant=ranks["significant"].map(
            lambda v: "" if pd.isna(v) else int(bool(v))))
        note = significance_note(result, where, missing_seeds(part)).split("\n")
        parts.append(f"<h3>{_e(where)}: {result.n_blocks} blocks, "
                     f"{len(result.ranks)} entries, control {_e(result.control)}"
                     f"{_e(control_note)}</h3>"
                     + sortable_table(numbers, shown, "entry")
                     + "".join(f"<p>{_e(line)}</p>" if not line.startswith("- ") else
                               _notes([line[2:]]) for line in note if line)
                     + (_notes([f"Left out (not run on every block): {', '.join(dropped)}"])
                        if dropped else ""))
    return ("<p>Demšar (2006), within each table: Friedman over its blocks (classes or OOD "
            "sets), then "
            "Nemenyi for every pair and Holm's step-down against the control (rank z tests), "
            "alpha = 0.05.</p>" + "".join(parts)) if parts else "<p>Too few blocks.</p>"


def _png_data(path: Path) -> str:
    """A figure as a data URI, downscaled to FIGURE_WIDTH_PX (the page stays a few MB)."""
    from PIL import Image

    with Image.open(path) as img:
        if img.width > FIGURE_WIDTH_PX:
            img = img.resize((FIGURE_WIDTH_PX, round(img.height * FIGURE_WIDTH_PX / img.width)),
                             Image.LANCZOS)
        buffer = io.BytesIO()
        img.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def figures_html(rows: pd.DataFrame, records: list[dict], runs: list[str],
                 control: str | None, skipped: list[str], out: Path) -> str:
    """Every figure `bench figures` draws from these rows and runs, embedded (drawn in a
    temporary folder under `out`, which a killed report leaves to the stale-temporary
    cleaner)."""
    from bench.files import temporary_folder
    from bench.reporting.figures import draw_all

    with temporary_folder(out, "figures") as tmp:
        paths, not_drawn = draw_all(rows, records, runs, Path(tmp), [], with_tsne=bool(runs),
                                    control=control)
        skipped += [f"figure {line}" for line in not_drawn]
        pngs = sorted(p for p in paths if p.suffix == ".png")
        parts = [f'<figure id="fig-{_e(p.stem)}"><img alt="{_e(p.stem)}" '
                 f'src="{_png_data(p)}"><figcaption>{_e(p.stem)} (bench figures: '
                 f'{_e(p.name)}, with a PDF beside it)</figcaption></figure>' for p in pngs]
    return "".join(parts) or "<p>No figure can be drawn from these rows.</p>"


def runs_html(rows: pd.DataFrame, records: list[dict]) -> str:
    """Per run: its code version, presets, precision, device and, from the run directories, the
    machines its jobs ran on."""
    machines: dict[str, set] = {}
    for r in records:
        machines.setdefault(str(r.get("run_id", "")), set()).add(
            r.get("machine") or r.get("host") or "")

    def joined(values) -> str:
        return ", ".join(sorted({str(v) for v in values if str(v) not in ("", "nan")}))

    table = []
    for run_id, part in rows.groupby("run_id", sort=True):
        table.append({"run": run_id, "code version": joined(part["code_version"]),
                      "preset": joined(part["preset"]), "precision": joined(part["precision"]),
                      "device": joined(part["device"]),
                      "machine": joined(machines.get(str(run_id), [])) or "(give --runs)",
                      "jobs": part["job_id"].nunique(), "rows": len(part),
                      "first row": min(part["created_at"].astype(str)),
                      "last row": max(part["created_at"].astype(str))})
    frame = pd.DataFrame(table).set_index("run")
    return sortable_table(frame, frame.astype(str), "run")


def build_report(rows: pd.DataFrame, records: list[dict], runs: list[str], out: Path,
                 control: str | None = None) -> tuple[Path, list[str]]:
    """Write `out`/index.html; returns its path and one line per part not made and why."""
    from bench.files import atomic_write_text, clean_stale_temporaries, inside

    clean_stale_temporaries(out, recursive=False)  # a killed report's figure folder
    skipped: list[str] = []
    sections = [("leaderboards", "Leaderboards", leaderboards_html(rows)),
                ("published", "Beside published numbers", comparison_html(rows, skipped)),
                ("significance", "Significance", significance_html(rows, control, skipped)),
                ("figures", "Figures", figures_html(rows, records, runs, control, skipped, out)),
                ("runs", "Runs", runs_html(rows, records))]
    nav = "".join(f'<a href="#{key}">{_e(title)}</a>' for key, title, _ in sections)
    body = "".join(f'<h2 id="{key}">{_e(title)}</h2>{content}'
                   for key, title, content in sections)
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>mcl-bench report</title>"
            f"<style>{STYLE}</style></head><body><h1>mcl-bench report</h1>"
            f"<p>{len(rows)} rows, {rows['job_id'].nunique()} jobs, "
            f"{rows['run_id'].nunique()} runs. Click a column header to sort.</p>"
            f"<nav>{nav}</nav>{body}<script>{SCRIPT}</script></body></html>\n")
    path = inside(out, "index.html")
    atomic_write_text(path, page)
    return path, skipped
