"""`hpc-forget store selftest`: prove that a filesystem keeps the store's guarantees.

N writer processes write S steps each through the real :class:`~hpc_forget.store.store.Store` API,
all at once, into a fresh store under PATH; a random fraction F of them is SIGKILLed at random
moments (before, between and inside writes). A reader thread polls the store throughout and
records every row it sees that is incomplete, wrong or unreadable. Afterwards the store is
verified: every step a writer reported successful must be present with exactly its expected
scores, no file may be damaged, and the consolidated file must equal the step files.

Each writer reports a step only after ``put_step`` returned, by appending a line to its own log
file and fsync'ing it. One writer in four re-writes the run of the writer before it, in reverse
step order (a requeued Slurm task overlapping the original), so the same step files are raced.

The writer processes (``python -m hpc_forget.store.selftest --writer ...``) import only the standard
library, numpy, h5py and hpc_forget.store.store, so that 64 of them start quickly on a small machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from hpc_forget.errors import StoreError
from hpc_forget.store.store import Store

LANGUAGES = ("en", "de", "fr", "es", "ja", "zh", "ar", "hi", "sw", "fi", "ko", "ru")


def expected_score(run_id: str, step: int, language: str) -> float:
    """The deterministic F1 a selftest writer stores for one cell (in [0, 1))."""
    return (zlib.crc32(f"{run_id}|{step}|{language}".encode()) % 1_000_003) / 1_000_003


def _writer_main(store: str, run_id: str, steps: int, n_lang: int, log: str, reverse: bool) -> int:
    """One writer process: put_run, then put_step for each step, logging each success."""
    langs = list(LANGUAGES[:n_lang])
    st = Store(store)
    st.put_run(
        run_id,
        key={"method": "vanilla", "model": "selftest", "rank": 0, "order": "1", "seed": 0},
        kind="sequential",
        languages=langs,
        steps=[langs[i % n_lang] for i in range(steps)],
        labels=["O", "B-x", "I-x"],
        config={"selftest": True},
    )
    env = os.environ
    provenance = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": env.get("SLURM_JOB_ID", ""),
        "slurm_array_task_id": env.get("SLURM_ARRAY_TASK_ID", ""),
    }
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    with open(log, "a", encoding="utf-8") as out:
        for step in order:
            t0 = time.perf_counter()
            scores = {lang: expected_score(run_id, step, lang) for lang in langs}
            dev = [expected_score(run_id, step, f"dev{e}") for e in range(3)]
            meta = {"epochs_run": 3, "best_epoch": 2, "device": "cpu", "selftest": True}
            meta["wall_time_s"] = time.perf_counter() - t0
            st.put_step(
                run_id, step, scores=scores, dev_curve=dev, meta=meta, provenance=provenance
            )
            # Reported only now that put_step has returned, and made durable before going on.
            out.write(f"{run_id} {step}\n")
            out.flush()
            os.fsync(out.fileno())
    return 0


@dataclass
class _Writer:
    index: int
    run_id: str
    reverse: bool
    log: Path
    err: Path
    proc: subprocess.Popen | None = None
    kill_after: int | None = None  # SIGKILL once this many steps are logged (+ a random delay)
    kill_delay: float = 0.0
    kill_at: float | None = None
    signalled: bool = False


@dataclass
class _ReaderStats:
    polls: int = 0
    bad_rows: set[tuple[str, int]] = field(default_factory=set)
    damaged: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)


def _expected_row(run_id: str, step: int, langs: list[str]) -> list[float]:
    return [expected_score(run_id, step, lang) for lang in langs]


def _poll(store: Store, stats: _ReaderStats) -> None:
    try:
        records = store.runs()
        problems = store.problems()
    except Exception as exc:  # the reader must never crash; an exception is a failure
        stats.errors.append(f"{type(exc).__name__}: {exc}")
        return
    for rec in records:
        for step in rec.done_steps:
            row = [float(x) for x in rec.R[step]]
            if row != _expected_row(rec.run_id, step, rec.languages):
                stats.bad_rows.add((rec.run_id, step))
    for line in problems:
        stats.damaged.add(line.split(": ", 1)[0])


def _reader(store_dir: Path, stop: threading.Event, stats: _ReaderStats) -> None:
    store = Store(store_dir)
    while True:
        last = stop.is_set()
        _poll(store, stats)
        stats.polls += 1
        if last:
            return
        stop.wait(0.02)


def _count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


def _fs_type(path: Path) -> str:
    """Filesystem type of `path` from /proc/mounts (best effort; 'unknown' elsewhere)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "unknown"
    target, best = str(path.resolve()), ("", "unknown")
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3:
            mnt = parts[1].replace("\\040", " ")
            if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(
                best[0]
            ):
                best = (mnt, parts[2])
    return best[1]


