"""The tiny model cache builds once when many processes want it at once (the array jobs of one
submission start together; docs/slurm.md "Work shared by a run folder")."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

from hpc_forget.models import tiny


def _build(out: Path, log: Path) -> None:
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(1.0)  # long enough that every other process asks meanwhile
    (out / "config.json").write_text("{}")
    (out / tiny.TINY_MARKER).write_text(json.dumps({"ok": 1}))


def _worker(final: str, log: str, start: float, q) -> None:
    while time.time() < start:  # all at once
        time.sleep(0.005)
    got = tiny.cached_tiny(Path(final), lambda out: _build(out, Path(log)))
    q.put((str(got), (got / "config.json").is_file()))


def _race(tmp_path: Path, n: int = 4) -> tuple[list[str], list]:
    final, log = tmp_path / "cache" / "tiny-abc", tmp_path / "builds.log"
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    start = time.time() + 0.5
    procs = [ctx.Process(target=_worker, args=(str(final), str(log), start, q)) for _ in range(n)]
    for p in procs:
        p.start()
    results = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return log.read_text().split(), results


def test_concurrent_builders_of_one_tiny_model_build_it_once(tmp_path):
    builds, results = _race(tmp_path)
    assert len(builds) == 1, f"{len(builds)} processes built the same tiny model"
    assert results == [(str(tmp_path / "cache" / "tiny-abc"), True)] * 4


def test_without_the_lock_they_would_each_build_it(tmp_path, monkeypatch):
    """The race is real: the test above fails without build_lock."""
    import contextlib

    monkeypatch.setattr(tiny, "build_lock", lambda final: contextlib.nullcontext(False))
    builds, _ = _race(tmp_path)
    assert len(builds) > 1
