"""The tidy rows' schema: columns, types, order, the names they must be, and reading a rows
file written by this or an earlier version (migrated, then validated: a file that is not one
gives DamagedFile naming the file, the column and the first bad line)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import BenchError, file_error
from bench.files import SAFE_NAME, open_regular

ROW_COLUMNS = [
    "run_id", "job_id", "method", "score", "features", "variant", "tuning", "setting",
    "protocol", "protocol_version", "ood_table", "dataset", "normal_class", "ood_dataset", "seed", "metric", "value", "n_train",
    "n_test_normal", "n_test_anomalous", "preset", "backbone", "epochs", "precision",
    "train_seconds", "eval_seconds", "device", "config_hash", "code_version", "created_at",
]

ROW_DTYPES = {"normal_class": str, "ood_dataset": str, "job_id": str, "run_id": str,
              "config_hash": str, "backbone": str, "score": str, "features": str,
              "variant": str, "tuning": str, "setting": str, "protocol_version": str, "ood_table": str, "precision": str,
              "method": str,
              "protocol": str, "dataset": str, "preset": str, "metric": str}

ROW_ORDER = ["protocol", "ood_table", "dataset", "method", "score", "features", "variant",
             "normal_class", "ood_dataset", "seed", "metric"]

# what a rows file must have (the rest is filled in: migrate_rows, or left empty)
REQUIRED_COLUMNS = ("job_id", "method", "score", "protocol", "dataset", "normal_class",
                    "ood_dataset", "seed", "metric", "value", "preset")

# every one a fraction in [0, 1]; fpr95_openood: OpenOOD v1.5's FPR@95 (rows of its table)
from bench.metrics import METRICS  # noqa: E402 - every metric a row may hold

# columns that name files (leaderboards, figures) or folders: one safe path component each
# (the preset may be empty: rows made before presets)
NAME_COLUMNS = ("protocol", "dataset", "preset", "method", "job_id", "ood_table")

RENAMED_SCORES = {("simclr", "knn"): "cosnorm", ("mcl", "knn"): "cosnorm"}


class DamagedFile(BenchError):
    """A rows file cannot be read, or is not in the schema; the message names it."""


def sort_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows in the one stable order every results file uses."""
    rows = rows.reindex(columns=ROW_COLUMNS)
    return rows.sort_values(ROW_ORDER, kind="stable", ignore_index=True)


