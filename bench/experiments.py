"""Experiments as files: a TOML file declares the runs that make a set of results and where
their rows go; `bench run FILE.toml` runs it (resuming as any run) and `bench reproduce DIR`
runs every file, then regenerates the results folder from the rows.

    description = "One-class digits, quick preset, 3 seeds"
    out = "runs/digits"                  # the run directory its runs share
    rows = "results/rows"                # where `bench rows` writes its rows files

    [[run]]                              # one `bench run`: the keys are its options
    methods = ["mcl", "csi"]             # a list, or a comma-separated string
    datasets = "digits"
    seeds = [0, 1, 2]
    preset = "quick"
    set = { "mcl.alpha" = 0.1 }          # --set; a list value sweeps

A file that is not one gets one line naming the file, the key and what is wrong (unknown keys
with a did-you-mean, wrong types); a run that does not plan (a method that does not fit its
protocol, a data set missing) names the file and the run. Paths are relative to the directory
`bench` runs in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import tomllib
from bench.errors import BenchError, unknown_name

# run keys -> the types a value may have (a list of one of the scalar types where marked)
_STR, _INT, _BOOL = (str,), (int,), (bool,)
RUN_KEYS: dict[str, tuple[tuple[type, ...], bool]] = {  # key: (scalar types, a list allowed)
    "methods": (_STR, True), "datasets": (_STR, True), "protocol": (_STR, False),
    "classes": ((int, str), True), "seeds": ((int, str), True), "preset": (_STR, False),
    "set": ((dict,), False), "features": (_STR, True), "checkpoints": (_STR, True),
    "ood": (_STR, True), "ood_table": (_STR, False), "data_dir": (_STR, False),
    "download": (_BOOL, False), "precision": (_STR, False), "device": (_STR, False),
    "strict": (_BOOL, False), "deterministic": (_BOOL, False),
    "compile": ((bool, str), False), "log": (_STR, True), "log_uri": (_STR, False),
}
# how the runs may be spread (hints: a command line's --executor options take precedence)
EXECUTOR_KEYS: dict[str, tuple[tuple[type, ...], bool]] = {
    "executor": (_STR, False), "workers": (_INT, False), "jobs_per_device": (_INT, False),
    "devices": (_STR, False),
}
TOP_KEYS = ("description", "out", "rows", "run", "executor")


@dataclass(frozen=True)
class Experiment:
    """One experiment file: its runs (keyword arguments of `bench.api.plan_spec`), the run
    directory they share, where its rows files go, and executor hints."""

    path: Path
    description: str
    out: str
    rows: str
    runs: tuple[dict[str, Any], ...]
    executor: dict[str, Any] = field(default_factory=dict)


def _type_name(types: tuple[type, ...], listed: bool) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", dict: "a table"}
    one = " or ".join(names[t] for t in types)
    return f"{one}, or a list of them" if listed else one


def _check_value(where: str, key: str, value: Any, types: tuple[type, ...], listed: bool
                 ) -> None:
    def ok(v: Any) -> bool:  # TOML booleans are not integers here
        return isinstance(v, types) and not (isinstance(v, bool) and bool not in types)

    if ok(value) or (listed and isinstance(value, list) and value and all(map(ok, value))):
        return
    raise BenchError(f"{where}: key {key} is {type(value).__name__} {value!r:.40}; expected "
                     f"{_type_name(types, listed)}")


def _check_table(where: str, table: dict, allowed: dict[str, tuple[tuple[type, ...], bool]],
                 prefix: str = "") -> None:
    for key, value in table.items():
        if key not in allowed:
            raise BenchError(f"{where}: " + str(unknown_name(f"key of {prefix or 'the file'}",
                                                             f"{prefix}{key}",
                                                             [f"{prefix}{k}" for k in allowed])))
        _check_value(where, f"{prefix}{key}", value, *allowed[key])


def load(path: str | Path) -> Experiment:
    """An experiment file, checked; BenchError naming the file and the key otherwise."""
    from bench.files import read_regular

    path = Path(path)
    try:
        text = read_regular(path).decode("utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise BenchError(f"{path}: no such experiment file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path}: not a TOML file ({exc})") from None
    except (OSError, IsADirectoryError) as exc:
        raise BenchError(f"{path}: cannot be read ({type(exc).__name__})") from None
    where = str(path)
    for key in data:
        if key not in TOP_KEYS:
            raise BenchError(f"{where}: " + str(unknown_name("key of the file", key, TOP_KEYS)))
    for key in ("description", "out", "rows"):
        if key in data and not isinstance(data[key], str):
            raise BenchError(f"{where}: key {key} is {type(data[key]).__name__}; expected a "
                             "string")
    if not isinstance(data.get("out"), str) or not data["out"]:
        raise BenchError(f"{where}: key out is missing (the run directory its runs share)")
    runs = data.get("run")
    if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) for r in runs):
        raise BenchError(f"{where}: no [[run]] table (each declares one bench run)")
    for i, run in enumerate(runs):
        _check_table(where, run, RUN_KEYS, f"run[{i}].")
    hints = data.get("executor", {})
    if not isinstance(hints, dict):
        raise BenchError(f"{where}: key executor is {type(hints).__name__}; expected a table")
    _check_table(where, hints, EXECUTOR_KEYS, "executor.")
    return Experiment(path, data.get("description", ""), data["out"], data.get("rows", ""),
                      tuple(runs), hints)


def files(paths: list[str | Path]) -> list[Path]:
    """The experiment files named, a folder standing for its *.toml files (sorted)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.toml"))
            if not found:
                raise BenchError(f"{p}: no experiment files (*.toml) in it")
            out.extend(found)
        else:
            out.append(p)
    return out


