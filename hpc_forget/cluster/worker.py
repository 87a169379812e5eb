"""``python -m hpc_forget.worker MANIFEST``: run one element of a Slurm array (docs/slurm.md).

A task crosses from the login node into the job (and into the container) as JSON, not as a
pickle: the manifest holds the resolved config, the array's tasks, its elements and facts about
the submitting environment. The worker takes element ``SLURM_ARRAY_TASK_ID`` (one task, or up
to ``tasks_per_job`` independent tasks when packed), runs its tasks one after another through
``engine.run_task`` with one shared ``engine.Workspace`` (the base model read once, the
tokenizer and encoded data reused) and keeps a marker file per task
(``RUN/tasks/<task_id>.json``) that ``hpc-forget status`` reads. In a packed element a task
whose marker says done (in this element) is skipped, so a requeued element resumes at its
first unfinished task; a failed task does not stop the element's later tasks.

``main`` sets the Hugging Face offline variables first; this module imports no Hugging Face
library, so they are set before any is imported. Signals: SIGUSR1 (forwarded by the batch
script ahead of the time limit) and SIGTERM/SIGINT set the stop flag that the engine polls
after every batch (a stopped step saves its mid-step checkpoint) and between steps; the worker
then exits with EXIT_PREEMPTED and the batch script requeues the job (for SIGUSR1).

The manifest, marker and exit-code formats are the job contract of
:mod:`hpc_forget.cluster.contract`.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpc_forget import __version__
from hpc_forget.cluster.containers import OFFLINE_ENV
from hpc_forget.cluster.contract import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PREEMPTED,
    EXIT_USAGE,
    HEARTBEAT_S,
    check_compatible,
    environment_facts,
    load_manifest,
    log_path,
    manifest_elements,
    marker_path,
    read_marker,
    stop_request_path,
    write_exit_record,
    write_marker,
)
from hpc_forget.errors import WorkerError, first_line
from hpc_forget.files import utc_now


class TaskPreempted(Exception):
    """Raised by a runner when the stop flag made it stop early (engine.Preempted)."""


# --------------------------------------------------------------------------------------------
# the array index


def array_index(explicit: int | None, env: dict[str, str] | os._Environ) -> int:
    if explicit is not None:
        return explicit
    raw = env.get("SLURM_ARRAY_TASK_ID")
    if raw is None or not raw.strip().isdigit():
        raise WorkerError(
            "SLURM_ARRAY_TASK_ID is not set; run the worker as a Slurm array job or pass --index N"
        )
    return int(raw)


# --------------------------------------------------------------------------------------------
# markers


@dataclass
class Marker:
    """The marker of one task attempt; every update rewrites the file."""

    path: Path
    data: dict = field(default_factory=dict)
    enabled: bool = True
    # reentrant: a signal handler may update the marker while the main thread is writing it
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def update(self, **kw: Any) -> None:
        with self._lock:
            self.data.update(kw, updated_at=utc_now())
            if self.enabled:
                try:
                    write_marker(self.path, self.data)
                except OSError as exc:  # never let bookkeeping kill the task
                    print(f"hpc-forget worker: cannot write {self.path}: {exc}", file=sys.stderr)

    def heartbeat(self, interval_s: float) -> Callable[[], None]:
        """Refresh ``updated_at`` every ``interval_s`` from a daemon thread, so that ``status``
        can tell a running task from one killed without a word (SIGKILL, node failure).
        Returns the function that stops it."""
        done = threading.Event()

        def beat() -> None:
            while not done.wait(interval_s):
                self.update()

        threading.Thread(target=beat, name="hpc-forget-heartbeat", daemon=True).start()
        return done.set


# --------------------------------------------------------------------------------------------
# signals


@dataclass
class StopFlag:
    """Set by SIGUSR1/SIGTERM/SIGINT; the engine polls it after every batch (every 16 on
    several processes) and between epochs and steps."""

    signal_name: str | None = None
    on_signal: Callable[[str], None] | None = None
    stop_file: Path | None = None  # multi-process elements: the batch script's stop request

    def __call__(self) -> bool:
        if self.signal_name is None and self.stop_file is not None and self.stop_file.exists():
            # the batch script's stand-in for the USR1 that the launcher cannot pass on
            self.signal_name = "SIGUSR1"
            if self.on_signal is not None:
                self.on_signal(self.signal_name)
            print(
                "hpc-forget worker: stop requested (Slurm's warning); stopping after the"
                " current batch",
                file=sys.stderr,
            )
        return self.signal_name is not None

    def handle(self, signum: int, frame: Any = None) -> None:
        name = signal.Signals(signum).name
        # TERM wins over USR1: Slurm is ending the job, so no self-requeue
        if self.signal_name is None or (name == "SIGTERM" and self.signal_name != name):
            self.signal_name = name
            if self.on_signal is not None:
                self.on_signal(name)
        print(f"hpc-forget worker: got {name}; stopping after the current batch", file=sys.stderr)

    def install(self) -> None:
        for s in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
            signal.signal(s, self.handle)


# --------------------------------------------------------------------------------------------
# running

Runner = Callable[[dict, dict, Callable[[], bool]], None]


def engine_runner(task_d: dict, manifest: dict, should_stop: Callable[[], bool]) -> None:
    """The real runner: config and task from the manifest, then engine.run_task. The config,
    store and ``engine.Workspace`` are made once per manifest (kept in it under ``_engine``),
    so the tasks of a packed element share the loaded base model, tokenizer and encodings."""
    from hpc_forget.run import engine
    from hpc_forget.study.planning import Task

    if "_engine" not in manifest:
        from hpc_forget.cluster.prefetch import check_prefetched
        from hpc_forget.store.store import Store
        from hpc_forget.study.config import config_from_dict

        cfg = config_from_dict(manifest["config"], origin=manifest.get("_path", "<manifest>"))
        # models and data from the shared cache only (PrefetchError names the prefetch command)
        cfg = check_prefetched(cfg, manifest["cache_dir"])
        manifest["_engine"] = (cfg, Store(cfg.store), engine.Workspace(cfg))
    cfg, store, ws = manifest["_engine"]
    task = Task.from_dict(task_d)
    try:
        engine.run_task(task, cfg, store, should_stop=should_stop, workspace=ws)
    except engine.Preempted as exc:
        raise TaskPreempted(stop_message(str(exc), task, store)) from exc


def stop_message(message: str, task: Any, store: Any) -> str:
    """The engine's stop message, with the step it interrupted (1-based, as the engine's log
    counts them) when the message names only an epoch: ``step 3/4: stopped before epoch 2``."""
    if "step" in message:
        return message
    try:
        done = store.done_steps(task.run_id)
    except Exception:  # noqa: BLE001 - the message must not fail the exit path
        return message
    todo = [i for i in task.step_indices if i not in done]
    return f"step {todo[0] + 1}/{len(task.steps)}: {message}" if todo else message


def apply_offline_env() -> None:
    """HF_HUB_OFFLINE=1 and friends, for this process and its children. main() calls it first:
    this module imports no Hugging Face library, so it comes before any of them is imported."""
    os.environ.update(OFFLINE_ENV)


def _is_rank_zero(env: dict[str, str] | os._Environ) -> bool:
    return env.get("RANK", "0") in ("", "0")


def run(
    manifest_path: str,
    *,
    index: int | None = None,
    runner: Runner | None = None,
    env: dict[str, str] | os._Environ | None = None,
    install_signals: bool = True,
    heartbeat_s: float = HEARTBEAT_S,
) -> int:
    """Run one array element's tasks in order; returns the exit code (EXIT_*). Never raises
    for task errors. ``runner`` defaults to engine_runner (tests inject a fake engine)."""
    env = os.environ if env is None else env
    runner = runner or engine_runner
    try:
        manifest = load_manifest(manifest_path)
        manifest["_path"] = str(manifest_path)
        check_compatible(manifest, str(manifest_path), environment_facts())
        i = array_index(index, env)
        tasks = manifest["tasks"]
        elements = manifest_elements(manifest)
        if not 0 <= i < len(elements):
            raise WorkerError(
                f"{manifest_path}: array index {i} but the manifest has {len(elements)}"
                f" element(s)" + (f" ({len(tasks)} tasks)" if len(tasks) != len(elements) else "")
            )
        if any(not 0 <= j < len(tasks) for j in elements[i]):
            raise WorkerError(f"{manifest_path}: element {i} names a task the manifest lacks")
    except WorkerError as exc:
        print(f"hpc-forget worker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    current: list[Marker] = []  # the marker of the task now running
    several = int(env.get("WORLD_SIZE") or 1) > 1  # under accelerate launch / torchrun
    stop = stop_request_path(manifest["run_folder"], env) if several else None
    flag = StopFlag(
        on_signal=lambda name: (
            current[-1].update(state="stopping", signal=name) if current else None
        ),
        stop_file=stop,
    )
    if install_signals:
        flag.install()
    rc = _run_element(manifest, i, elements[i], runner, flag, current, env, heartbeat_s)
    if stop is not None and _is_rank_zero(env):
        write_exit_record(stop, rc)  # the launcher's own exit code would hide it
    return rc


def _run_element(
    manifest: dict,
    i: int,
    element: list[int],
    runner: Runner,
    flag: StopFlag,
    current: list[Marker],
    env: dict[str, str] | os._Environ,
    heartbeat_s: float,
) -> int:
    """The element's tasks in order; the element's exit code."""
    tasks = manifest["tasks"]
    rc = EXIT_OK
    for pos, j in enumerate(element):
        task_d = tasks[j]
        path = marker_path(manifest["run_folder"], task_d["task_id"])
        old = read_marker(path) or {}
        if len(element) > 1 and _done_here(old, manifest, i):
            print(
                f"hpc-forget worker: task {task_d['task_id']} ({pos + 1}/{len(element)} of"
                f" element {i}) is done; skipping it",
                file=sys.stderr,
                flush=True,
            )
            continue
        if flag():  # the signal came after the last task's final poll: stop before this one
            print(
                f"hpc-forget worker: {flag.signal_name} before task {pos + 1}/{len(element)}"
                " of the element; stopping",
                file=sys.stderr,
            )
            return EXIT_PREEMPTED
        marker = _new_marker(path, old, task_d, manifest, i, pos, env)
        current.append(marker)
        code = _run_task(marker, task_d, manifest, runner, flag, env, heartbeat_s, len(element))
        if code == EXIT_PREEMPTED:
            return code
        if code != EXIT_OK:
            rc = code  # a failed task: the element's other tasks still run
    if "_engine" in manifest and len(element) > 1:
        loads = getattr(manifest["_engine"][2].base_models, "loads", "?")
        print(
            f"hpc-forget worker: element {i}: {len(element)} task(s); base model read from disk"
            f" {loads} time(s)",
            file=sys.stderr,
            flush=True,
        )
    return rc


def _done_here(old: dict, manifest: dict, index: int) -> bool:
    """The marker says the task finished in this array element (a requeue skips it)."""
    return (
        old.get("state") == "done"
        and old.get("array") == manifest.get("array", "")
        and old.get("index") == index
    )


def _new_marker(
    path: Path, old: dict, task_d: dict, manifest: dict, i: int, pos: int, env: Any
) -> Marker:
    marker = Marker(path, enabled=_is_rank_zero(env))
    marker.data = {
        "task_id": task_d["task_id"],
        "run_id": task_d.get("run_id", ""),
        "array": manifest.get("array", ""),
        "index": i,
        "position": pos,
        "job_id": env.get("SLURM_JOB_ID", ""),
        "array_job_id": env.get("SLURM_ARRAY_JOB_ID", ""),
        "restart_count": int(env.get("SLURM_RESTART_COUNT", "0") or 0),
        "attempts": int(old.get("attempts", 0)) + 1,
        "host": socket.gethostname(),
        "log": log_path(manifest.get("log_pattern", ""), env),
        "started_at": utc_now(),
        "last_error": "",
    }
    return marker


def _run_task(
    marker: Marker,
    task_d: dict,
    manifest: dict,
    runner: Runner,
    flag: StopFlag,
    env: Any,
    heartbeat_s: float,
    n_element: int,
) -> int:
    """One task of the element, its marker kept; the exit code it would have alone."""
    task_id, i = task_d["task_id"], marker.data["index"]
    restart = marker.data["restart_count"]
    max_requeues = int(manifest.get("max_requeues", 0))
    marker.update(state="running")
    of = (
        f"task {marker.data['position'] + 1}/{n_element} of element {i}"
        if n_element > 1
        else (f"index {i}")
    )
    print(
        f"hpc-forget worker: task {task_id} ({of} of {manifest.get('array', '?')}, attempt"
        f" {marker.data['attempts']}, restart {restart}) on {marker.data['host']}",
        file=sys.stderr,
        flush=True,
    )
    stop_heartbeat = marker.heartbeat(heartbeat_s)
    try:
        runner(task_d, manifest, flag)
    except TaskPreempted as exc:
        stop_heartbeat()
        sig = flag.signal_name or "a stop request"
        if sig == "SIGUSR1" and restart < max_requeues:
            marker.update(state="requeued", last_error=f"stopped by {sig}: {exc}")
        elif sig == "SIGUSR1":
            marker.update(
                state="failed",
                last_error=f"stopped by {sig} after {restart} requeue(s), the limit; raise the"
                " time limit or max_requeues, then `hpc-forget resubmit`",
            )
        else:
            marker.update(
                state="interrupted",
                last_error=f"stopped by {sig} (scancel, preemption or requeue): {exc}",
            )
        print(f"hpc-forget worker: {task_id}: {exc}", file=sys.stderr)
        return EXIT_PREEMPTED
    except BaseException as exc:  # noqa: BLE001 - the marker must say why the task died
        stop_heartbeat()
        traceback.print_exc()
        marker.update(state="failed", last_error=first_line(f"{type(exc).__name__}: {exc}", 300))
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        return EXIT_FAILED
    stop_heartbeat()
    marker.update(state="done", finished_at=utc_now())
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m hpc_forget.worker", description=__doc__.split("\n")[0]
    )
    p.add_argument("manifest", help="the array's manifest JSON written by `hpc-forget submit`")
    p.add_argument(
        "--index", type=int, default=None, help="task index (default: $SLURM_ARRAY_TASK_ID)"
    )
    p.add_argument("--version", action="version", version=f"hpc-forget {__version__}")
    apply_offline_env()
    args = p.parse_args(argv)
    _setup_logging()
    return run(args.manifest, index=args.index)


def _setup_logging() -> None:
    """The engine's progress lines go to the job's log (stderr)."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    log = logging.getLogger("hpc_forget")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


if __name__ == "__main__":
    sys.exit(main())