def migrate_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows written by earlier versions in today's schema: the features, variant, tuning,
    setting, precision and protocol_version columns filled in, and renamed scores (SimCLR's and MCL's `knn` is
    `cosnorm`)."""
    rows = rows.copy()
    if "features" not in rows:
        from bench.registry import METHODS

        def classical(method: str) -> bool:  # a name no longer registered saw no pixels
            return method in METHODS and METHODS.kind(method) == "classical"

        rows["features"] = np.where(rows["method"].map(classical), "pixel", "")
    for column, default in (("variant", ""), ("precision", "fp32"), ("protocol_version", "1"),
                            ("tuning", ""), ("setting", "")):
        if column not in rows:
            rows[column] = default
    rows["protocol_version"] = rows["protocol_version"].replace("", "1")
    if "ood_table" not in rows:  # rows made before OOD tables had names: the default one
        rows["ood_table"] = np.where(rows["protocol"] == "one-class", "", "bench")
    if "backbone" in rows:  # classical methods' backbone was called "pixels"
        rows["backbone"] = rows["backbone"].replace("pixels", "pixel")
    for (method, old), new in RENAMED_SCORES.items():
        rows.loc[(rows["method"] == method) & (rows["score"] == old), "score"] = new
    return rows.reindex(columns=ROW_COLUMNS)


MAX_SEED = 2**32 - 1  # NumPy's seeds are 32-bit
# columns of free text: printed and written as text, so never a control character in them
FREE_TEXT_COLUMNS = ("score", "variant", "tuning", "setting", "features", "ood_dataset", "normal_class", "backbone",
                     "precision", "device", "code_version", "run_id", "config_hash",
                     "created_at", "n_train", "epochs")
FORMULA_CHECKED = ("score", "variant", "tuning", "setting", "features", "ood_dataset", "normal_class")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _first_bad(path: Path, column: str, series: pd.Series, bad, why: str) -> None:
    """DamagedFile '<file>: column <c>, line <n>: <value> <why>' for the first True of `bad`
    (line 1 is the header); nothing when no row is bad."""
    bad = np.asarray(bad, dtype=bool)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        why = why(i) if callable(why) else why
        raise DamagedFile(f"{path}: column {column}, line {i + 2}: "
                          f"{str(series.iloc[i])[:60]!r} {why}")


def _is_name(series: pd.Series) -> np.ndarray:
    text = series.astype(str)
    return (text.str.fullmatch(SAFE_NAME.pattern) & ~text.isin([".", ".."])).to_numpy()


def validate_rows(rows: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The rows with `value` and `seed` as numbers, or DamagedFile naming the file, the column
    and the first bad line: names that could not name a file, values that are not numbers,
    metrics outside [0, 1] (AUROC 99.4 instead of 0.994, inf), negative or fractional seeds."""
    for column in NAME_COLUMNS:
        named = _is_name(rows[column]) | ((rows[column] == "") if column in ("preset", "ood_table")
                                          else False)
        _first_bad(path, column, rows[column], ~named,
                   "is not a name (letters, digits and ._+=,@:- only): it would name a file")
    _first_bad(path, "metric", rows["metric"], ~rows["metric"].isin(METRICS),
               f"is not a metric ({', '.join(METRICS)})")
    version = rows["protocol_version"].astype(str)
    _first_bad(path, "protocol_version", version, ~version.str.fullmatch(r"\d+"),
               "is not a protocol version (a number)")
    values = pd.to_numeric(rows["value"], errors="coerce").astype(float)
    _first_bad(path, "value", rows["value"], ~np.isfinite(values), "is not a finite number")
    _first_bad(path, "value", rows["value"], (values < 0) | (values > 1),
               lambda i: f"is outside [0, 1] ({rows['metric'].iloc[i]} is a fraction: 0.994, "
                         "not 99.4)")
    seeds = pd.to_numeric(rows["seed"], errors="coerce").astype(float)
    _first_bad(path, "seed", rows["seed"],
               ~(np.isfinite(seeds) & (seeds >= 0) & (seeds == np.floor(seeds))
                 & (seeds <= MAX_SEED)),
               f"is not a seed (an integer from 0 to {MAX_SEED})")
    for column in FREE_TEXT_COLUMNS:
        if column in rows:
            text = rows[column].astype(str)
            _first_bad(path, column, text, text.str.contains(CONTROL_CHARACTERS.pattern,
                                                             regex=True),
                       "holds a control character (a line break or an escape sequence)")
            if column in FORMULA_CHECKED:
                _first_bad(path, column, text, text.str.match(r"[=+@]"),
                           "starts like a spreadsheet formula (=, + or @)")
    return rows.assign(value=values, seed=seeds.astype("int64"), protocol_version=version)


def read_rows(path: Path) -> pd.DataFrame:
    """Tidy rows from a CSV file in today's schema, validated (`validate_rows`); a file that is
    not one gives DamagedFile naming the file and what is wrong."""
    path = Path(path)
    try:
        if not path.exists():
            raise FileNotFoundError(path) if path.name == "rows.csv" else \
                BenchError(f"{path}: no such rows file")
        with open_regular(path) as handle:  # a FIFO is refused, not waited on
            rows = pd.read_csv(handle, dtype=ROW_DTYPES, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
            ValueError) as exc:
        raise DamagedFile(f"{path}: not a rows file ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else 'empty'})") from None
    except (FileNotFoundError, BenchError):
        raise
    except OSError as exc:
        raise file_error("read", path, exc) from None
    missing = [c for c in REQUIRED_COLUMNS if c not in rows.columns]
    if missing:
        raise DamagedFile(f"{path}: not a rows file (it lacks the columns {', '.join(missing)})")
    return validate_rows(migrate_rows(rows), path)