def _check_args(writers: int, kill_fraction: float, steps: int, timeout_s: float) -> None:
    if not isinstance(writers, int) or writers < 1:
        raise StoreError(f"selftest: --writers must be an integer >= 1, got {writers!r}")
    if not 0.0 <= kill_fraction <= 1.0:
        raise StoreError(f"selftest: --kill-fraction must be in [0, 1], got {kill_fraction!r}")
    if not isinstance(steps, int) or steps < 1:
        raise StoreError(f"selftest: --steps must be an integer >= 1, got {steps!r}")
    if timeout_s <= 0:
        raise StoreError(f"selftest: timeout must be positive, got {timeout_s!r}")


def selftest(
    path: str | os.PathLike,
    *,
    writers: int,
    kill_fraction: float,
    steps: int = 20,
    seed: int = 0,
    timeout_s: float = 300.0,
    languages: int = 8,
    keep: bool = False,
) -> dict:
    """Run the store self-test in a fresh directory under `path`; return the report.

    ``report["ok"]`` is true iff no successful step was lost, no file is corrupt, the reader
    saw no partial row, and nothing else failed (writer errors, reader errors, timeout,
    consolidation). The directory is removed afterwards unless `keep` or the test failed.
    """
    _check_args(writers, kill_fraction, steps, timeout_s)
    n_lang = max(1, min(int(languages), len(LANGUAGES)))
    base = Path(path).expanduser()
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"{base}: cannot create the selftest directory ({exc.strerror}); choose a writable path"
        ) from None
    rng = random.Random(seed)
    host = "".join(c if c.isalnum() or c == "-" else "_" for c in socket.gethostname())[:40]
    work = base / f"hpc-forget-selftest-{host}-{os.getpid()}-{rng.getrandbits(32):08x}"
    store_dir, logs = work / "store", work / "logs"
    try:
        logs.mkdir(parents=True)
    except OSError as exc:
        raise StoreError(
            f"{work}: cannot create the selftest directory ({exc.strerror}); choose a writable path"
        ) from None
    Store(store_dir).check_writable()

    plan: list[_Writer] = []
    n_runs = 0
    for i in range(writers):
        duplicate = i % 4 == 3
        if not duplicate:
            n_runs += 1
        run_id = f"selftest-{n_runs - 1:04d}"
        plan.append(_Writer(i, run_id, duplicate, logs / f"w{i:04d}.log", logs / f"w{i:04d}.err"))
    n_kill = min(writers, max(1, round(kill_fraction * writers))) if kill_fraction > 0 else 0
    for w in rng.sample(plan, n_kill):
        w.kill_after = rng.randrange(steps)
        w.kill_delay = rng.uniform(0.0, 0.05)

    stats = _ReaderStats()
    stop = threading.Event()
    reader = threading.Thread(target=_reader, args=(store_dir, stop, stats), daemon=True)
    env = {**os.environ, "HDF5_USE_FILE_LOCKING": "FALSE"}
    t0 = time.monotonic()
    reader.start()
    for w in plan:
        cmd = [
            sys.executable,
            "-m",
            "hpc_forget.store.selftest",
            "--writer",
            str(store_dir),
            w.run_id,
        ]
        cmd += [str(steps), str(n_lang), str(w.log)] + (["--reverse"] if w.reverse else [])
        with open(w.err, "wb") as err:
            w.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)

    timed_out = False
    running = list(plan)
    while running:
        now = time.monotonic()
        if now - t0 > timeout_s:
            timed_out = True
            for w in running:
                w.proc.kill()
        still = []
        for w in running:
            if w.proc.poll() is not None:
                continue
            still.append(w)
            if w.kill_after is None or w.signalled:
                continue
            if w.kill_at is None and _count_lines(w.log) >= w.kill_after:
                w.kill_at = now + w.kill_delay
            if w.kill_at is not None and now >= w.kill_at:
                w.proc.send_signal(signal.SIGKILL)
                w.signalled = True
        running = still
        time.sleep(0.005)
    for w in plan:
        w.proc.wait()
    stop.set()
    reader.join()
    writers_done = time.monotonic() - t0

    report = _verify(store_dir, plan, steps, n_lang, stats)
    report.update(
        {
            "writers": writers,
            "kill_fraction": kill_fraction,
            "steps_per_writer": steps,
            "languages": n_lang,
            "runs": n_runs,
            "kills_planned": n_kill,
            "killed": sum(1 for w in plan if w.proc.returncode == -signal.SIGKILL),
            "timed_out": timed_out,
            "writers_wall_time_s": round(writers_done, 2),
            "wall_time_s": round(time.monotonic() - t0, 2),
            "path": str(work),
            "filesystem": _fs_type(base),
            "host": socket.gethostname(),
            "seed": seed,
        }
    )
    if report["killed"] < n_kill and not timed_out:
        report["note"] = "some writers chosen for SIGKILL finished before their kill moment"
    report["ok"] = bool(
        report["steps_lost"] == 0
        and report["corrupt_files"] == 0
        and report["partial_rows_seen"] == 0
        and report["wrong_rows"] == 0
        and not report["writer_errors"]
        and not report["reader_errors"]
        and report["consolidated_ok"]
        and not timed_out
    )
    report["kept"] = bool(keep or not report["ok"])
    if not report["kept"]:
        shutil.rmtree(work, ignore_errors=True)
    first = ("ok", "writers", "killed", "steps_written", "steps_reported_successful")
    first += ("steps_lost", "corrupt_files", "partial_rows_seen", "reader_polls", "wall_time_s")
    return {**{k: report[k] for k in first}, **report}


