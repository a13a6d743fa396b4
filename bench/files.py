"""Files that survive a kill and names that stay in their folder: atomic writes, stale
temporaries, locks, hashes, and loads that run no code (torch ``weights_only``, npz without
pickles). Everything that writes or reads a file of the suite goes through here; the engine
(`bench/nn`) and the run directory (`bench/store.py`) both stand on it.

Every file is written to a temporary name in its folder and renamed, so a killed process leaves
either the old file or the new one; many workers may share one directory. A temporary left by a
killed process (``.<name>.<host>.<pid>.*.tmp``) is removed by the next command that writes there.
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
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import BenchError, file_error, os_cause


class NotRegularFile(BenchError):
    """A file bench will not read: not a regular file, too large, or a bomb."""


HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"

SAFE_NAME = re.compile(r"[A-Za-z0-9_+=,@-][A-Za-z0-9._+=,@:-]{0,199}")


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


def no_links(root: Path | str, *parts: str) -> Path:
    """root/parts, refusing a symbolic link at any of the parts (a job or model folder planted
    as a link would have bench write and read elsewhere): BenchError naming it."""
    path = Path(root)
    for part in parts:
        path = path / part
        if path.is_symlink():
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            raise BenchError(f"{path} is a symbolic link (to {target}); a run directory holds "
                             "no links: remove it")
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
    for path in list(candidates):
        try:
            folder_tmp = path.is_dir() and not path.is_symlink()
            if path.is_symlink() or not (path.is_file() or folder_tmp):
                continue
            match = TEMPORARY.fullmatch(path.name)
            if folder_tmp and not match:  # only bench's own temporary folders (a report's)
                continue
            age = now - path.stat().st_mtime
            if match:
                stale = (not _pid_alive(int(match["pid"])) if match["host"] == HOST
                         else age > FOREIGN_TEMPORARY_AGE_S)
            else:
                stale = age > LEGACY_TEMPORARY_AGE_S
            if stale:
                shutil.rmtree(path) if folder_tmp else path.unlink()
                removed.append(path)
        except OSError:
            continue
    return removed


def temporary_folder(parent: Path | str, name: str) -> tempfile.TemporaryDirectory:
    """A temporary folder inside `parent` (created), named as bench's temporaries are, so the
    stale-temporary cleaner removes it if the process is killed."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(dir=parent, prefix=f".{name}.{HOST}.{os.getpid()}.",
                                       suffix=".tmp")


@contextlib.contextmanager
def staged_folder(out: Path | str, kind: str):
    """A temporary folder under `out` (checked writable; a killed command's staged folder
    removed first) to write into; `publish` then moves the files in."""
    check_writable(out)
    clean_stale_temporaries(out, recursive=False)
    with temporary_folder(out, kind) as tmp:
        yield tmp


MADE_FROM = ".made-from.json"  # in an output folder: each file's sources, relative to it


def sources_key(sources: list[str | Path], out: Path | str) -> list[str]:
    """The sources (run directories, rows files) a file was made from, as paths relative to its
    folder: the same on every machine that has the same layout."""
    out = Path(out).resolve()
    return sorted(s if str(s).startswith(FRAME_SOURCE) else os.path.relpath(Path(s).resolve(), out)
                  for s in sources)


FRAME_SOURCE = "rows in memory:"  # a source that is a table in Python, named by its content


def frame_source(frame: Any) -> str:
    """A rows table given in Python as a source: named by a digest of its content, so the
    same rows make the same key and other rows another."""
    import pandas as pd

    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).values.tobytes())
    return f"{FRAME_SOURCE}{digest.hexdigest()[:16]}"


MERGED_FILES = ("README",)  # files that keep other sources' sections (leaderboard READMEs)


def publish(staged: Path | str, out: Path | str, sources: list[str | Path],
            force: bool = False) -> list[Path]:
    """Move every file written under `staged` into `out` (each an atomic rename), recording in
    `out`/.made-from.json what it was made from. A file of `out` that would change and was not
    made from the same sources (another run's, or a committed result) is replaced only with
    `force`: otherwise BenchError and nothing is replaced. A README keeps the sections of other
    sources (it was merged before it was staged), so it is never a conflict."""
    staged, out = Path(staged), Path(out)
    key = sources_key(sources, out)
    manifest = out / MADE_FROM
    try:
        made = json.loads(read_regular(manifest)) if manifest.exists() else {}
    except (ValueError, BenchError):
        made = {}
    made = made if isinstance(made, dict) else {}
    files = sorted(p for p in staged.rglob("*") if p.is_file() and not p.is_symlink())
    conflicts = []
    for path in files:
        rel = path.relative_to(staged).as_posix()
        target = inside(out, *rel.split("/"))
        if rel.startswith(MERGED_FILES):
            continue
        if target.is_file() and made.get(rel) != key and target.read_bytes() != path.read_bytes():
            conflicts.append(rel)
    if conflicts and not force:
        shown = ", ".join(conflicts[:3]) + (f" and {len(conflicts) - 3} more"
                                            if len(conflicts) > 3 else "")
        raise BenchError(f"{out}: {shown} would be replaced, and "
                         f"{'it was' if len(conflicts) == 1 else 'they were'} made from other "
                         "rows; --force replaces them, or choose another --out")
    written = []
    for path in files:
        rel = path.relative_to(staged).as_posix()
        target = inside(out, *rel.split("/"))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        except OSError as exc:
            raise file_error("write", target, exc) from None
        made[rel] = key
        written.append(target)
    atomic_write_json(manifest, dict(sorted(made.items())))
    return written


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


