"""The sbatch scripts and the arrays, built purely (no file written, no command run). See
docs/slurm.md.

- ``worker_command``: the container (or host) command that runs one element's worker,
  ``python -m hpc_forget.worker MANIFEST``.
- ``batch_body``: runs the worker in the background and traps the ``--signal=B:USR1@lead``
  warning; the worker checkpoints and exits with EXIT_PREEMPTED, and the batch script (on the
  host, where ``scontrol`` exists) requeues the job.
- ``sbatch_script``: the whole script, rendered by submitit's private ``_make_sbatch_string``
  (pinned in setup.cfg; tests/cluster/test_scripts.py fails when submitit changes).
- ``pack_tasks``: which tasks share one array element (``tasks_per_job``; chains never);
  ``plan_arrays``: tasks grouped into ``chains`` and ``independent`` arrays of such elements,
  split at the array size limit; ``format_dry_run``: what ``submit --dry-run`` prints.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hpc_forget.cluster.containers import (
    OFFLINE_ENV,
    check_text,
    container_command,
    job_binds,
    launcher_argv,
)
from hpc_forget.cluster.contract import EXIT_PREEMPTED, build_manifest
from hpc_forget.cluster.profiles import Profile, sbatch_options
from hpc_forget.cluster.runfolder import JobLayout
from hpc_forget.errors import SlurmError

GROUPS = ("chains", "independent")


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


def batch_body(
    command: str,
    *,
    max_requeues: int,
    gpus: int,
    tasks_per_job: int = 1,
    stop_dir: str = "stop",
) -> str:
    """The script body: run the worker in the background, forward Slurm's signals to it, and
    requeue the job from the host side when the worker stopped for the USR1 warning.

    Several GPUs: the worker runs under ``accelerate launch`` (torchrun), which dies of SIGUSR1
    and passes no USR1 on to its ranks. The USR1 warning therefore creates the element's stop
    request in ``stop_dir`` (every rank polls it; the job contract, cluster/contract.py), and
    the exit code rank 0 records there replaces the launcher's, so EXIT_PREEMPTED survives it.
    """
    port = []
    multi: list[str] = []
    forward = ['    if [ -n "$hpcf_pid" ]; then kill -s "$1" "$hpcf_pid" 2>/dev/null; fi']
    take_exit: list[str] = []
    threads = [
        "# one thread per allocated CPU unless the profile's setup chose otherwise",
        'export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"',
    ]
    if gpus > 1:
        port = ["hpcf_port=$((20000 + ${SLURM_JOB_ID:-0} % 20000))  # per-job rendezvous port"]
        # accelerate launch gives every process OMP_NUM_THREADS threads: share the CPUs
        cpus = "${SLURM_CPUS_PER_TASK:-1}"
        threads = [
            f"# the task's CPUs shared by its {gpus} processes unless the setup chose otherwise",
            f'export OMP_NUM_THREADS="${{OMP_NUM_THREADS:-$(( {cpus} >= {gpus} ? {cpus} / {gpus} : 1 ))}}"',
        ]
        q = shlex.quote(stop_dir)
        multi = [
            "# torchrun dies of SIGUSR1 and does not pass it on: the warning becomes a stop",
            "# request that every rank polls, and rank 0 records its exit code beside it",
            '_hpcf_job="${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}"',
            f'hpcf_stop={q}/"${{_hpcf_job:-$SLURM_JOB_ID}}"',
            f'mkdir -p {q} && rm -f "$hpcf_stop" "$hpcf_stop.exit"',
        ]
        forward = [
            '    if [ "$1" = USR1 ]; then : > "$hpcf_stop"',
            '    elif [ -n "$hpcf_pid" ]; then kill -s "$1" "$hpcf_pid" 2>/dev/null; fi',
        ]
        take_exit = [
            "# rank 0's own exit code, not the launcher's (digits only)",
            'if [ -f "$hpcf_stop.exit" ]; then',
            '    hpcf_code=$(head -c 8 "$hpcf_stop.exit" | tr -cd 0-9)',
            "    hpcf_rc=${hpcf_code:-$hpcf_rc}",
            "fi",
        ]
    packed = []
    if tasks_per_job > 1:
        packed.append(
            f"# packed: each element runs up to {tasks_per_job} tasks one after another on one"
            " loaded model; a requeue resumes at its first unfinished task"
        )
    cmd_lines = command.split("\n")
    return "\n".join(
        [
            *threads,
            'export MKL_NUM_THREADS="${MKL_NUM_THREADS:-$OMP_NUM_THREADS}"',
            *port,
            *multi,
            *packed,
            *cmd_lines[:-1],
            "hpcf_signal=",
            "hpcf_pid=",
            "hpcf_forward() {",
            "    hpcf_signal=$1",
            '    echo "hpc-forget: batch script got SIG$1; forwarding it to the worker" >&2',
            *forward,
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
            *take_exit,
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
    tasks_per_job: int = 1,
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
    body = batch_body(
        command,
        max_requeues=profile.max_requeues,
        gpus=profile.gpus,
        tasks_per_job=tasks_per_job,
        stop_dir=os.path.join(layout.run_folder, "stop"),
    )
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
    elements: list[list[int]] = dataclasses.field(default_factory=list)
    job_id: str | None = None

    @property
    def size(self) -> int:
        """Tasks in the array."""
        return len(self.tasks)

    @property
    def n_elements(self) -> int:
        """Array elements (jobs): fewer than tasks when packed."""
        return len(self.elements) if self.elements else len(self.tasks)


def task_record(task: Any) -> dict:
    d = task.to_dict()
    d["task_id"] = task.task_id
    d["run_id"] = task.run_id
    return d


def group_of(task_d: Mapping[str, Any]) -> str:
    return "chains" if task_d["kind"] == "sequential" else "independent"


def array_time_limit(profile: Profile, group: str) -> int:
    """The per-element time limit (minutes) of an array of ``group``: chains may have their
    own (``chain_time``)."""
    return (profile.chain_time or profile.time) if group == "chains" else profile.time


def pack_tasks(tasks: Sequence[Mapping[str, Any]], tasks_per_job: int) -> list[list[int]]:
    """Array elements as lists of indices into ``tasks`` (pure). Independent tasks (``joint``
    and ``per-language``: MULTI, MONO, NON-SHARED LoRA, post-hoc merges) of the same base
    model are packed, in plan order, up to ``tasks_per_job`` to an element, so an element
    reads one model once; a sequential chain is always an element of its own (its steps
    already share one model). Elements come in the order of their first task."""
    if tasks_per_job < 1:
        raise SlurmError(f"tasks_per_job must be >= 1, got {tasks_per_job}")
    elements: list[list[int]] = []
    open_: dict[str, list[int]] = {}  # model -> the element still taking tasks
    for i, t in enumerate(tasks):
        if group_of(t) == "chains" or tasks_per_job == 1:
            elements.append([i])
            continue
        model = str(t["key"]["model"])
        cur = open_.get(model)
        if cur is None or len(cur) >= tasks_per_job:
            cur = open_[model] = []
            elements.append(cur)
        cur.append(i)
    return elements


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
        time_min = array_time_limit(profile, group)
        per_job = profile.tasks_per_job if group == "independent" else 1
        packed = pack_tasks(members, per_job)
        for k, (start, count) in enumerate(split_array(len(packed), max_array_size)):
            array = f"{prefix}{group}-{k}"
            chunk: list[dict] = []
            elements: list[list[int]] = []
            for element in packed[start : start + count]:
                elements.append(list(range(len(chunk), len(chunk) + len(element))))
                chunk += [members[j] for j in element]
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
                elements=elements,
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
                tasks_per_job=max(len(e) for e in elements),
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
                    elements=elements,
                )
            )
    return arrays


def format_dry_run(arrays: Sequence[ArrayJob], *, notes: Sequence[str] = ()) -> str:
    """What ``submit --dry-run`` prints: every script exactly as it would be submitted."""
    out = [f"# hpc-forget submit --dry-run: {len(arrays)} sbatch call(s), nothing submitted"]
    out += [f"# {n}" for n in notes]
    for a in arrays:
        out.append("")
        packed = f" in {a.n_elements} element(s)" if a.n_elements != a.size else ""
        out.append(f"# ==== {a.script_path} ({a.size} task(s){packed}; manifest {a.manifest_path})")
        out.append(f"# $ sbatch --parsable {shlex.quote(a.script_path)}")
        out.append(a.script.rstrip("\n"))
    return "\n".join(out) + "\n"
