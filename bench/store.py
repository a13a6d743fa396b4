"""The run directory: one folder per job, written atomically, and results.csv rebuilt from them.

    <out>/spec.json                 the last RunSpec that used this directory
    <out>/results.csv               all rows of all finished jobs (rebuilt, never appended)
    <out>/leaderboard/              the run's leaderboard (bench leaderboard on this directory)
    <out>/jobs/<job_id>/record.json status (done | failed), error, timings, key fields, and the
                                    size and SHA-256 of each file below (checked on every run)
    <out>/jobs/<job_id>/rows.csv    tidy rows (ROW_COLUMNS; README "Results")
    <out>/jobs/<job_id>/scores.npz  raw anomaly scores and labels per (score, test group)
    <out>/jobs/<job_id>/embedding.npz  penultimate features of a sample of test images (t-SNE)
    <out>/models/<train_id>/        checkpoint.pt while training, model.pt when trained (with the
                                    loss history), features-*.pt (cached features)

Every file is written to a temporary name in its folder and renamed, so a killed process leaves
either the old file or the new one; many workers may share one directory. A temporary left by a
killed process (``.<name>.<host>.<pid>.*.tmp``) is removed by the next command that writes there.

Nothing read from a run directory or a rows file is trusted: torch files load with
``weights_only=True`` (tensors and plain containers, never code), job folders are known by their
own names, and a name read from a file never becomes a path outside the folder it is written to.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import BenchError, file_error, os_cause

ROW_COLUMNS = [
    "run_id", "job_id", "method", "score", "features", "variant", "protocol", "protocol_version",
    "ood_table", "dataset", "normal_class", "ood_dataset", "seed", "metric", "value", "n_train",
    "n_test_normal", "n_test_anomalous", "preset", "backbone", "epochs", "precision",
    "train_seconds", "eval_seconds", "device", "config_hash", "code_version", "created_at",
]
ROW_DTYPES = {"normal_class": str, "ood_dataset": str, "job_id": str, "run_id": str,
              "config_hash": str, "backbone": str, "score": str, "features": str,
              "variant": str, "protocol_version": str, "ood_table": str, "precision": str,
              "method": str,
              "protocol": str, "dataset": str, "preset": str, "metric": str}
ROW_ORDER = ["protocol", "ood_table", "dataset", "method", "score", "features", "variant",
             "normal_class", "ood_dataset", "seed", "metric"]
# what a rows file must have (the rest is filled in: migrate_rows, or left empty)
REQUIRED_COLUMNS = ("job_id", "method", "score", "protocol", "dataset", "normal_class",
                    "ood_dataset", "seed", "metric", "value", "preset")
# every one a fraction in [0, 1]; fpr95_openood: OpenOOD v1.5's FPR@95 (rows of its table)
METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95", "fpr95_openood", "accuracy")
# columns that name files (leaderboards, figures) or folders: one safe path component each
# (the preset may be empty: rows made before presets)
NAME_COLUMNS = ("protocol", "dataset", "preset", "method", "job_id", "ood_table")
JOB_FILES = ("rows.csv", "scores.npz", "embedding.npz")
RENAMED_SCORES = {("simclr", "knn"): "cosnorm", ("mcl", "knn"): "cosnorm"}
HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
SAFE_NAME = re.compile(r"[A-Za-z0-9_+=,@-][A-Za-z0-9._+=,@:-]{0,199}")


class DamagedFile(BenchError):
    """A rows file cannot be read, or is not in the schema; the message names it."""


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_current_umask()  # what open() would give: mkstemp's 0600 is too private


def safe_component(name: object, what: str = "name") -> str:
    """`name` if it is one harmless path component (letters, digits, ``._+=,@-``, not hidden,
    at most 200 characters), else a BenchError: names read from files never leave a folder."""
    text = str(name)
    if not SAFE_NAME.fullmatch(text) or text in (".", ".."):
        raise BenchError(f"{what} {text[:80]!r} cannot name a file (letters, digits and ._+=,@:- "
                         "only, not starting with a dot, at most 200 characters)")
    return text


def inside(folder: Path | str, *parts: str) -> Path:
    """`folder`/parts, each part a safe component; a link in the way that leads out of `folder`
    is refused (a shared run directory whose `leaderboard/` points elsewhere)."""
    folder = Path(folder)
    path = folder.joinpath(*(safe_component(p, "file name") for p in parts))
    try:
        real_root = folder.resolve()
        probe = path
        while probe != folder and not probe.exists() and not probe.is_symlink():
            probe = probe.parent
        if probe.is_symlink() or probe.exists():
            if not probe.resolve().is_relative_to(real_root):
                raise BenchError(f"{probe} leads outside {folder} (a symbolic link to "
                                 f"{probe.resolve()}); bench writes only inside it: remove the link")
    except (OSError, RuntimeError) as exc:
        raise file_error("use", path, exc) from None
    return path


def _exists(path: Path) -> bool:
    """Path.exists, False where the name itself is refused (too long, a loop)."""
    try:
        return path.exists()
    except OSError:
        return False


def check_path(path: Path | str, what: str) -> None:
    """BenchError if a component of `path`, or the whole path, is longer than the file system
    of its nearest existing folder allows."""
    path = Path(path)
    anchor = path.absolute()
    while not _exists(anchor) and anchor != anchor.parent:
        anchor = anchor.parent
    try:
        name_max, path_max = os.pathconf(anchor, "PC_NAME_MAX"), os.pathconf(anchor, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        name_max, path_max = 255, 4096
    for part in path.parts:
        if len(os.fsencode(part)) > name_max:
            raise BenchError(f"{what} {str(path)[:80]}...: the name {part[:40]}... is "
                             f"{len(os.fsencode(part))} bytes long; this file system allows "
                             f"{name_max}")
    if len(os.fsencode(str(path.absolute()))) >= path_max:
        raise BenchError(f"{what} {str(path)[:80]}...: the path is longer than this file system "
                         f"allows ({path_max} bytes)")


def check_writable(out: Path | str, what: str = "--out") -> None:
    """Fail with exit code 2 (and leave nothing behind) if `out` cannot be created or written:
    names too long, a link that leads nowhere or in a loop, a file in the way; a folder is made
    and removed under the nearest existing ancestor to find out."""
    if not str(out).strip():
        raise BenchError(f"{what} is empty; name a directory")
    check_path(out, what)
    probe = Path(out)
    while True:
        if probe.is_symlink():
            try:
                os.stat(probe)
            except OSError as exc:
                why = ("a symbolic link loop" if exc.errno == errno.ELOOP else
                       f"a symbolic link to {os.readlink(probe)}, which does not exist")
                raise BenchError(f"{what} {out}: {probe} is {why}") from None
        if probe.exists() or probe == probe.parent:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise BenchError(f"{what} {out}: not writable ({probe} is not a directory)")
    try:
        trial = tempfile.mkdtemp(dir=probe, prefix=".bench-write-test-")
        with open(os.path.join(trial, "probe"), "wb") as f:
            f.write(b"x")
        shutil.rmtree(trial)
    except OSError as exc:
        raise BenchError(f"{what} {out}: not writable ({probe}: {os_cause(exc)})") from None


def _temporary_prefix(path: Path) -> str:
    return f".{path.name[:80]}.{HOST}.{os.getpid()}."


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), FILE_MODE)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            raise file_error("write", path, exc) from None
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


TEMPORARY = re.compile(r"\..+\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[^.]+\.tmp")
FOREIGN_TEMPORARY_AGE_S = 24 * 3600  # another machine's temporary: surely stale after a day
LEGACY_TEMPORARY_AGE_S = 3600  # temporaries named before the host and pid were in the name


def clean_stale_temporaries(folder: Path | str, recursive: bool = True) -> list[Path]:
    """Remove the temporaries that killed processes left under `folder`: this machine's whose
    process is gone, another machine's after a day. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    now = time.time()
    candidates = folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")
    for path in candidates:
        try:
            if path.is_symlink() or not path.is_file():
                continue
            match = TEMPORARY.fullmatch(path.name)
            age = now - path.stat().st_mtime
            if match:
                stale = (not _pid_alive(int(match["pid"])) if match["host"] == HOST
                         else age > FOREIGN_TEMPORARY_AGE_S)
            else:
                stale = age > LEGACY_TEMPORARY_AGE_S
            if stale:
                path.unlink()
                removed.append(path)
        except OSError:
            continue
    return removed


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_torch_file(path: Path, map_location: str = "cpu") -> Any | None:
    """A torch file's tensors and plain containers loaded to the CPU with ``weights_only=True``
    (a file from someone else never runs code), or None if it is missing, truncated, not a
    torch file or holds anything else: a damaged file means "recompute", never a dead job."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles before refusing them
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception:  # noqa: BLE001 - truncated or foreign files fail in many ways; none runs code
        return None


def atomic_write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_text(path, frame.to_csv(index=False, lineterminator="\n"))


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive advisory lock (fcntl) held for the block; a no-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")
    except OSError as exc:
        raise file_error("write", path, exc) from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class RunStore:
    """Paths and reads/writes of one run directory."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / safe_component(job_id, "job id")

    def model_dir(self, train_id: str) -> Path:
        return self.root / "models" / safe_component(train_id, "model id")

    def record(self, job_id: str) -> dict | None:
        """The job's record, known by its folder's name; None when there is none or it is not a
        record (garbage, a list, no job id, no status): such a job is redone."""
        path = self.job_dir(job_id) / "record.json"
        try:
            record = json.loads(path.read_text())
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        except OSError as exc:
            raise file_error("read", path, exc) from None
        if not (isinstance(record, dict) and "job_id" in record
                and isinstance(record.get("status"), str)):
            return None
        return {**record, "job_id": job_id}  # a record naming another job is this folder's

    def damaged_files(self, job_id: str) -> list[str]:
        """Files a finished job's record lists whose size or SHA-256 no longer match (missing,
        truncated, overwritten): '<file> (why)' for each. Records written before the check
        existed list no files; their rows.csv must at least be there."""
        rec = self.record(job_id) or {}
        folder = self.job_dir(job_id)
        listed = rec.get("files")
        if listed is None:  # a record from before the check: rows.csv must at least read
            try:
                read_rows(folder / "rows.csv")
                return []
            except FileNotFoundError:
                return ["rows.csv (missing)"]
            except DamagedFile:
                return ["rows.csv (not a rows file)"]
        if not isinstance(listed, dict):
            return ["record.json (its file list is not a list of files)"]
        bad = []
        for name, expect in listed.items():
            if name not in JOB_FILES or not isinstance(expect, dict):
                bad.append(f"record.json (lists {str(name)[:60]!r}, not a file of a job)")
                continue
            path = folder / name
            try:
                if not path.is_file():
                    bad.append(f"{name} (missing)")
                elif path.stat().st_size != expect.get("size"):
                    bad.append(f"{name} (size {path.stat().st_size}, recorded {expect.get('size')})")
                elif sha256_of(path) != expect.get("sha256"):
                    bad.append(f"{name} (content changed)")
            except OSError as exc:
                raise file_error("read", path, exc) from None
        return bad

    def write_job(self, job_id: str, record: dict, rows: pd.DataFrame | None,
                  scores: dict[str, np.ndarray] | None,
                  embedding: dict[str, np.ndarray] | None = None) -> None:
        """Rows, scores and embeddings first, the record last, with each file's size and hash:
        a record marked done means all is there, and lets a later run check it."""
        folder = self.job_dir(job_id)
        payloads = {}
        if rows is not None:
            payloads["rows.csv"] = rows[ROW_COLUMNS].to_csv(
                index=False, lineterminator="\n").encode("utf-8")
        if scores:
            payloads["scores.npz"] = _npz_bytes(scores)
        if embedding:
            payloads["embedding.npz"] = _npz_bytes(embedding)
        for name, data in payloads.items():
            atomic_write_bytes(folder / name, data)
        if record.get("status") == "done":
            record = {**record, "files": {name: {"size": len(data),
                                                 "sha256": hashlib.sha256(data).hexdigest()}
                                          for name, data in payloads.items()}}
        atomic_write_json(folder / "record.json", record)

    def job_ids(self) -> list[str]:
        """The job folders' names: stray files (.DS_Store) and unsafe names are not jobs."""
        try:
            if not self.jobs_dir.is_dir():
                return []
            entries = sorted(self.jobs_dir.iterdir())
        except OSError as exc:
            raise file_error("read", self.jobs_dir, exc) from None
        return [p.name for p in entries if SAFE_NAME.fullmatch(p.name) and p.is_dir()
                and not p.is_symlink()]

    def records(self) -> list[dict]:
        return [rec for job_id in self.job_ids() if (rec := self.record(job_id)) is not None]

    def rows(self, problems: list[str] | None = None) -> pd.DataFrame:
        """All rows of the finished jobs, in a stable order. A finished job whose files are
        damaged contributes no rows; it is named in `problems` (if given) and the next `bench
        run` redoes it."""
        frames = []
        for rec in self.records():
            if rec.get("status") != "done":
                continue
            job_id = rec["job_id"]
            damaged = self.damaged_files(job_id)
            if damaged:
                if problems is not None:
                    problems.append(f"{self.job_dir(job_id)}: {', '.join(damaged)}; "
                                    "`bench run` with the same arguments redoes the job")
                continue
            try:
                rows = read_rows(self.job_dir(job_id) / "rows.csv")
            except (DamagedFile, FileNotFoundError) as exc:  # changed between check and read
                if problems is not None:
                    problems.append(str(exc))
                continue
            frames.append(rows.assign(job_id=job_id))  # the folder says which job it is
        return sort_rows(pd.concat(frames, ignore_index=True) if frames
                         else pd.DataFrame(columns=ROW_COLUMNS))

    def write_results(self, problems: list[str] | None = None) -> pd.DataFrame:
        """Rebuild results.csv from the job folders (safe to call from several processes)."""
        rows = self.rows(problems)
        with file_lock(self.root / ".results.lock"):
            atomic_write_csv(self.root / "results.csv", rows)
        return rows


