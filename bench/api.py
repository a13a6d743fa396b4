"""The Python API: what the CLI does, as functions that return pandas DataFrames.

`bench run` and the other commands are thin wrappers of these functions (one code path, one set
of checks); bad input raises `bench.BenchError` with the one line the CLI prints (and exits 2
on). A run from Python writes the same run directory as one from the shell, and resumes alike.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.errors import BenchError

MAX_SEED = 2**32 - 1  # NumPy's seeds are 32-bit
Names = str | Sequence[Any] | None


def _names(value: Names, what: str) -> tuple[Any, ...] | None:
    """A comma-separated string or a sequence as a tuple (classes and objects pass through)."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    items = [v for v in items if not (isinstance(v, str) and not v)]
    if not items:
        raise BenchError(f"{what} {value!r}: no names given")
    return tuple(dict.fromkeys(items))


def _overrides(set_: Mapping[str, Any] | Iterable[str] | None) -> tuple[str, ...]:
    """``{"mcl.alpha": 0.1, "epochs": [5, 10]}`` (a list sweeps) or ``["mcl.alpha=0.1"]``."""
    if set_ is None:
        return ()
    if isinstance(set_, Mapping):
        out = []
        for key, value in set_.items():
            if isinstance(value, (list, tuple)):
                value = ",".join(str(v) for v in value)
            out.append(f"{key}={value}")
        return tuple(out)
    return tuple(set_)


def register_method(obj: Any) -> str:
    """The name of a method given as a class: its import path ``module:Class``; a class of a
    notebook or script (``__main__``) runs in this process only."""
    from bench.plugins import PluginEntry
    from bench.registry import METHODS

    if isinstance(obj, str):
        return METHODS.canonical(obj)
    if not inspect.isclass(obj):
        raise BenchError(f"methods: {obj!r} is neither a name nor a detector class")
    target = f"{obj.__module__}:{obj.__qualname__}"
    if obj.__module__ != "__main__":
        return METHODS.canonical(target)
    try:
        version = "sha256:" + hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]
    except (OSError, TypeError):
        version = "unversioned"
    METHODS.register(target, PluginEntry(target, "", "class of __main__", version))
    METHODS.load_object(target)  # checked now
    return target


def plan_spec(*, methods: Names = None, datasets: Names = "digits",
              protocol: str = "one-class", classes: Names = None, seeds: Names = (0,),
              preset: str = "auto", set: Mapping[str, Any] | Iterable[str] | None = None,
              features: Names = "pixel", checkpoints: Iterable[str] = (), out: str | Path = "runs",
              data_dir: str | Path | None = None, device: str = "auto", precision: str = "auto",
              download: bool = True, ood: Names = None, ood_table: str = "bench",
              strict: bool = False, compile: bool | str = False, deterministic: bool = False,
              log: Names = None, log_uri: str = "",
              remote: bool = False, executor: str = "local"):
    """The RunSpec of a run and the notes to print once its input is valid."""
    from bench.config import RunSpec, compile_mode, resolve_preset
    from bench.nn.devices import check_device, select_device
    from bench.protocols import get_protocol
    from bench.registry import DATASETS, METHODS
    from bench.trackers import parse as parse_trackers

    the_protocol = get_protocol(protocol)
    chosen = _names(methods, "--methods")
    if chosen is None:
        chosen = tuple(m for m in METHODS if METHODS.plugin(m) is None
                       and METHODS.load_object(m).in_default_run
                       and METHODS.load_object(m).skip(the_protocol) is None)
    chosen = tuple(dict.fromkeys(register_method(m) for m in chosen))
    device = check_device(device)
    device_type = select_device(device).type
    if preset == "auto" and remote:
        raise BenchError(f"--preset auto would be resolved on this machine ({device_type}), not "
                         f"on the nodes where --executor {executor} runs the jobs; name the "
                         "preset (quick, standard or paper)")
    resolved = resolve_preset(preset, device_type)
    notes = [f"preset auto -> {resolved} (device {device_type})"] if preset == "auto" else []
    if not remote:
        from bench.nn.precision import resolve as resolve_precision

        notes.append(f"precision {precision} -> "
                     f"{resolve_precision(precision, select_device(device)).describe()}")
    data = tuple(DATASETS.canonical(d) for d in _names(datasets, "--datasets") or ("digits",))
    overrides = _overrides(set)
    _no_repeats([o.partition("=")[0].strip() for o in overrides], "--set", overrides)
    the_checkpoints = tuple(_checkpoint(c) for c in checkpoints)
    _no_repeats([m or "(no method)" for m, _ in the_checkpoints], "--checkpoint",
                [f"{m}={p}" if m else p for m, p in the_checkpoints])
    the_ood = _names(ood, "--ood")
    spec = RunSpec(
        methods=chosen, datasets=data, protocol=protocol, classes=_ints(classes, "classes"),
        seeds=_ints(seeds, "seeds", most=MAX_SEED) or (0,), preset=resolved,
        overrides=overrides, out=str(out), data_dir=str(data_dir or ""), device=device,
        download=download,
        ood=tuple(DATASETS.canonical(o) for o in the_ood) if the_ood else None,
        strict=strict, compile=compile_mode(compile), precision=precision,
        features=tuple(_names(features, "--features") or ("pixel",)),
        deterministic=deterministic, ood_table=ood_table,
        log=parse_trackers(log), log_uri=str(log_uri or ""),
        checkpoints=the_checkpoints,
    )
    return spec, notes


