"""What a grid costs before anyone submits it: ``hpc-forget plan CONFIG --estimate`` (pure).

From the planned tasks, a measured throughput per model (run/throughput.py), the expected
epochs and a cluster profile: the GPU-hours and wall time of every task and array, the grid's
total, the requeues each task needs and the tasks that cannot finish. docs/estimate.md.

The model of one task, on one device (seconds):

- a step trains ``epochs x train examples / train throughput`` and evaluates the dev set after
  every epoch (``epochs x dev examples / eval throughput``), then tests the languages the step
  tests (sequential: all T after every step; per-language: its own; joint: all) at the eval
  throughput;
- every job start (the first and each requeue) loads the model: ``MODEL_LOAD_S``;
- with ``gpus`` > 1 per job, compute divides ideally over the GPUs (GPU-hours do not change).

Requeues: a job gets the profile's limit (``chain_time`` for chains, ``time`` otherwise) minus
``signal_lead_s`` (the warning margin), and spends the model load of it first. A step stopped
by the warning continues from its mid-step checkpoint after the requeue (chains also
checkpoint between steps, a post-hoc merge after each language), so the work splits anywhere:
``ceil(task compute / (usable limit - load)) - 1`` requeues, each one more load. A task cannot
finish when the limit leaves no time after the load, or when it needs more requeues than
``max_requeues``. The time a checkpoint takes to write and read is not modelled, nor are
queue waits.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpc_forget.cluster.profiles import Profile
from hpc_forget.cluster.scripts import (
    GROUPS,
    array_time_limit,
    group_of,
    pack_tasks,
    split_array,
)
from hpc_forget.errors import EstimateError
from hpc_forget.models.params import preset_name
from hpc_forget.run.throughput import Throughput
from hpc_forget.study.config import split_revision
from hpc_forget.study.methods import evaluated_languages, step_hyper

if TYPE_CHECKING:
    from hpc_forget.study.config import DataConfig, ExperimentConfig
    from hpc_forget.study.planning import Task

#: MASSIVE 1.1's split sizes, the same for every locale (parallel data).
MASSIVE_SIZES = {"train": 11_514, "dev": 2_033, "test": 2_974}
#: Seconds to start a job's work: load the model and the data (each start and each requeue).
MODEL_LOAD_S = 60.0


@dataclass(frozen=True)
class Sizes:
    """Examples per language of one run."""

    train: int
    dev: int
    test: int


def data_sizes(data: DataConfig, fraction: float = 1.0) -> Sizes:
    """MASSIVE's sizes per language after the data-scale fraction and max_train / max_eval
    (the rule of data/splits.py: keep ``floor(fraction * n + 0.5)``, at least 1, then cap)."""
    n = MASSIVE_SIZES["train"]
    train = n if fraction == 1 else min(n, max(1, math.floor(fraction * n + 0.5)))

    def cap(k: int, m: int | None) -> int:
        return k if m is None else min(k, m)

    return Sizes(
        train=cap(train, data.max_train),
        dev=cap(MASSIVE_SIZES["dev"], data.max_eval),
        test=cap(MASSIVE_SIZES["test"], data.max_eval),
    )


@dataclass(frozen=True)
class Epochs:
    """The epochs a step of (method, rank) is expected to train, and where the number is from."""

    epochs: float
    source: str  # "config max_epochs" | "store mean of N step(s)"


def config_epochs(cfg: ExperimentConfig, tasks: Sequence[Task]) -> dict[tuple[str, int], Epochs]:
    """Every (method, rank) of ``tasks`` at the config's maximum epochs (study.methods)."""
    out: dict[tuple[str, int], Epochs] = {}
    for t in tasks:
        k = (t.key.method, t.key.rank)
        if k not in out:
            out[k] = Epochs(float(step_hyper(*k, cfg.train).max_epochs), "config max_epochs")
    return out


def mean_epochs(runs: Sequence[Any]) -> dict[tuple[str, int], tuple[float, int]]:
    """Mean ``epochs_run`` per (method, rank) over the steps' meta of stored runs
    (store.RunRecord); a merged step counts each language's epochs (``language_epochs``)."""
    seen: dict[tuple[str, int], list[float]] = {}
    for r in runs:
        k = (str(r.key.get("method")), int(r.key.get("rank", 0)))
        for meta in r.step_meta.values():
            per_lang = meta.get("language_epochs")
            if isinstance(per_lang, dict) and per_lang:
                seen.setdefault(k, []).extend(float(v) for v in per_lang.values())
            elif isinstance(meta.get("epochs_run"), int | float):
                seen.setdefault(k, []).append(float(meta["epochs_run"]))
    return {k: (sum(v) / len(v), len(v)) for k, v in seen.items() if v}


