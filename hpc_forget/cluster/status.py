"""``hpc-forget status``, ``resubmit`` and ``cancel`` of a run folder (docs/slurm.md).

``status`` reads the store (step file names only: ``Store.listed_steps``), the task markers,
``plan.json`` and ``submission.json``; ``--sacct`` adds Slurm's view in one batched sacct call.
``resubmit`` submits the failed and missing tasks into new arrays of the same run folder;
``cancel`` scancels every array of the run.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc_forget.cluster import sbatch
from hpc_forget.cluster.contract import STALE_S, environment_facts, log_path, read_marker
from hpc_forget.cluster.profiles import Profile, profile_from_dict, with_overrides
from hpc_forget.cluster.runfolder import (
    PLAN_FILE,
    JobLayout,
    read_submission,
    resolve_run_folder,
)
from hpc_forget.cluster.scripts import format_dry_run, plan_arrays, task_record
from hpc_forget.cluster.submit import SubmitResult, launch, resolve_image
from hpc_forget.errors import SlurmError, UserError
from hpc_forget.files import utc_now, write_json

STATES = ("pending", "running", "done", "failed", "missing")


@dataclass
class TaskStatus:
    task_id: str
    run_id: str
    method: str
    kind: str
    state: str  # pending | running | done | failed | missing
    cells_done: int
    cells_expected: int
    steps_done: int
    steps_expected: int
    last_error: str = ""
    log: str = ""
    job_id: str = ""
    array: str = ""
    attempts: int = 0
    slurm_state: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _cells(kind: str, n_languages: int, steps: Iterable[int]) -> int:
    per_step = n_languages if kind in ("sequential", "joint") else 1
    return per_step * len(list(steps))


@dataclass
class _Where:
    array: dict
    index: int  # the array element
    packed: bool = False  # the element runs other tasks too


def _task_locations(sub: dict) -> dict[str, _Where]:
    """task_id -> its latest array element (later submissions win). A record without
    ``elements`` (one task per element) reads as element i = task i."""
    where: dict[str, _Where] = {}
    for arr in sub["arrays"]:
        ids = list(arr.get("task_ids", ()))
        elements = arr.get("elements") or [[i] for i in range(len(ids))]
        for e, members in enumerate(elements):
            for j in members:
                where[ids[j]] = _Where(arr, e, len(members) > 1)
    return where


def _planned(sub: dict) -> list[dict]:
    """The config's full plan, as task records (slow for 10,000 tasks: resubmit only)."""
    from hpc_forget.study.config import config_from_dict
    from hpc_forget.study.planning import plan

    cfg = config_from_dict(sub["config"], origin="submission.json")
    return [task_record(t) for t in plan(cfg)]


def _submitted_tasks(folder: Path, sub: dict) -> dict[str, dict]:
    """task_id -> task record, from the manifests of every array."""
    out: dict[str, dict] = {}
    for arr in sub["arrays"]:
        manifest = json.loads((folder / arr["manifest"]).read_text(encoding="utf-8"))
        for t in manifest["tasks"]:
            out[t["task_id"]] = t
    return out


def _read_markers(folder: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    tasks_dir = folder / "tasks"
    try:
        it = os.scandir(tasks_dir)
    except OSError:
        return out
    with it:
        for e in it:
            if e.name.endswith(".json") and not e.name.startswith("."):
                m = read_marker(e.path)
                if m is not None:
                    out[e.name[:-5]] = m
    return out


_SLURM_ACTIVE = {"PENDING": "pending", "REQUEUED": "pending", "REQUEUE_HOLD": "pending",
                 "REQUEUE_FED": "pending", "RESIZING": "running", "SUSPENDED": "running",
                 "RUNNING": "running", "COMPLETING": "running", "CONFIGURING": "running",
                 "PREEMPTED": "pending", "SIGNALING": "running", "STAGE_OUT": "running"}  # fmt: skip


@dataclass
class RunStatus:
    """``hpc-forget status``: the run folder and one TaskStatus per planned task."""

    run_folder: str
    tasks: list[TaskStatus]
    note: str | None = None  # the store also holds these cells under other settings

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATES}
        for t in self.tasks:
            out[t.state] += 1
        return out

    def format(self) -> str:
        text = format_status(self.tasks, folder=self.run_folder)
        return text + ("\n" + self.note if self.note else "")

    def as_json(self) -> dict[str, Any]:
        return {
            "run_folder": self.run_folder,
            "note": self.note,
            "counts": self.counts(),
            "tasks": [t.as_dict() for t in self.tasks],
        }


