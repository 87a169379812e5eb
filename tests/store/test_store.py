"""The HDF5 results store (issue #3): schema, atomic idempotent writes, damaged input, readers,
consolidation. Kills are real SIGKILLs of subprocesses; disk-full and read-only locations are
simulated by making the write calls fail (tests may run as root, where chmod stops nothing)."""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

import hpc_forget.files as F
import hpc_forget.store.consolidated as C
import hpc_forget.store.format as FMT
import hpc_forget.store.store as S
from hpc_forget.errors import StoreError
from hpc_forget.store.format import SCHEMA_VERSION, RunRecord, StoreWarning, expected_cells
from hpc_forget.store.store import Store

LANGS = ["en", "de", "fr"]
KEY = {"method": "vanilla", "model": "tiny", "rank": 0, "order": "1", "seed": 0}


def _run(st: Store, run_id: str = "r1", kind: str = "sequential", **kw) -> None:
    langs = kw.pop("languages", LANGS)
    steps = kw.pop("steps", ["all"] if kind == "joint" else list(langs))
    st.put_run(
        run_id,
        key=kw.pop("key", {**KEY, "run": run_id}),
        kind=kind,
        languages=langs,
        steps=steps,
        labels=kw.pop("labels", ["O", "B-date", "I-date"]),
        config=kw.pop("config", {"train": {"lr": 2e-5}}),
        settings=kw.pop("settings", {}),
    )


def _score(run_id: str, step: int, lang: str) -> float:
    return (hash((run_id, step, lang)) % 1000) / 1000


def _step(st: Store, step: int, run_id: str = "r1", langs=None, **kw) -> dict[str, float]:
    scores = {lang: _score(run_id, step, lang) for lang in (langs or LANGS)}
    st.put_step(
        run_id,
        step,
        scores=scores,
        dev_curve=kw.pop("dev_curve", [0.1, 0.2 + step / 10]),
        meta=kw.pop("meta", {"epochs_run": 2, "best_epoch": 2, "device": "cpu"}),
        provenance=kw.pop("provenance", {"host": "n1", "slurm_job_id": "7"}),
    )
    return scores


def _one_line(msg: str) -> None:
    assert "\n" not in msg and len(msg) < 400, msg


