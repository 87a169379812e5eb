"""Apptainer command lines, as pure functions (see docs/containers.md).

A job crosses into the image as ``apptainer exec --nv --cleanenv --bind P:P ... IMAGE python -m
hpc_forget.worker MANIFEST``. ``--cleanenv`` keeps the host's Python, conda and module
variables out of the image; what a job needs is forwarded explicitly through ``APPTAINERENV_*``
variables, which survive ``--cleanenv`` and carry any value (``--env`` splits on commas):

- fixed values known at submit time (``HF_HUB_OFFLINE=1``, ``HF_HOME=...``) are exported as
  ``APPTAINERENV_NAME='value'``;
- variables known only on the compute node (``SLURM_*``, ``CUDA_VISIBLE_DEVICES``) are copied
  by a small bash loop at run time.

Every path is bound at the same path inside the image, so the paths in the manifest are valid
on both sides. With no image (``--container none``) the same fixed variables are exported and
the command runs on the host unchanged.
"""

from __future__ import annotations

import os
import re
import shlex
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hpc_forget.errors import ContainerError

#: Variables a job needs inside the image; a trailing ``*`` is a prefix.
DEFAULT_ENV_FORWARD: tuple[str, ...] = (
    "SLURM_*",
    "CUDA_VISIBLE_DEVICES",
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HPC_FORGET_*",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
)

#: Set for every job, in the image and on the host: no network access to the Hub at job time.
OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "PYTHONNOUSERSITE": "1",
}


@dataclass(frozen=True)
class Raw:
    """A word passed to the shell unquoted, e.g. ``"$hpcf_port"``."""

    text: str


Word = str | Raw


def control_char(text: str) -> str | None:
    """The first control character of ``text`` (newline, carriage return, NUL, tab, DEL, the
    C1 range, Unicode line/paragraph separators), or None. Quoting cannot make these safe in a
    generated script: a newline ends an ``#SBATCH`` line or a command."""
    for c in text:
        if unicodedata.category(c) in ("Cc", "Zl", "Zp"):
            return c
    return None


