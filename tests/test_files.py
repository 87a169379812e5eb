"""files.py: temporary names, stale temp cleanup, atomic writes, one-line write errors."""

from __future__ import annotations

import errno
import json
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


def test_write_json_replaces_whole_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "a" / "record.json"
    files.write_json(path, {"b": 1, "a": [1, 2]})
    assert path.read_text() == '{\n "b": 1,\n "a": [\n  1,\n  2\n ]\n}\n'
    files.write_json(path, {"b": 2, "a": 1}, sort_keys=True)
    assert json.loads(path.read_text()) == {"a": 1, "b": 2}
    assert path.read_text().index('"a"') < path.read_text().index('"b"')

    def full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", full)
    with pytest.raises(OSError):
        files.write_json(path, {"new": True})
    assert json.loads(path.read_text()) == {"a": 1, "b": 2}  # the old file, whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["record.json"]


def test_utc_now_is_iso_8601_in_utc():
    import datetime as dt

    stamp = files.utc_now()
    assert stamp.endswith("+00:00") and dt.datetime.fromisoformat(stamp).tzinfo is not None
    assert len(files.utc_now("milliseconds").split(".")[1]) == len("123+00:00")
