"""`store selftest`: concurrent writers, real SIGKILLs, a reader, verification — and checks that
the verification itself catches lost steps and damaged files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import hpc_forget.store.selftest as T
from hpc_forget.errors import StoreError
from hpc_forget.store.store import Store

FIGURES = (
    "ok",
    "writers",
    "killed",
    "steps_written",
    "steps_reported_successful",
    "steps_lost",
    "corrupt_files",
    "partial_rows_seen",
    "reader_polls",
    "wall_time_s",
)


def _check_passing(report: dict, writers: int, steps: int) -> None:
    assert list(report)[: len(FIGURES)] == list(FIGURES)
    assert report["ok"], T.format_selftest(report)
    assert report["steps_lost"] == report["corrupt_files"] == report["partial_rows_seen"] == 0
    assert report["wrong_rows"] == 0 and report["consolidated_ok"]
    assert not report["writer_errors"] and not report["reader_errors"]
    assert report["writers"] == writers and report["reader_polls"] >= 2
    assert report["steps_reported_successful"] <= report["steps_written"]
    assert report["steps_written"] <= report["steps_expected"] == report["runs"] * steps
    assert not report["kept"] and not Path(report["path"]).exists()


def test_selftest_small(tmp_path):
    report = T.selftest(tmp_path, writers=6, kill_fraction=0.34, steps=3, seed=1)
    _check_passing(report, 6, 3)
    assert report["kills_planned"] == 2 and report["killed"] >= 1
    assert report["runs"] == 5  # writer 3 re-writes the run of writer 2
    text = T.format_selftest(report)
    assert text.splitlines()[-1].startswith("PASS: 0 successful steps lost, 0 corrupt files")
    assert "steps reported successful" in text and "partial rows seen" in text
    json.dumps(report)  # --json output


def test_selftest_without_kills_writes_everything(tmp_path):
    report = T.selftest(tmp_path, writers=3, kill_fraction=0.0, steps=4, keep=True)
    _check_passing({**report, "kept": False, "path": "/nonexistent"}, 3, 4)
    assert report["killed"] == 0 and report["tmp_files_left"] == 0
    assert report["steps_written"] == report["steps_reported_successful"] == 12
    assert report["kept"] and Path(report["path"], "store", "consolidated.h5").is_file()


@pytest.mark.slow
def test_selftest_64_writers_with_kills(tmp_path):
    """The issue's figures at N >= 64, F >= 0.1: 0 lost, 0 corrupt, 0 partial rows."""
    report = T.selftest(tmp_path, writers=64, kill_fraction=0.15, steps=3, seed=3)
    _check_passing(report, 64, 3)
    assert report["kills_planned"] == 10 and report["killed"] >= 8
    assert report["steps_reported_successful"] > 0


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"writers": 0}, "--writers must be an integer >= 1, got 0"),
        ({"kill_fraction": 1.5}, r"--kill-fraction must be in \[0, 1\], got 1.5"),
        ({"steps": 0}, "--steps must be an integer >= 1"),
    ],
)
def test_bad_arguments(tmp_path, kw, needle):
    args = {"writers": 2, "kill_fraction": 0.5, "steps": 2, **kw}
    with pytest.raises(StoreError, match=needle) as e:
        T.selftest(tmp_path, **args)
    assert "\n" not in str(e.value)
    assert not list(tmp_path.iterdir())  # nothing started


def test_unwritable_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create the selftest directory"):
        T.selftest(blocker / "sub", writers=1, kill_fraction=0, steps=1)


def test_expected_score_is_deterministic():
    a = T.expected_score("selftest-0001", 3, "de")
    assert a == T.expected_score("selftest-0001", 3, "de") and 0 <= a < 1
    assert a != T.expected_score("selftest-0001", 4, "de")


# ---------------------------------------------------------- the checker catches real failures


def _writer(tmp_path: Path, index: int, run_id: str) -> T._Writer:
    w = T._Writer(index, run_id, False, tmp_path / f"w{index}.log", tmp_path / f"w{index}.err")
    w.err.write_text("")
    w.proc = subprocess.Popen([sys.executable, "-c", "pass"])
    w.proc.wait()
    return w


def test_verify_counts_lost_and_corrupt_steps(tmp_path):
    store = tmp_path / "store"
    Store(store).check_writable()
    w = _writer(tmp_path, 0, "selftest-0000")
    assert T._writer_main(str(store), w.run_id, 4, 3, str(w.log), False) == 0
    good = T._verify(store, [w], 4, 3, T._ReaderStats())
    assert good["steps_lost"] == 0 and good["steps_written"] == 4 and good["corrupt_files"] == 0
    # a step a writer reported but that is not in the store is lost
    with open(w.log, "a") as f:
        f.write("selftest-0000 99\n")
    Store(store).step_file(w.run_id, 2).write_bytes(b"\0" * 100)  # zeroed by a bad filesystem
    (store / "consolidated.h5").unlink()  # else readers fall back to its copy of step 2
    bad = T._verify(store, [w], 4, 3, T._ReaderStats())
    assert bad["steps_lost"] == 2 and bad["corrupt_files"] == 1 and bad["steps_written"] == 3
    assert "000002.h5" in bad["problems"][0]


def test_reader_poll_counts_partial_rows(tmp_path):
    store = tmp_path / "store"
    Store(store).check_writable()
    log = tmp_path / "w.log"
    T._writer_main(str(store), "selftest-0000", 3, 2, str(log), True)
    stats = T._ReaderStats()
    T._poll(Store(store), stats)
    assert not stats.bad_rows and not stats.damaged and not stats.errors
    Store(store).step_file("selftest-0000", 1).write_bytes(b"torn")
    T._poll(Store(store), stats)
    assert len(stats.damaged) == 1


def test_writer_error_is_reported(tmp_path):
    store = tmp_path / "store"
    Store(store).check_writable()
    w = _writer(tmp_path, 0, "selftest-0000")
    with open(w.err, "w") as err:
        w.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.exit('boom')"], stderr=err
        )
        w.proc.wait()
    report = T._verify(store, [w], 2, 2, T._ReaderStats())
    assert report["writer_errors"] == ["writer 0 exited 1: boom"]


def test_format_failure(tmp_path):
    report = T.selftest(tmp_path, writers=2, kill_fraction=0.0, steps=1, keep=True)
    failed = {**report, "ok": False, "steps_lost": 3, "kept": True, "problems": ["x.h5: bad"]}
    text = T.format_selftest(failed)
    assert text.splitlines()[-1].startswith("FAIL: 3 successful steps lost")
    assert report["path"] in text.splitlines()[-1] and "problems: x.h5: bad" in text


def test_module_cli(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "hpc_forget.store.selftest", str(tmp_path), "--writers", "2"]
        + ["--kill-fraction", "0.5", "--steps", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["ok"] and report["writers"] == 2
    res = subprocess.run(
        [sys.executable, "-m", "hpc_forget.store.selftest", str(tmp_path), "--writers", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and res.stderr.startswith("error: selftest: --writers must be")
