"""The run directory: one folder per job, written atomically, and results.csv rebuilt from them.

    <out>/spec.json                 the last RunSpec that used this directory
    <out>/results.csv               all rows of all finished jobs (rebuilt, never appended)
    <out>/leaderboard/              the run's leaderboard (bench leaderboard on this directory)
    <out>/jobs/<job_id>/record.json status (done | failed), error, timings, key fields, and the
                                    size and SHA-256 of each file below (checked on every run)
    <out>/jobs/<job_id>/rows.csv    tidy rows (schema in design.md)
    <out>/jobs/<job_id>/scores.npz  raw anomaly scores and labels per (score, test group)
    <out>/jobs/<job_id>/embedding.npz  penultimate features of a sample of test images (t-SNE)
    <out>/models/<train_id>/        checkpoint.pt while training, model.pt when trained,
                                    history.csv (loss per epoch), features-*.pt (cached features)

Every file is written to a temporary name in its folder and renamed, so a killed process leaves
either the old file or the new one; many workers may share one directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import BenchError

ROW_COLUMNS = [
    "run_id", "job_id", "method", "score", "features", "variant", "protocol", "protocol_version",
    "dataset", "normal_class", "ood_dataset", "seed", "metric", "value", "n_train",
    "n_test_normal", "n_test_anomalous", "preset", "backbone", "epochs", "precision",
    "train_seconds", "eval_seconds", "device", "config_hash", "code_version", "created_at",
]
ROW_DTYPES = {"normal_class": str, "ood_dataset": str, "job_id": str, "run_id": str,
              "config_hash": str, "backbone": str, "score": str, "features": str,
              "variant": str, "protocol_version": str, "precision": str}
ROW_ORDER = ["protocol", "dataset", "method", "score", "features", "variant", "normal_class",
             "ood_dataset", "seed", "metric"]
JOB_FILES = ("rows.csv", "scores.npz", "embedding.npz")
CLASSICAL = {"ocsvm", "iforest", "knn", "lof", "pca", "ecod", "copod", "kde", "deepsvdd"}
RENAMED_SCORES = {("simclr", "knn"): "cosnorm", ("mcl", "knn"): "cosnorm"}


class DamagedFile(BenchError):
    """A rows file cannot be read; the message names it."""


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_current_umask()  # what open() would give: mkstemp's 0600 is too private


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), FILE_MODE)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
    """A torch file's content loaded to the CPU, or None if it is missing, truncated or not a
    torch file (a damaged file must mean "recompute", never a dead job)."""
    import pickle
    import zipfile

    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except (OSError, EOFError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError,
            zipfile.BadZipFile, AttributeError, IndexError, TypeError):
        return None


def atomic_write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_text(path, frame.to_csv(index=False, lineterminator="\n"))


def atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    atomic_write_bytes(path, _npz_bytes(arrays))


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive advisory lock (fcntl) held for the block; a no-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
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
        return self.jobs_dir / job_id

    def model_dir(self, train_id: str) -> Path:
        return self.root / "models" / train_id

    def record(self, job_id: str) -> dict | None:
        path = self.job_dir(job_id) / "record.json"
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def status(self, job_id: str) -> str | None:
        rec = self.record(job_id)
        return rec.get("status") if rec else None

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
        bad = []
        for name, expect in listed.items():
            path = folder / name
            if not path.exists():
                bad.append(f"{name} (missing)")
            elif path.stat().st_size != expect["size"]:
                bad.append(f"{name} (size {path.stat().st_size}, recorded {expect['size']})")
            elif sha256_of(path) != expect["sha256"]:
                bad.append(f"{name} (content changed)")
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

    def records(self) -> list[dict]:
        if not self.jobs_dir.exists():
            return []
        out = []
        for folder in sorted(self.jobs_dir.iterdir()):
            rec = self.record(folder.name)
            if rec is not None:
                out.append(rec)
        return out

    def rows(self, problems: list[str] | None = None) -> pd.DataFrame:
        """All rows of the finished jobs, in a stable order. A finished job whose files are
        damaged contributes no rows; it is named in `problems` (if given) and the next `bench
        run` redoes it."""
        frames = []
        for rec in self.records():
            if rec.get("status") != "done":
                continue
            damaged = self.damaged_files(rec["job_id"])
            if damaged:
                if problems is not None:
                    problems.append(f"{self.job_dir(rec['job_id'])}: {', '.join(damaged)}; "
                                    "`bench run` with the same arguments redoes the job")
                continue
            try:
                frames.append(read_rows(self.job_dir(rec["job_id"]) / "rows.csv"))
            except DamagedFile as exc:  # changed between the check and the read
                if problems is not None:
                    problems.append(str(exc))
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


def migrate_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows written by earlier versions in today's schema: the features, variant, precision
    and protocol_version columns filled in, and renamed scores (SimCLR's and MCL's `knn` is
    `cosnorm`)."""
    rows = rows.copy()
    if "features" not in rows:
        rows["features"] = np.where(rows["method"].isin(CLASSICAL), "pixel", "")
    for column, default in (("variant", ""), ("precision", "fp32"), ("protocol_version", "1")):
        if column not in rows:
            rows[column] = default
    for (method, old), new in RENAMED_SCORES.items():
        rows.loc[(rows["method"] == method) & (rows["score"] == old), "score"] = new
    return rows.reindex(columns=ROW_COLUMNS)


def read_rows(path: Path) -> pd.DataFrame:
    """Tidy rows from a CSV file in today's schema; a file that is not one gives DamagedFile."""
    if not Path(path).is_file():
        raise FileNotFoundError(path) if Path(path).name == "rows.csv" else \
            BenchError(f"{path}: no such rows file")
    try:
        rows = pd.read_csv(path, dtype=ROW_DTYPES, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
            ValueError) as exc:
        raise DamagedFile(f"{path}: not a rows file ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else 'empty'})") from None
    needed = {"method", "score", "metric", "value", "protocol", "dataset"}
    if not needed <= set(rows.columns):
        raise DamagedFile(f"{path}: not a rows file (it lacks the columns "
                          f"{', '.join(sorted(needed - set(rows.columns)))})")
    return migrate_rows(rows)