def _verify(
    store_dir: Path, plan: list[_Writer], steps: int, n_lang: int, stats: _ReaderStats
) -> dict:
    reported: set[tuple[str, int]] = set()
    for w in plan:
        try:
            lines = w.log.read_text(encoding="utf-8").splitlines()
        except OSError:
            lines = []
        for line in lines:
            run_id, step = line.split()
            reported.add((run_id, int(step)))
    writer_errors = []
    for w in plan:
        if w.proc.returncode not in (0, -signal.SIGKILL):
            tail = w.err.read_text(errors="replace").strip().splitlines()[-1:] or ["(no stderr)"]
            writer_errors.append(f"writer {w.index} exited {w.proc.returncode}: {tail[0]}")

    store = Store(store_dir)
    problems = store.problems()
    records = {r.run_id: r for r in store.runs()}
    present: set[tuple[str, int]] = set()
    correct: set[tuple[str, int]] = set()
    for rec in records.values():
        for step in rec.done_steps:
            present.add((rec.run_id, step))
            if [float(x) for x in rec.R[step]] == _expected_row(rec.run_id, step, rec.languages):
                correct.add((rec.run_id, step))
    tmp_left = sum(
        1 for p in store_dir.rglob(".*.tmp") if p.is_file()
    )  # evidence that kills landed mid-write

    consolidated_ok, consolidated_error = True, ""
    try:
        out = store.consolidate()
        merged = Store(out)
        for rec in merged.runs():
            mine = records.get(rec.run_id)
            if mine is None or mine.done_steps != rec.done_steps:
                raise StoreError(f"run {rec.run_id}: steps differ from the step files")
            for step in rec.done_steps:
                if [float(x) for x in rec.R[step]] != [float(x) for x in mine.R[step]]:
                    raise StoreError(f"run {rec.run_id} step {step}: row differs")
        if {r.run_id for r in merged.runs()} != set(records):
            raise StoreError("runs differ from the step files")
    except Exception as exc:
        consolidated_ok, consolidated_error = False, f"{type(exc).__name__}: {exc}"

    step_damaged = {
        p for p in stats.damaged if "/steps/" in p.replace(os.sep, "/") and p.endswith(".h5")
    }
    return {
        "steps_expected": len({w.run_id for w in plan}) * steps,
        "steps_written": len(present),
        "steps_reported_successful": len(reported),
        "steps_lost": len(reported - correct),
        "wrong_rows": len(present - correct),
        "corrupt_files": len(problems),
        "problems": problems[:20],
        "partial_rows_seen": len(stats.bad_rows) + len(step_damaged),
        "damaged_files_seen_by_reader": len(stats.damaged),
        "reader_polls": stats.polls,
        "reader_errors": stats.errors[:20],
        "writer_errors": writer_errors[:20],
        "tmp_files_left": tmp_left,
        "consolidated_ok": consolidated_ok,
        "consolidated_error": consolidated_error,
    }


