"""Checkpoints of sequential chains: the trainable weights after each step.

``<store>/checkpoints/<run_id>/step-<index:06d>.pt`` (the file name keeps the 0-based step
index; messages say "step 3/4" for index 2). Every checkpoint file here is written the same
way (:func:`_save_recorded`): atomically through :func:`hpc_forget.files.atomic_write` (a
full disk is one line, no temporary file is left), then its *record*, the same name with
``.json``, holding its sha256; reading one (:func:`_load_recorded`) checks the sha256 first,
so a truncated, bit-flipped or replaced file is detected, not loaded as wrong weights (torch's
zip reader does not check its CRCs). A file without a sha256 in its record (an earlier
version's, or one whose writer died between the file and its record) is checked by its zip
CRCs instead, where that is allowed. Only the newest step checkpoint is kept (a chain of 52
steps at XLM-R base size would otherwise fill a quota), so a damaged one (or one with wrong
names or shapes) means recomputing the chain from its start (an older one left by an earlier
version is still used): one log line names the file and what happens next, and the engine
recomputes the steps exactly as an uninterrupted chain would have.

Inside a step (every kind of task: a chain's step, a joint or per-language step, a merge's
language), ``midstep-<index:06d>.pt`` is the state of a step interrupted between two batches
(:class:`MidStep`: weights, optimizer, scheduler, RNG states, the position in the epoch's
batch order, early stopping, the best weights so far, the dev curve), written on a stop
request and every ``train.checkpoint_minutes``; its record ``midstep-<index>.json`` is
required (a missing one means damaged). It is removed once the step's result is kept
(stored, or checkpointed for a chain).

A post-hoc merge (MONO / NON-SHARED LoRA + merge, one ``joint`` task) keeps each language's
trained weights in ``language-<index:03d>-<locale>.pt`` with its record beside it (the sha256
and the language's training record), so a rerun after a preemption continues with the next
language, and the merge reads the states memory-mapped; they are removed once the merged step
is stored.
"""

from __future__ import annotations

import io
import json
import logging
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hpc_forget import files
from hpc_forget.errors import StoreError, one_line, shorten

__all__ = [
    "CheckpointDamaged",
    "checkpoint_dir",
    "checkpoint_path",
    "record_path",
    "read_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "resume_from_checkpoint",
    "language_state_path",
    "save_language_state",
    "load_language_state",
    "remove_language_states",
    "MidStep",
    "midstep_path",
    "remove_midsteps",
]

log = logging.getLogger("hpc_forget")


class CheckpointDamaged(Exception):
    """A checkpoint file that cannot be used; the message says why, in a few words."""


def checkpoint_dir(cfg: Any, run_id: str) -> Path:
    """<store>/checkpoints/<run_id> (`cfg` is an ExperimentConfig: only ``cfg.store`` is read)."""
    return Path(cfg.store) / "checkpoints" / run_id


def checkpoint_path(cfg: Any, run_id: str, step: int) -> Path:
    return checkpoint_dir(cfg, run_id) / f"step-{step:06d}.pt"


def _step_of(path: Path) -> int | None:
    try:
        return int(path.stem.split("-")[1]) if path.stem.startswith("step-") else None
    except (IndexError, ValueError):
        return None


def _trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


EXTRA = "strategy/"
"""Prefix of a checkpoint's non-weight tensors: a strategy's state (run/hooks.py)."""


def record_path(path: Path) -> Path:
    """The record of a checkpoint file: the same name with ``.json`` (its sha256, and the
    fields its writer adds)."""
    return path.with_suffix(".json")


# --------------------------------------------------------------------------------------------
# one checkpoint file: written atomically, then its sha256 record; checked when read


