"""The calls to the cluster, each small: ``scontrol show config`` (array limits), ``sbatch``,
``sacct``, ``squeue``, ``scancel``, and the probe of an Apptainer image. Every command runs
through ``_run``, which turns a missing command or a timeout into one SlurmError line.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence

from hpc_forget.cluster.containers import image_probe_argv
from hpc_forget.cluster.contract import environment_facts
from hpc_forget.errors import SlurmError


def _run(argv: Sequence[str], *, timeout: float = 60) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise SlurmError(
            f"{argv[0]}: not found; run this on a Slurm login node (or start the local cluster:"
            " bash slurm/cluster-up.sh), or use --dry-run"
        ) from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{argv[0]}: no answer within {timeout:.0f} s; is slurmctld up?") from None


def array_limits(scontrol_config: str) -> dict[str, int]:
    """The cluster's limits on one job array, from ``scontrol show config``: ``MaxArraySize``
    (indices must stay below it) and ``SchedulerParameters=max_array_tasks=N`` (at most N
    elements per array), which some sites set lower."""
    out: dict[str, int] = {}
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", scontrol_config, re.M)
    if m:
        out["MaxArraySize"] = int(m.group(1))
    m = re.search(r"^SchedulerParameters\s*=\s*(\S*)", scontrol_config, re.M)
    if m:
        t = re.search(r"(?:^|,)max_array_tasks=(\d+)", m.group(1))
        if t:
            out["max_array_tasks"] = int(t.group(1))
    return out


def query_array_limits() -> dict[str, int]:
    """array_limits of this cluster ({} if scontrol is missing or does not answer)."""
    if shutil.which("scontrol") is None:
        return {}
    try:
        out = _run(["scontrol", "show", "config"], timeout=20)
    except SlurmError:
        return {}
    return array_limits(out.stdout) if out.returncode == 0 else {}


def query_max_array_size() -> int | None:
    """How many tasks one array may hold here: the smaller of MaxArraySize and
    max_array_tasks (arrays are indexed 0..count-1), or None if unknown."""
    limits = query_array_limits()
    return min(limits.values()) if limits else None


def check_image_versions(image: str) -> str:
    """Compare the image's hpc-forget with this one; a note, or SlurmError on mismatch."""
    if shutil.which("apptainer") is None:
        return (
            f"image {image} not checked: apptainer is not installed here; the worker checks the"
            " versions when the job starts"
        )
    res = _run(image_probe_argv(image), timeout=300)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise SlurmError(f"--container: {image}: cannot run python in the image ({last})")
    try:
        facts = json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise SlurmError(
            f"--container: {image}: unexpected answer {res.stdout.strip()!r}"
        ) from None
    here = environment_facts()
    if facts.get("package_version") != here["package_version"]:
        raise SlurmError(
            f"--container: {image} has hpc-forget {facts.get('package_version')} (Python"
            f" {facts.get('python')}) but this is hpc-forget {here['package_version']} (Python"
            f" {here['python']}); rebuild the image (docs/containers.md) or install the same version"
        )
    return (
        f"image {image}: hpc-forget {facts['package_version']}, Python {facts.get('python')}"
        f" (host Python {here['python']}; tasks cross as JSON, so Python versions may differ)"
    )


def sbatch_submit(script_path: str, *, size: int | None = None) -> str:
    """One sbatch call; returns the job id. ``size``: the array's element count, named in the
    error when sbatch rejects the array."""
    res = _run(["sbatch", "--parsable", script_path])
    if res.returncode != 0:
        msg = (res.stderr.strip() or res.stdout.strip() or "no output").splitlines()[-1]
        if "array" in msg.lower() and size is not None:
            msg += (
                f"; this array has {size} task(s): the site may limit arrays below MaxArraySize"
                " (SchedulerParameters=max_array_tasks, or a QOS); lower the profile's"
                " max_array_size (--slurm max_array_size=N) and resubmit"
            )
        raise SlurmError(f"sbatch {script_path}: {msg}")
    job_id = res.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise SlurmError(f"sbatch {script_path}: unexpected answer {res.stdout.strip()!r}")
    return job_id


def sacct_states(job_ids: Iterable[str]) -> dict[str, str]:
    """``"<array job id>_<index>" -> State`` for the given array jobs, in one sacct call
    (parsed by submitit's SlurmInfoWatcher.read_info)."""
    from submitit.slurm.slurm import SlurmInfoWatcher

    ids = sorted({j for j in job_ids if j})
    if not ids:
        return {}
    res = _run(["sacct", "-o", "JobID,State", "--parsable2", "-j", ",".join(ids)], timeout=60)
    if res.returncode != 0:
        msg = (res.stderr.strip() or "no output").splitlines()[-1]
        raise SlurmError(f"sacct: {msg}; run status without --sacct")
    # A pending range ("123_[7-9]") can be listed after elements of it that already started;
    # read ranges first so the elements' own lines win.
    lines = res.stdout.splitlines()
    body = sorted(lines[1:], key=lambda line: "[" not in line.split("|", 1)[0])
    info = SlurmInfoWatcher().read_info("\n".join(lines[:1] + body))
    return {k: v.get("State", "").split(" ")[0] for k, v in info.items()}


def alive_elements(job_ids: Iterable[str]) -> set[str]:
    """Array elements Slurm still holds (pending, running, requeued): one squeue call."""
    ids = sorted({j for j in job_ids if j})
    if not ids:
        return set()
    res = _run(["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(ids)], timeout=60)
    if res.returncode != 0:
        # squeue fails when none of the ids is known any more
        return set()
    return {line.strip() for line in res.stdout.splitlines() if line.strip()}


def scancel(job_ids: Sequence[str]) -> None:
    """One scancel call for every job id; SlurmError (one line) when scancel fails."""
    res = _run(["scancel", *job_ids], timeout=60)
    if res.returncode != 0:
        msg = (res.stderr.strip() or "no output").splitlines()[-1]
        raise SlurmError(f"scancel: {msg}")