def _no_repeats(keys: list[str], flag: str, given: Sequence[str]) -> None:
    """BenchError when a key is given twice (the last would silently win)."""
    seen: dict[str, str] = {}
    for key, text in zip(keys, given):
        if key in seen:
            raise BenchError(f"{flag} {key} is given twice ({seen[key]} and {text}): give it "
                             "once" + (" (a comma list sweeps a field)" if flag == "--set"
                                       else ""))
        seen[key] = text


MAX_LIST = 100_000  # values a seeds / classes range may expand to


def _ints(value: Any, what: str, most: int | None = None) -> tuple[int, ...] | None:
    """``0,1,2``, ranges like ``0-4``, or a sequence of integers; at most MAX_LIST values."""
    if value is None:
        return None
    if isinstance(value, int):
        value = (value,)
    items = _names(value, f"--{what}")
    out: list[int] = []
    for item in items:
        try:
            if isinstance(item, int):
                lo_i = hi_i = item
            else:
                item = str(item)
                lo, _, hi = item.partition("-") if "-" in item[1:] else (item, "", item)
                lo_i, hi_i = int(lo), int(hi)
        except ValueError:
            raise BenchError(f"--{what} {value!r}: expected integers like 0,1,2 or 0-4") from None
        if hi_i < lo_i:
            raise BenchError(f"--{what} {item!r}: the range is empty (write {hi_i}-{lo_i})")
        if lo_i < 0:
            raise BenchError(f"--{what} {value!r}: expected non-negative integers")
        if most is not None and hi_i > most:
            raise BenchError(f"--{what} {item!r}: at most {most} (NumPy's seeds are 32-bit)")
        if len(out) + hi_i - lo_i + 1 > MAX_LIST:
            raise BenchError(f"--{what} {value!r}: more than {MAX_LIST:,} values")
        out.extend(range(lo_i, hi_i + 1))
    return tuple(dict.fromkeys(out))


def _checkpoint(text: str) -> tuple[str, str]:
    """``METHOD=PATH`` or ``PATH`` (a path may hold '=': only a registered method name counts)."""
    from bench.registry import METHODS

    method, sep, path = str(text).partition("=")
    return (method, path) if sep and method in METHODS else ("", str(text))


def execute(*, executor: str = "local", workers: int = 1, devices: str | None = None,
            ray_address: str | None = None, slurm_partition: str | None = None,
            slurm_time: int = 240, slurm_gpus_per_job: int = 1, wait: bool = True,
            retry_failed: bool = False, jobs_per_device: int = 1, **plan_args: Any):
    """Plan and run; (rows, records, problems) as `bench run` prints them."""
    from bench.executors import make_executor
    from bench.runner import run as run_spec

    if workers < 1:
        raise BenchError("--workers must be at least 1")
    spec, notes = plan_spec(remote=executor == "slurm" or bool(executor == "ray" and ray_address),
                            executor=executor, **plan_args)
    ex = make_executor(executor, workers=workers, devices=devices, ray_address=ray_address,
                       slurm_partition=slurm_partition, slurm_time=slurm_time,
                       slurm_gpus_per_job=slurm_gpus_per_job, wait=wait,
                       jobs_per_device=jobs_per_device, device=spec.device)
    return run_spec(spec, ex, retry_failed=retry_failed, notes=notes)


