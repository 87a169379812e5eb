"""``hpc-forget submit``: plan the config, drop the tasks the store already holds, group the
rest into arrays and submit each with one ``sbatch`` call; returns as soon as sbatch has
answered. See docs/slurm.md.

- ``chains`` (VANILLA and SHARED LoRA): one element per order/rank/seed chain, running its
  steps in order and resuming from the checkpoint of its last finished step;
  ``independent`` (MULTI, and MONO / NON-SHARED LoRA per language).
- Arrays larger than the cluster's MaxArraySize (or max_array_tasks) are split.
- Each array element runs ``python -m hpc_forget.worker MANIFEST`` (in an Apptainer image or on
  the host), which reads its task from the manifest by ``SLURM_ARRAY_TASK_ID``.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpc_forget.cluster import sbatch
from hpc_forget.cluster.containers import ContainerError, accelerate_config, check_image
from hpc_forget.cluster.contract import environment_facts
from hpc_forget.cluster.profiles import Profile
from hpc_forget.cluster.runfolder import (
    PLAN_COLUMNS,
    PLAN_FILE,
    SUBMISSION_FORMAT,
    SUBMISSION_VERSION,
    JobLayout,
    default_run_folder,
    plan_rows,
)
from hpc_forget.cluster.scripts import (
    ArrayJob,
    check_script_values,
    format_dry_run,
    plan_arrays,
    task_record,
)
from hpc_forget.errors import SlurmError
from hpc_forget.files import utc_now, write_json


@dataclass
class SubmitResult:
    run_folder: str
    arrays: list[dict] = field(default_factory=list)  # name, group, size, job_id, script, manifest
    skipped_done: int = 0
    notes: list[str] = field(default_factory=list)
    dry_run_text: str | None = None

    def summary(self) -> str:
        if self.dry_run_text is not None:
            return self.dry_run_text
        n = sum(a["size"] for a in self.arrays)
        lines = [
            f"submitted {n} task(s) in {len(self.arrays)} array(s); run folder: {self.run_folder}"
        ]
        for a in self.arrays:
            jobs = len(a.get("elements") or ()) or a["size"]
            packed = f" in {jobs} element(s)" if jobs != a["size"] else ""
            lines.append(f"  {a['name']:<16} job {a['job_id']:<10} {a['size']} task(s){packed}")
        if self.skipped_done:
            lines.append(
                f"  {self.skipped_done} task(s) already complete in the store were not submitted"
            )
        lines += [f"  note: {n}" for n in self.notes]
        lines.append(f"follow it with: hpc-forget status {shlex.quote(self.run_folder)}")
        return "\n".join(lines)


def resolve_image(container: str | None, *, dry_run: bool) -> str | None:
    """``--container``: None/"none" for the host, else the image's absolute path."""
    if container in (None, "none"):
        return None
    try:
        image = check_image(container)
    except ContainerError as exc:
        raise SlurmError(str(exc)) from None
    if not dry_run and not os.path.isfile(image):
        raise SlurmError(
            f"--container: {image}: no such image; build it (docs/containers.md) or pass --container none"
        )
    return image


def _job_config(cfg: Any) -> tuple[dict, str, str]:
    """The config as jobs get it, and the absolute store and cache paths (relative paths
    resolve against the job's working directory, which is the submit directory)."""
    from hpc_forget.study.config import config_to_dict

    store = str(Path(cfg.store).absolute())
    cache = str(Path(cfg.cache_dir).absolute()) if cfg.cache_dir else os.path.join(store, "cache")
    return config_to_dict(cfg), store, cache


def _describe_limit(limit: int, profile: Profile, cluster: Mapping[str, int]) -> str:
    parts = [f"{k}={v}" for k, v in sorted(cluster.items())]
    parts.append(f"profile max_array_size={profile.max_array_size}")
    return f"arrays split at {limit} tasks ({', '.join(parts)})"


def check_gpus(gpus: int, processes: int) -> None:
    """One GPU per task is the default; several are an explicit choice made twice: the
    profile's gres asks Slurm for them and ``train.processes`` (part of the run identity: the
    effective batch is batch_size x processes) says the runs train data parallel on them."""
    if gpus > 1 and processes != gpus:
        raise SlurmError(
            f"the profile asks for {gpus} GPUs per task but train.processes is {processes}:"
            f" use gres gpu:{processes} (one GPU per task is the default), or set"
            f" train.processes: {gpus} to train each run on {gpus} GPUs (new run ids)"
        )
    if processes > 1 and gpus != processes:
        raise SlurmError(
            f"train.processes is {processes} but the profile gives {gpus} GPU(s) per task:"
            f" set gres gpu:{processes} (one process per GPU)"
        )


