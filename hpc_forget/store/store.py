"""The shared HDF5 results store (issue #3); the full schema and its reasons are in docs/store.md.

A store is a directory that many processes on many nodes write at once, on NFS, Lustre or GPFS,
without any file lock::

    STORE/
      STORE.json                  marker: {"format": "hpc-forget-store", "schema_version": 1, ...}
      runs/<run_id>.h5            one per run: key, kind, languages, steps, labels, config
      steps/<run_id>/<step>.h5    one per finished step (step as 6 digits): the R row and metadata
      consolidated.h5             optional: every run and step in one file (laptop copy)

Every file is written whole under a hidden temporary name in its final directory, fsync'd, read
back and checked, then renamed into place with ``os.replace`` (atomic on all three filesystems).
A file is never modified after the rename, so readers never see a partial row; they ignore hidden
names (``.*``: temporary files, NFS ``.nfs*`` files) and report damaged or foreign files by name
in :meth:`Store.problems` instead of reading them.

This module imports only the standard library, numpy and h5py: the ``store selftest`` writer
processes import it, and so do analysis scripts on a laptop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import re
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hpc_forget import files
from hpc_forget.errors import StoreError

# HDF5's own file locking fails on Lustre and many NFS mounts (errno 11, 37, 38, 524). We never
# rely on it: every open below passes locking=False; the variable covers other HDF5 users.
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")

import h5py  # noqa: E402
import numpy as np  # noqa: E402

from hpc_forget import __version__  # noqa: E402

SCHEMA_VERSION: int = 2
"""Version of the on-disk layout; a store or file of another version is refused (StoreError)."""

MARKER = "STORE.json"
CONSOLIDATED = "consolidated.h5"
RUNS_DIR = "runs"
STEPS_DIR = "steps"
KINDS = ("sequential", "joint", "per-language")

STORE_FORMAT = "hpc-forget-store"
RUN_FORMAT = "hpc-forget-run"
STEP_FORMAT = "hpc-forget-step"
CONSOLIDATED_FORMAT = "hpc-forget-consolidated"

STALE_TMP_S = files.STALE_TMP_S
"""A temporary file of a writer on another host is removed once older than this."""

STEP_META_FIELDS: dict[str, str] = {
    "epochs_run": "epochs trained in this step (early stopping may end before max_epochs)",
    "best_epoch": "epoch (1-based) whose weights were kept: best dev F1",
    "wall_time_s": "seconds for the whole step: training, dev and test evaluation",
    "train_examples_per_s": "training throughput in examples per second",
    "device": "device the step ran on, e.g. 'cuda:0 (NVIDIA H100 80GB HBM3)' or 'cpu'",
    "train_examples": "number of training examples used in this step",
    "best_dev_f1": "dev F1 of the kept epoch",
}
"""Recommended keys of the ``meta`` dict of :meth:`Store.put_step` (any JSON keys are kept)."""

PROVENANCE_FIELDS: dict[str, str] = {
    "package_version": "hpc-forget version (hpc_forget.__version__)",
    "git_commit": "git commit of the hpc-forget checkout, or 'unknown'",
    "container_image": "$APPTAINER_CONTAINER (or $SINGULARITY_CONTAINER), 'none' outside one",
    "python": "platform.python_version()",
    "torch": "torch.__version__",
    "transformers": "transformers.__version__",
    "peft": "peft.__version__",
    "accelerate": "accelerate.__version__",
    "datasets": "datasets.__version__",
    "host": "socket.gethostname() of the node that ran the step",
    "slurm_job_id": "$SLURM_JOB_ID, '' outside Slurm",
    "slurm_array_job_id": "$SLURM_ARRAY_JOB_ID, '' when not an array task",
    "slurm_array_task_id": "$SLURM_ARRAY_TASK_ID, '' when not an array task",
    "slurm_restart_count": "$SLURM_RESTART_COUNT (requeues), '' if never requeued",
    "written_at": "UTC ISO-8601 time the engine finished the step",
}
"""Provenance keys the engine fills for each step (any JSON keys are kept)."""

_STEP_NAME = re.compile(r"^(\d{6,9})\.h5$")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]{0,149}$")


class StoreWarning(UserWarning):
    """Something the store decided for the user (e.g. kept the first of two different rows)."""


@dataclass
class RunRecord:
    """One run as the reader sees it now: its header and every readable step."""

    run_id: str
    key: dict
    kind: str
    languages: list[str]
    steps: list[str]
    labels: list[str]
    config: dict
    settings: dict = field(default_factory=dict)
    """What beyond the key the scores depend on (hpc_forget.study.identity.run_settings)."""
    step_meta: dict[int, dict] = field(default_factory=dict)
    dev_curves: dict[int, list[float]] = field(default_factory=dict)
    provenance: dict[int, dict] = field(default_factory=dict)
    R: np.ndarray = field(default_factory=lambda: np.empty((0, 0)), compare=False, repr=False)
    """steps x languages test F1 (0..1); NaN = not computed (or its file is damaged)."""
    written_at: dict[int, str] = field(default_factory=dict)
    """UTC ISO-8601 time each step's file was written."""
    created_at: str = ""

    @property
    def done_steps(self) -> set[int]:
        """Steps with a readable step file (or consolidated row)."""
        return set(self.step_meta)

    def expected_cells(self) -> list[tuple[int, str]]:
        """The (step, language) cells this run kind is expected to fill."""
        return expected_cells(self.kind, self.languages, self.steps)

    def missing(self) -> list[tuple[int, str]]:
        """Expected cells without a score, sorted by step then language position."""
        col = {lang: j for j, lang in enumerate(self.languages)}
        return [(i, lang) for i, lang in self.expected_cells() if np.isnan(self.R[i, col[lang]])]


def expected_cells(
    kind: str, languages: Sequence[str], steps: Sequence[str]
) -> list[tuple[int, str]]:
    """Cells a run of `kind` fills: sequential every (step, language); joint step 0 x every
    language; per-language (i, languages[i])."""
    if kind == "sequential":
        return [(i, lang) for i in range(len(steps)) for lang in languages]
    if kind == "joint":
        return [(0, lang) for lang in languages]
    if kind == "per-language":
        return [(i, lang) for i, lang in enumerate(languages)]
    raise StoreError(f"unknown run kind {kind!r}; use one of {', '.join(KINDS)}")


