"""Run folders: the layout and the files of one submission (docs/slurm.md).

``RUN/submission.json`` (the record: config, profile, container, layout, arrays and their job
ids), ``RUN/plan.json`` (what status needs of every planned task), ``manifests/``,
``scripts/``, ``logs/`` and the task markers in ``tasks/`` (:mod:`hpc_forget.cluster.contract`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc_forget.errors import SlurmError

SUBMISSION_FORMAT = "hpc-forget-submission"
SUBMISSION_VERSION = 1


PLAN_FILE = "plan.json"
PLAN_COLUMNS = ["task_id", "run_id", "method", "kind", "n_languages", "step_indices"]


def slurm_filename(path: str) -> str:
    """Escape ``%`` for sbatch's --output filename patterns."""
    return path.replace("%", "%%")


@dataclass(frozen=True)
class JobLayout:
    """Paths of one submission (all absolute)."""

    run_folder: str
    workdir: str
    store: str
    cache_dir: str

    def manifest(self, array: str) -> str:
        return os.path.join(self.run_folder, "manifests", f"{array}.json")

    def script(self, array: str) -> str:
        return os.path.join(self.run_folder, "scripts", f"{array}.sbatch")

    def log_pattern(self, array: str) -> str:
        """The sbatch --output value (already %-escaped) for one array."""
        return slurm_filename(os.path.join(self.run_folder, "logs", array)) + "-%A_%a.log"

    @property
    def accelerate_config(self) -> str:
        return os.path.join(self.run_folder, "accelerate.yaml")


def default_run_folder(cfg: Any, now: _dt.datetime | None = None) -> Path:
    """``<store's parent>/slurm/<name>-<UTC time>``: next to the store, on the same (shared)
    filesystem."""
    now = now or _dt.datetime.now(_dt.UTC)
    return Path(cfg.store).absolute().parent / "slurm" / f"{cfg.name}-{now:%Y%m%d-%H%M%S}"


def resolve_run_folder(spec: str | os.PathLike) -> Path:
    """A run folder, or a folder of run folders (the newest is taken)."""
    p = Path(spec)
    if (p / "submission.json").is_file():
        return p
    if p.is_dir():
        subs = sorted(
            (c for c in p.iterdir() if (c / "submission.json").is_file()),
            key=lambda c: c.name,
        )
        if subs:
            return subs[-1]
        if (p / "slurm").is_dir():
            return resolve_run_folder(p / "slurm")
    raise SlurmError(
        f"{spec}: not a run folder (no submission.json); pass the folder that"
        " `hpc-forget submit` printed"
    )


def read_submission(run_folder: Path) -> dict:
    path = run_folder / "submission.json"
    try:
        sub = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SlurmError(f"{path}: cannot read ({exc.strerror})") from None
    except ValueError as exc:
        raise SlurmError(f"{path}: not valid JSON ({exc})") from None
    if sub.get("format") != SUBMISSION_FORMAT or sub.get("version") != SUBMISSION_VERSION:
        raise SlurmError(
            f"{path}: not an hpc-forget submission record of version {SUBMISSION_VERSION}"
        )
    return sub


def plan_rows(tasks: Sequence[dict]) -> list[list]:
    """What status needs of every planned task, compactly (10,000 tasks: about 1 MB):
    ``[task_id, run_id, method, kind, n_languages, step_indices]``."""
    return [
        [t["task_id"], t["run_id"], t["key"]["method"], t["kind"], len(t["languages"]),
         list(t["step_indices"])]
        for t in tasks
    ]  # fmt: skip