def with_store_epochs(
    base: Mapping[tuple[str, int], Epochs], measured: Mapping[tuple[str, int], tuple[float, int]]
) -> dict[tuple[str, int], Epochs]:
    """``base`` with the store's means where the store has steps of that method and rank."""
    out = dict(base)
    for k in base:
        if k in measured:
            mean, n = measured[k]
            out[k] = Epochs(mean, f"store mean of {n} step(s)")
    return out


def model_key(model: str) -> str:
    """The name records are matched by: the preset a spec stands for, without ``@REVISION``."""
    name = split_revision(model)[0] if "@" in model else model
    return preset_name(name) or name


def throughput_for(records: Sequence[Throughput], model: str, option: str) -> Throughput:
    """The record measured for ``model`` (the last one, if several)."""
    want = model_key(model)
    hits = [r for r in records if model_key(r.model) == want]
    if not hits:
        have = ", ".join(sorted({r.model for r in records})) or "none"
        raise EstimateError(
            f"{option}: no throughput record for model {model} (the file has: {have}); calibrate"
            " that model or pass a file that holds it"
        )
    return hits[-1]


@dataclass(frozen=True)
class TaskEstimate:
    task_id: str
    array: str
    kind: str
    model: str
    method: str
    rank: int
    steps: int
    epochs: float
    compute_s: float  # one device, loads excluded
    wall_s: float  # with every job start's model load and the requeues
    gpu_hours: float
    requeues: int
    can_finish: bool
    reason: str = ""

    def as_json(self) -> dict:
        return {
            "task_id": self.task_id,
            "array": self.array,
            "kind": self.kind,
            "model": self.model,
            "method": self.method,
            "rank": self.rank,
            "steps": self.steps,
            "epochs": self.epochs,
            "wall_s": round(self.wall_s, 1),
            "gpu_hours": round(self.gpu_hours, 4),
            "requeues": self.requeues,
            "can_finish": self.can_finish,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class ArrayEstimate:
    name: str
    group: str
    tasks: int
    elements: int  # array elements (jobs): fewer than tasks when packed (tasks_per_job)
    limit_min: int
    throttle: int | None
    wall_s: float  # elements in index order on ``throttle`` slots (all at once without one)
    gpu_hours: float
    cannot_finish: int

    def as_json(self) -> dict:
        return {
            "name": self.name,
            "group": self.group,
            "tasks": self.tasks,
            "elements": self.elements,
            "limit_min": self.limit_min,
            "throttle": self.throttle,
            "wall_s": round(self.wall_s, 1),
            "gpu_hours": round(self.gpu_hours, 4),
            "cannot_finish": self.cannot_finish,
        }


@dataclass
class Estimate:
    profile: str
    gpus: int
    tasks: list[TaskEstimate]
    arrays: list[ArrayEstimate]
    throughput: dict[str, Throughput]  # model -> record used
    throughput_source: str  # "calibration on this machine" | "--throughput FILE"
    epochs: dict[tuple[str, int], Epochs]
    notes: list[str] = field(default_factory=list)

    @property
    def gpu_hours(self) -> float:
        return sum(t.gpu_hours for t in self.tasks)

    @property
    def wall_s(self) -> float:
        """Every array submitted at once: the longest array (queue waits not modelled)."""
        return max((a.wall_s for a in self.arrays), default=0.0)

    def source_lines(self) -> list[str]:
        lines = []
        for model, r in self.throughput.items():
            note = f", {r.note}" if r.note else ""
            lines.append(
                f"throughput of {model}: {self.throughput_source} ({r.source} on {r.device},"
                f" {r.precision}, batch {r.batch_size}{note}; {r.host}, {r.when}):"
                f" train {r.train_utt_per_s:.1f} utt/s, eval {r.eval_utt_per_s:.1f} utt/s"
            )
        for (method, rank), e in sorted(self.epochs.items()):
            what = method if rank == 0 else f"{method} r{rank}"
            lines.append(f"epochs of {what}: {e.epochs:g} ({e.source})")
        return lines

    def as_json(self) -> dict:
        return {
            "profile": self.profile,
            "gpus_per_task": self.gpus,
            "total": {
                "gpu_hours": round(self.gpu_hours, 4),
                "wall_s": round(self.wall_s, 1),
                "tasks": len(self.tasks),
                "cannot_finish": sum(not t.can_finish for t in self.tasks),
            },
            "throughput": {
                "source": self.throughput_source,
                "records": {m: r.as_dict() for m, r in self.throughput.items()},
            },
            "epochs": [
                {"method": m, "rank": r, "epochs": e.epochs, "source": e.source}
                for (m, r), e in sorted(self.epochs.items())
            ],
            "arrays": [a.as_json() for a in self.arrays],
            "tasks": [t.as_json() for t in self.tasks],
            "notes": list(self.notes),
        }


def step_seconds(task: Task, sizes: Sizes, epochs: float, tp: Throughput) -> list[float]:
    """Seconds (one device) of each piece of ``task`` that a checkpoint ends: the steps of a
    chain, the languages of a merge (its last piece also tests), else the one step."""
    t_langs = len(task.languages)

    def train(n_langs: int) -> float:
        return epochs * (n_langs * sizes.train / tp.train_utt_per_s) + epochs * (
            n_langs * sizes.dev / tp.eval_utt_per_s
        )

    def test(n_langs: int) -> float:
        return n_langs * sizes.test / tp.eval_utt_per_s

    if task.steps == ("merged",):  # one model per language, merged, tested on every language
        pieces = [train(1) for _ in task.languages]
        pieces[-1] += test(t_langs)
        return pieces
    if task.kind == "joint":
        return [train(t_langs) + test(t_langs)]
    return [
        train(1) + test(len(evaluated_languages(task.kind, task.languages, i)))
        for i in task.step_indices
    ]


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{d}-{h:02d}:{m:02d}:{s:02d}" if d else f"{h:d}:{m:02d}:{s:02d}"


def job_requeues(
    compute_s: float, limit_min: int, profile: Profile, load_s: float
) -> tuple[int, str]:
    """(requeues, why it cannot finish or "") of ``compute_s`` seconds of work in jobs of
    ``limit_min`` minutes (pure). Every job loads the model, then works until Slurm's warning
    (``signal_lead_s`` before the limit); a stopped step continues from its mid-step
    checkpoint, so the work splits anywhere, and each requeue costs one more load."""
    per_job = limit_min * 60 - profile.signal_lead_s - load_s
    if per_job <= 0:
        return 0, (
            f"the limit {_hms(limit_min * 60)} minus signal_lead_s {profile.signal_lead_s} s"
            f" leaves no time after the {load_s:g} s model load: raise time (--slurm time=...)"
        )
    requeues = max(0, math.ceil(compute_s / per_job) - 1)
    if requeues > profile.max_requeues:
        return requeues, (
            f"needs {requeues} requeue(s); the profile allows max_requeues={profile.max_requeues}"
        )
    return requeues, ""


def task_estimate(
    task: Task,
    *,
    array: str,
    sizes: Sizes,
    epochs: float,
    tp: Throughput,
    profile: Profile,
    limit_min: int,
    load_s: float = MODEL_LOAD_S,
) -> TaskEstimate:
    gpus = max(1, profile.gpus)
    compute = sum(step_seconds(task, sizes, epochs, tp)) / gpus
    requeues, reason = job_requeues(compute, limit_min, profile, load_s)
    wall = compute + (1 + requeues) * load_s
    can = not reason
    return TaskEstimate(
        task_id=task.task_id,
        array=array,
        kind=task.kind,
        model=task.key.model,
        method=task.key.method,
        rank=task.key.rank,
        steps=len(task.step_indices),
        epochs=epochs,
        compute_s=compute * gpus,
        wall_s=wall,
        gpu_hours=wall * gpus / 3600,
        requeues=requeues,
        can_finish=can,
        reason=reason,
    )


def packed_element(
    ests: Sequence[TaskEstimate], profile: Profile, limit_min: int, load_s: float
) -> list[TaskEstimate]:
    """The tasks of one packed element, which run one after another in one job: the time
    limit is the element's, so the element's total decides the requeues (each one reloads
    the model; a requeue resumes at the first unfinished task), and every task of the element
    reports them. A task that cannot finish alone cannot finish packed either."""
    total = sum(e.compute_s / max(1, profile.gpus) for e in ests)
    requeues, why = job_requeues(total, limit_min, profile, load_s)
    too_many = requeues > profile.max_requeues
    out = []
    for pos, e in enumerate(ests):
        wall = e.compute_s / max(1, profile.gpus) + (load_s * (1 + requeues) if pos == 0 else 0.0)
        reason = e.reason or (
            f"its packed element of {len(ests)} tasks needs {requeues} requeue(s); the profile"
            f" allows max_requeues={profile.max_requeues}: pack fewer (--pack)"
            if too_many
            else why
        )
        out.append(
            dataclasses.replace(
                e,
                wall_s=wall,
                gpu_hours=wall * max(1, profile.gpus) / 3600,
                requeues=requeues,
                can_finish=e.can_finish and not why,
                reason=reason,
            )
        )
    return out


def array_wall(walls: Sequence[float], throttle: int | None) -> float:
    """Elements start in index order on ``throttle`` slots (all at once without a throttle)."""
    if not walls:
        return 0.0
    slots = [0.0] * (len(walls) if throttle is None else min(throttle, len(walls)))
    for w in walls:
        i = min(range(len(slots)), key=slots.__getitem__)
        slots[i] += w
    return max(slots)


def estimate(
    cfg: ExperimentConfig,
    tasks: Sequence[Task],
    throughput: Sequence[Throughput],
    profile: Profile,
    *,
    epochs: Mapping[tuple[str, int], Epochs] | None = None,
    source: str = "calibration on this machine",
    option: str = "--throughput",
    load_s: float = MODEL_LOAD_S,
) -> Estimate:
    """The estimate of ``tasks`` (``plan(cfg)``) under ``profile`` (pure)."""
    epochs = dict(epochs) if epochs is not None else config_epochs(cfg, tasks)
    used: dict[str, Throughput] = {}
    for t in tasks:
        if t.key.model not in used:
            used[t.key.model] = throughput_for(throughput, t.key.model, option)
    out_tasks: list[TaskEstimate] = []
    arrays: list[ArrayEstimate] = []
    for group in GROUPS:
        members = [t for t in tasks if group_of({"kind": t.kind}) == group]
        limit = array_time_limit(profile, group)
        per_job = profile.tasks_per_job if group == "independent" else 1
        packed = pack_tasks(
            [{"kind": t.kind, "key": {"model": t.key.model}} for t in members], per_job
        )
        for k, (start, count) in enumerate(split_array(len(packed), profile.max_array_size)):
            name = f"{group}-{k}"
            chunk: list[TaskEstimate] = []
            walls: list[float] = []
            for element in packed[start : start + count]:
                ests = [
                    task_estimate(
                        members[j],
                        array=name,
                        sizes=data_sizes(cfg.data, members[j].key.data_scale),
                        epochs=epochs[(members[j].key.method, members[j].key.rank)].epochs,
                        tp=used[members[j].key.model],
                        profile=profile,
                        limit_min=limit,
                        load_s=load_s if pos == 0 else 0.0,  # a packed element loads once
                    )
                    for pos, j in enumerate(element)
                ]
                if len(ests) > 1:
                    ests = packed_element(ests, profile, limit, load_s)
                chunk.extend(ests)
                walls.append(sum(e.wall_s for e in ests))
            out_tasks.extend(chunk)
            arrays.append(
                ArrayEstimate(
                    name=name,
                    group=group,
                    tasks=len(chunk),
                    elements=len(walls),
                    limit_min=limit,
                    throttle=profile.array_throttle,
                    wall_s=array_wall(walls, profile.array_throttle),
                    gpu_hours=sum(e.gpu_hours for e in chunk),
                    cannot_finish=sum(not e.can_finish for e in chunk),
                )
            )
    notes = [
        f"model load {load_s:g} s per job start; queue waits not modelled; LoRA steps are"
        " costed at the measured (full fine-tuning) rate, an overestimate; tasks that cannot"
        " finish are counted at their whole length",
    ]
    if profile.gpus == 0:
        notes.append(f"profile {profile.name} requests no GPU: hours are of the measured device")
    elif profile.gpus > 1:
        notes.append(f"{profile.gpus} GPUs per task: compute divided ideally over them")
    if any(r.device == "cpu" for r in used.values()):
        notes.append(
            "measured on a CPU: GPU times are many times shorter; calibrate inside a GPU job"
            " and pass the file with --throughput (docs/estimate.md)"
        )
    return Estimate(
        profile=profile.name,
        gpus=profile.gpus,
        tasks=out_tasks,
        arrays=arrays,
        throughput=used,
        throughput_source=source,
        epochs=epochs,
        notes=notes,
    )


def format_estimate(est: Estimate, *, every_task: bool = True) -> str:
    """What ``plan --estimate`` prints."""
    lines = [f"estimate for profile {est.profile} ({est.gpus} GPU(s) per task)"]
    lines += [f"  {s}" for s in est.source_lines()]
    if every_task:
        w = max([len(t.task_id) for t in est.tasks] + [4])
        lines.append("")
        lines.append(f"  {'task':<{w}} {'array':<14} {'wall':>11} {'GPU-h':>9} {'requeues':>8}")
        for t in est.tasks:
            rq = str(t.requeues) if t.can_finish else "CANNOT"
            lines.append(
                f"  {t.task_id:<{w}} {t.array:<14} {_hms(t.wall_s):>11} {t.gpu_hours:>9.2f} {rq:>8}"
            )
    lines.append("")
    lines.append(
        f"  {'array':<14} {'tasks':>6} {'jobs':>6} {'limit':>11} {'throttle':>8} {'wall':>11}"
        f" {'GPU-h':>10} {'cannot':>6}"
    )
    for a in est.arrays:
        thr = "-" if a.throttle is None else str(a.throttle)
        lines.append(
            f"  {a.name:<14} {a.tasks:>6} {a.elements:>6} {_hms(a.limit_min * 60):>11} {thr:>8}"
            f" {_hms(a.wall_s):>11} {a.gpu_hours:>10.1f} {a.cannot_finish:>6}"
        )
    bad = [t for t in est.tasks if not t.can_finish]
    total = (
        f"total: {len(est.tasks)} tasks, {est.gpu_hours:.1f} GPU-hours, wall {_hms(est.wall_s)}"
        " (every array at once)"
    )
    lines += ["", total]
    need = [t.requeues for t in est.tasks if t.can_finish and t.requeues]
    if need:
        lines.append(
            f"requeues: {len(need)} task(s) need them ({min(need)} to {max(need)} each,"
            f" {sum(need)} in all)"
        )
    else:
        lines.append("requeues: none needed")
    if bad:
        lines.append(f"cannot finish within the profile's limits: {len(bad)} task(s)")
        shown = bad[:20]
        lines += [f"  {t.task_id}: {t.reason}" for t in shown]
        if len(bad) > len(shown):
            lines.append(f"  ... and {len(bad) - len(shown)} more (--json lists all)")
    else:
        lines.append("every task can finish within the profile's limits")
    lines += [f"note: {n}" for n in est.notes]
    return "\n".join(lines)


def estimate_config(
    cfg: ExperimentConfig,
    tasks: Sequence[Task],
    profile: Profile,
    *,
    throughput: Sequence[str] = (),
    calibrate_to: str | None = None,
    tokenizer: str | None = None,
    store: str | None = None,
) -> Estimate:
    """``plan --estimate``: the records from ``throughput`` files, else a calibration on this
    machine (saved to ``calibrate_to`` when given); epochs from ``store`` when given."""
    from hpc_forget.run.throughput import read_throughput, write_throughput

    if throughput and calibrate_to:
        raise EstimateError("--calibrate and --throughput: give one (measure here, or read a file)")
    if throughput:
        records = [r for f in throughput for r in read_throughput(f)]
        source = "--throughput " + ", ".join(throughput)
    else:
        from hpc_forget.run.calibrate import calibrate

        models = list(dict.fromkeys(t.key.model for t in tasks))
        records = [
            calibrate(
                m,
                batch_size=cfg.train.batch_size,
                eval_batch_size=cfg.train.eval_batch_size,
                precision=cfg.train.precision,
                tokenizer=tokenizer,
                cache_dir=cfg.cache_dir,
                max_length=cfg.train.max_length,
                cpu_threads=cfg.train.cpu_threads,
            )
            for m in models
        ]
        source = "calibration on this machine"
        if calibrate_to:
            write_throughput(calibrate_to, records)
            source += f", saved to {calibrate_to}"
    epochs = config_epochs(cfg, tasks)
    if store is not None:
        from hpc_forget.store.store import Store

        epochs = with_store_epochs(epochs, mean_epochs(Store(store).runs()))
    return estimate(cfg, tasks, records, profile, epochs=epochs, source=source)
