"""Writing files whole or not at all, and saying in one line why a write failed.

Every file hpc-forget writes (store files, checkpoints, the tiny model cache, JSON records)
goes through :func:`atomic_write`: a hidden temporary name in the final directory that carries
the writer's host and pid (``.<name>.<host>.<pid>.<hex>.tmp``), fsync, an optional validation
read, ``os.replace`` (atomic on NFS, Lustre and GPFS), fsync of the directory. A failure removes
the temporary file and leaves the final one as it was. :func:`clean_stale_tmp` removes the
temporary files that killed writers left behind, and only those.

This module imports only the standard library (and the error classes): the store, which must
import only stdlib, numpy and h5py, uses it too.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpc_forget.errors import UserError

STALE_TMP_S = 24 * 3600
"""A temporary file written on another host is removed once it is older than this."""

HOST = re.sub(r"[^A-Za-z0-9-]", "_", socket.gethostname())[:40] or "host"
"""This host's name as it appears in temporary file names (no dots: they separate fields)."""

_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]{1,40})\.(?P<pid>\d+)\.[0-9a-f]+\.tmp$")

_FULL = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded"}


def tmp_name(final: Path) -> Path:
    """A hidden temporary name next to `final` carrying this writer's host and pid."""
    return final.with_name(f".{final.name}.{HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def parse_tmp_name(name: str) -> tuple[str, str, int] | None:
    """(final name, host, pid) of a temporary name made by :func:`tmp_name`, else None."""
    m = _TMP.match(name)
    return (m["name"], m["host"], int(m["pid"])) if m else None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def is_stale_tmp(name: str, mtime: float, *, now: float | None = None) -> bool:
    """Is this a temporary file of a writer that is gone: a dead pid on this host, or older
    than STALE_TMP_S if written on another host (whose pids we cannot check)?"""
    parsed = parse_tmp_name(name)
    if parsed is None:
        return False
    _, host, pid = parsed
    if host == HOST:
        return not _pid_alive(pid)
    return ((time.time() if now is None else now) - mtime) > STALE_TMP_S


def clean_stale_tmp(directory: Path, owns: Callable[[str], bool] = lambda _: True) -> list[Path]:
    """Remove the stale temporary files in `directory` whose final name `owns` accepts (the
    caller's own files: never another run's); returns what was removed. Best effort."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        parsed = parse_tmp_name(entry.name)
        if parsed is None or not owns(parsed[0]):
            continue
        with contextlib.suppress(OSError):
            if is_stale_tmp(entry.name, entry.stat(follow_symlinks=False).st_mtime):
                if entry.is_dir(follow_symlinks=False):  # a half-built folder (tiny model)
                    shutil.rmtree(entry.path)
                else:
                    os.remove(entry.path)
                removed.append(Path(entry.path))
    return removed


def os_error_errno(exc: BaseException) -> int | None:
    """The errno of an OSError, also when a library hid it in the message (h5py, safetensors)."""
    err = getattr(exc, "errno", None)
    if isinstance(err, int):
        return err
    msg = str(exc)
    if "No space left" in msg or "errno = 28" in msg or "os error 28" in msg:
        return errno.ENOSPC
    if "quota" in msg.lower() or "errno = 122" in msg or "os error 122" in msg:
        return errno.EDQUOT
    if "Read-only file system" in msg or "os error 30" in msg:
        return errno.EROFS
    if "Permission denied" in msg or "os error 13" in msg:
        return errno.EACCES
    return None


def is_write_failure(exc: BaseException) -> bool:
    """Is `exc` a full disk, a quota, a read-only filesystem or a permission problem?"""
    return os_error_errno(exc) in (*_FULL, errno.EROFS, errno.EACCES, errno.EPERM)


def write_error_message(exc: BaseException, path: Path | str, what: str, fix: str) -> str:
    """One line for a failed write of `what` to `path`; `fix` is where to write instead
    (e.g. "move the store", "choose another --out path")."""
    err = os_error_errno(exc)
    if err in _FULL:
        return (
            f"{path}: {_FULL[err]} while writing {what}; earlier results are intact"
            f" — free space (or {fix}) and re-run"
        )
    if err == errno.EROFS:
        return (
            f"{path}: read-only filesystem while writing {what}; earlier results are intact"
            f" — {fix} onto a writable filesystem and re-run"
        )
    if err in (errno.EACCES, errno.EPERM):
        return (
            f"{path}: permission denied while writing {what}; earlier results are intact"
            f" — fix the permissions (or {fix}) and re-run"
        )
    reason = getattr(exc, "strerror", None) or " ".join(str(exc).split())[:160]
    return f"{path}: cannot write {what} ({reason}); earlier results are intact"


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def fsync_dir(directory: Path) -> None:
    """Make a rename durable; best effort (not every filesystem supports it)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


def atomic_write_raw(
    final: Path,
    write: bytes | Callable[[Path], None],
    validate: Callable[[Path], None] | None = None,
) -> None:
    """Write `final` whole or not at all. `write` is the bytes, or a function that writes the
    temporary path it is given (``torch.save``, ``h5py``). Temp name in the same directory,
    fsync, `validate(tmp)`, os.replace, fsync of the directory. Any failure removes the temp
    file, leaves `final` as it was and re-raises."""
    tmp = tmp_name(final)
    fd: int | None = None
    try:
        if isinstance(write, bytes | bytearray | memoryview):
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            write_all(fd, bytes(write))
            os.fsync(fd)
            os.close(fd)
            fd = None
        else:
            write(tmp)
            fsync_file(tmp)
        if validate is not None:
            validate(tmp)
        os.replace(tmp, final)
    except BaseException:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        remove_quietly(tmp)
        raise
    fsync_dir(final.parent)


def atomic_write(
    final: Path,
    write: bytes | Callable[[Path], None],
    what: str,
    *,
    fix: str,
    error: type[UserError] = UserError,
    validate: Callable[[Path], None] | None = None,
) -> None:
    """:func:`atomic_write_raw` (creating the parent folder) with a failed write (a full disk,
    a quota, a read-only or forbidden folder, or any other OSError) raised as one-line
    `error`. Errors other than OSError (and the library errors that wrap one) pass through."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_raw(final, write, validate)
    except UserError:
        raise
    except Exception as exc:
        if isinstance(exc, OSError) or is_write_failure(exc):
            raise error(write_error_message(exc, final, what, fix)) from None
        raise


def sha256_file(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_digest(folder: Path) -> tuple[str, int, int]:
    """(sha256 over sorted "relpath sha256" lines, files, bytes) of a folder (links followed)."""
    lines, n, size = [], 0, 0
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            rel = p.relative_to(folder).as_posix()
            lines.append(f"{rel} {sha256_file(p)}\n")
            n += 1
            size += p.stat().st_size
    return hashlib.sha256("".join(lines).encode()).hexdigest(), n, size


def utc_now(timespec: str = "seconds") -> str:
    """The current UTC time in ISO 8601 (``2026-12-03T10:41:37+00:00``): every timestamp that
    hpc-forget writes (step provenance, markers, run folders, the prefetch record)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec=timespec)


def write_json(path: Path, data: Any, *, sort_keys: bool = False) -> None:
    """Write ``data`` as JSON (indent 1, a final newline) whole or not at all: readers see the
    old file or the new one (a temporary name from :func:`tmp_name`, then ``os.replace``). No
    fsync: for run-folder records and task markers, rewritten often; the store's files and
    checkpoints go through :func:`atomic_write`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    try:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=sort_keys) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
