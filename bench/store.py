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

Every file is written atomically (`bench/files.py`); many workers may share one directory. The
rows' schema is `bench/schema.py`.

Nothing read from a run directory or a rows file is trusted: torch files load with
``weights_only=True`` (tensors and plain containers, never code), job folders are known by their
own names, and a name read from a file never becomes a path outside the folder it is written to.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import file_error
from bench.files import (  # noqa: F401 - the file utilities, for importers of the store
    JSON_MAX_BYTES,
    SAFE_NAME,
    NotRegularFile,
    _npz_bytes,
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_text,
    check_writable,
    clean_stale_temporaries,
    file_digest,
    file_lock,
    inside,
    load_npz,
    load_torch_file,
    no_links,
    read_regular,
    safe_component,
    sha256_of,
)
from bench.schema import (  # noqa: F401 - the rows' schema, for importers of the store
    METRICS,
    NAME_COLUMNS,
    REQUIRED_COLUMNS,
    ROW_COLUMNS,
    ROW_DTYPES,
    DamagedFile,
    migrate_rows,
    read_rows,
    sort_rows,
    validate_rows,
)

JOB_FILES = ("rows.csv", "scores.npz", "embedding.npz")


class RunStore:
    """Paths and reads/writes of one run directory."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    def job_dir(self, job_id: str) -> Path:
        return no_links(self.root, "jobs", safe_component(job_id, "job id"))

    def model_dir(self, train_id: str) -> Path:
        return no_links(self.root, "models", safe_component(train_id, "model id"))

    def record(self, job_id: str) -> dict | None:
        """The job's record, known by its folder's name; None when there is none or it is not a
        record (garbage, a list, no job id, no status): such a job is redone."""
        path = self.job_dir(job_id) / "record.json"
        try:
            record = json.loads(read_regular(path, JSON_MAX_BYTES))
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError,
                NotRegularFile):  # a FIFO, a device or a giant: not a record, the job is redone
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