def sort_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows in the one stable order every results file uses."""
    rows = rows.reindex(columns=ROW_COLUMNS)
    return rows.sort_values(ROW_ORDER, kind="stable", ignore_index=True)


def file_digest(path: Path, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    return file_digest(path, "sha256")


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz file, never unpickling an object array (allow_pickle=False)."""
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def migrate_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows written by earlier versions in today's schema: the features, variant, precision
    and protocol_version columns filled in, and renamed scores (SimCLR's and MCL's `knn` is
    `cosnorm`)."""
    rows = rows.copy()
    if "features" not in rows:
        from bench.registry import method_kind

        rows["features"] = np.where(rows["method"].map(
            lambda m: method_kind(m) == "classical"), "pixel", "")
    for column, default in (("variant", ""), ("precision", "fp32"), ("protocol_version", "1")):
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
               ~(np.isfinite(seeds) & (seeds >= 0) & (seeds == np.floor(seeds))),
               "is not a seed (a non-negative integer)")
    return rows.assign(value=values, seed=seeds.astype("int64"), protocol_version=version)


def read_rows(path: Path) -> pd.DataFrame:
    """Tidy rows from a CSV file in today's schema, validated (`validate_rows`); a file that is
    not one gives DamagedFile naming the file and what is wrong."""
    path = Path(path)
    try:
        if not path.is_file():
            raise FileNotFoundError(path) if path.name == "rows.csv" else \
                BenchError(f"{path}: no such rows file")
        rows = pd.read_csv(path, dtype=ROW_DTYPES, keep_default_na=False)
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