def _run_py(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------ schema


def test_schema_round_trip(tmp_path):
    st = Store(tmp_path / "s")
    st.check_writable()
    _run(st)
    s0 = _step(st, 0, meta={"epochs_run": 3, "best_epoch": 2, "wall_time_s": 1.5, "device": "cpu"})
    s2 = _step(st, 2, dev_curve=[0.5, float("nan")])
    rec = Store(tmp_path / "s").run("r1")
    assert isinstance(rec, RunRecord)
    assert rec.key == {**KEY, "run": "r1"} and rec.kind == "sequential"
    assert rec.languages == LANGS and rec.steps == LANGS
    assert rec.labels == ["O", "B-date", "I-date"] and rec.config == {"train": {"lr": 2e-5}}
    assert rec.R.shape == (3, 3)
    assert rec.R[0].tolist() == [s0[x] for x in LANGS]
    assert rec.R[2].tolist() == [s2[x] for x in LANGS]
    assert np.isnan(rec.R[1]).all()
    assert rec.step_meta[0] == {
        "epochs_run": 3,
        "best_epoch": 2,
        "wall_time_s": 1.5,
        "device": "cpu",
    }
    assert rec.dev_curves[0] == [0.1, 0.2]
    assert rec.dev_curves[2][0] == 0.5 and np.isnan(rec.dev_curves[2][1])
    assert rec.provenance[2] == {"host": "n1", "slurm_job_id": "7"}
    assert set(rec.written_at) == {0, 2} and rec.created_at
    assert rec.done_steps == {0, 2}
    assert Store(tmp_path / "s").done_steps("r1") == {0, 2}
    assert st.has_step("r1", 0) and not st.has_step("r1", 1)
    # the documented layout
    marker = json.loads((tmp_path / "s" / "STORE.json").read_text())
    assert marker["schema_version"] == SCHEMA_VERSION and marker["format"] == "hpc-forget-store"
    with h5py.File(tmp_path / "s/steps/r1/000002.h5", "r") as f:
        assert f.attrs["format"] == "hpc-forget-step"
        assert f.attrs["schema_version"] == SCHEMA_VERSION
        assert f.attrs["run_id"] == "r1" and f.attrs["step"] == 2
        assert list(f["languages"].asstr()[()]) == LANGS
        assert f["scores"].dtype == np.float64 and f["evaluated"].dtype == bool
        assert json.loads(f.attrs["provenance"]) == {"host": "n1", "slurm_job_id": "7"}
        assert {"meta", "written_at", "crc32"} <= set(f.attrs)
    with h5py.File(tmp_path / "s/runs/r1.h5", "r") as f:
        assert f.attrs["format"] == "hpc-forget-run" and f.attrs["kind"] == "sequential"
        assert json.loads(f.attrs["key"])["method"] == "vanilla"
        assert list(f["labels"].asstr()[()]) == ["O", "B-date", "I-date"]


def test_numpy_values_and_subset_of_languages(tmp_path):
    st = Store(tmp_path)
    _run(st)
    st.put_step(
        "r1",
        np.int64(1),
        scores={"de": np.float32(0.5)},
        dev_curve=np.array([0.25]),
        meta={"epochs_run": np.int64(4), "best_epoch": np.int32(1)},
        provenance={"path": Path("/x")},
    )
    rec = st.run("r1")
    assert rec.R[1].tolist()[1] == 0.5 and np.isnan(rec.R[1, [0, 2]]).all()
    assert rec.step_meta[1] == {"epochs_run": 4, "best_epoch": 1}
    assert rec.provenance[1] == {"path": "/x"}
    assert (1, "en") in st.missing("r1") and (1, "de") not in st.missing("r1")


@pytest.mark.parametrize(
    ("kind", "steps", "cells"),
    [
        ("sequential", ["en", "de", "fr"], [(i, x) for i in range(3) for x in LANGS]),
        ("joint", ["all"], [(0, x) for x in LANGS]),
        ("per-language", ["en", "de", "fr"], [(0, "en"), (1, "de"), (2, "fr")]),
    ],
)
def test_missing_cells_per_kind(tmp_path, kind, steps, cells):
    assert expected_cells(kind, LANGS, steps) == cells
    st = Store(tmp_path)
    _run(st, kind=kind, steps=steps)
    assert st.missing("r1") == cells
    assert np.isnan(st.matrix("r1")).all()  # nothing computed: NaN, never zeros
    st.put_step("r1", 0, scores={"en": 0.0}, dev_curve=[], meta={}, provenance={})
    assert st.matrix("r1")[0, 0] == 0.0  # a real zero stays a zero
    assert st.missing("r1") == [c for c in cells if c != (0, "en")]


def test_runs_lists_every_run_sorted(tmp_path):
    st = Store(tmp_path)
    for rid in ("b", "a", "c"):
        _run(st, rid)
    _step(st, 1, "c")
    recs = Store(tmp_path).runs()
    assert [r.run_id for r in recs] == ["a", "b", "c"]
    assert recs[2].done_steps == {1}


# ------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda st: _run(st, "bad/id"), "not filesystem-safe"),
        (lambda st: _run(st, kind="chain"), "kind 'chain' is unknown"),
        (lambda st: _run(st, languages=[]), "languages must be a non-empty"),
        (lambda st: _run(st, languages=["en", "en"]), "duplicates"),
        (lambda st: _run(st, kind="joint", steps=["a", "b"]), "exactly one step"),
        (lambda st: _run(st, kind="per-language", steps=["en"]), "steps must be its languages"),
        (
            lambda st: _run(st, kind="per-language", languages=["en", "de"], steps=["de", "en"]),
            "in the same order",
        ),  # step i is read as languages[i] (expected cells, analysis): one rule
        (lambda st: _run(st, config={"x": object()}), "config must be JSON-serializable"),
    ],
)
def test_put_run_rejects_bad_input(tmp_path, call, needle):
    with pytest.raises(StoreError, match=needle) as e:
        call(Store(tmp_path))
    _one_line(str(e.value))


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"step": 3}, r"step index 3 is out of range; the run has 3 steps \(indices 0\.\.2\)"),
        ({"step": -1}, "out of range"),
        ({"step": "1"}, "step must be an int"),
        ({"scores": {"xx": 0.5}}, "language 'xx' is not in the run's languages"),
        ({"scores": {"en": 75.0}}, r"score of 'en' is 75.0; scores are F1 in \[0, 1\]"),
        ({"scores": {"en": float("nan")}}, "score of 'en' is nan"),
        ({"scores": {}}, "scores must be a non-empty dict"),
        ({"dev_curve": ["a"]}, "dev_curve must be a list of numbers"),
        ({"meta": {"x": object()}}, "meta must be JSON-serializable"),
    ],
)
def test_put_step_rejects_bad_input(tmp_path, kw, needle):
    st = Store(tmp_path)
    _run(st)
    args = {"step": 0, "scores": {"en": 0.5}, "dev_curve": [], "meta": {}, "provenance": {}}
    args.update(kw)
    step = args.pop("step")
    with pytest.raises(StoreError, match=needle) as e:
        st.put_step("r1", step, **args)
    _one_line(str(e.value))
    assert not list((tmp_path / "steps").rglob("*.h5"))


def test_put_step_needs_put_run(tmp_path):
    st = Store(tmp_path)
    st.check_writable()
    with pytest.raises(StoreError, match=r"r9\.h5: no run file for r9; call put_run before"):
        _step(st, 0, "r9")


# ------------------------------------------------------------------------------ idempotency


def test_put_run_idempotent_and_conflicts(tmp_path):
    st = Store(tmp_path)
    _run(st)
    ino = os.stat(st.run_file("r1")).st_ino
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _run(Store(tmp_path))  # identical: no-op, no warning
    assert os.stat(st.run_file("r1")).st_ino == ino
    with pytest.raises(StoreError, match="already exists with a different languages") as e:
        _run(Store(tmp_path), languages=["en", "de"], steps=["en", "de"])
    assert str(st.run_file("r1")) in str(e.value)
    _one_line(str(e.value))
    with pytest.raises(StoreError, match="different key"):
        _run(Store(tmp_path), key={"method": "mono"})
    # Configs may differ only in score-free keys (the run id covers the rest): first kept.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _run(Store(tmp_path), config={"store": "elsewhere", "train": {"lr": 2e-5}})
    assert Store(tmp_path).run("r1").config == {"train": {"lr": 2e-5}}
    with pytest.raises(StoreError, match="different settings"):
        _run(Store(tmp_path), settings={"data": {"max_train": 5}})


