"""Errors the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BenchError(Exception):
    """Bad input from the user (unknown name, malformed value, missing data): exit code 2."""


class DataMissingError(BenchError):
    """A data set is not on disk and may not be downloaded; the message says where to put it."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.dataset = name


class ChecksumError(BenchError):
    """A data file is corrupt or truncated."""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> BenchError:
    """An error for an unknown `name` of `kind`, with the closest valid names."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    return BenchError(f"unknown {kind} {name!r}; {hint}valid: {', '.join(valid)}")