def run(methods: Names = None, datasets: Names = "digits", *, protocol: str = "one-class",
        classes: Names = None, seeds: Names = (0,), preset: str = "auto",
        set: Mapping[str, Any] | Iterable[str] | None = None, features: Names = "pixel",
        checkpoints: Iterable[str] = (), out: str | Path = "runs",
        data_dir: str | Path | None = None, device: str = "auto", precision: str = "auto",
        download: bool = True, ood: Names = None, ood_table: str = "bench",
        strict: bool = False, executor: str = "local", workers: int = 1,
        devices: str | None = None, ray_address: str | None = None,
        slurm_partition: str | None = None, slurm_time: int = 240,
        slurm_gpus_per_job: int = 1, wait: bool = True, retry_failed: bool = False,
        compile: bool | str = False, deterministic: bool = False,
        jobs_per_device: int = 1, log: Names = None, log_uri: str = "") -> pd.DataFrame:
    """Run methods x data sets x classes x seeds into the run directory `out` (finished jobs
    are skipped: a run resumes) and return its tidy rows (docs/results.md), every job of the
    directory included. `methods`: names, import paths (``my_pkg.mod:MyDetector``) or detector
    classes; `set`: ``{"mcl.alpha": 0.1}``, a list value sweeps. Failed jobs are recorded in
    `out` and listed in ``rows.attrs["failed"]``; bad input raises BenchError."""
    from bench.console import warn

    rows, records, problems = execute(
        methods=methods, datasets=datasets, protocol=protocol, classes=classes, seeds=seeds,
        preset=preset, set=set, features=features, checkpoints=checkpoints, out=out,
        data_dir=data_dir, device=device, precision=precision, download=download, ood=ood,
        ood_table=ood_table, strict=strict, executor=executor, workers=workers,
        devices=devices, ray_address=ray_address, slurm_partition=slurm_partition,
        slurm_time=slurm_time, slurm_gpus_per_job=slurm_gpus_per_job, wait=wait,
        retry_failed=retry_failed, compile=compile, deterministic=deterministic,
        jobs_per_device=jobs_per_device, log=log, log_uri=log_uri)
    for problem in problems:
        warn(problem)
    failed = [r for r in records if r.get("status") == "failed"]
    for r in failed:
        warn(f"failed: {r['job_id']}: {r.get('error', '')}")
    rows = rows.copy()
    rows.attrs["failed"] = [r["job_id"] for r in failed]
    return rows


def read_rows(*paths: str | Path) -> pd.DataFrame:
    """The tidy rows of run directories (their finished jobs), rows files and folders of rows
    files; a measurement read twice counts once. BenchError if none holds a row."""
    from bench.console import warn
    from bench.reporting.leaderboard import load_rows

    if not paths:
        raise BenchError("read_rows: name run directories or rows files")
    runs = [p for p in paths if (Path(p) / "jobs").is_dir()]
    files = [p for p in paths if p not in runs]
    for f in files:
        if not Path(f).exists():
            raise BenchError(f"{f}: neither a run directory nor a rows file")
    problems: list[str] = []
    rows = load_rows(runs, files, problems)
    for problem in problems:
        warn(problem)
    if rows.empty:
        raise BenchError("the run directories and rows files hold no finished jobs")
    return rows


@dataclass(frozen=True)
class _ReadOnce:
    """Rows read once from `paths`, for writers that share them: the files they write record
    the paths as their sources, as when each writer reads the paths itself."""

    frame: pd.DataFrame
    paths: tuple[str | Path, ...]


def _as_rows(rows: pd.DataFrame | str | Path | Sequence[str | Path]) -> pd.DataFrame:
    if isinstance(rows, pd.DataFrame):
        return rows
    if isinstance(rows, _ReadOnce):
        return rows.frame
    return read_rows(*([rows] if isinstance(rows, (str, Path)) else rows))


def leaderboard(rows: pd.DataFrame | str | Path, metric: str = "auroc"
                ) -> dict[tuple[str, str, str, str], pd.DataFrame]:
    """One table per (protocol, data set, preset, OOD table): entries (method/score) x columns
    (classes or OOD sets, near / far, mean, std) in percent, with the notes as columns; the
    table every leaderboard file is made from."""
    from bench.reporting.leaderboard import numeric_table, summarise

    summary = summarise(_as_rows(rows), metric)
    return {key: numeric_table(summary, key) for key in summary.tables}


def compare(rows: pd.DataFrame | str | Path, references: Sequence[str] | None = None,
            ours: Sequence[str] | None = None, reference_dir: str | Path | None = None
            ) -> pd.DataFrame:
    """Our numbers beside the published ones, like with like: one row per (published table,
    cell) with ours, the difference and whether it lies in our seeds' 95% interval."""
    from bench.reporting.reference import compare as compare_tables
    from bench.reporting.reference import load_reference

    return compare_tables(_as_rows(rows), load_reference(list(references) if references
                                                         else None, reference_dir),
                          ours=list(ours) if ours else None)


