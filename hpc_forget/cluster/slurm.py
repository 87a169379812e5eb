"""Slurm: cluster profiles, sbatch scripts (pure), job arrays, status, resubmit, cancel.

See docs/slurm.md. The shape of a submission:

- ``submit`` plans the config, drops tasks the store already holds, and groups the rest into
  arrays: ``chains`` (VANILLA and SHARED LoRA: one element per order/rank/seed chain, running
  its steps in order and resuming from the checkpoint of its last finished step) and
  ``independent`` (MULTI, and MONO / NON-SHARED LoRA per language). Arrays larger than the
  cluster's MaxArraySize are split; each array is one ``sbatch`` call; ``submit`` returns as soon
  as sbatch has answered.
- Each array element runs ``python -m hpc_forget.worker MANIFEST`` (in an Apptainer image or on
  the host), which reads its task from a JSON manifest by ``SLURM_ARRAY_TASK_ID``.
- The batch script runs the worker in the background and traps the ``--signal=B:USR1@lead``
  warning; the worker checkpoints and exits with EXIT_PREEMPTED, and the batch script (on the
  host, where ``scontrol`` exists) requeues the job.

The run folder holds everything of one submission: ``submission.json``, ``manifests/``,
``scripts/``, ``logs/`` and the per-task markers in ``tasks/``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpc_forget.cluster.containers import (
    OFFLINE_ENV,
    ContainerError,
    accelerate_config,
    check_image,
    check_text,
    container_command,
    image_probe_argv,
    job_binds,
    launcher_argv,
    shorten,
)
from hpc_forget.cluster.worker import (
    EXIT_PREEMPTED,
    STALE_S,
    build_manifest,
    environment_facts,
    log_path,
    read_marker,
)
from hpc_forget.errors import SlurmError, UserError
from hpc_forget.study.config import load_yaml_unique

SUBMISSION_FORMAT = "hpc-forget-submission"
SUBMISSION_VERSION = 1
STATES = ("pending", "running", "done", "failed", "missing")
GROUPS = ("chains", "independent")
PROFILE_ENV = "HPC_FORGET_PROFILES"


# ============================================================================================
# profiles


@dataclass(frozen=True)
class Profile:
    """A cluster profile: where and how big the jobs are. Times are in minutes."""

    name: str = "default"
    source: str = "<defaults>"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gres: str | None = None
    cpus_per_task: int = 1
    mem: str | None = None
    time: int = 60
    chain_time: int | None = None
    constraint: str | None = None
    sbatch: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()
    max_array_size: int = 1001
    array_throttle: int | None = None
    signal_lead_s: int = 120
    max_requeues: int = 10
    python: str | None = None
    container_python: str = "python"
    nv: bool = True

    @property
    def gpus(self) -> int:
        return gpus_from_gres(self.gres)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["sbatch"] = list(self.sbatch)
        d["setup"] = list(self.setup)
        return d


_INT_FIELDS = {"cpus_per_task": 1, "max_array_size": 1, "signal_lead_s": 0, "max_requeues": 0}
_OPT_INT_FIELDS = {"array_throttle": 1}
_TIME_FIELDS = ("time", "chain_time")
_STR_FIELDS = ("partition", "account", "qos", "gres", "mem", "constraint", "python")
_LIST_FIELDS = ("sbatch", "setup")
_BOOL_FIELDS = ("nv",)
PROFILE_KEYS = tuple(
    f.name for f in dataclasses.fields(Profile) if f.name not in ("name", "source")
)
_NULLS = ("", "null", "none", "~", "None", "Null", "NULL")


def parse_time(value: str, where: str) -> int:
    """Slurm time formats (minutes, M:S, H:M:S, D-H, D-H:M, D-H:M:S) -> whole minutes, rounded
    up as Slurm does."""
    s = str(value).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", s)
    if not m or not s:
        raise SlurmError(
            f"{where}: {value!r} is not a Slurm time; use minutes, H:MM:SS or D-HH:MM:SS"
        )
    days, a, b, c = m.groups()
    if days is not None:  # D-H[:M[:S]]
        secs = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif b is None:  # minutes
        secs = int(a) * 60
    elif c is None:  # M:S
        secs = int(a) * 60 + int(b)
    else:  # H:M:S
        secs = int(a) * 3600 + int(b) * 60 + int(c)
    minutes = -(-secs // 60)
    if minutes < 1:
        raise SlurmError(f"{where}: {value!r} is shorter than Slurm's smallest limit (1 minute)")
    return minutes


def gpus_from_gres(gres: str | None) -> int:
    """GPUs per job from a gres string such as ``gpu:2`` or ``gpu:a100:2`` (0 if none)."""
    if not gres:
        return 0
    total = 0
    for part in gres.split(","):
        bits = part.strip().split(":")
        if bits[0] != "gpu":
            continue
        total += int(bits[-1]) if len(bits) > 1 and bits[-1].isdigit() else 1
    return total


def sbatch_options(lines: Sequence[str], where: str) -> dict[str, Any]:
    """Extra ``--key=value`` / ``--flag`` lines (``#SBATCH`` prefix allowed) as submitit's
    additional_parameters."""
    out: dict[str, Any] = {}
    for i, line in enumerate(lines):
        check_text(line, f"{where}[{i}]", SlurmError)
        s = line.strip()
        if s.startswith("#SBATCH"):
            s = s[len("#SBATCH") :].strip()
        m = re.fullmatch(r"--([A-Za-z][A-Za-z0-9-]*)(?:[= ](.+))?", s)
        if not m:
            raise SlurmError(
                f"{where}[{i}]: {line!r} is not an sbatch option; write it as --name=value or --flag"
            )
        key, value = m.group(1).replace("-", "_"), m.group(2)
        if key in ("array", "output", "error", "signal", "job_name", "chdir", "requeue"):
            raise SlurmError(
                f"{where}[{i}]: --{m.group(1)} is set by hpc-forget; remove it from the profile"
            )
        out[key] = True if value is None else value.strip()
    return out


# Names sbatch accepts for --partition (a comma-separated list), --account and --qos.
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
# One --gres entry: name[[:type]:count], e.g. gpu, gpu:2, gpu:a100:2, shard:4
_GRES_RE = re.compile(
    r"(?P<name>[A-Za-z][A-Za-z0-9_.-]*)(?::(?P<type>[A-Za-z0-9_.-]*[A-Za-z_.-][A-Za-z0-9_.-]*))?"
    r"(?::(?P<count>[0-9]+[KMGT]?))?"
)
# --constraint: features joined by & | , with optional [ ] ( ) and *count
_CONSTRAINT_RE = re.compile(r"[A-Za-z0-9_.\-&|,\[\]()*!:]+")
_MEM_RE = re.compile(r"[0-9]+[KMGTkmgt]?")
_MAX_SIGNAL_LEAD_S = 65535  # sbatch --signal: sig_time must be in 0..65535
_UPPER = {"signal_lead_s": _MAX_SIGNAL_LEAD_S}


def check_gres(s: str, where: str) -> str:
    """``s`` if every comma-separated entry is ``name[[:type]:count]``; SlurmError otherwise."""
    for part in s.split(","):
        if not _GRES_RE.fullmatch(part):
            raise SlurmError(
                f"{where}: {s!r} is not a gres list sbatch accepts; write name[[:type]:count]"
                " entries such as gpu:1 or gpu:a100:2, separated by commas"
            )
    return s


def _check_str(key: str, s: str, w: str) -> str:
    """Validate a profile string by what sbatch accepts for that key."""
    if key == "mem" and not _MEM_RE.fullmatch(s):
        raise SlurmError(f"{w}: {s!r} is not a Slurm memory size; use e.g. 16G or 4000M")
    if key == "gres":
        return check_gres(s, w)
    if key in ("partition", "account", "qos"):
        names = s.split(",") if key == "partition" else [s]
        if not all(_NAME_RE.fullmatch(n) for n in names):
            what = (
                "a partition name (or a comma-separated list)"
                if key == "partition"
                else (f"a Slurm {key} name")
            )
            raise SlurmError(f"{w}: {s!r} is not {what}; use letters, digits, '_', '.', '+' or '-'")
    if key == "constraint" and not _CONSTRAINT_RE.fullmatch(s):
        raise SlurmError(
            f"{w}: {s!r} is not a Slurm feature expression such as a100 or 'a100|h100'"
        )
    return s


def _coerce(key: str, value: Any, where: str) -> Any:
    """A profile value (a string from YAML's BaseLoader or the command line) to its type,
    validated by what sbatch accepts for the key."""
    w = f"{where}: {key}"
    if key in _LIST_FIELDS:
        if isinstance(value, str):
            check_text(value, w, SlurmError)
            if value.strip().startswith("["):
                try:
                    value = yaml.safe_load(value)
                except yaml.YAMLError as exc:
                    first = str(exc).strip().splitlines()[0]
                    raise SlurmError(
                        f"{w}: {shorten(value)} is not a YAML list ({first}); write"
                        ' ["item", "item"] or a single item'
                    ) from None
            else:
                value = [] if value in _NULLS else [value]
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise SlurmError(f"{w}: must be a list of strings, got {shorten(value)}")
        for i, x in enumerate(value):
            check_text(x, f"{w}[{i}]", SlurmError)
        return tuple(value)
    if isinstance(value, list | dict):
        raise SlurmError(f"{w}: must be a single value, got {shorten(value)}")
    check_text(str(value), w, SlurmError)
    s = str(value).strip()
    if key in _TIME_FIELDS:
        if key == "chain_time" and s in _NULLS:
            return None
        return parse_time(s, w)
    if key in _INT_FIELDS or key in _OPT_INT_FIELDS:
        if key in _OPT_INT_FIELDS and s in _NULLS:
            return None
        lo = {**_INT_FIELDS, **_OPT_INT_FIELDS}[key]
        hi = _UPPER.get(key)
        if not re.fullmatch(r"[0-9]+", s) or int(s) < lo or (hi is not None and int(s) > hi):
            rng = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
            raise SlurmError(f"{w}: must be an integer {rng}, got {shorten(value)}")
        return int(s)
    if key in _BOOL_FIELDS:
        if s.lower() in ("true", "yes", "1", "on"):
            return True
        if s.lower() in ("false", "no", "0", "off"):
            return False
        raise SlurmError(f"{w}: must be true or false, got {shorten(value)}")
    if key in _STR_FIELDS:
        if s in _NULLS:
            return None
        return _check_str(key, s, w)
    if key == "container_python":
        if not s:
            raise SlurmError(f"{w}: must be a command name such as python")
        return s
    raise SlurmError(f"{where}: {key}: unknown key; allowed: {', '.join(PROFILE_KEYS)}")


def profile_from_mapping(raw: Mapping[str, Any], *, name: str, source: str) -> Profile:
    kw: dict[str, Any] = {}
    for key, value in raw.items():
        kw[key] = _coerce(str(key), value, source)
    prof = Profile(name=name, source=source, **kw)
    return _validated(prof)


def _validated(p: Profile) -> Profile:
    if p.signal_lead_s >= min(p.time, p.chain_time or p.time) * 60:
        raise SlurmError(
            f"{p.source}: signal_lead_s: {p.signal_lead_s} s is not shorter than the time limit"
            f" ({min(p.time, p.chain_time or p.time)} min); lower it or raise time"
        )
    sbatch_options(p.sbatch, f"{p.source}: sbatch")
    return p


def profile_dirs() -> list[Path]:
    """Where ``--profile NAME`` is looked up, in order."""
    dirs = []
    if os.environ.get(PROFILE_ENV):
        dirs.append(Path(os.environ[PROFILE_ENV]))
    dirs.append(Path.cwd() / "slurm" / "profiles")
    dirs.append(Path(__file__).resolve().parents[2] / "slurm" / "profiles")
    out: list[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def find_profile(spec: str) -> Path:
    p = Path(spec)
    if p.suffix in (".yaml", ".yml") or os.sep in spec:
        if not p.is_file():
            raise SlurmError(f"--profile: {spec}: no such file")
        return p
    for d in profile_dirs():
        for ext in (".yaml", ".yml"):
            if (d / f"{spec}{ext}").is_file():
                return d / f"{spec}{ext}"
    searched = ", ".join(str(d) for d in profile_dirs())
    raise SlurmError(f"--profile: no profile named {spec!r} in {searched}; pass a YAML path")


def parse_overrides(pairs: Iterable[str]) -> dict[str, str]:
    """``--slurm key=value`` strings (values stay strings; the profile types them)."""
    out: dict[str, str] = {}
    for p in pairs:
        if "=" not in p:
            raise SlurmError(
                f"--slurm: {shorten(p)}: use KEY=VALUE, e.g. time=2:00:00 or partition=gpu"
            )
        k, v = p.split("=", 1)
        check_text(k, "--slurm", SlurmError)
        k = k.strip().replace("-", "_")
        if not k:
            raise SlurmError(
                f"--slurm: {shorten(p)}: the key before '=' is empty; use KEY=VALUE, e.g."
                " time=2:00:00"
            )
        if k not in PROFILE_KEYS:
            raise SlurmError(
                f"--slurm: {k}: unknown profile key; allowed: {', '.join(PROFILE_KEYS)}"
            )
        out[k] = v
    return out


def load_profile(spec: str | None, overrides: Mapping[str, str] | Iterable[str] = ()) -> Profile:
    """A profile by name (slurm/profiles/NAME.yaml), path, or None (defaults), with overrides."""
    if spec is None:
        raw: dict[str, Any] = {}
        name, source = "default", "<defaults>"
    else:
        path = find_profile(spec)
        source, name = str(path), path.stem
        try:
            raw = load_yaml_unique(path.read_text(encoding="utf-8"), str(path), strings=True) or {}
        except yaml.YAMLError as exc:
            line = getattr(getattr(exc, "problem_mark", None), "line", None)
            where = f"{path}:{line + 1}" if line is not None else str(path)
            raise SlurmError(
                f"{where}: cannot parse the profile ({str(exc).splitlines()[0]})"
            ) from None
        if not isinstance(raw, dict):
            raise SlurmError(f"{path}: a profile is a mapping of keys to values")
        for k in raw:
            check_text(str(k), str(path), SlurmError)
            if k not in PROFILE_KEYS:
                raise SlurmError(f"{path}: {k}: unknown key; allowed: {', '.join(PROFILE_KEYS)}")
    return with_overrides(profile_from_mapping(raw, name=name, source=source), overrides)


def with_overrides(prof: Profile, overrides: Mapping[str, str] | Iterable[str] = ()) -> Profile:
    """``prof`` with ``--slurm KEY=VALUE`` overrides applied and validated."""
    if not isinstance(overrides, Mapping):
        overrides = parse_overrides(overrides)
    if not overrides:
        return prof
    kw = {k: _coerce(k, v, "--slurm") for k, v in overrides.items()}
    return _validated(dataclasses.replace(prof, **kw))


def profile_from_dict(d: Mapping[str, Any]) -> Profile:
    """Inverse of Profile.as_dict (used for submission.json)."""
    kw = dict(d)
    kw["sbatch"] = tuple(kw.get("sbatch", ()))
    kw["setup"] = tuple(kw.get("setup", ()))
    return Profile(**kw)


# ============================================================================================
# arrays and scripts (pure)


def split_array(n: int, max_size: int) -> list[tuple[int, int]]:
    """(start, count) chunks of ``n`` tasks; each chunk's indices 0..count-1 stay below
    MaxArraySize."""
    if max_size < 1:
        raise SlurmError(f"max_array_size must be >= 1, got {max_size}")
    return [(s, min(max_size, n - s)) for s in range(0, n, max_size)]


def array_range(count: int, throttle: int | None) -> str:
    """The ``--array`` value: ``0-(count-1)``, with ``%throttle`` when it limits anything."""
    spec = f"0-{count - 1}" if count > 1 else "0"
    if throttle is not None and throttle < count:
        spec += f"%{throttle}"
    return spec


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


def check_script_values(
    layout: JobLayout,
    profile: Profile,
    *,
    image: str | None,
    python: str,
    job_name: str = "",
    array: str = "",
) -> None:
    """Every value that reaches a generated sbatch script or command line, checked in one place
    for control characters (a newline would end an ``#SBATCH`` line or inject a command).
    SlurmError names the value and where it came from."""
    values: list[tuple[str, Any]] = [
        ("config store", layout.store),
        ("config cache_dir (or --cache)", layout.cache_dir),
        ("working directory", layout.workdir),
        ("--run-folder", layout.run_folder),
        ("--container", image),
    ]
    for f in dataclasses.fields(Profile):
        v = getattr(profile, f.name)
        items = list(enumerate(v)) if isinstance(v, tuple) else [(None, v)]
        for i, x in items:
            label = f"{profile.source}: {f.name}" + ("" if i is None else f"[{i}]")
            values.append((label, x))
    values += [
        ("python (this interpreter's path)", python),
        ("config name (the job name)", job_name),
        ("array name", array),
    ]
    for label, v in values:
        check_text(v, label, SlurmError)


def worker_command(
    layout: JobLayout,
    array: str,
    profile: Profile,
    *,
    image: str | None,
    python: str,
) -> str:
    """The container (or host) command lines that run one array element's worker, without
    the trailing ``&``: environment exports, then the command."""
    check_script_values(layout, profile, image=image, python=python, array=array)
    py = profile.container_python if image is not None else python
    inner = launcher_argv(
        py,
        [layout.manifest(array)],
        gpus=profile.gpus,
        accelerate_config_file=layout.accelerate_config if profile.gpus > 1 else None,
    )
    env = dict(OFFLINE_ENV)
    env["HF_HOME"] = os.path.join(layout.cache_dir, "hf-home")
    binds = job_binds(layout.store, layout.cache_dir, layout.run_folder, layout.workdir)
    return container_command(image, inner, binds=binds, env=env, nv=profile.nv)


def batch_body(command: str, *, max_requeues: int, gpus: int) -> str:
    """The script body: run the worker in the background, forward Slurm's signals to it, and
    requeue the job from the host side when the worker stopped for the USR1 warning."""
    port = []
    if gpus > 1:
        port = ["hpcf_port=$((20000 + ${SLURM_JOB_ID:-0} % 20000))  # per-job rendezvous port"]
    cmd_lines = command.split("\n")
    return "\n".join(
        [
            "# one thread per allocated CPU unless the profile's setup chose otherwise",
            'export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"',
            'export MKL_NUM_THREADS="${MKL_NUM_THREADS:-$OMP_NUM_THREADS}"',
            *port,
            *cmd_lines[:-1],
            "hpcf_signal=",
            "hpcf_pid=",
            "hpcf_forward() {",
            "    hpcf_signal=$1",
            '    echo "hpc-forget: batch script got SIG$1; forwarding it to the worker" >&2',
            '    if [ -n "$hpcf_pid" ]; then kill -s "$1" "$hpcf_pid" 2>/dev/null; fi',
            "}",
            "trap 'hpcf_forward USR1' USR1",
            "trap 'hpcf_forward TERM' TERM",
            f"{cmd_lines[-1]} &",
            "hpcf_pid=$!",
            "while :; do",
            '    wait "$hpcf_pid"',
            "    hpcf_rc=$?",
            '    kill -0 "$hpcf_pid" 2>/dev/null || break  # wait returned for a signal: wait again',
            "done",
            f'if [ "$hpcf_rc" -eq {EXIT_PREEMPTED} ] && [ "$hpcf_signal" = USR1 ] &&'
            f' [ "${{SLURM_RESTART_COUNT:-0}}" -lt {max_requeues} ]; then',
            "    # this element only: an element's SLURM_JOB_ID can equal the array's id,"
            " which names the whole array",
            '    hpcf_self="${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}"',
            '    hpcf_self="${hpcf_self:-$SLURM_JOB_ID}"',
            '    echo "hpc-forget: requeueing job $hpcf_self (restart'
            f' $((${{SLURM_RESTART_COUNT:-0}} + 1)) of at most {max_requeues})" >&2',
            '    scontrol requeue "$hpcf_self" && exit 0',
            "fi",
            'exit "$hpcf_rc"',
        ]
    )


def sbatch_script(
    *,
    layout: JobLayout,
    array: str,
    job_name: str,
    count: int,
    time_min: int,
    profile: Profile,
    image: str | None,
    python: str,
) -> str:
    """The complete sbatch script of one array (pure). Rendered by submitit's
    ``_make_sbatch_string``, which shell-quotes every #SBATCH value."""
    from submitit.slurm.slurm import _make_sbatch_string

    check_script_values(layout, profile, image=image, python=python, job_name=job_name, array=array)
    extra = sbatch_options(profile.sbatch, f"{profile.source}: sbatch")
    params: dict[str, Any] = {
        "array": array_range(count, profile.array_throttle),
        "output": layout.log_pattern(array),
        "signal": f"B:USR1@{profile.signal_lead_s}",
        "requeue": True,
        "chdir": layout.workdir,
        **extra,
    }
    command = worker_command(layout, array, profile, image=image, python=python)
    body = batch_body(command, max_requeues=profile.max_requeues, gpus=profile.gpus)
    text = _make_sbatch_string(
        command=body,
        folder=os.path.join(layout.run_folder, "logs"),
        job_name=job_name,
        partition=profile.partition,
        time=time_min,
        nodes=1,
        ntasks_per_node=1,
        cpus_per_task=profile.cpus_per_task,
        qos=profile.qos,
        setup=list(profile.setup) or None,
        mem=profile.mem,
        constraint=profile.constraint,
        account=profile.account,
        gres=profile.gres,
        wckey="hpc-forget",
        stderr_to_stdout=True,
        additional_parameters=params,
        use_srun=False,
    )
    return text.replace("export SUBMITIT_EXECUTOR=slurm\n", "", 1)


@dataclass
class ArrayJob:
    """One array: its tasks, manifest and script (built purely; written by ``submit``)."""

    name: str
    group: str
    job_name: str
    tasks: list[dict]
    manifest: dict
    manifest_path: str
    script: str
    script_path: str
    job_id: str | None = None

    @property
    def size(self) -> int:
        return len(self.tasks)


def task_record(task: Any) -> dict:
    d = task.to_dict()
    d["task_id"] = task.task_id
    d["run_id"] = task.run_id
    return d


def group_of(task_d: Mapping[str, Any]) -> str:
    return "chains" if task_d["kind"] == "sequential" else "independent"


def plan_arrays(
    *,
    config: dict,
    tasks: Sequence[dict],
    profile: Profile,
    layout: JobLayout,
    image: str | None,
    python: str,
    max_array_size: int,
    environment: dict[str, str],
    created_at: str,
    prefix: str = "",
    name: str = "run",
) -> list[ArrayJob]:
    """Group tasks (``task_record`` dicts) into arrays, split at ``max_array_size`` (pure)."""
    arrays: list[ArrayJob] = []
    for group in GROUPS:
        members = [t for t in tasks if group_of(t) == group]
        time_min = profile.chain_time or profile.time if group == "chains" else profile.time
        for k, (start, count) in enumerate(split_array(len(members), max_array_size)):
            array = f"{prefix}{group}-{k}"
            chunk = list(members[start : start + count])
            manifest = build_manifest(
                config=config,
                tasks=chunk,
                run_folder=layout.run_folder,
                array=array,
                log_pattern=layout.log_pattern(array),
                cache_dir=layout.cache_dir,
                max_requeues=profile.max_requeues,
                environment=environment,
                created_at=created_at,
            )
            job_name = f"hf-{name}-{group}"
            script = sbatch_script(
                layout=layout,
                array=array,
                job_name=job_name,
                count=count,
                time_min=time_min,
                profile=profile,
                image=image,
                python=python,
            )
            arrays.append(
                ArrayJob(
                    name=array,
                    group=group,
                    job_name=job_name,
                    tasks=chunk,
                    manifest=manifest,
                    manifest_path=layout.manifest(array),
                    script=script,
                    script_path=layout.script(array),
                )
            )
    return arrays


def format_dry_run(arrays: Sequence[ArrayJob], *, notes: Sequence[str] = ()) -> str:
    """What ``submit --dry-run`` prints: every script exactly as it would be submitted."""
    out = [f"# hpc-forget submit --dry-run: {len(arrays)} sbatch call(s), nothing submitted"]
    out += [f"# {n}" for n in notes]
    for a in arrays:
        out.append("")
        out.append(f"# ==== {a.script_path} ({a.size} task(s); manifest {a.manifest_path})")
        out.append(f"# $ sbatch --parsable {shlex.quote(a.script_path)}")
        out.append(a.script.rstrip("\n"))
    return "\n".join(out) + "\n"


# ============================================================================================
# cluster facts (side effects, small)


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


def _describe_limit(limit: int, profile: Profile, cluster: Mapping[str, int]) -> str:
    parts = [f"{k}={v}" for k, v in sorted(cluster.items())]
    parts.append(f"profile max_array_size={profile.max_array_size}")
    return f"arrays split at {limit} tasks ({', '.join(parts)})"


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


# ============================================================================================
# run folders


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


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


# ============================================================================================
# submit


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
            lines.append(f"  {a['name']:<16} job {a['job_id']:<10} {a['size']} task(s)")
        if self.skipped_done:
            lines.append(
                f"  {self.skipped_done} task(s) already complete in the store were not submitted"
            )
        lines += [f"  note: {n}" for n in self.notes]
        lines.append(f"follow it with: hpc-forget status {shlex.quote(self.run_folder)}")
        return "\n".join(lines)


class StepIndex:
    """Which steps the store holds, by listing step directories (no HDF5 reads): fast enough
    for ``status`` over 10,000 tasks. A step file is renamed into place only when complete."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._cache: dict[str, set[int]] = {}

    def done(self, run_id: str) -> set[int]:
        if run_id not in self._cache:
            folder = self.store.step_file(run_id, 0).parent
            steps: set[int] = set()
            try:
                with os.scandir(folder) as it:
                    for e in it:
                        n = e.name
                        if not n.startswith(".") and n.endswith(".h5") and n[:-3].isdigit():
                            steps.add(int(n[:-3]))
            except OSError:
                pass
            if not steps and getattr(self.store, "single_file", False):
                steps = self.store.done_steps(run_id)
            self._cache[run_id] = steps
        return self._cache[run_id]


def _image(container: str | None, *, dry_run: bool) -> str | None:
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
) -> SubmitResult:
    """``hpc-forget submit``: one sbatch call per array; returns once sbatch has answered.

    ``container`` is an image path, or None / "none" for the host environment. With
    ``dry_run`` nothing is written or submitted and no Slurm is needed: the result's
    ``dry_run_text`` holds every script.
    """
    from hpc_forget.study.planning import plan

    image = _image(container, dry_run=dry_run)
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

    index = StepIndex(Store(store))
    todo = [t for t in chosen if not set(t["step_indices"]) <= index.done(t["run_id"])]
    notes: list[str] = []
    cluster = query_array_limits() if max_array_size is None else {}
    cluster_max = min(cluster.values()) if cluster else None
    limit = min(x for x in (max_array_size, cluster_max, profile.max_array_size) if x is not None)
    if image is not None and not dry_run:
        notes.append(check_image_versions(image))
    elif image is not None:
        notes.append(f"image {image}: versions not checked in a dry run")
    created = _now()
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
    _write_json(folder / PLAN_FILE, {"columns": PLAN_COLUMNS, "tasks": plan_rows(records)})
    return _launch(folder, submission, arrays, profile, skipped=skipped, notes=notes)


def _launch(
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
    _write_json(folder / "submission.json", submission)
    result = SubmitResult(run_folder=str(folder), skipped_done=skipped, notes=notes)
    for a in arrays:
        _write_json(Path(a.manifest_path), a.manifest)
        Path(a.script_path).write_text(a.script, encoding="utf-8")
        a.job_id = sbatch_submit(a.script_path, size=a.size)
        rec = {
            "name": a.name,
            "group": a.group,
            "size": a.size,
            "job_id": a.job_id,
            "script": os.path.relpath(a.script_path, folder),
            "manifest": os.path.relpath(a.manifest_path, folder),
            "task_ids": [t["task_id"] for t in a.tasks],
            "submitted_at": _now(),
            "cancelled_at": None,
        }
        submission["arrays"].append(rec)
        _write_json(folder / "submission.json", submission)  # after each sbatch: never lose an id
        result.arrays.append(rec)
    return result


# ============================================================================================
# status


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


PLAN_FILE = "plan.json"
PLAN_COLUMNS = ["task_id", "run_id", "method", "kind", "n_languages", "step_indices"]


def plan_rows(tasks: Sequence[dict]) -> list[list]:
    """What status needs of every planned task, compactly (10,000 tasks: about 1 MB):
    ``[task_id, run_id, method, kind, n_languages, step_indices]``."""
    return [
        [t["task_id"], t["run_id"], t["key"]["method"], t["kind"], len(t["languages"]),
         list(t["step_indices"])]
        for t in tasks
    ]  # fmt: skip


@dataclass
class _Where:
    array: dict
    index: int


def _task_locations(sub: dict) -> dict[str, _Where]:
    """task_id -> its latest array element (later submissions win)."""
    where: dict[str, _Where] = {}
    for arr in sub["arrays"]:
        for i, tid in enumerate(arr.get("task_ids", ())):
            where[tid] = _Where(arr, i)
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
    index = StepIndex(Store(layout.store))
    slurm: dict[str, str] = {}
    if sacct:
        slurm = sacct_states(a["job_id"] for a in sub["arrays"])
    out: list[TaskStatus] = []
    logs: dict[str, str] = {}
    now = _dt.datetime.now(_dt.UTC)
    for tid, run_id, method, kind, n_lang, mine in rows:
        have = index.done(run_id)
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
    return RunStatus(str(folder), out, _settings_note(index.store, sub, {r[1] for r in rows}))


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


def _alive_elements(job_ids: Iterable[str]) -> set[str]:
    """Array elements Slurm still holds (pending, running, requeued): one squeue call."""
    ids = sorted({j for j in job_ids if j})
    if not ids:
        return set()
    res = _run(["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(ids)], timeout=60)
    if res.returncode != 0:
        # squeue fails when none of the ids is known any more
        return set()
    return {line.strip() for line in res.stdout.splitlines() if line.strip()}


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
    image = _image(sub["container"] if container == "same" else container, dry_run=dry_run)
    rows = status(folder).tasks
    alive = set() if dry_run else _alive_elements(a["job_id"] for a in sub["arrays"])
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
        notes.append(check_image_versions(image))
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
        created_at=_now(),
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
    return _launch(folder, sub, arrays, prof, skipped=0, notes=notes)


def cancel(run: str | os.PathLike) -> list[str]:
    """``hpc-forget cancel RUN``: scancel every array of the run (one call); returns the job
    ids. Tasks that had not started show as failed ("cancelled") in status; resubmit reruns
    them."""
    folder = resolve_run_folder(run)
    sub = read_submission(folder)
    ids = [a["job_id"] for a in sub["arrays"] if a.get("job_id") and not a.get("cancelled_at")]
    if ids:
        res = _run(["scancel", *ids], timeout=60)
        if res.returncode != 0:
            msg = (res.stderr.strip() or "no output").splitlines()[-1]
            raise SlurmError(f"scancel: {msg}")
        stamp = _now()
        for a in sub["arrays"]:
            if a.get("job_id") in ids:
                a["cancelled_at"] = stamp
        _write_json(folder / "submission.json", sub)
    return ids
