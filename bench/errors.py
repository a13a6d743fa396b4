"""Errors the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable


class BenchError(Exception):
    """Bad input from the user (unknown name, malformed value, missing data): exit code 2."""


class DataMissingError(BenchError):
    """A data set is not on disk and may not be downloaded; the message says where to put it."""

    def __init__(self, name: str, message: str = "", *, missing: str = "", fix: str = "",
                 downloadable: bool = False):
        """`message`, or one made of what is `missing` and how to `fix` it (for a set bench can
        download, the message says downloads were off)."""
        if not message:
            off = (" and downloads are off (--no-download); run with --download, or "
                   if downloadable else "; ")
            message = f"{name}: {missing}{off}{fix}"
        super().__init__(message)
        self.dataset, self.missing, self.fix, self.downloadable = name, missing, fix, downloadable


class ChecksumError(BenchError):
    """A data file is corrupt or truncated."""


class FileError(BenchError):
    """The operating system refused a read or write of one of bench's files (disk full, no
    permission, a name too long): the message names the file and the cause."""


def os_cause(exc: BaseException) -> str:
    """The operating system's reason, lower-case: 'no space left on device'."""
    if isinstance(exc, OSError):
        text = exc.strerror or (os.strerror(exc.errno) if exc.errno else "") or str(exc)
    else:
        text = str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def file_error(action: str, path: object, exc: BaseException) -> FileError:
    """'cannot write <path>: no space left on device' as a FileError."""
    return FileError(f"cannot {action} {path}: {os_cause(exc)}")


def os_error_message(exc: OSError) -> str:
    """One line for an OSError that reached the CLI: the file(s) it names and the cause."""
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    where = " -> ".join(names)
    return f"{where}: {os_cause(exc)}" if where else os_cause(exc)


def edit_distance(a: str, b: str) -> int:
    """Insertions, deletions, substitutions and swaps of neighbours (optimal string alignment):
    a swapped pair, the commonest typo ('mlc' for 'mcl'), costs one."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1,
                          d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> BenchError:
    """An error for an unknown `name` of `kind`, with the closest valid names (the fewest edits
    first, then those with the same letters, then difflib's similarity)."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=6, cutoff=0.5)
    close = sorted(close, key=lambda c: (edit_distance(name, c), sorted(c) != sorted(name),
                                         close.index(c)))[:3]
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    return BenchError(f"unknown {kind} {name!r}; {hint}valid: {', '.join(valid)}")