def _why(exc: BaseException) -> str:
    """An exception in a few words, on one line: ``Type: first sentence``."""
    text = one_line(shorten(str(exc), 400)).split(". ")[0][:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _save_recorded(
    path: Path, state: dict[str, Any], what: str, fields: dict[str, Any] | None = None
) -> None:
    """torch.save ``state`` into ``path`` atomically, then its record (``{"sha256": ...,
    **fields}``, atomically too; the sha256 is of the bytes on disk, read back before the
    rename). A writer that dies between the two leaves the file with the previous record (a
    mismatch: detected) or with none. A failed write is a one-line StoreError; no temporary
    file is left. The one writer of every checkpoint file here."""
    files.clean_stale_tmp(path.parent)
    digest: list[str] = []
    files.atomic_write(
        path,
        lambda tmp: _torch_save(state, tmp),
        what,
        fix="move the store",
        error=StoreError,
        validate=lambda tmp: digest.append(files.sha256_file(tmp)),
    )
    files.atomic_write(
        record_path(path),
        json.dumps({**(fields or {}), "sha256": digest[-1]}, sort_keys=True).encode(),
        what,
        fix="move the store",
        error=StoreError,
    )


def _check_zip(path: Path) -> None:
    """The zip CRC of every entry of a torch file (torch.load does not check them), for a
    file without a sha256 record; CheckpointDamaged if one fails."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except Exception as exc:  # noqa: BLE001 - not a zip, truncated, I/O error ...
        raise CheckpointDamaged(f"no sha256 record, and not a readable zip ({_why(exc)})") from None
    if bad is not None:
        raise CheckpointDamaged(f"no sha256 record, and its entry {bad} fails its zip CRC check")


def _load_recorded(
    path: Path, *, mmap: bool = False, legacy: bool = False
) -> tuple[Any, dict[str, Any], bool]:
    """(what ``path`` holds, its record's fields but the sha256, checked) once the file's
    sha256 matches its record; CheckpointDamaged (why, in a few words) otherwise. ``legacy``:
    a file whose record is missing or holds no sha256 (an earlier version's, or its writer
    died before the record) is checked by its zip CRCs instead, and ``checked`` is False;
    without ``legacy`` it is damaged. ``mmap``: tensors memory-mapped from the file. The one
    reader of every checkpoint file here."""
    record = record_path(path)
    text: str | None = None
    rec: Any = {}
    try:
        text = record.read_text(encoding="utf-8")
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise CheckpointDamaged(f"its record {record.name} is unreadable ({_why(exc)})") from None
    if text is not None:
        try:
            rec = json.loads(text)
        except ValueError:
            raise CheckpointDamaged(f"its record {record.name} is not JSON") from None
        if not isinstance(rec, dict):
            raise CheckpointDamaged(f"its record {record.name} is not a JSON object")
    want = rec.pop("sha256", None)
    if want is not None:
        try:
            got = files.sha256_file(path)
        except OSError as exc:
            raise CheckpointDamaged(f"unreadable ({_why(exc)})") from None
        if got != want:
            raise CheckpointDamaged(f"its sha256 does not match its record {record.name}")
    elif not legacy:
        missing = "is missing" if text is None else "holds no sha256"
        raise CheckpointDamaged(f"its record {record.name} {missing}")
    else:
        _check_zip(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - truncated zip, bad pickle, I/O error ...
        raise CheckpointDamaged(f"unreadable ({_why(exc)})") from None
    return obj, rec, want is not None


# --------------------------------------------------------------------------------------------
# a chain's step checkpoints


def save_checkpoint(
    model: torch.nn.Module,
    cfg: Any,
    run_id: str,
    step: int,
    *,
    n_steps: int | None = None,
    extra: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Trainable weights after `step`, written atomically with its sha256 record
    (``step-<index>.json``); checkpoints of earlier steps are removed once it is in place,
    and so are the temporary files of this run's dead writers. A failed write (full disk,
    quota, read-only) is a one-line StoreError; no temporary file is left."""
    path = checkpoint_path(cfg, run_id, step)
    state = {n: p.detach().cpu() for n, p in _trainable(model).items()}
    state.update({EXTRA + k: v.detach().cpu() for k, v in (extra or {}).items()})
    label = f"step {step + 1}/{n_steps}" if n_steps else f"step {step + 1}"
    _save_recorded(path, state, f"the checkpoint of {label} of {run_id}")
    # records first, so that no checkpoint is left with another one's record
    old = sorted(path.parent.glob("step-*.json")) + sorted(path.parent.glob("step-*.pt"))
    for p in old:
        s = _step_of(p)
        if s is not None and s < step:
            p.unlink(missing_ok=True)
    remove_midsteps(cfg, run_id, upto=step)
    return path


class _Recorder(io.RawIOBase):
    """A file torch.save writes through that keeps the OSError of a failed write: torch turns
    it into an unrelated RuntimeError ("unexpected pos ...", "file write failed")."""

    def __init__(self, raw: Any) -> None:
        self.raw, self.error = raw, None

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        try:
            return self.raw.write(b)
        except OSError as exc:
            self.error = exc
            raise


def _torch_save(state: dict[str, Any], tmp: Path) -> None:
    """torch.save into `tmp`, a full disk raised as the OSError it is."""
    with open(tmp, "wb") as raw:
        rec = _Recorder(raw)
        try:
            torch.save(state, rec)
        except Exception:
            if rec.error is not None:
                raise rec.error from None
            raise
        if rec.error is not None:
            raise rec.error


def _read_weights(
    model: torch.nn.Module, path: Path, *, mmap: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, Any], bool]:
    """(tensors, record fields, checked against a sha256) of a checkpoint, checked against
    `model` (same trainable names and shapes); CheckpointDamaged otherwise."""
    state, rec, checked = _load_recorded(path, mmap=mmap, legacy=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointDamaged("not a dict of tensors")
    params = _trainable(model)
    weights = {k for k in state if not k.startswith(EXTRA)}
    if weights != set(params):
        missing, extra = sorted(set(params) - weights), sorted(weights - set(params))
        raise CheckpointDamaged(
            f"its weights do not match the model ({len(missing)} missing, {len(extra)} unexpected"
            f"{', e.g. ' + (missing or extra)[0] if missing or extra else ''})"
        )
    for name, value in state.items():
        if name in params and tuple(value.shape) != tuple(params[name].shape):
            raise CheckpointDamaged(
                f"{name} has shape {tuple(value.shape)}, the model {tuple(params[name].shape)}"
            )
    return state, rec, checked


def read_checkpoint(
    model: torch.nn.Module, path: Path, *, mmap: bool = False
) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, checked: its sha256 against its record (no record, an earlier
    version's file: its zip CRCs), then against `model` (same trainable names and shapes);
    CheckpointDamaged otherwise. Nothing is copied into the model. ``mmap``: the tensors are
    memory-mapped from the file (read when used)."""
    return _read_weights(model, path, mmap=mmap)[0]


def _load_into(model: torch.nn.Module, path: Path) -> tuple[dict[str, torch.Tensor], bool]:
    """:func:`load_checkpoint`, and whether the file was checked against a sha256 record."""
    state, _, checked = _read_weights(model, path)
    params = _trainable(model)
    with torch.no_grad():
        for name, value in state.items():
            if name in params:
                params[name].copy_(value)
    return {k[len(EXTRA) :]: v for k, v in state.items() if k.startswith(EXTRA)}, checked


def load_checkpoint(model: torch.nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """Copy a checkpoint into `model`'s trainable weights and return its extra tensors (a
    strategy's state); CheckpointDamaged (and the model unchanged) if it cannot be used."""
    return _load_into(model, path)[0]


def latest_checkpoint(cfg: Any, run_id: str, before: int) -> tuple[int, Path] | None:
    """The newest checkpoint of a step < `before`, if any."""
    found = _checkpoints(cfg, run_id, before)
    return found[0] if found else None


def _checkpoints(cfg: Any, run_id: str, before: int) -> list[tuple[int, Path]]:
    """Checkpoints of steps < `before`, newest first."""
    folder = checkpoint_dir(cfg, run_id)
    if not folder.is_dir():
        return []
    out = [(s, p) for p in folder.glob("step-*.pt") if (s := _step_of(p)) is not None]
    return sorted((x for x in out if x[0] < before), reverse=True)


def resume_from_checkpoint(
    model: torch.nn.Module,
    cfg: Any,
    run_id: str,
    before: int,
    *,
    n_steps: int,
    label: str = "",
    on_extra: Any = None,
) -> int:
    """Load the newest usable checkpoint of a step < `before` into `model` and return the
    step to continue from (0 if none: recompute from scratch). A damaged checkpoint is one
    warning line naming the file, why, and where the chain goes on from; a missing one (the
    steps before ``before`` are stored, but no checkpoint of the last) is one info line.
    ``on_extra(tensors)`` receives the loaded checkpoint's extra tensors (a strategy's
    state)."""
    who = label or run_id
    damaged: list[tuple[int, Path, CheckpointDamaged]] = []
    start = 0
    for step, path in _checkpoints(cfg, run_id, before):
        try:
            extra, checked = _load_into(model, path)
        except CheckpointDamaged as exc:
            damaged.append((step, path, exc))
            continue
        if not checked:
            log.info(
                "%s: checkpoint of step %d/%d (%s) has no sha256 record (an earlier version's);"
                " its zip CRCs match, so it is used",
                who,
                step + 1,
                n_steps,
                path,
            )
        if on_extra is not None:
            on_extra(extra)
        start = step + 1
        break
    then = f"recomputing from step {start + 1}/{n_steps}"
    if start:
        then += f" on the checkpoint of step {start}/{n_steps}"
    for step, path, exc in damaged:
        log.warning(
            "%s: checkpoint of step %d/%d (%s) is damaged (%s); %s",
            who,
            step + 1,
            n_steps,
            path,
            exc,
            then,
        )
    if start < before and not damaged:
        log.info("%s: no usable checkpoint after step %d/%d, %s", who, before, n_steps, then)
    return start


# --------------------------------------------------------------------------------------------
# a post-hoc merge's per-language states


def language_state_path(cfg: Any, run_id: str, index: int, locale: str) -> Path:
    """<store>/checkpoints/<run_id>/language-<index:03d>-<locale>.pt (a post-hoc merge)."""
    return checkpoint_dir(cfg, run_id) / f"language-{index:03d}-{locale}.pt"


def save_language_state(
    model: torch.nn.Module, cfg: Any, run_id: str, index: int, locale: str, meta: dict[str, Any]
) -> Path:
    """One language's trained weights (the trainable ones, CPU), written atomically, then its
    record (the training record ``meta`` and the file's sha256, JSON): a language is done when
    both are there. A failed write is a one-line StoreError."""
    path = language_state_path(cfg, run_id, index, locale)
    state = {n: p.detach().cpu() for n, p in _trainable(model).items()}
    what = f"the trained weights of {locale} for the merge of {run_id}"
    _save_recorded(path, state, what, meta)
    return path


def load_language_state(
    model: torch.nn.Module, cfg: Any, run_id: str, index: int, locale: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """(weights memory-mapped, record) of a language saved by :func:`save_language_state`, or
    None when it is missing or cannot be used (logged in one line): train it again."""
    path = language_state_path(cfg, run_id, index, locale)
    if not path.is_file() or not record_path(path).is_file():
        return None
    try:
        state, meta, checked = _read_weights(model, path, mmap=True)
    except CheckpointDamaged as exc:
        log.warning(
            "%s: saved weights of %s (%s) are damaged (%s); %s is trained again",
            run_id,
            locale,
            path,
            exc,
            locale,
        )
        return None
    if not checked:
        log.info(
            "%s: saved weights of %s (%s) have no sha256 record (an earlier version's); their"
            " zip CRCs match, so they are used",
            run_id,
            locale,
            path,
        )
    return {k: v for k, v in state.items() if not k.startswith(EXTRA)}, meta


def remove_language_states(cfg: Any, run_id: str) -> None:
    """Remove a post-hoc merge's per-language states (once its merged step is stored)."""
    folder = checkpoint_dir(cfg, run_id)
    if folder.is_dir():
        for p in folder.glob("language-*"):
            p.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# inside a step


def midstep_path(cfg: Any, run_id: str, step: int) -> Path:
    """<store>/checkpoints/<run_id>/midstep-<step:06d>.pt (its record: the same name, .json)."""
    return checkpoint_dir(cfg, run_id) / f"midstep-{step:06d}.pt"


def remove_midsteps(cfg: Any, run_id: str, *, upto: int | None = None) -> None:
    """Remove the mid-step checkpoints of steps <= ``upto`` (all without it), records first."""
    folder = checkpoint_dir(cfg, run_id)
    if not folder.is_dir():
        return
    for p in sorted(folder.glob("midstep-*.json")) + sorted(folder.glob("midstep-*.pt")):
        try:
            s = int(p.stem.split("-")[1])
        except (IndexError, ValueError):
            continue
        if upto is None or s <= upto:
            p.unlink(missing_ok=True)


class MidStep:
    """The mid-step checkpoint of one step: where the training loop saves its whole state
    between two batches and finds it again after a requeue (run/training.py writes and reads
    the state; this class only stores it). ``interval_s`` > 0: the loop also saves every
    ``interval_s`` seconds of ``clock`` (a periodic checkpoint, for jobs that die without a
    warning); 0: only on a stop request."""

    def __init__(
        self,
        cfg: Any,
        run_id: str,
        step: int,
        *,
        label: str = "",
        interval_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = midstep_path(cfg, run_id, step)
        self.record = record_path(self.path)
        self.label = label or f"{run_id} step {step + 1}"
        self.interval_s, self.clock = interval_s, clock
        self.saves = 0

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (tensors, numbers, strings, lists, tuples and dicts of them)
        atomically, then its record (sha256, epoch, batch); a failed write is a StoreError."""
        fields = {"epoch": state.get("epoch"), "batch": state.get("batch")}
        _save_recorded(self.path, state, f"the mid-step checkpoint of {self.label}", fields)
        self.saves += 1

    def load(self, check: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any] | None:
        """The saved state, or None when there is none or it cannot be used (damaged: its
        sha256 differs from its record or the record is missing, or ``check(state)`` raised
        CheckpointDamaged: logged in one line; the step restarts)."""
        if not self.path.is_file() and not self.record.is_file():
            return None
        try:
            if not self.path.is_file():
                raise CheckpointDamaged("its file is missing, its record is there")
            state = _load_recorded(self.path)[0]
            if not isinstance(state, dict):
                raise CheckpointDamaged("not a dict")
            if check is not None:
                check(state)
        except (CheckpointDamaged, OSError) as exc:
            log.warning(
                "%s: mid-step checkpoint %s is damaged (%s); the step restarts from its start",
                self.label,
                self.path,
                exc,
            )
            return None
        return state

    def remove(self) -> None:
        """Remove the checkpoint (once the step's result is kept), its record first."""
        self.record.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)
