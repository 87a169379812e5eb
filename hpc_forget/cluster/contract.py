"""The job contract between ``submit``, the worker and ``status`` (docs/slurm.md, "The job
contract").

- The **manifest** (``RUN/manifests/<array>.json``; ``submit`` writes it, the worker reads
  it): the resolved config, the array's tasks, its ``elements`` (``elements[i]`` lists the
  indices into ``tasks`` that array index i runs, in order: one task, or up to
  ``tasks_per_job`` independent tasks in a packed array) and facts about the submitting
  environment, which the worker checks against its own. Version 1 manifests (no
  ``elements``: ``tasks[i]`` is array index i) are still read.
- The **task markers** (``RUN/tasks/<task_id>.json``; the worker writes them, ``status``
  reads them): the state of a task's latest attempt (one of MARKER_STATES), its error and log,
  refreshed every HEARTBEAT_S; ``status`` calls a running marker older than STALE_S lost.
- The worker's **exit codes** (EXIT_*): on EXIT_PREEMPTED after SIGUSR1 the batch script
  requeues the job.
- The **stop request** (``RUN/stop/<job>``; multi-process elements only): torchrun, behind
  ``accelerate launch``, dies of SIGUSR1 and does not pass it on, so on Slurm's warning the
  batch script creates this file instead of signalling; every rank polls it like the signal
  flag. Rank 0 writes its exit code to ``RUN/stop/<job>.exit``, which the batch script takes
  in place of the launcher's own (a worker's EXIT_PREEMPTED would else arrive as 1).
- The **log path**: the sbatch ``--output`` pattern, expanded as Slurm expands it (the worker
  records it in the marker; ``status`` shows it for tasks without one).

Standard library only: the worker imports it before any other library.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
from pathlib import Path
from typing import Any

from hpc_forget import __version__, files
from hpc_forget.errors import WorkerError

MANIFEST_FORMAT = "hpc-forget-manifest"
MANIFEST_VERSION = 2
READABLE_MANIFEST_VERSIONS = (1, 2)  # 1: one task per element, no "elements"


EXIT_OK = 0
EXIT_FAILED = 1  # the task raised: see the marker's last_error and the log
EXIT_USAGE = 2  # unreadable manifest, bad index, version mismatch: resubmitting will not help
EXIT_PREEMPTED = 75  # stopped by a signal with the store consistent; a re-run resumes


MARKER_STATES = ("running", "stopping", "requeued", "interrupted", "done", "failed")
HEARTBEAT_S = 60.0  # a running worker rewrites its marker this often
STALE_S = 300.0  # status calls a "running" marker older than this lost


# --------------------------------------------------------------------------------------------
# manifest (pure)


def environment_facts() -> dict[str, str]:
    """What the manifest records about the process that builds it (and the worker checks)."""
    return {
        "package_version": __version__,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "host": socket.gethostname(),
    }


def build_manifest(
    *,
    config: dict,
    tasks: list[dict],
    run_folder: str,
    array: str,
    log_pattern: str,
    cache_dir: str,
    max_requeues: int,
    environment: dict[str, str],
    created_at: str,
    elements: list[list[int]] | None = None,
) -> dict[str, Any]:
    """The JSON document one array's jobs read; array index i runs ``tasks[j]`` for each j
    in ``elements[i]`` (default: one task per element)."""
    if elements is None:
        elements = [[i] for i in range(len(tasks))]
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "array": array,
        "run_folder": run_folder,
        "log_pattern": log_pattern,
        "cache_dir": cache_dir,
        "max_requeues": max_requeues,
        "created_at": created_at,
        "environment": environment,
        "config": config,
        "tasks": tasks,
        "elements": elements,
    }


def manifest_elements(manifest: dict) -> list[list[int]]:
    """The task indices of every array element (a version 1 manifest: one task each)."""
    if "elements" not in manifest:
        return [[i] for i in range(len(manifest["tasks"]))]
    return [list(e) for e in manifest["elements"]]


def load_manifest(path: str | os.PathLike) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
    except OSError as exc:
        raise WorkerError(
            f"{path}: cannot read the task manifest ({exc.strerror}); is the run folder on a"
            " filesystem the compute nodes (and the container binds) can see?"
        ) from None
    except json.JSONDecodeError as exc:
        raise WorkerError(
            f"{path}:{exc.lineno}: the task manifest is not valid JSON ({exc.msg})"
        ) from None
    if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT:
        raise WorkerError(f"{path}: not an hpc-forget task manifest")
    if m.get("version") not in READABLE_MANIFEST_VERSIONS:
        raise WorkerError(
            f"{path}: manifest version {m.get('version')} but this worker reads versions"
            f" {', '.join(map(str, READABLE_MANIFEST_VERSIONS))}; resubmit with the hpc-forget"
            " that runs the jobs"
        )
    return m


def check_compatible(manifest: dict, path: str, here: dict[str, str]) -> None:
    """The package that runs the task must be the one that planned it (config and task formats
    belong to it). Python versions may differ: the manifest is plain JSON."""
    there = manifest.get("environment", {})
    if there.get("package_version") != here["package_version"]:
        raise WorkerError(
            f"{path}: submitted with hpc-forget {there.get('package_version')} (Python"
            f" {there.get('python')}) but the job runs hpc-forget {here['package_version']}"
            f" (Python {here['python']}, {here['python_executable']}); rebuild the image or"
            " reinstall so both match, then `hpc-forget resubmit`"
        )


def log_path(pattern: str, env: dict[str, str] | os._Environ) -> str:
    """The array element's log file from the sbatch ``--output`` pattern (%A, %a, %j, %x, %%)."""
    subst = {
        "A": env.get("SLURM_ARRAY_JOB_ID", env.get("SLURM_JOB_ID", "")),
        "a": env.get("SLURM_ARRAY_TASK_ID", ""),
        "j": env.get("SLURM_JOB_ID", ""),
        "x": env.get("SLURM_JOB_NAME", ""),
        "%": "%",
    }
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "%" and i + 1 < len(pattern) and pattern[i + 1] in subst:
            out.append(subst[pattern[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


# --------------------------------------------------------------------------------------------
# stop requests (multi-process elements)


def job_key(env: dict[str, str] | os._Environ) -> str:
    """This array element's own job id as scontrol names it (``ARRAYJOB_TASK``; the plain job
    id outside arrays): the batch script computes the same text (``hpcf_self``)."""
    array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array:
        return f"{array}_{task}"
    return env.get("SLURM_JOB_ID") or "local"


def stop_request_path(run_folder: str | os.PathLike, env: dict[str, str] | os._Environ) -> Path:
    return Path(run_folder) / "stop" / job_key(env)


def exit_record_path(stop_request: Path) -> Path:
    return stop_request.with_name(stop_request.name + ".exit")


def write_exit_record(stop_request: Path, code: int) -> None:
    """Rank 0's exit code, for the batch script (it reads digits only)."""
    path = exit_record_path(stop_request)
    path.parent.mkdir(parents=True, exist_ok=True)
    files.atomic_write_raw(path, f"{int(code)}\n".encode())


# --------------------------------------------------------------------------------------------
# markers


def marker_path(run_folder: str | os.PathLike, task_id: str) -> Path:
    return Path(run_folder) / "tasks" / f"{task_id}.json"


def read_marker(path: str | os.PathLike) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def write_marker(path: Path, data: dict) -> None:
    """Atomic: readers see the old marker or the new one."""
    files.write_json(path, data, sort_keys=True)