def shorten(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters for a one-line message."""
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 4] + "…" + r[-3:]


def check_text(value: object, source: str, error: type[Exception] = ContainerError) -> None:
    """Raise ``error`` (one line naming ``source`` and the value) if ``value`` holds a control
    character. Every value that reaches a generated script or command line passes here."""
    if isinstance(value, Raw):
        value = value.text
    if not isinstance(value, str):
        return
    c = control_char(value)
    if c is not None:
        raise error(
            f"{source}: {shorten(value)} contains the control character {c!r}, which no"
            " generated script or command line can carry safely; remove it"
        )


def quote_word(word: Word) -> str:
    check_text(word, "command word")
    return word.text if isinstance(word, Raw) else shlex.quote(word)


def join_words(argv: Iterable[Word]) -> str:
    """A shell command line; str words are quoted, Raw words are pasted as they are."""
    return " ".join(quote_word(w) for w in argv)


def check_bind_path(path: str, option: str) -> None:
    """Apptainer's --bind syntax splits on ',' and ':'; such paths cannot be bound."""
    check_text(path, option)
    bad = [c for c in (",", ":") if c in path]
    if bad:
        raise ContainerError(
            f"{option}: {path!r} contains {bad[0]!r}, which apptainer --bind cannot express;"
            " choose a path without ',' or ':'"
        )
    if not os.path.isabs(path):
        raise ContainerError(f"{option}: {path!r} must be an absolute path")


def check_image(image: str) -> str:
    """The image as an absolute path; ContainerError naming --container if it is unusable."""
    check_text(image, "--container")
    if image in ("", "none"):
        raise ContainerError("--container: give an image path, or 'none' to run on the host")
    if "://" in image:
        raise ContainerError(
            f"--container: {image!r} is a URI; build or pull a .sif on the login node first"
            " (see docs/containers.md) and pass its path"
        )
    path = os.path.abspath(image)
    check_bind_path(path, "--container")
    return path


def forward_loop(patterns: Sequence[str]) -> str:
    """A bash line that copies the matching host variables into APPTAINERENV_<NAME>.

    ``patterns`` are names, or prefixes ending in ``*``; they are validated to be plain
    identifiers so the generated ``case`` pattern needs no quoting.
    """
    for p in patterns:
        core = p[:-1] if p.endswith("*") else p
        if not core or not core.replace("_", "a").isalnum() or core[0].isdigit():
            raise ContainerError(f"env_forward: {p!r} is not a variable name or NAME_* prefix")
    alts = "|".join(patterns)
    return (
        'for hpcf_v in $(compgen -e); do case "$hpcf_v" in '
        f'{alts}) export "APPTAINERENV_$hpcf_v=${{!hpcf_v}}" ;; esac; done'
    )


def env_lines(env: Mapping[str, str]) -> list[str]:
    """``export NAME='value'`` lines, sorted by name."""
    for k in env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
            raise ContainerError(f"environment: {shorten(k)} is not a variable name")
        check_text(env[k], f"environment {k}")
    return [f"export {k}={shlex.quote(env[k])}" for k in sorted(env)]


def forwarded(env: Mapping[str, str], patterns: Sequence[str] = DEFAULT_ENV_FORWARD) -> list[str]:
    """The forward patterns plus the names of ``env`` (set by the job), without repeats."""
    out = list(patterns)
    for k in sorted(env):
        if not any(k == p or (p.endswith("*") and k.startswith(p[:-1])) for p in out):
            out.append(k)
    return out


def container_argv(
    image: str | None,
    inner_argv: Sequence[Word],
    *,
    binds: Sequence[str] = (),
    nv: bool = True,
) -> list[Word]:
    """The command that runs ``inner_argv``: unchanged for ``image=None`` (the host), else
    ``apptainer exec [--nv] --cleanenv --bind P:P ... IMAGE inner_argv``.

    ``binds`` are absolute host paths, bound at the same path; duplicates are dropped and a
    path already under another bound path is kept (apptainer accepts nested binds).
    """
    if image is None:
        return list(inner_argv)
    argv: list[Word] = ["apptainer", "exec"]
    if nv:
        argv.append("--nv")
    argv.append("--cleanenv")
    seen: set[str] = set()
    for b in binds:
        check_bind_path(b, "bind")
        if b in seen:
            continue
        seen.add(b)
        argv += ["--bind", f"{b}:{b}"]
    argv.append(image)
    argv += list(inner_argv)
    return argv


def container_command(
    image: str | None,
    inner_argv: Sequence[Word],
    *,
    binds: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    env_forward: Sequence[str] = DEFAULT_ENV_FORWARD,
    nv: bool = True,
) -> str:
    """The shell text that runs ``inner_argv`` in ``image`` (or on the host): the environment
    lines, then the command line. Pure: the same arguments give the same text."""
    env = dict(env or {})
    lines = env_lines(env)
    if image is not None:
        lines.append(forward_loop(forwarded(env, env_forward)))
    lines.append(join_words(container_argv(image, inner_argv, binds=binds, nv=nv)))
    return "\n".join(lines)


def job_binds(*paths: str | os.PathLike | None) -> list[str]:
    """Absolute, de-duplicated bind paths for the store, the cache and the run folder."""
    out: list[str] = []
    for p in paths:
        if p is None:
            continue
        s = str(Path(p).absolute())
        if s not in out:
            out.append(s)
    return out


def image_probe_argv(image: str) -> list[str]:
    """Asks the image for its Python and hpc-forget versions (one JSON line)."""
    code = (
        "import json, platform, hpc_forget; "
        "print(json.dumps({'python': platform.python_version(), "
        "'package_version': hpc_forget.__version__}))"
    )
    return ["apptainer", "exec", "--cleanenv", image, "python", "-c", code]


def accelerate_config(num_processes: int) -> dict:
    """An explicit `accelerate launch` config for one node with ``num_processes`` GPUs, so the
    user's default config (~/.cache/huggingface/accelerate) is never read.

    Its ``mixed_precision`` is "no" because it decides nothing: the worker's Accelerator is
    made in code with the precision ``train.precision`` resolves to (run/training.py), which
    overrides what `accelerate launch` passes on."""
    if num_processes < 2:
        raise ContainerError(f"accelerate launch is for 2 or more GPUs, got {num_processes}")
    return {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": "MULTI_GPU",
        "debug": False,
        "downcast_bf16": "no",
        "gpu_ids": "all",
        "machine_rank": 0,
        "main_training_function": "main",
        "mixed_precision": "no",
        "num_machines": 1,
        "num_processes": num_processes,
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": False,
    }


def launcher_argv(
    python: str, module_args: Sequence[Word], *, gpus: int, accelerate_config_file: str | None
) -> list[Word]:
    """``python -m hpc_forget.worker ...`` for one GPU or none; ``accelerate launch`` with an
    explicit config, process count and per-job port (``$hpcf_port``) for several GPUs."""
    if gpus <= 1:
        return [python, "-m", "hpc_forget.worker", *module_args]
    if accelerate_config_file is None:
        raise ContainerError("several GPUs need an explicit accelerate config file")
    return [
        python,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        accelerate_config_file,
        "--num_processes",
        str(gpus),
        "--num_machines",
        "1",
        "--main_process_port",
        Raw('"$hpcf_port"'),
        "-m",
        "hpc_forget.worker",
        *module_args,
    ]
