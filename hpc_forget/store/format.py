"""The store's files (docs/store.md): names, formats and schema version, the run and step file
layouts with their checksums, reading and checking one file, the marker, ``RunRecord`` and
the expected-cells rule. Imports only the standard library, numpy and h5py.
"""

from __future__ import annotations

import io
import json
import os
import re
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpc_forget import files
from hpc_forget.errors import StoreError, shorten
from hpc_forget.files import utc_now

# HDF5's own file locking fails on Lustre and many NFS mounts (errno 11, 37, 38, 524). We never
# rely on it: every open below passes locking=False; the variable covers other HDF5 users.
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")

import h5py  # noqa: E402
import numpy as np  # noqa: E402

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


def _reason(exc: BaseException) -> str:
    """Why a file could not be read, in a few words."""
    msg = str(exc)
    if "truncated file" in msg:
        m = re.search(r"truncated file: eof = \d+, sblock->base_addr = \d+, stored_eof = \d+", msg)
        return f"truncated HDF5 file ({m.group(0) if m else 'truncated file'})"
    if "file signature not found" in msg:
        return "not an HDF5 file (file signature not found)"
    return shorten(f"unreadable ({type(exc).__name__}: {msg})", 200)


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
    created = utc_now("milliseconds")
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
