"""What a run prints on the terminal (stderr): job progress lines and warnings."""

from __future__ import annotations

import sys
from typing import Any


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    log(f"bench: warning: {message}")


def record_line(record: dict[str, Any]) -> str:
    """One line on a finished job: its time and first AUROCs, or its error."""
    if record.get("status") != "done":
        return f"FAILED: {record.get('error', '')}"
    aurocs = record.get("auroc", {})
    shown = ", ".join(f"{k.removeprefix('rest/')} {100 * v:.1f}" for k, v in list(aurocs.items())[:4])
    more = " ..." if len(aurocs) > 4 else ""
    return f"done in {record['seconds']:.1f}s" + (f" (AUROC {shown}{more})" if shown else "")


def job_label(i: int, n: int, job) -> str:
    return f"[{i:>{len(str(n))}}/{n}] {job.describe()}"