def significance(rows: pd.DataFrame | str | Path, control: str | None = None,
                 metric: str = "auroc", alpha: float = 0.05) -> pd.DataFrame:
    """Demsar's tests within each table (protocol, data set, preset, OOD table): Friedman over
    its blocks, then Holm against `control` (default MCL's entry) and Nemenyi's critical
    difference; one row per table and entry with its average rank, z and p against the
    control, Holm's p and whether it differs significantly. Tables with too few blocks or
    entries are left out."""
    from bench.reporting.stats import NotDrawn, significance_of, significance_tables

    frames = []
    for key, part in significance_tables(_as_rows(rows), metric):
        try:
            result, _, _, _ = significance_of(part, control=control, alpha=alpha)
        except NotDrawn:
            continue
        frame = pd.DataFrame({"average_rank": result.ranks}).join(result.versus_control)
        frame = frame.drop(columns="rank").rename_axis("entry").reset_index()
        protocol, dataset, preset, ood_table = key
        frames.append(frame.assign(protocol=protocol, dataset=dataset, preset=preset,
                                   ood_table=ood_table, control=result.control,
                                   n_blocks=result.n_blocks, friedman_p=result.friedman_p,
                                   critical_difference=result.cd))
    if not frames:
        raise BenchError(f"no table of metric {metric} has the 5 blocks and 3 entries the "
                         "tests need")
    return pd.concat(frames, ignore_index=True)


Rows = pd.DataFrame | str | Path | Sequence[str | Path]  # a table, or what read_rows reads


def _sources(rows: Rows, runs: Sequence[str | Path] = ()) -> list[str | Path]:
    """What written files are made from, for the guard against replacing files made from other
    rows: the paths read (a DataFrame: a digest of its content), then the run directories."""
    from bench.files import frame_source

    sources: list[str | Path] = (
        [frame_source(rows)] if isinstance(rows, pd.DataFrame) else
        list(rows.paths) if isinstance(rows, _ReadOnce) else
        [rows] if isinstance(rows, (str, Path)) else list(rows))
    return sources + [r for r in runs if r not in sources]


def report(rows: Rows, out: str | Path = "report", runs: Sequence[str | Path] = (),
           control: str | None = None, force: bool = False) -> Path:
    """Write <out>/index.html, the one self-contained page of `bench report`; its path. A page
    there made from other rows is replaced only with `force` (BenchError otherwise)."""
    from bench.console import warn
    from bench.files import publish, staged_folder
    from bench.reporting.html import build_report
    from bench.store import RunStore

    frame = _as_rows(rows)
    check_control(control, frame)
    records = [r for d in runs for r in RunStore(d).records()]
    with staged_folder(out, "report") as tmp:
        _, skipped = build_report(frame, records, [str(r) for r in runs], Path(tmp), control)
        path = publish(tmp, out, _sources(rows, runs), force)[0]
    for line in skipped:
        warn(line)
    return path


def write_rows(rows: Rows, out: str | Path, force: bool = False) -> list[Path]:
    """Write the tidy rows as <out>/<protocol>_<dataset>_<preset>.csv, one sorted file per
    table (the same rows give the same bytes: what results/rows commits); the paths written.
    Files there made from other rows are replaced only with `force` (BenchError otherwise)."""
    from bench.files import publish, staged_folder
    from bench.reporting.leaderboard import write_rows_files

    frame = _as_rows(rows)
    with staged_folder(out, "rows") as tmp:
        write_rows_files(frame, tmp)
        return publish(tmp, out, _sources(rows), force)


def write_leaderboard(rows: Rows, out: str | Path = "leaderboard", metric: str = "auroc",
                      formats: Sequence[str] = ("csv", "markdown"), class_names: bool = False,
                      force: bool = False) -> list[Path]:
    """Write the leaderboard files of `bench leaderboard` into `out` (per table: csv, markdown
    and README.md, latex), the paths written. Files made from other rows, and README.md's
    sections of tables these rows do not make, are replaced only with `force`."""
    from bench.errors import unknown_name
    from bench.metrics import METRICS
    from bench.reporting.leaderboard import publish_summary, summarise, with_class_names

    if metric not in METRICS:
        raise unknown_name("metric", metric, METRICS)
    summary = summarise(_as_rows(rows), metric)
    if class_names:
        summary = with_class_names(summary)
    return publish_summary(summary, out, _sources(rows), formats=tuple(formats), force=force,
                           keep_other_sections=not force)