# --------------------------------------------------------------------------------------------
# Plain helpers (pure where possible)
# --------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, set | frozenset | tuple):
        return sorted(obj) if isinstance(obj, set | frozenset) else list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _dumps(obj: Any, what: str) -> str:
    """Canonical JSON (sorted keys) so that equal content gives equal strings and checksums."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} must be JSON-serializable: {exc}") from None


def _crc(*parts: bytes | str) -> int:
    c = 0
    for p in parts:
        b = p.encode("utf-8") if isinstance(p, str) else p
        c = zlib.crc32(len(b).to_bytes(8, "little"), c)
        c = zlib.crc32(b, c)
    return c


def _strings(values: Iterable[str]) -> str:
    return "\x1f".join(values)


def _step_crc(
    run_id: str,
    step: int,
    languages: Sequence[str],
    scores: np.ndarray,
    evaluated: np.ndarray,
    dev_curve: np.ndarray,
    meta_json: str,
    prov_json: str,
    written_at: str,
) -> int:
    return _crc(
        run_id,
        str(step),
        _strings(languages),
        np.ascontiguousarray(scores, "<f8").tobytes(),
        np.ascontiguousarray(evaluated, "u1").tobytes(),
        np.ascontiguousarray(dev_curve, "<f8").tobytes(),
        meta_json,
        prov_json,
        written_at,
    )


def _step_label(index: int, n_steps: int | None = None) -> str:
    """Steps in messages are 1-based: index 2 of 4 is "step 3/4" (files keep the index)."""
    return f"step {index + 1}/{n_steps}" if n_steps else f"step {index + 1}"


def _is_hidden(name: str) -> bool:
    """Hidden names are never results: our temporary files, NFS silly-renames, .DS_Store."""
    return name.startswith(".")


def _one_line(text: str, limit: int = 240) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _reason(exc: BaseException) -> str:
    """Why a file could not be read, in a few words."""
    msg = str(exc)
    if "truncated file" in msg:
        m = re.search(r"truncated file: eof = \d+, sblock->base_addr = \d+, stored_eof = \d+", msg)
        return f"truncated HDF5 file ({m.group(0) if m else 'truncated file'})"
    if "file signature not found" in msg:
        return "not an HDF5 file (file signature not found)"
    return _one_line(f"unreadable ({type(exc).__name__}: {msg})", 200)


def _os_message(exc: BaseException, path: Path, what: str) -> str:
    """One-line StoreError text for an OSError while writing `what` to `path`."""
    return files.write_error_message(exc, path, what, "move the store")


def _check_not_empty(path: Path) -> None:
    """A zero-byte file (e.g. a crash right after create on a filesystem without fsync)."""
    try:
        empty = os.stat(path).st_size == 0
    except OSError as exc:
        raise _Damaged(f"unreadable ({exc.strerror})") from None
    if empty:
        raise _Damaged("empty file (0 bytes)")


def _open_h5(path: str | os.PathLike | io.BytesIO, mode: str = "r") -> h5py.File:
    """Every HDF5 open goes through here: no HDF5 file locking (broken on Lustre/NFS)."""
    if isinstance(path, io.BytesIO):
        return h5py.File(path, mode)
    return h5py.File(path, mode, locking=False)


def _atomic_write_bytes(
    final: Path, data: bytes, what: str, validate: Callable[[Path], None] | None = None
) -> None:
    """files.atomic_write_raw with an OSError turned into a one-line StoreError."""
    try:
        files.atomic_write_raw(final, data, validate)
    except OSError as exc:
        raise StoreError(_os_message(exc, final, what)) from None


def _h5_bytes(build: Callable[[h5py.File], None]) -> bytes:
    """Build a small HDF5 file in memory (the disk write is then one os.write)."""
    bio = io.BytesIO()
    with _open_h5(bio, "w") as f:
        build(f)
    return bio.getvalue()


def _str_array(values: Sequence[str]) -> np.ndarray:
    return np.array(list(values), dtype=h5py.string_dtype())


def _read_strs(ds: h5py.Dataset) -> list[str]:
    return [str(s) for s in ds.asstr()[()]]


def _attr_str(attrs: h5py.AttributeManager, name: str) -> str:
    if name not in attrs:
        raise _Damaged(f"missing attribute {name!r}")
    v = attrs[name]
    if isinstance(v, bytes):
        v = v.decode("utf-8")
    if not isinstance(v, str):
        raise _Damaged(f"attribute {name!r} is not a string")
    return v


def _check_format(attrs: h5py.AttributeManager, fmt: str) -> None:
    got = attrs.get("format")
    if isinstance(got, bytes):
        got = got.decode("utf-8", "replace")
    if got != fmt:
        raise _Damaged(f"not an hpc-forget file (format attribute {got!r}, expected {fmt!r})")
    problem = _schema_problem(attrs.get("schema_version"))
    if problem is not None:
        raise _Damaged(f"{problem} — start a new store or use the hpc-forget that wrote it")


def _schema_problem(version: Any, written_by: str = "") -> str | None:
    """None for SCHEMA_VERSION; otherwise what the version is, in words (no remedy)."""
    if isinstance(version, np.integer):
        version = int(version)
    if version is None:
        return f"has no schema_version; this hpc-forget reads schema {SCHEMA_VERSION}"
    if isinstance(version, bool) or not isinstance(version, int):
        return (
            f"has schema_version {version!r} ({type(version).__name__}), not an integer;"
            f" this hpc-forget reads schema {SCHEMA_VERSION}"
        )
    if version == SCHEMA_VERSION:
        return None
    age = "an older" if version < SCHEMA_VERSION else "a newer"
    by = f", {written_by}" if written_by else ""
    return (
        f"was written by {age} hpc-forget (schema {version}{by});"
        f" this version reads schema {SCHEMA_VERSION}"
    )


def _schema_fix(version: Any, written_by: str, subject: str) -> str:
    """What to do about a `subject` (store, consolidated file) of another schema version."""
    if isinstance(version, int | np.integer) and not isinstance(version, bool):
        if version > SCHEMA_VERSION:
            return f"upgrade hpc-forget (pip install -U hpc-forget) to read this {subject}"
        old = written_by if written_by.startswith("hpc-forget ") else "an older hpc-forget"
        return f"start a new {subject} (or use {old} to read it)"
    return f"restore the {subject}'s schema_version (an integer) or start a new {subject}"


class _Damaged(Exception):
    """A file that is not a readable hpc-forget file of our schema (reported, then skipped)."""


@dataclass(frozen=True)
class _Header:
    run_id: str
    key: dict
    kind: str
    languages: tuple[str, ...]
    steps: tuple[str, ...]
    labels: tuple[str, ...]
    config: dict
    key_json: str
    config_json: str
    created_at: str
    crc: int
    ident: tuple[int, int, int] | None = None  # (inode, size, mtime_ns) of the run file
    settings: dict = field(default_factory=dict)
    settings_json: str = "{}"


@dataclass(frozen=True)
class _Step:
    run_id: str
    step: int
    languages: tuple[str, ...]
    scores: np.ndarray
    evaluated: np.ndarray
    dev_curve: np.ndarray
    meta_json: str
    prov_json: str
    written_at: str
    crc: int
    ident: tuple[int, int, int] | None = None  # (inode, size, mtime_ns) of the source file


def _header_crc(
    run_id: str,
    kind: str,
    key_json: str,
    languages: Sequence[str],
    steps: Sequence[str],
    labels: Sequence[str],
    config_json: str,
    created_at: str,
    settings_json: str,
) -> int:
    return _crc(
        run_id,
        kind,
        key_json,
        _strings(languages),
        _strings(steps),
        _strings(labels),
        config_json,
        created_at,
        settings_json,
    )


def _make_header(
    run_id: str,
    *,
    key: Mapping,
    kind: str,
    languages: Sequence[str],
    steps: Sequence[str],
    labels: Sequence[str],
    config: Mapping,
    settings: Mapping,
) -> _Header:
    """Validate put_run's arguments; one-line StoreError for each kind of mistake."""
    _check_run_id(run_id)
    if kind not in KINDS:
        raise StoreError(
            f"put_run {run_id}: kind {kind!r} is unknown; use one of {', '.join(KINDS)}"
        )
    langs = tuple(languages)
    if not langs or not all(isinstance(x, str) and x for x in langs):
        raise StoreError(f"put_run {run_id}: languages must be a non-empty list of names")
    if len(set(langs)) != len(langs):
        raise StoreError(f"put_run {run_id}: languages has duplicates; list each language once")
    stps = tuple(steps)
    if not stps or not all(isinstance(x, str) and x for x in stps):
        raise StoreError(f"put_run {run_id}: steps must be a non-empty list of names")
    if kind == "joint" and len(stps) != 1:
        raise StoreError(f"put_run {run_id}: a joint run has exactly one step, got {len(stps)}")
    if kind == "per-language" and stps != langs:
        raise StoreError(
            f"put_run {run_id}: a per-language run's steps must be its languages in the same"
            f" order (step i trains and tests languages[i]); got steps {list(stps)} for"
            f" languages {list(langs)}"
        )
    labs = tuple(labels)
    if not all(isinstance(x, str) for x in labs):
        raise StoreError(f"put_run {run_id}: labels must be a list of strings")
    if not all(isinstance(x, Mapping) for x in (key, config, settings)):
        raise StoreError(f"put_run {run_id}: key, config and settings must be dicts")
    key_json = _dumps(dict(key), f"put_run {run_id}: key")
    config_json = _dumps(dict(config), f"put_run {run_id}: config")
    settings_json = _dumps(dict(settings), f"put_run {run_id}: settings")
    created = _now()
    return _Header(
        run_id=run_id,
        key=json.loads(key_json),
        kind=kind,
        languages=langs,
        steps=stps,
        labels=labs,
        config=json.loads(config_json),
        key_json=key_json,
        config_json=config_json,
        created_at=created,
        crc=_header_crc(
            run_id, kind, key_json, langs, stps, labs, config_json, created, settings_json
        ),
        settings=json.loads(settings_json),
        settings_json=settings_json,
    )