def format_selftest(report: dict) -> str:
    """The report as a short human-readable text; the last line says PASS or FAIL."""
    r = report
    lines = [
        f"store selftest on {r['path']} ({r['filesystem']}, host {r['host']})",
        f"  writers                    {r['writers']} ({r['runs']} runs, {r['steps_per_writer']}"
        f" steps x {r['languages']} languages each; 1 in 4 re-writes another's run)",
        f"  killed (SIGKILL)           {r['killed']} of {r['kills_planned']} planned"
        f" (kill fraction {r['kill_fraction']})",
        f"  steps written (present)    {r['steps_written']} of {r['steps_expected']}",
        f"  steps reported successful  {r['steps_reported_successful']}",
        f"  steps lost                 {r['steps_lost']}",
        f"  corrupt/unreadable files   {r['corrupt_files']}",
        f"  partial rows seen          {r['partial_rows_seen']} (reader polls: {r['reader_polls']})",
        f"  wrong rows                 {r['wrong_rows']}",
        f"  temp files left by kills   {r['tmp_files_left']} (ignored by readers)",
        f"  consolidated file          {'ok' if r['consolidated_ok'] else 'FAILED'}",
        f"  wall time                  {r['wall_time_s']:.1f} s"
        f" (writers {r['writers_wall_time_s']:.1f} s)",
    ]
    for key in ("writer_errors", "reader_errors", "problems"):
        lines += [f"  {key.replace('_', ' ')}: {x}" for x in r.get(key, [])]
    if r.get("consolidated_error"):
        lines.append(f"  consolidation: {r['consolidated_error']}")
    if r.get("timed_out"):
        lines.append("  TIMED OUT: remaining writers were killed")
    if r.get("note"):
        lines.append(f"  note: {r['note']}")
    verdict = "PASS" if r["ok"] else "FAIL"
    where = f"; kept {r['path']}" if r.get("kept") else ""
    lines.append(
        f"{verdict}: {r['steps_lost']} successful steps lost, {r['corrupt_files']} corrupt files,"
        f" {r['partial_rows_seen']} partial rows seen{where}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m hpc_forget.store.selftest PATH --writers N --kill-fraction F`` (and writer mode)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--writer"]:
        store, run_id, steps, n_lang, log, *rest = argv[1:]
        return _writer_main(store, run_id, int(steps), int(n_lang), log, "--reverse" in rest)
    p = argparse.ArgumentParser(prog="python -m hpc_forget.store.selftest", description=__doc__)
    p.add_argument("path")
    p.add_argument("--writers", type=int, default=64)
    p.add_argument("--kill-fraction", type=float, default=0.2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    try:
        report = selftest(
            a.path,
            writers=a.writers,
            kill_fraction=a.kill_fraction,
            steps=a.steps,
            seed=a.seed,
            timeout_s=a.timeout,
            keep=a.keep,
        )
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if a.json else format_selftest(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