def figures(rows: Rows, out: str | Path = "figures", runs: Sequence[str | Path] = (),
            jobs: Sequence[str] = (), tsne: bool = True, size: str = "page",
            only: Sequence[str] | None = None, control: str | None = None,
            force: bool = False) -> list[Path]:
    """Draw the figures of `bench figures` (PNG and PDF) into `out` from rows and the run
    directories `runs` (training curves, ROC / histograms / t-SNE of `jobs`); the paths
    written. Reads only what jobs wrote. Figures made from other rows are replaced only with
    `force`."""
    from bench.console import warn
    from bench.errors import unknown_name
    from bench.files import publish, staged_folder
    from bench.reporting.figures import FIGURE_NAMES, draw_all
    from bench.store import RunStore

    for name in only or ():
        if name not in FIGURE_NAMES:
            raise unknown_name("figure", name, FIGURE_NAMES)
    if size not in ("column", "page"):
        raise BenchError(f"figure size {size!r}: column or page")
    frame = _as_rows(rows)
    check_control(control, frame)
    records = [r for d in runs for r in RunStore(d).records()]
    with staged_folder(out, "figures") as tmp:
        _, skipped = draw_all(frame, records, [str(r) for r in runs], Path(tmp), list(jobs),
                              tsne, size, set(only) if only else None, control)
        drawn = publish(tmp, out, _sources(rows, runs), force)
    for line in skipped:
        warn(line)
    return drawn


def reproduce(paths: str | Path | Sequence[str | Path], results: str | Path = "results",
              executor: str | None = None, workers: int | None = None,
              jobs_per_device: int | None = None) -> list[Path]:
    """Run every experiment file (a folder: its *.toml files; finished jobs are skipped), then
    regenerate `results` from their rows as results/README.md lists: rows files, leaderboards,
    figures, the comparison with published numbers and the report; the paths written. The
    executor options given override the files' hints. A failed job stops before `results` is
    touched (BenchError)."""
    from bench import experiments
    from bench.console import echo

    exps = [experiments.load(p) for p in experiments.files(
        [paths] if isinstance(paths, (str, Path)) else list(paths))]
    for exp in exps:
        echo(f"== {exp.path}: {exp.description}", err=True)
        _, records, _ = experiments.execute(exp, executor=executor, workers=workers,
                                            jobs_per_device=jobs_per_device)
        failed = [r for r in records if r.get("status") == "failed"]
        if failed:
            raise BenchError(f"{exp.path}: {len(failed)} jobs failed (first: "
                             f"{failed[0]['job_id']}: {failed[0].get('error', '')}); the "
                             "results folder is left as it was")
    return regenerate(exps, results)


def regenerate(exps: Sequence[Any], results: str | Path = "results") -> list[Path]:
    """results/README.md's steps for loaded experiments (`bench.experiments.load`), from their
    run directories: rows per rows folder, then leaderboards, figures, the comparison with
    published numbers and the report (every rows folder and run but the precision
    comparison's, whose fp32 runs would mix into the training curves)."""
    from bench import experiments
    from bench.files import atomic_write_text
    from bench.reporting.leaderboard import merge_rows
    from bench.reporting.reference import format_side_by_side

    results = Path(results)
    folders = experiments.rows_folders(list(exps))
    written = []
    for folder, runs in folders.items():  # the experiments writing one folder, together
        written += write_rows(runs, folder, force=True)
    main_rows = str(results / "rows")

    def compared(folder: str) -> bool:  # not the precision comparison's own rows
        return not Path(folder).is_relative_to(results / "rows" / "precision")

    report_rows = [f for f in folders if compared(f)]
    runs = list(dict.fromkeys(exp.out for exp in exps if compared(exp.rows)))
    read: dict[str, pd.DataFrame] = {}

    def once(*paths: str) -> _ReadOnce:  # each folder is read once, whichever writer needs it
        for path in paths:
            if path not in read:
                read[path] = read_rows(path)
        return _ReadOnce(merge_rows([read[p] for p in paths]), paths)

    main = once(main_rows)
    written += write_leaderboard(main, results / "leaderboard", force=True)
    written += figures(main, results / "figures", runs=runs, force=True)
    for folder in folders:
        if Path(folder).name == "ablation":
            written += figures(once(folder), results / "figures", only=["ablation"], force=True)
    side = results / "compare" / "published_side_by_side.md"
    atomic_write_text(side, format_side_by_side(compare(main, ours=["all"])) + "\n")
    written.append(side)
    written.append(report(once(*report_rows), results / "report", force=True))
    return written


def check_control(control: str | None, rows: pd.DataFrame) -> None:
    """A control entry names an entry of the rows (did-you-mean otherwise)."""
    if control is None:
        return
    from bench.errors import unknown_name
    from bench.reporting.leaderboard import entry_label

    entries = set(entry_label(rows)) if not rows.empty else set()
    if control not in entries:
        raise unknown_name("entry (--control)", control, entries)