JSON_MAX_BYTES = 16 << 20  # a record or spec larger than this is not one of ours
NPZ_MAX_BYTES = 1 << 30  # what an .npz of a run may unpack to (scores, a sample's features)


def open_regular(path: Path | str, limit: int | None = None):
    """A binary file object of `path` if it is a regular file (not a FIFO, a device, or a link
    to one) of at most `limit` bytes: FileNotFoundError if it is not there, NotRegularFile
    otherwise. Opened without blocking, so a FIFO is refused instead of waited on."""
    path = Path(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(f"{path}: not a regular file (a FIFO, device or socket); "
                                 "bench reads only files")
        if limit is not None and info.st_size > limit:
            raise NotRegularFile(f"{path}: {info.st_size:,} bytes, more than the {limit:,} a "
                                 "file of this kind may have")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path | str, limit: int | None = JSON_MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (`open_regular`)."""
    with open_regular(path, limit) as f:
        return f.read()


def check_zip_entries(source: Path | str | bytes, limit: int | None = None,
                      stored: bool = False) -> None:
    """NotRegularFile unless `source` (a path or the bytes of a file) is a zip archive whose
    entries unpack to at most `limit` bytes in all, and (`stored`: as torch.save writes them)
    are stored, not compressed: a small file that declares gigabytes is refused before anything
    is allocated."""
    import zipfile

    name = "the file" if isinstance(source, bytes) else str(source)
    with (io.BytesIO(source) if isinstance(source, bytes) else open_regular(source)) as f:
        size = len(source) if isinstance(source, bytes) else os.fstat(f.fileno()).st_size
        try:
            with zipfile.ZipFile(f) as archive:
                entries = archive.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise NotRegularFile(f"{name}: not a zip archive ({exc})") from None
    declared = sum(e.file_size for e in entries)
    if stored and any(e.compress_type != zipfile.ZIP_STORED for e in entries):
        raise NotRegularFile(f"{name}: compressed entries, which torch.save never writes")
    if stored and declared > size:
        raise NotRegularFile(f"{name}: its entries declare {declared:,} bytes in a file of "
                             f"{size:,}")
    if limit is not None and declared > limit:
        raise NotRegularFile(f"{name}: its entries unpack to {declared:,} bytes, more than the "
                             f"{limit:,} allowed")


def load_torch_checked(source: Path | str | bytes, map_location: str = "cpu") -> Any:
    """A torch file's tensors and plain containers with ``weights_only=True`` (no code runs),
    after `check_zip_entries`: NotRegularFile naming what is wrong (a FIFO, a bomb, a file
    torch.save of torch 1.6 or later did not write), FileNotFoundError if it is not there, and
    other errors as torch raises them (a truncated or foreign pickle). `source`: a path, or
    the bytes already read (and hashed) by the caller."""
    import warnings

    import torch

    check_zip_entries(source, stored=True)
    with warnings.catch_warnings():  # torch warns about foreign pickles before refusing them
        warnings.simplefilter("ignore")
        return torch.load(io.BytesIO(source) if isinstance(source, bytes) else source,
                          map_location=map_location, weights_only=True)


def load_torch_file(path: Path, map_location: str = "cpu") -> Any | None:
    """A torch file of the run directory (`load_torch_checked`), or None if it is missing,
    truncated, not a torch file, a bomb or holds anything else: a damaged file means
    "recompute", never a dead job."""
    try:
        return load_torch_checked(path, map_location)
    except Exception:  # noqa: BLE001 - truncated or foreign files fail in many ways; none runs code
        return None


def atomic_write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_text(path, frame.to_csv(index=False, lineterminator="\n"))


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive advisory lock (fcntl) held for the block; a no-op where fcntl is missing.
    The lock file is opened without following a link (a planted link is refused, its target
    never created)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_NONBLOCK", 0), FILE_MODE)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise NotRegularFile(f"{path}: a lock file that is not a regular file; remove it")
        handle = os.fdopen(fd, "a")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BenchError(f"{path} is a symbolic link; bench's lock files are never links: "
                             "remove it") from None
        raise file_error("write", path, exc) from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    """Every array of an .npz file, never unpickling an object array (allow_pickle=False), and
    never one that would unpack to more than NPZ_MAX_BYTES (NotRegularFile: a bomb)."""
    check_zip_entries(path, NPZ_MAX_BYTES)
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}

