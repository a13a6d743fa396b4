"""What a run prints on the terminal (stderr): job progress lines and warnings."""

from __future__ import annotations

import re
import sys
from typing import Any

# C0 and C1 control characters and DEL: an escape sequence from a file (ESC]52 writes the
# clipboard, ESC]0 the title, ESC[2J clears the screen) must never reach a terminal raw
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: object, one_line: bool = False) -> str:
    """`text` with every control character but newline and tab shown as its escape (\\x1b);
    `one_line`: newlines too (a value from a file must not forge a line of output)."""
    text = CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))
    return text.replace("\r", "\\r").replace("\n", "\\n") if one_line else text


def echo(message: object = "", **kwargs: Any) -> None:
    """click.echo of `message` made printable (what the commands print)."""
    import click

    click.echo(printable(message), **kwargs)


def log(message: str) -> None:
    print(printable(message), file=sys.stderr, flush=True)


def warn(message: str) -> None:
    log(f"bench: warning: {message}")


def percent(fraction: float) -> str:
    """A fraction as the percent every table and line shows: one decimal, rounded once."""
    return f"{100 * fraction:.1f}"


def record_line(record: dict[str, Any]) -> str:
    """One line on a finished job: its time and first AUROCs, or its error."""
    if record.get("status") != "done":
        return f"FAILED: {printable(record.get('error', ''), one_line=True)}"
    aurocs = record.get("auroc", {})
    shown = ", ".join(f"{k.removeprefix('rest/')} {percent(v)}" for k, v in list(aurocs.items())[:4])
    more = " ..." if len(aurocs) > 4 else ""
    return f"done in {record['seconds']:.1f}s" + (f" (AUROC {shown}{more})" if shown else "")


def job_label(i: int, n: int, job) -> str:
    return f"[{i:>{len(str(n))}}/{n}] {job.describe()}"