def test_run_settings_are_stored_and_checksummed(tmp_path):
    st = Store(tmp_path)
    _run(st, settings={"data": {"max_train": 400}, "labels": "abc"})
    assert Store(tmp_path).run("r1").settings == {"data": {"max_train": 400}, "labels": "abc"}
    st.consolidate()
    assert Store(tmp_path / "consolidated.h5").run("r1").settings["data"] == {"max_train": 400}


def test_put_step_idempotent_first_wins(tmp_path):
    st = Store(tmp_path)
    _run(st)
    first = _step(st, 1)
    path = st.step_file("r1", 1)
    before = (os.stat(path).st_ino, _digest(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _step(Store(tmp_path), 1, meta={"wall_time_s": 99.0})  # same scores: nothing to do
    assert (os.stat(path).st_ino, _digest(path)) == before
    with pytest.warns(StoreWarning, match="already stored with different scores; kept the first"):
        st.put_step("r1", 1, scores={"en": 0.999}, dev_curve=[], meta={}, provenance={})
    assert (os.stat(path).st_ino, _digest(path)) == before
    assert Store(tmp_path).matrix("r1")[1].tolist() == [first[x] for x in LANGS]


# ---------------------------------------------------------------------------------- atomicity


@pytest.mark.parametrize("where", ["mid-write", "before-rename"])
def test_writer_killed_leaves_no_partial_file(tmp_path, where):
    st = Store(tmp_path)
    _run(st)
    _step(st, 0)
    patch = {
        "mid-write": "F.write_all = lambda fd, data: (os.write(fd, data[: len(data) // 2]),"
        " os.kill(os.getpid(), signal.SIGKILL))",
        "before-rename": "os.replace = lambda a, b: os.kill(os.getpid(), signal.SIGKILL)",
    }[where]
    res = _run_py(
        f"""
        import os, signal
        import hpc_forget.files as F
        import hpc_forget.store.store as S
        st = S.Store({str(tmp_path)!r})
        {patch}
        st.put_step("r1", 1, scores={{"en": 0.5}}, dev_curve=[], meta={{}}, provenance={{}})
        """
    )
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert not st.step_file("r1", 1).exists()
    leftovers = list((tmp_path / "steps" / "r1").glob(".000001.h5.*.tmp"))
    assert len(leftovers) == 1  # the killed writer's temp file, which readers ignore
    fresh = Store(tmp_path)
    assert fresh.problems() == []
    assert fresh.done_steps("r1") == {0} and not fresh.has_step("r1", 1)
    assert np.isnan(fresh.matrix("r1")[1]).all()
    _step(fresh, 1)  # a re-run writes the step normally
    assert Store(tmp_path).done_steps("r1") == {0, 1}


def test_reader_on_a_store_being_written(tmp_path):
    st = Store(tmp_path)
    _run(st, "live", languages=LANGS, steps=[f"s{i}" for i in range(40)])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                from hpc_forget.store.store import Store
                st = Store({str(tmp_path)!r})
                for i in range(40):
                    st.put_step("live", i, scores={{x: (i + 1) / 100 for x in {LANGS!r}}},
                                dev_curve=[0.1] * 5, meta={{"i": i}}, provenance={{}})
                """
            ),
        ]
    )
    reader, seen, polls = Store(tmp_path), set(), 0
    while True:
        running = proc.poll() is None
        rec = reader.run("live")
        for i in rec.done_steps:
            assert rec.R[i].tolist() == [(i + 1) / 100] * 3  # whole rows only
            assert rec.step_meta[i] == {"i": i} and rec.dev_curves[i] == [0.1] * 5
        assert reader.problems() == []
        seen |= rec.done_steps
        polls += 1
        if not running:
            break
    assert proc.returncode == 0 and seen == set(range(40)) and polls >= 2


def test_put_step_touches_only_its_own_files(tmp_path, monkeypatch):
    """Write cost is independent of the store size: no listing, and the same few paths."""
    small, big = tmp_path / "small", tmp_path / "big"
    for root, n in ((small, 2), (big, 60)):
        st = Store(root)
        for r in range(n // 2):
            _run(st, f"other{r}")
            _step(st, 0, f"other{r}")
        _run(st, "r1")
    touched: list[str] = []

    def no_listing(*a, **k):
        raise AssertionError("put_step must not list directories")

    for mod, name in [(os, "listdir"), (os, "scandir"), (os, "walk"), (glob, "glob")]:
        monkeypatch.setattr(mod, name, no_listing)
    for name in ("iterdir", "glob", "rglob"):
        monkeypatch.setattr(Path, name, no_listing)
    real_open, real_h5 = os.open, FMT._open_h5
    monkeypatch.setattr(
        os, "open", lambda p, *a, **k: (touched.append(str(p)), real_open(p, *a, **k))[1]
    )
    monkeypatch.setattr(
        FMT,
        "_open_h5",
        lambda p, *a, **k: (
            touched.append(str(p)) if not hasattr(p, "read") else None,
            real_h5(p, *a, **k),
        )[1],
    )
    kinds = []
    for root in (small, big):
        touched.clear()
        st = Store(root)
        _step(st, 1)
        _step(st, 2)
        rel = [os.path.relpath(p, root) for p in touched]
        allowed = ("runs/r1.h5", "steps/r1", "steps/r1/.000001.h5.", "steps/r1/.000002.h5.")
        assert all(p.startswith(allowed) for p in rel), rel
        assert rel.count("runs/r1.h5") == 1  # the run file is read once per Store
        kinds.append(sorted(p.split(".")[0] if p.startswith("steps/r1/.") else p for p in rel))
    assert kinds[0] == kinds[1]


# ----------------------------------------------------------------------------- damaged input


def _damaged_store(tmp_path) -> Store:
    st = Store(tmp_path)
    _run(st)
    for i in range(3):
        _step(st, i)
    return st


def test_truncated_step_file_is_reported_and_skipped(tmp_path):
    st = _damaged_store(tmp_path)
    path = st.step_file("r1", 1)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    fresh = Store(tmp_path)
    probs = fresh.problems()
    assert len(probs) == 1 and probs[0].startswith(f"{path}: ") and "truncated" in probs[0]
    _one_line(probs[0])
    assert np.isnan(fresh.matrix("r1")[1]).all()  # never zeros
    assert not np.isnan(fresh.matrix("r1")[[0, 2]]).any()
    assert (1, "en") in fresh.missing("r1")
    assert fresh.done_steps("r1") == {0, 2} and not fresh.has_step("r1", 1)
    with pytest.warns(StoreWarning, match="rewriting it"):
        _step(fresh, 1)  # the engine recomputes it; the damaged file is replaced
    assert Store(tmp_path).problems() == [] and Store(tmp_path).done_steps("r1") == {0, 1, 2}


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("foreign-h5", "not an hpc-forget file"),
        (b"this is not HDF5 at all\n" * 20, "not an HDF5 file"),
        (b"", "empty file (0 bytes)"),
        ("zeros", "not an HDF5 file"),
        ("bitflip", "checksum mismatch"),
        ("other-version", "written by a newer hpc-forget (schema 99); this version reads schema"),
    ],
)
def test_foreign_or_garbage_step_file(tmp_path, content, needle):
    st = _damaged_store(tmp_path)
    path = st.step_file("r1", 2)
    if content == "foreign-h5":
        path.unlink()
        with h5py.File(path, "w") as f:
            f["scores"] = np.zeros(3)
    elif content == "zeros":
        path.write_bytes(bytes(os.path.getsize(path)))
    elif content == "bitflip":
        data = bytearray(path.read_bytes())
        pos = bytes(data).find(np.float64(_score("r1", 2, "de")).tobytes())
        assert pos > 0
        data[pos + 7] ^= 0x01
        path.write_bytes(bytes(data))
    elif content == "other-version":
        with h5py.File(path, "r+") as f:
            f.attrs["schema_version"] = 99
    else:
        path.write_bytes(content)
    fresh = Store(tmp_path)
    probs = fresh.problems()
    assert len(probs) == 1 and probs[0].startswith(str(path)) and needle in probs[0], probs
    assert probs[0].endswith("skipped")
    assert np.isnan(fresh.matrix("r1")[2]).all() and fresh.done_steps("r1") == {0, 1}
    assert len(fresh.runs()) == 1


def test_damaged_run_file_and_stray_files(tmp_path):
    st = _damaged_store(tmp_path)
    _run(st, "r2")
    _step(st, 0, "r2")
    st.run_file("r2").write_bytes(b"garbage")
    (tmp_path / "runs" / "notes.txt").write_text("hi")
    (tmp_path / "steps" / "r1" / "readme.h5").write_text("hi")
    (tmp_path / "steps" / "r1" / ".nfs000123").write_text("silly rename")  # hidden: ignored
    (tmp_path / "steps" / "r1" / ".000009.h5.n1.1.ab.tmp").write_text("partial")  # ignored
    (tmp_path / "checkpoints").mkdir()  # the engine's own folders are not the store's business
    fresh = Store(tmp_path)
    assert [r.run_id for r in fresh.runs()] == ["r1"]
    probs = fresh.problems()
    assert len(probs) == 4, probs
    joined = "\n".join(probs)
    assert f"{st.run_file('r2')}: not an HDF5 file" in joined
    assert f"{tmp_path / 'steps' / 'r2'}: no readable run file runs/r2.h5" in joined
    assert "notes.txt: unexpected file in runs/" in joined
    assert "readme.h5: unexpected file in a step directory" in joined
    with pytest.raises(StoreError, match="no readable run 'r2'"):
        fresh.matrix("r2")
    assert fresh.done_steps("r2") == set()


def test_schema_version_mismatch_is_an_error(tmp_path):
    st = _damaged_store(tmp_path)
    marker = tmp_path / "STORE.json"
    data = json.loads(marker.read_text())
    marker.write_text(json.dumps({**data, "schema_version": 99}))
    for call in (lambda: Store(tmp_path), lambda: st.check_writable(), lambda: st.runs()):
        st._marker_ok = False
        with pytest.raises(StoreError) as e:
            call()
        msg = str(e.value)
        assert str(marker) in msg and "written by a newer hpc-forget (schema 99" in msg
        assert f"this version reads schema {FMT.SCHEMA_VERSION}" in msg and "upgrade" in msg
        _one_line(msg)
    marker.write_text("{not json")
    with pytest.raises(StoreError, match="not a valid store marker"):
        Store(tmp_path)


def test_not_a_store(tmp_path):
    with pytest.raises(
        StoreError, match=r"nope: no results store here \(no such directory\); check the path"
    ):
        Store(tmp_path / "nope").runs()
    assert Store(tmp_path / "nope").done_steps("r1") == set()
    (tmp_path / "other").mkdir()
    with pytest.raises(StoreError, match=r"not an hpc-forget results store \(no STORE.json\)"):
        Store(tmp_path / "other").problems()
    (tmp_path / "file.h5").write_bytes(b"nope")
    with pytest.raises(StoreError, match="file.h5: not a readable hpc-forget consolidated store"):
        Store(tmp_path / "file.h5")


# ---------------------------------------------------------------------- disk full, read-only


@pytest.mark.parametrize(
    ("code", "words"),
    [(errno.ENOSPC, "disk full"), (errno.EDQUOT, "disk quota exceeded")],
)
def test_disk_full_during_write_keeps_earlier_results(tmp_path, monkeypatch, code, words):
    st = Store(tmp_path)
    _run(st)
    first = _step(st, 0)

    def full(fd, data):
        os.write(fd, data[:100])
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(F, "write_all", full)
    with pytest.raises(StoreError) as e:
        _step(st, 1)
    msg = str(e.value)
    assert msg.startswith(f"{st.step_file('r1', 1)}: {words} while writing step 2/3 of r1;")
    assert "earlier results are intact" in msg
    _one_line(msg)
    assert sorted(p.name for p in (tmp_path / "steps" / "r1").iterdir()) == ["000000.h5"]
    monkeypatch.undo()
    assert Store(tmp_path).matrix("r1")[0].tolist() == [first[x] for x in LANGS]
    assert Store(tmp_path).problems() == []


def test_disk_full_in_fsync(tmp_path, monkeypatch):
    st = Store(tmp_path)
    _run(st)

    def fail(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(StoreError, match="disk full while writing step 1/3 of r1"):
        _step(st, 0)
    monkeypatch.undo()
    assert not any((tmp_path / "steps" / "r1").iterdir())


def test_read_only_location_simulated(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    real_open, real_mkdir = os.open, os.mkdir

    def ro_open(path, flags, *a, **k):
        if str(path).startswith(str(ro)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *a, **k)

    def ro_mkdir(path, *a, **k):
        if str(path).startswith(str(ro)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_mkdir(path, *a, **k)

    monkeypatch.setattr(os, "open", ro_open)
    monkeypatch.setattr(os, "mkdir", ro_mkdir)
    for target in (ro, ro / "sub" / "store"):
        with pytest.raises(StoreError) as e:
            Store(target).check_writable()
        msg = str(e.value)
        assert msg.startswith(f"{target}: results store is not writable (Read-only file system)")
        assert "choose a writable store location" in msg
        _one_line(msg)
    with pytest.raises(StoreError, match="read-only filesystem while writing run r1"):
        _run(Store(ro))


def test_read_only_location_real_permissions():
    """chmod 555 really stops an unprivileged user (as root, the check runs as 'nobody')."""
    base = Path(tempfile.mkdtemp(prefix="hpcf-ro-"))  # not under pytest's 0700 root folder
    try:
        base.chmod(0o755)
        ro = base / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        code = f"""
            from hpc_forget.store.store import Store
            from hpc_forget.errors import StoreError
            try:
                Store({str(ro / "store")!r}).check_writable()
            except StoreError as e:
                print(e)
            else:
                print("WRITABLE")
            """
        extra = {}
        if os.geteuid() == 0:
            extra = {"user": 65534, "group": 65534, "extra_groups": [], "cwd": "/"}
        try:
            res = subprocess.run(
                [sys.executable, "-c", textwrap.dedent(code)],
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, "HOME": "/tmp"},
                **extra,
            )
        except PermissionError as exc:  # root's Python may be unreachable for 'nobody'
            pytest.skip(f"cannot run {sys.executable} as an unprivileged user ({exc})")
        if res.returncode != 0 and (
            "ModuleNotFoundError" in res.stderr or "ermission" in res.stderr
        ):
            pytest.skip(f"cannot run the package as an unprivileged user: {res.stderr[-200:]}")
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == (
            f"{ro / 'store'}: results store is not writable (Permission denied);"
            " choose a writable store location or fix its permissions"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_store_path_is_a_file(tmp_path):
    f = tmp_path / "plain"
    f.write_text("x")
    with pytest.raises(StoreError, match="plain: not a readable hpc-forget consolidated store"):
        Store(f).check_writable()


# ------------------------------------------------------------------------------ consolidation


def _records(st: Store) -> list[tuple]:
    return [
        (
            r.run_id,
            r.key,
            r.kind,
            r.languages,
            r.steps,
            r.labels,
            r.config,
            r.step_meta,
            json.dumps(r.dev_curves),
            r.provenance,
            r.written_at,
            r.created_at,
            r.R.tobytes(),
        )
        for r in st.runs()
    ]


def test_consolidation_equivalence_and_merge(tmp_path, monkeypatch):
    st = Store(tmp_path / "s")
    _run(st, "seq")
    _run(st, "joint", kind="joint")
    _run(st, "mono", kind="per-language")
    for i in (0, 2):
        _step(st, i, "seq")
    _step(st, 0, "joint")
    st.put_step("mono", 1, scores={"de": 0.75}, dev_curve=[], meta={}, provenance={})
    out = st.consolidate()
    assert out == tmp_path / "s" / "consolidated.h5"
    before = _records(Store(tmp_path / "s"))
    assert _records(Store(out)) == before  # the single file holds everything
    assert Store(out).missing("seq") == Store(tmp_path / "s").missing("seq")
    # after consolidation, reads open only the consolidated file (no per-step opens)
    opened: list[str] = []
    real = FMT._open_h5
    monkeypatch.setattr(
        FMT, "_open_h5", lambda p, *a, **k: (opened.append(str(p)), real(p, *a, **k))[1]
    )
    assert _records(Store(tmp_path / "s")) == before
    assert opened and set(opened) == {str(out)}  # no run or step file is opened
    monkeypatch.undo()
    # new steps written after consolidation are merged in by readers
    _step(st, 1, "seq")
    merged = Store(tmp_path / "s")
    assert merged.done_steps("seq") == {0, 1, 2} and Store(out).done_steps("seq") == {0, 2}
    # a damaged step file falls back to its consolidated copy (and is reported)
    st.step_file("seq", 0).write_bytes(b"oops")
    again = Store(tmp_path / "s")
    assert again.done_steps("seq") == {0, 1, 2}
    assert "using the consolidated copy" in again.problems()[0]


def test_consolidated_file_is_a_read_only_store(tmp_path):
    st = _damaged_store(tmp_path / "s")
    laptop = st.export(tmp_path / "laptop" / "results.h5")  # creates the folder
    assert laptop.is_file()
    one = Store(laptop)
    assert one.single_file and one.done_steps("r1") == {0, 1, 2} and one.problems() == []
    with pytest.raises(StoreError, match="read-only consolidated store; put_step needs a store"):
        _step(one, 0)
    with pytest.raises(StoreError, match="already a consolidated file; give an output path"):
        one.consolidate()
    with h5py.File(laptop, "r") as f:  # usable with plain h5py too
        assert f.attrs["format"] == "hpc-forget-consolidated"
        assert f["runs/r1/R"].shape == (3, 3) and f["runs/r1/present"][()].all()


def test_consolidation_records_problems(tmp_path):
    st = _damaged_store(tmp_path)
    st.step_file("r1", 1).write_bytes(b"junk")
    out = st.consolidate()
    one = Store(out)
    assert one.done_steps("r1") == {0, 2}
    probs = one.problems()
    assert (
        len(probs) == 1 and probs[0].startswith("(when consolidated) ") and "000001.h5" in probs[0]
    )


def test_consolidated_file_of_other_version_or_damaged(tmp_path):
    st = _damaged_store(tmp_path)
    out = st.consolidate()
    with h5py.File(out, "r+") as f:
        f.attrs["schema_version"] = 7
    with pytest.raises(
        StoreError, match="consolidated store was written by a newer hpc-forget \\(schema 7"
    ):
        Store(out)
    with pytest.raises(StoreError, match="schema 7"):
        Store(tmp_path).runs()
    out.write_bytes(out.read_bytes()[:500])
    fresh = Store(tmp_path)
    assert fresh.done_steps("r1") == {0, 1, 2}  # the step files are still there
    assert "consolidated.h5: truncated HDF5 file" in fresh.problems()[0]


def test_consolidated_row_checksum(tmp_path):
    st = _damaged_store(tmp_path / "s")
    out = st.export(tmp_path / "c.h5")
    with h5py.File(out, "r+") as f:
        f["runs/r1/R"][1, 1] = 0.0
    one = Store(out)
    assert one.done_steps("r1") == {0, 2} and np.isnan(one.matrix("r1")[1]).all()
    assert "run r1 step 2/3: checksum mismatch" in one.problems()[0]


def test_killed_consolidation_keeps_previous_file(tmp_path):
    st = _damaged_store(tmp_path)
    for r in ("r2", "r3", "r4"):
        _run(st, r)
        _step(st, 0, r)
    out = st.consolidate()
    digest = _digest(out)
    _step(st, 1, "r2")  # the new consolidation would differ
    res = _run_py(
        f"""
        import os, signal
        import hpc_forget.store.consolidated as C
        import hpc_forget.store.store as S
        real, calls = C._write_consolidated_run, []
        def dying(g, h, rows):
            calls.append(1)
            if len(calls) == 3:
                g.file.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            real(g, h, rows)
        C._write_consolidated_run = dying
        S.Store({str(tmp_path)!r}).consolidate()
        """
    )
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert _digest(out) == digest
    tmps = list(tmp_path.glob(".consolidated.h5.*.tmp"))
    assert len(tmps) == 1 and tmps[0].stat().st_size > 0
    fresh = Store(tmp_path)
    assert fresh.problems() == [] and fresh.done_steps("r2") == {0, 1}
    assert Store(out).done_steps("r2") == {0}
    # a later consolidation removes temp files older than STALE_TMP_S, and only those
    young = tmp_path / "steps" / "r1" / ".000005.h5.n1.1.aa.tmp"
    young.write_text("a live writer's")
    old = time.time() - FMT.STALE_TMP_S - 60
    os.utime(tmps[0], (old, old))
    st.consolidate()
    assert not tmps[0].exists() and young.exists()
    assert Store(out).done_steps("r2") == {0, 1}


@pytest.mark.parametrize("code", [errno.ENOSPC, None])
def test_failed_consolidation_keeps_previous_file(tmp_path, monkeypatch, code):
    st = _damaged_store(tmp_path)
    out = st.consolidate()
    digest = _digest(out)
    real = C._write_consolidated_run

    def fail(g, h, rows):
        real(g, h, rows)
        g.file.flush()
        if code is None:
            raise OSError(
                "Can't write data (file write failed: errno = 28, error message = 'No space left on device')"
            )
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(C, "_write_consolidated_run", fail)
    with pytest.raises(StoreError) as e:
        st.consolidate()
    msg = str(e.value)
    assert msg.startswith(f"{out}: disk full while writing the consolidated store;")
    assert "earlier results are intact" in msg
    _one_line(msg)
    assert _digest(out) == digest and not list(tmp_path.glob(".*.tmp"))


def test_export_into_a_directory(tmp_path):
    st = _damaged_store(tmp_path / "s")
    (tmp_path / "dest").mkdir()
    out = st.export(tmp_path / "dest")
    assert out == tmp_path / "dest" / "consolidated.h5" and Store(out).done_steps("r1") == {0, 1, 2}


def test_reader_cache_sees_new_and_replaced_files(tmp_path):
    st = _damaged_store(tmp_path)
    reader = Store(tmp_path)
    assert reader.done_steps("r1") == {0, 1, 2}
    st.step_file("r1", 2).write_bytes(b"broken later")
    assert reader.done_steps("r1") == {0, 1}
    assert len(reader.problems()) == 1
    st.step_file("r1", 2).unlink()
    _step(st, 2)
    assert reader.done_steps("r1") == {0, 1, 2} and reader.problems() == []


# ------------------------------------------------------ schema versions, temp files, --out


def _marker_with(tmp_path: Path, **fields) -> Path:
    Store(tmp_path).check_writable()
    marker = tmp_path / "STORE.json"
    data = json.loads(marker.read_text())
    data.update(fields)
    marker.write_text(json.dumps({k: v for k, v in data.items() if v is not None}))
    return marker


@pytest.mark.parametrize(
    ("version", "needles"),
    [
        ("1", ["schema_version '1' (str), not an integer", "restore the store's schema_version"]),
        (None, ["has no schema_version", "restore"]),
        (
            FMT.SCHEMA_VERSION - 1,
            [
                f"written by an older hpc-forget (schema {FMT.SCHEMA_VERSION - 1}, hpc-forget 0.0.1)",
                f"this version reads schema {FMT.SCHEMA_VERSION}",
                "start a new store (or use hpc-forget 0.0.1 to read it)",
            ],
        ),
        (FMT.SCHEMA_VERSION + 1, ["written by a newer hpc-forget", "upgrade hpc-forget"]),
    ],
)
def test_schema_version_messages_say_what_and_what_to_do(tmp_path, version, needles):
    marker = _marker_with(tmp_path, schema_version=version, created_by="hpc-forget 0.0.1")
    with pytest.raises(StoreError) as e:
        Store(tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"{marker}: store ")
    for needle in needles:
        assert needle in msg
    assert f"reads version {FMT.SCHEMA_VERSION}" not in msg
    _one_line(msg)


def test_step_file_with_a_string_schema_version_is_reported(tmp_path):
    st = _damaged_store(tmp_path)
    with h5py.File(st.step_file("r1", 2), "r+") as f:
        f.attrs["schema_version"] = "1"
    (line,) = Store(tmp_path).problems()
    assert "schema_version '1' (str), not an integer" in line and line.endswith("; skipped")


def test_older_consolidated_file_says_to_consolidate_again(tmp_path):
    out = _damaged_store(tmp_path).consolidate()
    with h5py.File(out, "r+") as f:
        f.attrs["schema_version"] = FMT.SCHEMA_VERSION - 1
    with pytest.raises(StoreError) as e:
        Store(out)
    assert "written by an older hpc-forget" in str(e.value)
    assert "consolidate the store directory again" in str(e.value)
    _one_line(str(e.value))


def _tmp_of(directory: Path, final: str, host: str, pid: int, age_s: float = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    p = directory / f".{final}.{host}.{pid}.abcd1234.tmp"
    p.write_bytes(b"partial")
    if age_s:
        t = time.time() - age_s
        os.utime(p, (t, t))
    return p


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_next_writer_of_a_run_removes_only_its_dead_writers_temp_files(tmp_path):
    st = Store(tmp_path)
    _run(st)
    _run(st, "r2")
    steps1, steps2 = tmp_path / "steps" / "r1", tmp_path / "steps" / "r2"
    dead, old = _dead_pid(), FMT.STALE_TMP_S + 60
    gone = [
        _tmp_of(steps1, "000001.h5", F.HOST, dead),  # killed on this host
        _tmp_of(tmp_path / "runs", "r1.h5", F.HOST, dead),
        _tmp_of(steps1, "000002.h5", "othernode", 4242, age_s=old),  # another host, old
    ]
    kept = [
        _tmp_of(steps1, "000001.h5", F.HOST, os.getpid()),  # a live writer (this process)
        _tmp_of(steps1, "000002.h5", "othernode", 4243),  # another host, young: maybe live
        _tmp_of(steps2, "000001.h5", F.HOST, dead),  # another run's
        _tmp_of(tmp_path / "runs", "r2.h5", F.HOST, dead),
        _tmp_of(tmp_path / "runs", "r10.h5", F.HOST, dead),  # a run whose id starts the same
    ]
    Store(tmp_path).put_run(
        "r1",
        key={**KEY, "run": "r1"},
        kind="sequential",
        languages=LANGS,
        steps=list(LANGS),
        labels=["O", "B-date", "I-date"],
        config={"train": {"lr": 2e-5}},
    )
    assert [p.exists() for p in gone] == [False] * len(gone)
    assert [p.exists() for p in kept] == [True] * len(kept)


def test_a_killed_writers_temp_file_is_removed_by_the_next_writer(tmp_path):
    st = Store(tmp_path)
    _run(st)
    res = _run_py(
        f"""
        import os, signal
        import hpc_forget.files as F
        import hpc_forget.store.store as S
        st = S.Store({str(tmp_path)!r})
        F.write_all = lambda fd, data: (os.write(fd, data[:50]), os.kill(os.getpid(), 9))
        st.put_step("r1", 1, scores={{"en": 0.5}}, dev_curve=[], meta={{}}, provenance={{}})
        """
    )
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert len(list((tmp_path / "steps" / "r1").glob(".*.tmp"))) == 1
    _run(Store(tmp_path))  # the engine's next attempt at this run registers it again
    assert list((tmp_path / "steps" / "r1").glob(".*.tmp")) == []


def test_consolidate_out_paths_that_cannot_be_written(tmp_path, monkeypatch):
    st = _damaged_store(tmp_path / "s")
    afile = tmp_path / "afile"
    afile.write_text("x")
    (tmp_path / "d" / "consolidated.h5").mkdir(parents=True)
    notes = tmp_path / "notes.h5"
    notes.write_text("my notes")
    cases = {
        afile / "x.h5": f"{afile} is a file, not a folder",
        afile / "sub" / "x.h5": f"{afile} is a file, not a folder",
        tmp_path / "d": "consolidated.h5: is a folder",
        notes: "exists and is not an hpc-forget consolidated store; not overwritten",
    }
    for out, needle in cases.items():
        with pytest.raises(StoreError) as e:
            st.consolidate(out)
        assert needle in str(e.value) and "--out" in str(e.value), str(e.value)
        _one_line(str(e.value))
    assert notes.read_text() == "my notes"

    def refuse(path, runs, problems):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(S, "_write_consolidated", refuse)
    with pytest.raises(StoreError) as e:
        st.consolidate(tmp_path / "ro" / "c.h5")
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'ro' / 'c.h5'}: permission denied while writing")
    assert "choose another --out path" in msg and "earlier results are intact" in msg
    assert not list((tmp_path / "ro").glob(".*.tmp"))


def test_consolidate_into_a_file_under_a_file_via_the_cli(tmp_path):
    _damaged_store(tmp_path / "s")
    (tmp_path / "afile").write_text("x")
    res = subprocess.run(
        [sys.executable, "-m", "hpc_forget.cli", "store", "consolidate", str(tmp_path / "s")]
        + ["--out", str(tmp_path / "afile" / "x.h5")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert "is a file, not a folder" in res.stderr and "File exists" not in res.stderr


def test_listed_steps_reads_only_file_names(tmp_path):
    """`listed_steps` (what `status` uses) is the set of step files in place: hidden temporary
    files and foreign names are not steps; a consolidated file answers with its stored steps."""
    st = Store(tmp_path / "s")
    _run(st)
    _step(st, 0)
    folder = st.step_file("r1", 0).parent
    (folder / ".000001.h5.host.1.tmp").write_bytes(b"partial")
    (folder / "notes.txt").write_text("x")
    assert st.listed_steps("r1") == {0} == st.done_steps("r1")
    assert st.listed_steps("no-such-run") == set()
    out = st.consolidate()
    assert Store(out).listed_steps("r1") == {0}