def submit(
    cfg: Any,
    profile: Profile,
    *,
    container: str | None = None,
    dry_run: bool = False,
    run_folder: str | os.PathLike | None = None,
    max_array_size: int | None = None,
    tasks: Sequence[Any] | None = None,
    workdir: str | os.PathLike | None = None,
    pack: int | None = None,
) -> SubmitResult:
    """``hpc-forget submit``: one sbatch call per array; returns once sbatch has answered.

    ``container`` is an image path, or None / "none" for the host environment. With
    ``dry_run`` nothing is written or submitted and no Slurm is needed: the result's
    ``dry_run_text`` holds every script. ``pack`` (``--pack N``) overrides the profile's
    ``tasks_per_job``.
    """
    from hpc_forget.study.planning import plan

    if pack is not None:
        if pack < 1:
            raise SlurmError(f"--pack: must be an integer >= 1, got {pack}")
        profile = dataclasses.replace(profile, tasks_per_job=pack)

    check_gpus(profile.gpus, cfg.train.processes)
    image = resolve_image(container, dry_run=dry_run)
    config, store, cache = _job_config(cfg)
    folder = Path(run_folder).absolute() if run_folder else default_run_folder(cfg)
    layout = JobLayout(
        run_folder=str(folder),
        workdir=str(Path(workdir or os.getcwd()).absolute()),
        store=store,
        cache_dir=cache,
    )
    check_script_values(
        layout, profile, image=image, python=profile.python or sys.executable, job_name=cfg.name
    )
    if (folder / "submission.json").exists() and not dry_run:
        raise SlurmError(
            f"{folder}: already holds a submission; use `hpc-forget resubmit {folder}` or"
            " another --run-folder"
        )
    records = [task_record(t) for t in plan(cfg)]
    if tasks is not None:  # a subset to submit; the plan (and status) keeps every task
        wanted = {t.task_id for t in tasks}
        chosen = [r for r in records if r["task_id"] in wanted]
    else:
        chosen = records
    from hpc_forget.store.store import Store

    held = Store(store)
    listed: dict[str, set[int]] = {}  # run_id -> steps in the store (a chain's tasks share it)
    todo = []
    for t in chosen:
        if t["run_id"] not in listed:
            listed[t["run_id"]] = held.listed_steps(t["run_id"])
        if not set(t["step_indices"]) <= listed[t["run_id"]]:
            todo.append(t)
    notes: list[str] = []
    cluster = sbatch.query_array_limits() if max_array_size is None else {}
    cluster_max = min(cluster.values()) if cluster else None
    limit = min(x for x in (max_array_size, cluster_max, profile.max_array_size) if x is not None)
    if image is not None and not dry_run:
        notes.append(sbatch.check_image_versions(image))
    elif image is not None:
        notes.append(f"image {image}: versions not checked in a dry run")
    created = utc_now()
    arrays = plan_arrays(
        config=config,
        tasks=todo,
        profile=profile,
        layout=layout,
        image=image,
        python=profile.python or sys.executable,
        max_array_size=limit,
        environment=environment_facts(),
        created_at=created,
        name=cfg.name,
    )
    skipped = len(chosen) - len(todo)
    if dry_run:
        if skipped:
            notes.append(f"{skipped} task(s) already complete in the store are left out")
        notes.append(_describe_limit(limit, profile, cluster))
        return SubmitResult(
            run_folder=str(folder),
            skipped_done=skipped,
            notes=notes,
            dry_run_text=format_dry_run(arrays, notes=notes),
        )
    submission = {
        "format": SUBMISSION_FORMAT,
        "version": SUBMISSION_VERSION,
        "created_at": created,
        "config_name": cfg.name,
        "config": config,
        "profile": profile.as_dict(),
        "container": image,
        "layout": dataclasses.asdict(layout),
        "max_array_size": limit,
        "arrays": [],
    }
    Store(store).check_writable()  # the jobs write there: fail here, in one line, if they cannot
    if not arrays:
        notes.append("nothing to submit: every task is complete in the store")
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / PLAN_FILE, {"columns": PLAN_COLUMNS, "tasks": plan_rows(records)})
    return launch(folder, submission, arrays, profile, skipped=skipped, notes=notes)


def launch(
    folder: Path,
    submission: dict,
    arrays: list[ArrayJob],
    profile: Profile,
    *,
    skipped: int,
    notes: list[str],
) -> SubmitResult:
    """Write manifests and scripts, sbatch each array, record the job ids."""
    layout = JobLayout(**submission["layout"])
    for sub in ("manifests", "scripts", "logs", "tasks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    if profile.gpus > 1:
        Path(layout.accelerate_config).write_text(
            yaml.safe_dump(accelerate_config(profile.gpus), sort_keys=True), encoding="utf-8"
        )
    write_json(folder / "submission.json", submission)
    result = SubmitResult(run_folder=str(folder), skipped_done=skipped, notes=notes)
    for a in arrays:
        write_json(Path(a.manifest_path), a.manifest)
        Path(a.script_path).write_text(a.script, encoding="utf-8")
        a.job_id = sbatch.sbatch_submit(a.script_path, size=a.n_elements)
        rec = {
            "name": a.name,
            "group": a.group,
            "size": a.size,
            "job_id": a.job_id,
            "script": os.path.relpath(a.script_path, folder),
            "manifest": os.path.relpath(a.manifest_path, folder),
            "task_ids": [t["task_id"] for t in a.tasks],
            "elements": a.elements or [[i] for i in range(a.size)],
            "submitted_at": utc_now(),
            "cancelled_at": None,
        }
        submission["arrays"].append(rec)
        write_json(folder / "submission.json", submission)  # after each sbatch: never lose an id
        result.arrays.append(rec)
    return result