def plan_arguments(exp: Experiment, run: dict[str, Any]) -> dict[str, Any]:
    """A run's keyword arguments for `bench.api.plan_spec` (the experiment's run directory)."""
    return {**run, "out": exp.out}


def plan(exp: Experiment) -> list[tuple[Any, list]]:
    """(RunSpec, jobs) of each run of the experiment; BenchError naming the file and the run
    when one does not plan."""
    from bench.api import plan_spec
    from bench.runner import plan as plan_jobs

    out = []
    for i, run in enumerate(exp.runs):
        try:
            spec, _ = plan_spec(**plan_arguments(exp, run))
            out.append((spec, plan_jobs(spec).jobs))
        except BenchError as exc:
            raise BenchError(f"{exp.path}: run[{i}]: {exc}") from None
    return out


def execute(exp: Experiment, **executor: Any) -> tuple[list, list[dict], list[str]]:
    """Run every run of the experiment into its run directory (finished jobs are skipped);
    the executor options given override the file's hints."""
    from bench.api import execute as execute_run

    hints = {**exp.executor, **{k: v for k, v in executor.items() if v is not None}}
    all_records, all_problems, rows = [], [], None
    for i, run in enumerate(exp.runs):
        try:
            rows, records, problems = execute_run(**hints, **plan_arguments(exp, run))
        except BenchError as exc:
            raise BenchError(f"{exp.path}: run[{i}]: {exc}") from None
        all_records += records
        all_problems += problems
    return rows, all_records, all_problems


def planned_rows_files(planned: list[tuple[Any, list]]) -> dict[str, set[str]]:
    """{rows file name: the job ids planned into it}, as `bench rows` names its files."""
    from bench.protocols import get_protocol
    from bench.reporting.leaderboard import table_name

    out: dict[str, set[str]] = {}
    for _, jobs in planned:
        for job in jobs:
            table = job.ood_table if get_protocol(job.protocol).uses_ood_sets else ""
            name = f"{table_name(job.protocol, job.dataset, job.preset, table)}.csv"
            out.setdefault(name, set()).add(job.job_id)
    return out


def differences(planned: list[tuple[Experiment, list[tuple[Any, list]]]]
                ) -> list[dict[str, Any]]:
    """Per rows file the experiments declare (several may write one file: their jobs
    together), the planned job ids against those of the committed file (missing: planned, not
    committed; extra: committed, not planned; no file: every planned job is missing)."""
    import pandas as pd

    files: dict[Path, set[str]] = {}
    for exp, runs in planned:
        for name, ids in planned_rows_files(runs).items():
            files.setdefault(Path(exp.rows or ".") / name, set()).update(ids)
    out = []
    for path, planned_ids in sorted(files.items()):
        committed: set[str] = set()
        if path.is_file():
            committed = set(pd.read_csv(path, usecols=["job_id"], dtype=str)["job_id"])
        out.append({"file": str(path), "exists": path.is_file(), "planned": len(planned_ids),
                    "committed": len(committed), "missing": sorted(planned_ids - committed),
                    "extra": sorted(committed - planned_ids)})
    return out


def rows_folders(exps: list[Experiment]) -> dict[str, list[str]]:
    """{rows folder: the run directories whose rows it holds}, in the files' order."""
    out: dict[str, list[str]] = {}
    for exp in exps:
        if exp.rows:
            out.setdefault(exp.rows, [])
            if exp.out not in out[exp.rows]:
                out[exp.rows].append(exp.out)
    return out