def status(run: str | os.PathLike, *, sacct: bool = False) -> RunStatus:
    """``hpc-forget status RUN``: one TaskStatus per planned task, from the store, the task
    markers and the manifests; ``sacct=True`` adds Slurm's view in one batched sacct call."""
    from hpc_forget.store.store import Store

    folder = resolve_run_folder(run)
    sub = read_submission(folder)
    layout = JobLayout(**sub["layout"])
    where = _task_locations(sub)
    try:
        rows = json.loads((folder / PLAN_FILE).read_text(encoding="utf-8"))["tasks"]
    except (OSError, ValueError, KeyError) as exc:
        raise SlurmError(f"{folder / PLAN_FILE}: cannot read the plan ({exc})") from None
    markers = _read_markers(folder)
    store = Store(layout.store)
    listed: dict[str, set[int]] = {}  # run_id -> steps in the store (a chain's tasks share it)
    slurm: dict[str, str] = {}
    if sacct:
        slurm = sbatch.sacct_states(a["job_id"] for a in sub["arrays"])
    out: list[TaskStatus] = []
    logs: dict[str, str] = {}
    now = _dt.datetime.now(_dt.UTC)
    for tid, run_id, method, kind, n_lang, mine in rows:
        if run_id not in listed:
            listed[run_id] = store.listed_steps(run_id)
        have = listed[run_id]
        done_steps = [s for s in mine if s in have]
        st = TaskStatus(
            task_id=tid,
            run_id=run_id,
            method=method,
            kind=kind,
            state="missing",
            cells_done=_cells(kind, n_lang, done_steps),
            cells_expected=_cells(kind, n_lang, mine),
            steps_done=len(done_steps),
            steps_expected=len(mine),
        )
        w = where.get(tid)
        m = markers.get(tid)
        if w is not None:
            st.array = w.array["name"]
            st.job_id = f"{w.array['job_id']}_{w.index}"
            name = w.array["name"]
            if name not in logs:  # the array's log path with the index left open
                env = {"SLURM_ARRAY_JOB_ID": w.array["job_id"], "SLURM_ARRAY_TASK_ID": "\0"}
                logs[name] = log_path(layout.log_pattern(name), env)
            st.log = logs[name].replace("\0", str(w.index))
            st.slurm_state = slurm.get(st.job_id, "")
        if m is not None and w is not None and m.get("array") == w.array["name"]:
            st.last_error = m.get("last_error", "")
            st.log = m.get("log") or st.log
            st.attempts = int(m.get("attempts", 0))
        else:
            m = None  # a marker of an older array element does not describe this one
        st.state = _state(st, w, m, now)
        out.append(st)
    return RunStatus(str(folder), out, _settings_note(store, sub, {r[1] for r in rows}))


def _settings_note(store: Any, sub: dict, planned_ids: set[str]) -> str | None:
    """One line when the store also holds this submission's cells under other settings."""
    from hpc_forget.study.config import config_from_dict
    from hpc_forget.study.identity import store_note

    try:
        cfg = config_from_dict(sub["config"], origin="submission.json")
    except (KeyError, UserError):
        return None
    return store_note(store, cfg, planned_ids)


def _age_s(stamp: str | None, now: _dt.datetime) -> float | None:
    try:
        return (now - _dt.datetime.fromisoformat(stamp)).total_seconds() if stamp else None
    except (TypeError, ValueError):
        return None


def _state(st: TaskStatus, w: _Where | None, m: dict | None, now: _dt.datetime) -> str:
    if st.steps_done == st.steps_expected:
        return "done"
    active = _SLURM_ACTIVE.get(st.slurm_state)
    if active == "running" and w is not None and w.packed:
        # Slurm runs the element; of its tasks, the marker says which one
        if m is None:
            return "pending"  # a later task of the element, not started yet
        if m.get("state") not in ("running", "stopping"):
            active = None  # finished or failed while the element goes on
    if active is not None:
        return active
    if w is None:
        return "missing"
    if m is not None:
        ms = m.get("state")
        if ms == "stopping" and m.get("signal") != "SIGUSR1":
            st.last_error = st.last_error or (
                f"stopped by {m.get('signal')} (scancel, preemption or requeue)"
            )
            return "failed"
        if ms in ("running", "stopping"):
            if st.slurm_state:  # sacct says it is no longer active
                st.last_error = st.last_error or f"Slurm: {st.slurm_state}"
                return "failed"
            age = _age_s(m.get("updated_at"), now)
            if age is not None and age > STALE_S:
                st.last_error = st.last_error or (
                    f"no heartbeat for {age / 60:.0f} min: the job was probably killed"
                    " (SIGKILL, node failure); `status --sacct` asks Slurm"
                )
                return "failed"
            return "running"
        if ms == "requeued":
            return "pending"
        if ms == "done":
            st.last_error = (
                st.last_error
                or "the worker finished but the store lacks steps; is the store on a shared filesystem?"
            )
            return "failed"
        return "failed"  # failed, interrupted
    if w.array.get("cancelled_at"):
        st.last_error = st.last_error or "cancelled before it started"
        return "failed"
    if st.slurm_state:
        st.last_error = st.last_error or f"Slurm: {st.slurm_state} before the worker started"
        return "failed"
    return "pending"


