"""The run directory: one folder per job, written atomically, and results.csv rebuilt from them.

    <out>/spec.json                 the last RunSpec that used this directory
    <out>/results.csv               all rows of all finished jobs (rebuilt, never appended)
    <out>/leaderboard/              the run's leaderboard (bench leaderboard on this directory)
    <out>/jobs/<job_id>/record.json status (done | failed | skipped), error, timings, key fields
    <out>/jobs/<job_id>/rows.csv    tidy rows (schema in design.md)
    <out>/jobs/<job_id>/scores.npz  raw anomaly scores and labels per (score, test group)
    <out>/models/<train_id>/        checkpoint.pt while training, model.pt when trained,
                                    history.csv (loss per epoch), features-*.pt (cached features)

Every file is written to a temporary name in its folder and renamed, so a killed process leaves
either the old file or the new one; many workers may share one directory.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROW_COLUMNS = [
    "run_id", "job_id", "method", "score", "protocol", "dataset", "normal_class", "ood_dataset",
    "seed", "metric", "value", "n_train", "n_test_normal", "n_test_anomalous", "preset",
    "backbone", "epochs", "train_seconds", "eval_seconds", "device", "config_hash",
    "code_version", "created_at",
]
ROW_DTYPES = {"normal_class": str, "ood_dataset": str, "job_id": str, "run_id": str,
              "config_hash": str, "backbone": str, "score": str}


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
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


def atomic_write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_text(path, frame.to_csv(index=False, lineterminator="\n"))


def atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


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
        return rec["status"] if rec else None

    def write_job(self, job_id: str, record: dict, rows: pd.DataFrame | None,
                  scores: dict[str, np.ndarray] | None) -> None:
        """Rows and scores first, the record last: a record marked done means all is there."""
        folder = self.job_dir(job_id)
        if rows is not None:
            atomic_write_csv(folder / "rows.csv", rows[ROW_COLUMNS])
        if scores:
            atomic_savez(folder / "scores.npz", scores)
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

    def rows(self) -> pd.DataFrame:
        """All rows of the finished jobs, in a stable order."""
        frames = []
        for rec in self.records():
            path = self.job_dir(rec["job_id"]) / "rows.csv"
            if rec.get("status") == "done" and path.exists():
                frames.append(read_rows(path))
        if not frames:
            return pd.DataFrame(columns=ROW_COLUMNS)
        rows = pd.concat(frames, ignore_index=True)
        return rows.sort_values(["protocol", "dataset", "method", "score", "normal_class",
                                 "ood_dataset", "seed", "metric"], kind="stable",
                                ignore_index=True)

    def write_results(self) -> pd.DataFrame:
        """Rebuild results.csv from the job folders (safe to call from several processes)."""
        rows = self.rows()
        with file_lock(self.root / ".results.lock"):
            atomic_write_csv(self.root / "results.csv", rows)
        return rows


def read_rows(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=ROW_DTYPES, keep_default_na=False)