def _check_run_id(run_id: str) -> None:
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id) or run_id.endswith(".tmp"):
        raise StoreError(
            f"run id {run_id!r} is not filesystem-safe; use letters, digits and ._+=- (max 150)"
        )


def _run_file_bytes(h: _Header) -> bytes:
    def build(f: h5py.File) -> None:
        _write_header_attrs(f, h)
        f.attrs["format"] = RUN_FORMAT
        f.attrs["schema_version"] = SCHEMA_VERSION

    return _h5_bytes(build)


def _write_header_attrs(g: h5py.Group, h: _Header) -> None:
    g.attrs["run_id"] = h.run_id
    g.attrs["kind"] = h.kind
    g.attrs["key"] = h.key_json
    g.attrs["config"] = h.config_json
    g.attrs["settings"] = h.settings_json
    g.attrs["created_at"] = h.created_at
    g.attrs["crc32"] = np.int64(h.crc)
    g.create_dataset("languages", data=_str_array(h.languages))
    g.create_dataset("steps", data=_str_array(h.steps))
    g.create_dataset("labels", data=_str_array(h.labels))


def _read_header_group(g: h5py.Group) -> _Header:
    run_id = _attr_str(g.attrs, "run_id")
    kind = _attr_str(g.attrs, "kind")
    key_json = _attr_str(g.attrs, "key")
    config_json = _attr_str(g.attrs, "config")
    settings_json = _attr_str(g.attrs, "settings")
    created = _attr_str(g.attrs, "created_at")
    for name in ("languages", "steps", "labels"):
        if name not in g or not isinstance(g[name], h5py.Dataset):
            raise _Damaged(f"missing dataset {name!r}")
    langs = tuple(_read_strs(g["languages"]))
    stps = tuple(_read_strs(g["steps"]))
    labs = tuple(_read_strs(g["labels"]))
    crc = int(g.attrs.get("crc32", -1))
    if crc != _header_crc(
        run_id, kind, key_json, langs, stps, labs, config_json, created, settings_json
    ):
        raise _Damaged("checksum mismatch (the file content is damaged)")
    if kind not in KINDS or not langs:
        raise _Damaged(f"invalid run header (kind {kind!r}, {len(langs)} languages)")
    return _Header(
        run_id=run_id,
        key=json.loads(key_json),
        kind=kind,
        languages=langs,
        steps=stps,
        labels=labs,
        config=json.loads(config_json),
        key_json=key_json,
        config_json=config_json,
        created_at=created,
        crc=crc,
        settings=json.loads(settings_json),
        settings_json=settings_json,
    )


def _read_run_file(path: Path) -> _Header:
    _check_not_empty(path)
    try:
        with _open_h5(path) as f:
            _check_format(f.attrs, RUN_FORMAT)
            return _read_header_group(f)
    except _Damaged:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, ValueError, RuntimeError ...
        raise _Damaged(_reason(exc)) from None


def _step_file_bytes(s: _Step) -> bytes:
    def build(f: h5py.File) -> None:
        f.attrs["run_id"] = s.run_id
        f.attrs["step"] = np.int64(s.step)
        f.attrs["meta"] = s.meta_json
        f.attrs["provenance"] = s.prov_json
        f.attrs["written_at"] = s.written_at
        f.attrs["crc32"] = np.int64(s.crc)
        f.create_dataset("languages", data=_str_array(s.languages))
        f.create_dataset("scores", data=np.asarray(s.scores, "<f8"))
        f.create_dataset("evaluated", data=np.asarray(s.evaluated, bool))
        f.create_dataset("dev_curve", data=np.asarray(s.dev_curve, "<f8"))
        f.attrs["format"] = STEP_FORMAT
        f.attrs["schema_version"] = SCHEMA_VERSION

    return _h5_bytes(build)


def _read_step_file(path: Path) -> _Step:
    _check_not_empty(path)
    try:
        with _open_h5(path) as f:
            _check_format(f.attrs, STEP_FORMAT)
            a = f.attrs
            for name in ("languages", "scores", "evaluated", "dev_curve"):
                if name not in f or not isinstance(f[name], h5py.Dataset):
                    raise _Damaged(f"missing dataset {name!r}")
            langs = tuple(_read_strs(f["languages"]))
            scores = np.asarray(f["scores"][()], dtype=np.float64)
            evaluated = np.asarray(f["evaluated"][()], dtype=bool)
            dev = np.asarray(f["dev_curve"][()], dtype=np.float64)
            s = _Step(
                run_id=_attr_str(a, "run_id"),
                step=int(a["step"]),
                languages=langs,
                scores=scores,
                evaluated=evaluated,
                dev_curve=dev,
                meta_json=_attr_str(a, "meta"),
                prov_json=_attr_str(a, "provenance"),
                written_at=_attr_str(a, "written_at"),
                crc=int(a.get("crc32", -1)),
            )
    except _Damaged:
        raise
    except Exception as exc:
        raise _Damaged(_reason(exc)) from None
    _check_step(s)
    return s