def format_status(rows: Sequence[TaskStatus], *, folder: str = "") -> str:
    counts = {s: 0 for s in STATES}
    cells = [0, 0]
    for r in rows:
        counts[r.state] += 1
        cells[0] += r.cells_done
        cells[1] += r.cells_expected
    head = ", ".join(f"{counts[s]} {s}" for s in STATES if counts[s])
    lines = [
        f"{folder}: {len(rows)} task(s): {head or 'none'}; cells {cells[0]}/{cells[1]}",
    ]
    for r in rows:
        slurm = f" [{r.slurm_state}]" if r.slurm_state else ""
        lines.append(
            f"  {r.state:<8}{slurm} {r.task_id:<56} cells {r.cells_done}/{r.cells_expected}"
            f"  job {r.job_id or '-'}"
        )
        if r.state in ("failed", "running") or r.last_error:
            if r.last_error:
                lines.append(f"      error: {r.last_error}")
            if r.log:
                lines.append(f"      log:   {r.log}")
    return "\n".join(lines)


# ============================================================================================
# resubmit / cancel


def resubmit(
    run: str | os.PathLike,
    *,
    profile: Profile | None = None,
    overrides: Mapping[str, str] | Iterable[str] = (),
    container: str | None = "same",
    dry_run: bool = False,
    max_array_size: int | None = None,
) -> SubmitResult:
    """``hpc-forget resubmit RUN``: submit only the failed and missing tasks (a resubmitted
    chain runs only the steps the store lacks) into the same run folder. Tasks Slurm still
    holds are left alone. By default the submission's own profile and container are reused;
    ``overrides`` (``--slurm KEY=VALUE``) apply to whichever profile is used."""
    folder = resolve_run_folder(run)
    sub = read_submission(folder)
    prof = with_overrides(profile or profile_from_dict(sub["profile"]), overrides)
    image = resolve_image(sub["container"] if container == "same" else container, dry_run=dry_run)
    rows = status(folder).tasks
    alive = set() if dry_run else sbatch.alive_elements(a["job_id"] for a in sub["arrays"])
    todo_ids = {
        r.task_id for r in rows if r.state in ("failed", "missing") and r.job_id not in alive
    }
    known = _submitted_tasks(folder, sub)
    if todo_ids - set(known):  # never submitted: take them from the plan
        known.update({t["task_id"]: t for t in _planned(sub) if t["task_id"] not in known})
    todo = [known[r.task_id] for r in rows if r.task_id in todo_ids]
    n = 1 + max(
        (int(a["name"].split("-", 1)[0][1:]) for a in sub["arrays"] if a["name"].startswith("r")),
        default=0,
    )
    layout = JobLayout(**sub["layout"])
    notes: list[str] = []
    if image is not None and not dry_run:
        notes.append(sbatch.check_image_versions(image))
    limit = max_array_size or sub.get("max_array_size") or prof.max_array_size
    arrays = plan_arrays(
        config=sub["config"],
        tasks=todo,
        profile=prof,
        layout=layout,
        image=image,
        python=prof.python or sys.executable,
        max_array_size=limit,
        environment=environment_facts(),
        created_at=utc_now(),
        prefix=f"r{n}-",
        name=sub["config_name"],
    )
    if dry_run:
        return SubmitResult(
            run_folder=str(folder), notes=notes, dry_run_text=format_dry_run(arrays, notes=notes)
        )
    if not arrays:
        return SubmitResult(
            run_folder=str(folder), notes=["nothing to resubmit: no failed or missing task"]
        )
    sub["profile"] = prof.as_dict()
    sub["container"] = image
    return launch(folder, sub, arrays, prof, skipped=0, notes=notes)


def cancel(run: str | os.PathLike) -> list[str]:
    """``hpc-forget cancel RUN``: scancel every array of the run (one call); returns the job
    ids. Tasks that had not started show as failed ("cancelled") in status; resubmit reruns
    them."""
    folder = resolve_run_folder(run)
    sub = read_submission(folder)
    ids = [a["job_id"] for a in sub["arrays"] if a.get("job_id") and not a.get("cancelled_at")]
    if ids:
        sbatch.scancel(ids)
        stamp = utc_now()
        for a in sub["arrays"]:
            if a.get("job_id") in ids:
                a["cancelled_at"] = stamp
        write_json(folder / "submission.json", sub)
    return ids
