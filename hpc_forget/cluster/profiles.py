"""Cluster profiles: where and how big the jobs are (``slurm/profiles/*.yaml``, ``--profile``,
``--slurm KEY=VALUE``), every value validated by what sbatch accepts for it. See docs/slurm.md.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hpc_forget.cluster.containers import check_text, shorten
from hpc_forget.errors import SlurmError, split_pair
from hpc_forget.study.config import load_yaml_unique

PROFILE_ENV = "HPC_FORGET_PROFILES"


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
    tasks_per_job: int = 1
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


_INT_FIELDS = {
    "cpus_per_task": 1,
    "max_array_size": 1,
    "signal_lead_s": 0,
    "max_requeues": 0,
    "tasks_per_job": 1,
}
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
        k, v = split_pair(p, "--slurm", SlurmError, "time=2:00:00 or partition=gpu")
        check_text(k, "--slurm", SlurmError)
        k = k.replace("-", "_")
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