def _check_step(s: _Step) -> None:
    n = len(s.languages)
    if s.scores.shape != (n,) or s.evaluated.shape != (n,) or s.dev_curve.ndim != 1:
        raise _Damaged("scores/evaluated do not match the language list")
    crc = _step_crc(
        s.run_id,
        s.step,
        s.languages,
        s.scores,
        s.evaluated,
        s.dev_curve,
        s.meta_json,
        s.prov_json,
        s.written_at,
    )
    if crc != s.crc:
        raise _Damaged("checksum mismatch (the file content is damaged)")
    if not np.all(np.isfinite(s.scores[s.evaluated])):
        raise _Damaged("an evaluated score is not finite")


def _same_row(a: _Step, b: _Step) -> bool:
    return (
        a.languages == b.languages
        and np.array_equal(a.evaluated, b.evaluated)
        and np.array_equal(a.scores[a.evaluated], b.scores[b.evaluated])
    )


def _read_marker(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the store marker ({exc.strerror})") from None
    except ValueError:
        raise StoreError(
            f"{path}: not a valid store marker (expected JSON with schema_version);"
            " restore it or use a new store path"
        ) from None
    version = data.get("schema_version")
    if data.get("format") != STORE_FORMAT:
        raise StoreError(f"{path}: not an hpc-forget store marker; use another store path")
    by = data.get("created_by") if isinstance(data.get("created_by"), str) else ""
    problem = _schema_problem(version, by)
    if problem is not None:
        raise StoreError(f"{path}: store {problem} — {_schema_fix(version, by, 'store')}")
    return data


# --------------------------------------------------------------------------------------------
# Consolidated file
# --------------------------------------------------------------------------------------------


@dataclass
class _Consolidated:
    """A consolidated file: run headers read at once, step rows read per run when needed."""

    path: Path
    headers: dict[str, _Header]
    problems: list[str]  # problems inside this file (damaged runs)
    recorded_problems: list[str]  # problems of the store when it was consolidated
    created_at: str
    row_cache: dict[str, tuple[dict[int, _Step], list[str]]] = field(default_factory=dict)

    def rows(self, run_id: str) -> tuple[dict[int, _Step], list[str]]:
        """The readable step rows of `run_id` and one problem line per damaged row."""
        if run_id not in self.headers:
            return {}, []
        if run_id not in self.row_cache:
            self.load([run_id])
        return self.row_cache[run_id]

    def load(self, run_ids: Iterable[str]) -> None:
        """Read the rows of several runs in one open of the file."""
        todo = [r for r in run_ids if r in self.headers and r not in self.row_cache]
        if not todo:
            return
        try:
            with _open_h5(self.path) as f:
                for run_id in todo:
                    probs: list[str] = []
                    try:
                        rows = _read_consolidated_rows(
                            f["runs"][run_id], self.headers[run_id], self.path, probs
                        )
                    except Exception as exc:
                        why = str(exc) if isinstance(exc, _Damaged) else _reason(exc)
                        rows, probs = {}, [f"{self.path}: run {run_id}: {why}; skipped"]
                    self.row_cache[run_id] = (rows, probs)
        except Exception as exc:  # replaced by a damaged file since the headers were read
            for run_id in todo:
                line = f"{self.path}: run {run_id}: {_reason(exc)}; skipped"
                self.row_cache.setdefault(run_id, ({}, [line]))


def _consolidated_version(path: Path) -> None:
    """StoreError if `path` is an HDF5 file of another schema version; _Damaged if unreadable."""
    _check_not_empty(path)
    try:
        with _open_h5(path) as f:
            fmt = f.attrs.get("format")
            version = f.attrs.get("schema_version")
            by = f.attrs.get("hpc_forget_version", "")
    except Exception as exc:
        raise _Damaged(_reason(exc)) from None
    if isinstance(fmt, bytes):
        fmt = fmt.decode("utf-8", "replace")
    if fmt != CONSOLIDATED_FORMAT:
        raise _Damaged(f"not an hpc-forget consolidated store (format attribute {fmt!r})")
    by = f"hpc-forget {by}" if isinstance(by, str) and by else ""
    problem = _schema_problem(version, by)
    if problem is not None:
        fix = _schema_fix(version, by, "consolidated file")
        if isinstance(version, int | np.integer) and version < SCHEMA_VERSION:
            fix = (
                "consolidate the store directory again with this version,"
                f" or use {by or 'the hpc-forget that wrote it'} to read it"
            )
        raise StoreError(f"{path}: consolidated store {problem} — {fix}")


def _read_consolidated(path: Path) -> _Consolidated:
    _consolidated_version(path)
    problems: list[str] = []
    headers: dict[str, _Header] = {}
    try:
        with _open_h5(path) as f:
            created = _attr_str(f.attrs, "created_at")
            recorded = json.loads(_attr_str(f.attrs, "problems"))
            runs = f.get("runs")
            names = list(runs.keys()) if isinstance(runs, h5py.Group) else []
            for name in names:
                try:
                    g = runs[name]
                    h = _read_header_group(g)
                    src = [int(x) for x in np.asarray(g.attrs.get("source", (-1,) * 3)).ravel()]
                except Exception as exc:
                    why = str(exc) if isinstance(exc, _Damaged) else _reason(exc)
                    problems.append(f"{path}: run {name}: {why}; skipped")
                    continue
                if len(src) == 3 and src[0] >= 0:
                    h = dataclasses.replace(h, ident=(src[0], src[1], src[2]))
                headers[h.run_id] = h
    except (_Damaged, StoreError):
        raise
    except Exception as exc:
        raise _Damaged(_reason(exc)) from None
    return _Consolidated(path, headers, problems, [str(p) for p in recorded], created)


def _read_consolidated_rows(
    g: h5py.Group, h: _Header, path: Path, problems: list[str]
) -> dict[int, _Step]:
    n_steps, n_lang = len(h.steps), len(h.languages)
    present = np.asarray(g["present"][()], dtype=bool)
    r = np.asarray(g["R"][()], dtype=np.float64)
    evaluated = np.asarray(g["evaluated"][()], dtype=bool)
    dev = g["dev_curves"][()]
    meta = g["step_meta"].asstr()[()]
    prov = g["provenance"].asstr()[()]
    written = g["written_at"].asstr()[()]
    crcs = np.asarray(g["step_crc32"][()], dtype=np.int64)
    source = np.asarray(g["source"][()], dtype=np.int64)
    if (
        present.shape != (n_steps,)
        or r.shape != (n_steps, n_lang)
        or evaluated.shape != (n_steps, n_lang)
        or source.shape != (n_steps, 3)
        or len(dev) != n_steps
        or len(meta) != n_steps
    ):
        raise _Damaged("dataset shapes do not match the run header")
    rows: dict[int, _Step] = {}
    for i in np.flatnonzero(present):
        i = int(i)
        ident = tuple(int(x) for x in source[i]) if source[i, 0] >= 0 else None
        s = _Step(
            run_id=h.run_id,
            step=i,
            languages=h.languages,
            scores=r[i].copy(),
            evaluated=evaluated[i].copy(),
            dev_curve=np.asarray(dev[i], dtype=np.float64),
            meta_json=str(meta[i]),
            prov_json=str(prov[i]),
            written_at=str(written[i]),
            crc=int(crcs[i]),
            ident=ident,  # type: ignore[arg-type]
        )
        try:
            _check_step(s)
        except _Damaged as d:
            problems.append(f"{path}: run {h.run_id} {_step_label(i, n_steps)}: {d}; skipped")
            continue
        rows[i] = s
    return rows


def _write_consolidated(
    path: Path, runs: list[tuple[_Header, dict[int, _Step]]], problems: list[str]
) -> None:
    """Write the consolidated file at `path` (a temporary name; the caller renames it)."""
    with _open_h5(path, "w") as f:
        f.attrs["format"] = CONSOLIDATED_FORMAT
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["created_at"] = _now()
        f.attrs["hpc_forget_version"] = __version__
        f.attrs["n_runs"] = len(runs)
        f.attrs["n_steps"] = sum(len(rows) for _, rows in runs)
        f.attrs["problems"] = json.dumps(problems)
        top = f.create_group("runs")
        for h, rows in runs:
            _write_consolidated_run(top.create_group(h.run_id), h, rows)
        f.flush()


def _write_consolidated_run(g: h5py.Group, h: _Header, rows: dict[int, _Step]) -> None:
    n_steps, n_lang = len(h.steps), len(h.languages)
    _write_header_attrs(g, h)
    g.attrs["source"] = np.asarray(h.ident if h.ident is not None else (-1, -1, -1), np.int64)
    present = np.zeros(n_steps, bool)
    r = np.full((n_steps, n_lang), np.nan)
    evaluated = np.zeros((n_steps, n_lang), bool)
    dev = np.empty(n_steps, dtype=object)
    meta = [""] * n_steps
    prov = [""] * n_steps
    written = [""] * n_steps
    crcs = np.zeros(n_steps, np.int64)
    source = np.full((n_steps, 3), -1, np.int64)
    for i in range(n_steps):
        dev[i] = np.zeros(0)
    for i, s in rows.items():
        present[i] = True
        r[i] = s.scores
        evaluated[i] = s.evaluated
        dev[i] = np.asarray(s.dev_curve, np.float64)
        meta[i], prov[i], written[i] = s.meta_json, s.prov_json, s.written_at
        crcs[i] = s.crc
        if s.ident is not None:
            source[i] = s.ident
    g.create_dataset("present", data=present)
    g.create_dataset("R", data=r)
    g.create_dataset("evaluated", data=evaluated)
    g.create_dataset("dev_curves", data=dev, dtype=h5py.vlen_dtype(np.float64))
    g.create_dataset("step_meta", data=_str_array(meta))
    g.create_dataset("provenance", data=_str_array(prov))
    g.create_dataset("written_at", data=_str_array(written))
    g.create_dataset("step_crc32", data=crcs)
    g.create_dataset("source", data=source)


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


class Store:
    """A results store: a directory (read/write) or one consolidated ``.h5`` file (read-only).

    Reader methods reflect the store at the moment of the call (it may be being written); parsed
    files are cached in memory by (inode, size, mtime), so a repeated call costs a directory
    listing and a stat per file. See docs/store.md.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser()
        self.single_file = self.path.is_file() or (
            self.path.suffix == ".h5" and not self.path.exists()
        )
        self._marker_ok = False
        self._headers: dict[str, _Header] = {}  # writer-side cache of run headers
        self._cache: dict[str, tuple[tuple[int, int, int], _Header | _Step | _Damaged]] = {}
        self._cons_cache: tuple[tuple[int, int, int], _Consolidated | _Damaged] | None = None
        self._problems: dict[str, str] = {}
        if self.single_file:
            if self.path.exists():
                try:
                    _consolidated_version(self.path)
                except _Damaged as d:
                    raise StoreError(
                        f"{self.path}: not a readable hpc-forget consolidated store ({d});"
                        " copy it again or point to the store directory"
                    ) from None
        elif (self.path / MARKER).is_file():
            _read_marker(self.path / MARKER)
            self._marker_ok = True

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # --- layout ------------------------------------------------------------------------------

    def run_file(self, run_id: str) -> Path:
        """Path of the run file of `run_id` (it may not exist)."""
        return self.path / RUNS_DIR / f"{run_id}.h5"

    def step_file(self, run_id: str, step: int) -> Path:
        """Path of the step file of (`run_id`, `step`) (it may not exist)."""
        return self.path / STEPS_DIR / run_id / f"{step:06d}.h5"

    # --- writers -----------------------------------------------------------------------------

    def _require_directory(self, action: str) -> None:
        if self.single_file:
            raise StoreError(
                f"{self.path}: a single .h5 file is a read-only consolidated store; {action}"
                " needs a store directory"
            )

    def _ensure_marker(self) -> None:
        """Create the directory and STORE.json if needed. Raises OSError (callers word it) or
        StoreError for a marker of another schema version."""
        if self._marker_ok:
            return
        marker = self.path / MARKER
        self.path.mkdir(parents=True, exist_ok=True)
        if marker.is_file():
            _read_marker(marker)
        else:
            data = {
                "format": STORE_FORMAT,
                "schema_version": SCHEMA_VERSION,
                "created_at": _now(),
                "created_by": f"hpc-forget {__version__}",
                "layout": "runs/<run_id>.h5, steps/<run_id>/<step:06d>.h5, consolidated.h5",
            }
            files.atomic_write_raw(marker, (json.dumps(data, indent=2) + "\n").encode(), None)
        self._marker_ok = True

    def check_writable(self) -> None:
        """Create the store if needed and prove it can be written (a probe file is created,
        fsync'd and removed). StoreError naming the path otherwise; call before training."""
        self._require_directory("writing")
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(
                f"{self.path}: exists and is not a directory; choose a store directory"
            )
        if (self.path / MARKER).is_file():
            _read_marker(self.path / MARKER)  # another schema version: that error, not this one
        try:
            self._ensure_marker()
            for sub in (RUNS_DIR, STEPS_DIR):
                (self.path / sub).mkdir(exist_ok=True)
            probe = files.tmp_name(self.path / "probe")
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                files.write_all(fd, b"hpc-forget write probe\n")
                os.fsync(fd)
            finally:
                os.close(fd)
                files.remove_quietly(probe)
        except OSError as exc:
            why = exc.strerror or _one_line(str(exc), 120)
            raise StoreError(
                f"{self.path}: results store is not writable ({why});"
                " choose a writable store location or fix its permissions"
            ) from None

    def put_run(
        self,
        run_id: str,
        *,
        key: dict,
        kind: str,
        languages: list[str],
        steps: list[str],
        labels: list[str],
        config: dict,
        settings: dict | None = None,
    ) -> None:
        """Write the run file once. Idempotent: the same key/kind/languages/steps/labels/
        settings is a no-op, whatever the config (only its score-free keys can differ, and the
        first is kept); a different one is a StoreError.

        ``settings``: everything beyond the key that the scores depend on
        (:func:`hpc_forget.study.identity.run_settings`); the key's ``settings`` digest names it."""
        self._require_directory("put_run")
        h = _make_header(
            run_id, key=key, kind=kind, languages=languages, steps=steps, labels=labels,
            config=config, settings=settings or {},
        )  # fmt: skip
        final = self.run_file(run_id)
        try:
            self._ensure_marker()
        except OSError as exc:
            raise StoreError(_os_message(exc, self.path / MARKER, f"run {run_id}")) from None
        self.clean_run_tmp(run_id)
        if final.exists():
            try:
                old = _read_run_file(final)
            except _Damaged as d:
                warnings.warn(f"{final}: {d}; rewriting it", StoreWarning, stacklevel=2)
            else:
                _compare_headers(final, old, h)
                self._headers[run_id] = old
                return
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(_os_message(exc, final.parent, f"run {run_id}")) from None
        _atomic_write_bytes(final, _run_file_bytes(h), f"the run file of {run_id}", _read_run_file)
        self._headers[run_id] = h

    def _writer_header(self, run_id: str) -> _Header:
        h = self._headers.get(run_id)
        if h is not None:
            return h
        _check_run_id(run_id)
        final = self.run_file(run_id)
        if not final.exists():
            raise StoreError(f"{final}: no run file for {run_id}; call put_run before put_step")
        try:
            h = _read_run_file(final)
        except _Damaged as d:
            raise StoreError(f"{final}: {d}; call put_run again to rewrite it") from None
        self._headers[run_id] = h
        return h

    def put_step(
        self,
        run_id: str,
        step: int,
        *,
        scores: dict[str, float],
        dev_curve: list[float],
        meta: dict,
        provenance: dict,
    ) -> None:
        """Write one step's scores atomically: afterwards the step file is complete, or absent
        (or as before). Idempotent: if the step is already stored with the same scores, nothing
        happens; with different scores the first is kept and a StoreWarning says so. Touches
        only this run's file and this step's file (cost independent of the store size)."""
        self._require_directory("put_step")
        h = self._writer_header(run_id)
        if isinstance(step, bool) or not isinstance(step, int | np.integer):
            raise StoreError(f"put_step {run_id}: step must be an int index, got {step!r}")
        step = int(step)
        if not 0 <= step < len(h.steps):
            raise StoreError(
                f"put_step {run_id}: step index {step} is out of range; the run has"
                f" {len(h.steps)} steps (indices 0..{len(h.steps) - 1})"
            )
        where = f"{_step_label(step, len(h.steps))} of {run_id}"
        s = _make_step(h, step, scores, dev_curve, meta, provenance, where)
        final = self.step_file(run_id, step)
        if final.exists():
            try:
                old = _read_step_file(final)
            except _Damaged as d:
                warnings.warn(f"{final}: {d}; rewriting it", StoreWarning, stacklevel=2)
            else:
                if not _same_row(old, s):
                    warnings.warn(
                        f"{final}: {where} is already stored with different scores; kept the"
                        " first (delete the file to store the new ones)",
                        StoreWarning,
                        stacklevel=2,
                    )
                return
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(_os_message(exc, final.parent, where)) from None

        def validate(tmp: Path) -> None:
            try:
                back = _read_step_file(tmp)
            except _Damaged as d:
                raise StoreError(
                    f"{final}: read-back of {where} failed ({d}); not stored"
                ) from None
            if back.crc != s.crc:
                raise StoreError(f"{final}: read-back of {where} differs; not stored")

        _atomic_write_bytes(final, _step_file_bytes(s), where, validate)

    # --- readers -----------------------------------------------------------------------------

    def _require_store(self) -> None:
        if self.single_file:
            if not self.path.exists():
                raise StoreError(f"{self.path}: no such file; check the path")
            return
        if not self.path.is_dir():
            raise StoreError(
                f"{self.path}: no results store here (no such directory); check the path"
            )
        if not self._marker_ok:
            marker = self.path / MARKER
            if marker.is_file():
                _read_marker(marker)
                self._marker_ok = True
            elif not (self.path / CONSOLIDATED).is_file():
                raise StoreError(
                    f"{self.path}: not an hpc-forget results store (no {MARKER}); check the path"
                )

    def _problem(self, path: str | Path, reason: str) -> None:
        self._problems[str(path)] = f"{path}: {reason}"

    def _load(self, path: Path, ident: tuple[int, int, int], reader: Callable[[Path], Any]) -> Any:
        """Parse `path` with `reader`, cached by file identity; _Damaged instances are returned."""
        key = str(path)
        hit = self._cache.get(key)
        if hit is not None and hit[0] == ident:
            return hit[1]
        try:
            value = reader(path)
        except _Damaged as d:
            value = d
        self._cache[key] = (ident, value)
        return value

    def _cons(self) -> _Consolidated | None:
        path = self.path if self.single_file else self.path / CONSOLIDATED
        try:
            st = os.stat(path)
        except OSError:
            return None
        ident = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._cons_cache is None or self._cons_cache[0] != ident:
            try:
                value: _Consolidated | _Damaged = _read_consolidated(path)
            except _Damaged as d:
                value = d
            self._cons_cache = (ident, value)
        value = self._cons_cache[1]
        if isinstance(value, _Damaged):
            if self.single_file:
                raise StoreError(f"{path}: not a readable consolidated store ({value})")
            self._problem(path, f"{value}; skipped, reading the step files only")
            return None
        for line in value.problems:
            self._problems[line] = line
        if self.single_file:
            for line in value.recorded_problems:
                self._problems[line] = f"(when consolidated) {line}"
        return value

    def _run_ids(self, cons: _Consolidated | None) -> set[str]:
        ids = set(cons.headers) if cons else set()
        if self.single_file:
            return ids
        for entry in _scandir(self.path / RUNS_DIR):
            if _is_hidden(entry.name):
                continue
            if not entry.name.endswith(".h5") or not _RUN_ID.match(entry.name[:-3]):
                self._problem(entry.path, "unexpected file in runs/ (not <run_id>.h5); skipped")
                continue
            ids.add(entry.name[:-3])
        return ids

    def _header(self, run_id: str, cons: _Consolidated | None) -> _Header | None:
        fallback = cons.headers.get(run_id) if cons else None
        if self.single_file:
            return fallback
        path = self.run_file(run_id)
        try:
            st = os.stat(path)
        except OSError:
            return fallback
        ident = (st.st_ino, st.st_size, st.st_mtime_ns)
        if fallback is not None and fallback.ident == ident:
            return fallback  # the consolidated header is a copy of exactly this file
        value = self._load(path, ident, _read_run_file)
        if isinstance(value, _Damaged):
            note = "; using the consolidated copy" if fallback else "; run skipped"
            self._problem(path, f"{value}{note}")
            return fallback
        if value.run_id != run_id:
            self._problem(path, f"holds run {value.run_id!r}, not {run_id!r}; skipped")
            return fallback
        return dataclasses.replace(value, ident=ident)

    def _steps(self, h: _Header, cons: _Consolidated | None) -> dict[int, _Step]:
        rows: dict[int, _Step] = {}
        if cons is not None and h.run_id in cons.headers:
            c = cons.headers[h.run_id]
            if (c.kind, c.key_json, c.languages, c.steps) == (
                h.kind,
                h.key_json,
                h.languages,
                h.steps,
            ):
                cached, probs = cons.rows(h.run_id)
                rows.update(cached)
                for line in probs:
                    self._problems[line] = line
        if self.single_file:
            return rows
        for entry in _scandir(self.path / STEPS_DIR / h.run_id):
            if _is_hidden(entry.name):
                continue
            m = _STEP_NAME.match(entry.name)
            if not m:
                self._problem(entry.path, "unexpected file in a step directory; skipped")
                continue
            step = int(m.group(1))
            try:
                st = entry.stat()
            except OSError:
                continue  # vanished (replaced) since the listing
            ident = (st.st_ino, st.st_size, st.st_mtime_ns)
            known = rows.get(step)
            if known is not None and known.ident == ident:
                continue  # the consolidated row is a copy of exactly this file
            value = self._load(Path(entry.path), ident, _read_step_file)
            note = "; using the consolidated copy" if known is not None else "; skipped"
            if isinstance(value, _Damaged):
                self._problem(entry.path, f"{value}{note}")
                continue
            if value.run_id != h.run_id or value.step != step:
                self._problem(
                    entry.path,
                    f"holds {_step_label(value.step)} of {value.run_id!r}, not this one{note}",
                )
                continue
            if value.languages != h.languages or step >= len(h.steps):
                self._problem(entry.path, f"does not match the run file {h.run_id}.h5{note}")
                continue
            rows[step] = dataclasses.replace(value, ident=ident)
        return rows

    def _record(self, run_id: str) -> RunRecord | None:
        cons = self._cons()
        h = self._header(run_id, cons)
        if h is None:
            return None
        return _make_record(h, self._steps(h, cons))

    def _scan_all(self) -> list[tuple[_Header, dict[int, _Step]]]:
        """Every readable run with its readable steps; records problems on the way."""
        self._require_store()
        cons = self._cons()
        out = []
        run_ids = sorted(self._run_ids(cons))
        if cons is not None:
            cons.load(run_ids)  # one open of the consolidated file for all runs
        for run_id in run_ids:
            h = self._header(run_id, cons)
            if h is not None:
                out.append((h, self._steps(h, cons)))
        self._check_orphans({h.run_id for h, _ in out})
        return out

    def runs(self) -> list[RunRecord]:
        """Every run with a readable run file (or consolidated copy), sorted by run id."""
        return [_make_record(h, rows) for h, rows in self._scan_all()]

    def _check_orphans(self, known: set[str]) -> None:
        if self.single_file:
            return
        for entry in _scandir(self.path / STEPS_DIR):
            if _is_hidden(entry.name) or entry.name in known:
                continue
            if self._header(entry.name, None) is not None:
                continue  # its run file appeared after runs/ was listed (being written now)
            self._problem(entry.path, f"no readable run file {RUNS_DIR}/{entry.name}.h5; skipped")

    def run_ids(self) -> set[str]:
        """The ids of the runs the store holds, from file names alone (no HDF5 read)."""
        if not self.path.exists():
            return set()
        return self._run_ids(self._cons())

    def run(self, run_id: str) -> RunRecord:
        """One run; StoreError if the store has no readable run `run_id`."""
        self._require_store()
        rec = self._record(run_id)
        if rec is None:
            raise StoreError(
                f"{self.path}: no readable run {run_id!r}; check the run id (see problems())"
            )
        return rec

    def matrix(self, run_id: str) -> np.ndarray:
        """steps x languages test F1 of `run_id`; NaN where not computed (never zeros)."""
        return self.run(run_id).R

    def missing(self, run_id: str) -> list[tuple[int, str]]:
        """(step, language) cells the run kind expects that have no score yet."""
        return self.run(run_id).missing()

    def has_step(self, run_id: str, step: int) -> bool:
        """Is this step stored and readable (a damaged file counts as absent)?"""
        if self.single_file:
            return step in self.done_steps(run_id)
        path = self.step_file(run_id, step)
        try:
            st = os.stat(path)
        except OSError:
            pass
        else:
            value = self._load(path, (st.st_ino, st.st_size, st.st_mtime_ns), _read_step_file)
            if isinstance(value, _Step) and value.run_id == run_id and value.step == step:
                return True
        cons = self._cons()
        return cons is not None and step in cons.rows(run_id)[0]

    def done_steps(self, run_id: str) -> set[int]:
        """Steps of `run_id` that are stored and readable (empty if the run is unknown)."""
        if not self.path.exists():
            return set()
        rec = self._record(run_id)
        return rec.done_steps if rec is not None else set()

    def listed_steps(self, run_id: str) -> set[int]:
        """Steps of `run_id` whose step file is in place, from the directory listing alone (no
        HDF5 read): fast enough for ``status`` over 10,000 tasks. A step file is renamed into
        place only when complete, so a listed step is written; a damaged one still counts here
        (:meth:`done_steps` reads and checks). A consolidated file falls back to
        :meth:`done_steps`."""
        if self.single_file:
            return self.done_steps(run_id)
        steps: set[int] = set()
        try:
            with os.scandir(self.step_file(run_id, 0).parent) as it:
                for e in it:
                    n = e.name
                    if not _is_hidden(n) and n.endswith(".h5") and n[:-3].isdigit():
                        steps.add(int(n[:-3]))
        except OSError:
            pass
        return steps

    def problems(self) -> list[str]:
        """Damaged, foreign or unexpected files that readers skip, one line each (path first)."""
        self._require_store()
        self._problems = {}
        self._scan_all()
        return sorted(self._problems.values())

    # --- consolidation -----------------------------------------------------------------------

    def consolidate(self, out: str | os.PathLike | None = None) -> Path:
        """Write every readable run and step into one HDF5 file (default
        ``<store>/consolidated.h5``) atomically: a killed or failed consolidation leaves the
        previous file intact. Step files stay (they remain the source of truth). Also removes
        temporary files older than STALE_TMP_S. Returns the path written."""
        self._require_store()
        if out is None:
            if self.single_file:
                raise StoreError(
                    f"{self.path}: is already a consolidated file; give an output path"
                )
            out = self.path / CONSOLIDATED
        dest = _consolidate_target(Path(out).expanduser())
        self._problems = {}
        runs = self._scan_all()
        problems = sorted(self._problems.values())
        tmp = files.tmp_name(dest)
        what = "the consolidated store"
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            _write_consolidated(tmp, runs, problems)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                _read_consolidated(tmp)
            except _Damaged as d:
                raise StoreError(f"{dest}: read-back failed ({d}); previous file kept") from None
            os.replace(tmp, dest)
        except BaseException as exc:
            files.remove_quietly(tmp)
            if isinstance(exc, OSError):
                fix = "move the store" if dest.parent == self.path else "choose another --out path"
                raise StoreError(files.write_error_message(exc, dest, what, fix)) from None
            raise
        files.fsync_dir(dest.parent)
        if not self.single_file:
            self._clean_stale_tmp()
        return dest

    def export(self, dest: str | os.PathLike) -> Path:
        """Consolidate into `dest` (a file, or a directory to hold consolidated.h5): the one
        file to copy to a laptop; open it there with ``Store(dest)``."""
        return self.consolidate(out=dest)

    def clean_run_tmp(self, run_id: str) -> list[Path]:
        """Remove the temporary files that killed writers of `run_id` left (its run file's and
        its step files'): those of a dead process on this host, or older than STALE_TMP_S
        from another host. Other runs' files and live writers' files are never touched.
        put_run calls it, so the next writer of a run cleans up after the previous one."""
        name = f"{run_id}.h5"
        removed = files.clean_stale_tmp(self.path / RUNS_DIR, lambda n: n == name)
        return removed + files.clean_stale_tmp(self.path / STEPS_DIR / run_id)

    def _clean_stale_tmp(self) -> None:
        """consolidate(): the stale temporary files of every run, and of the store's own files."""
        files.clean_stale_tmp(self.path)
        files.clean_stale_tmp(self.path / RUNS_DIR)
        for e in _scandir(self.path / STEPS_DIR):
            if e.is_dir():
                files.clean_stale_tmp(Path(e.path))


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _consolidate_target(dest: Path) -> Path:
    """The file consolidate() writes for `dest` (a folder gets consolidated.h5), or a one-line
    StoreError for a path it must not or cannot write: under a regular file, a folder where
    the file would go, a device, an existing file that is not a consolidated store."""
    if dest.is_dir():
        dest = dest / CONSOLIDATED
        if dest.is_dir():
            raise StoreError(f"{dest}: is a folder; choose another output path (--out)")
    for parent in dest.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise StoreError(
                    f"{dest}: {parent} is a file, not a folder; choose an output path (--out)"
                    " in a folder"
                )
            break
    if dest.exists() and not dest.is_file():
        raise StoreError(f"{dest}: not a regular file; choose another output path (--out)")
    if dest.is_file() and dest.stat().st_size:
        with open(dest, "rb") as fh:
            head = fh.read(len(_HDF5_SIGNATURE))
        foreign = head != _HDF5_SIGNATURE
        if not foreign:
            with contextlib.suppress(Exception):  # unreadable HDF5: a damaged earlier copy
                with _open_h5(dest) as f:
                    fmt = f.attrs.get("format")
                fmt = fmt.decode("utf-8", "replace") if isinstance(fmt, bytes) else fmt
                foreign = fmt != CONSOLIDATED_FORMAT
        if foreign:
            raise StoreError(
                f"{dest}: exists and is not an hpc-forget consolidated store; not overwritten"
                " — choose another output path (--out) or delete the file"
            )
    return dest


def _compare_headers(path: Path, old: _Header, new: _Header) -> None:
    for name in ("key", "kind", "languages", "steps", "labels", "settings"):
        a, b = getattr(old, name), getattr(new, name)
        if a != b:
            raise StoreError(
                f"{path}: run {new.run_id} already exists with a different {name}"
                f" ({_one_line(repr(a), 80)} != {_one_line(repr(b), 80)}); use a new store"
                " or delete this run's files"
            )
    # The configs can differ only in keys that cannot change a score (store path, cache dir,
    # threads, ...): the run id covers the rest. The first is kept, silently.


def _make_step(
    h: _Header,
    step: int,
    scores: Mapping[str, float],
    dev_curve: Sequence[float],
    meta: Mapping,
    provenance: Mapping,
    where: str,
) -> _Step:
    """Validate put_step's arguments and build the row aligned to the run's languages."""
    if not isinstance(scores, Mapping) or not scores:
        raise StoreError(f"put_step {where}: scores must be a non-empty dict language -> F1")
    col = {lang: j for j, lang in enumerate(h.languages)}
    vec = np.full(len(h.languages), np.nan)
    evaluated = np.zeros(len(h.languages), bool)
    for lang, value in scores.items():
        if lang not in col:
            raise StoreError(
                f"put_step {where}: language {lang!r} is not in the run's languages;"
                " score only the languages given to put_run"
            )
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise StoreError(f"put_step {where}: score of {lang!r} is not a number") from None
        if not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise StoreError(
                f"put_step {where}: score of {lang!r} is {v}; scores are F1 in [0, 1]"
                " (divide percentages by 100)"
            )
        vec[col[lang]] = v
        evaluated[col[lang]] = True
    try:
        dev = np.asarray([float(x) for x in dev_curve], dtype=np.float64)
    except (TypeError, ValueError):
        raise StoreError(f"put_step {where}: dev_curve must be a list of numbers") from None
    if not isinstance(meta, Mapping) or not isinstance(provenance, Mapping):
        raise StoreError(f"put_step {where}: meta and provenance must be dicts")
    meta_json = _dumps(dict(meta), f"put_step {where}: meta")
    prov_json = _dumps(dict(provenance), f"put_step {where}: provenance")
    written = _now()
    crc = _step_crc(h.run_id, step, h.languages, vec, evaluated, dev, meta_json, prov_json, written)
    return _Step(
        run_id=h.run_id,
        step=step,
        languages=h.languages,
        scores=vec,
        evaluated=evaluated,
        dev_curve=dev,
        meta_json=meta_json,
        prov_json=prov_json,
        written_at=written,
        crc=crc,
    )


def _make_record(h: _Header, rows: dict[int, _Step]) -> RunRecord:
    r = np.full((len(h.steps), len(h.languages)), np.nan)
    for i, s in rows.items():
        r[i, s.evaluated] = s.scores[s.evaluated]
    order = sorted(rows)
    return RunRecord(
        run_id=h.run_id,
        key=dict(h.key),
        kind=h.kind,
        languages=list(h.languages),
        steps=list(h.steps),
        labels=list(h.labels),
        config=dict(h.config),
        settings=dict(h.settings),
        step_meta={i: json.loads(rows[i].meta_json) for i in order},
        dev_curves={i: [float(x) for x in rows[i].dev_curve] for i in order},
        provenance={i: json.loads(rows[i].prov_json) for i in order},
        R=r,
        written_at={i: rows[i].written_at for i in order},
        created_at=h.created_at,
    )


def _scandir(path: Path) -> list[os.DirEntry]:
    """Entries of a directory, sorted by name; empty if it does not exist."""
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
