"""files.py: temporary names, stale temp cleanup, atomic writes, one-line write errors."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpc_forget import files
from hpc_forget.errors import StoreError, UserError


def test_temp_names_carry_host_and_pid_and_parse_back(tmp_path):
    t = files.tmp_name(tmp_path / "000001.h5")
    assert t.parent == tmp_path and t.name.startswith(".000001.h5.") and t.name.endswith(".tmp")
    assert files.parse_tmp_name(t.name) == ("000001.h5", files.HOST, os.getpid())
    assert files.parse_tmp_name(".nfs000123") is None
    assert files.parse_tmp_name("000001.h5") is None


def test_stale_means_dead_here_or_old_elsewhere():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    now = time.time()
    old = now - files.STALE_TMP_S - 1
    assert files.is_stale_tmp(f".a.h5.{files.HOST}.{proc.pid}.ab.tmp", now)
    assert not files.is_stale_tmp(f".a.h5.{files.HOST}.{os.getpid()}.ab.tmp", old)  # live
    assert not files.is_stale_tmp(".a.h5.elsewhere.1.ab.tmp", now)
    assert files.is_stale_tmp(".a.h5.elsewhere.1.ab.tmp", old)
    assert not files.is_stale_tmp(".a.h5.partial", old)  # not a name we make


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "disk full while writing"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "disk quota exceeded while writing"),
        (OSError(errno.EROFS, "Read-only file system"), "read-only filesystem while writing"),
        (PermissionError(errno.EACCES, "Permission denied"), "permission denied while writing"),
        (
            OSError("Can't write data (errno = 28, error message = 'No space left')"),
            "disk full while writing",
        ),
        (
            RuntimeError("safetensors: No space left on device (os error 28)"),
            "disk full while writing",
        ),
    ],
)
def test_write_errors_are_one_line(exc, words):
    msg = files.write_error_message(exc, Path("/s/x.pt"), "the checkpoint", "move the store")
    assert msg.startswith(f"/s/x.pt: {words} the checkpoint; earlier results are intact")
    assert "\n" not in msg


def test_atomic_write_leaves_nothing_on_failure_and_keeps_the_old_file(tmp_path, monkeypatch):
    final = tmp_path / "sub" / "r.json"
    files.atomic_write(final, b"old", "the record", fix="move it", error=StoreError)
    assert final.read_bytes() == b"old"

    def half_then_full(path: Path) -> None:
        path.write_bytes(b"ne")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(StoreError, match=r"r.json: disk full while writing the record;"):
        files.atomic_write(final, half_then_full, "the record", fix="move it", error=StoreError)

    def bad(path: Path) -> None:
        raise UserError("read-back differs")

    with pytest.raises(UserError, match="read-back differs"):
        files.atomic_write(final, b"new", "the record", fix="move it", validate=bad)
    assert final.read_bytes() == b"old"
    assert sorted(p.name for p in final.parent.iterdir()) == ["r.json"]


def test_clean_stale_tmp_removes_files_and_folders_it_owns_only(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead_file = tmp_path / f".a.h5.{files.HOST}.{proc.pid}.ab.tmp"
    dead_file.write_text("x")
    dead_dir = tmp_path / f".tiny-1.{files.HOST}.{proc.pid}.ab.tmp"
    (dead_dir / "sub").mkdir(parents=True)
    not_owned = tmp_path / f".b.h5.{files.HOST}.{proc.pid}.ab.tmp"
    not_owned.write_text("x")
    removed = files.clean_stale_tmp(tmp_path, lambda name: name in ("a.h5", "tiny-1"))
    assert sorted(removed) == sorted([dead_file, dead_dir]) and not_owned.exists()
