"""Checkpoints of sequential chains: the trainable weights after each step.

``<store>/checkpoints/<run_id>/step-<index:06d>.pt`` (the file name keeps the 0-based step
index; messages say "step 3/4" for index 2). Written atomically through
:func:`hpc_forget.files.atomic_write` (a full disk is one line, no temporary file is left);
only the newest is kept (a chain of 52 steps at XLM-R base size would otherwise fill a
quota), so a damaged one (truncated zip, bad pickle, wrong names or shapes) means recomputing
the chain from its start (an older one left by an earlier version is still used): the engine
recomputes the steps exactly as an uninterrupted chain would have.

Inside a step (every kind of task: a chain's step, a joint or per-language step, a merge's
language), ``midstep-<index:06d>.pt`` is the state of a step interrupted between two batches
(:class:`MidStep`: weights, optimizer, scheduler, RNG states, the position in the epoch's
batch order, early stopping, the best weights so far, the dev curve), written on a stop
request and every ``train.checkpoint_minutes``; its sha256 is in ``midstep-<index>.json``,
written after it, so a damaged or half-copied one is detected. It is removed once the step's
result is kept (stored, or checkpointed for a chain).

A post-hoc merge (MONO / NON-SHARED LoRA + merge, one ``joint`` task) keeps each language's
trained weights in ``language-<index:03d>-<locale>.pt`` with its training record in a
``.json`` beside it, so a rerun after a preemption continues with the next language, and the
merge reads the states memory-mapped; they are removed once the merged step is stored.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hpc_forget import files
from hpc_forget.errors import StoreError

__all__ = [
    "CheckpointDamaged",
    "checkpoint_dir",
    "checkpoint_path",
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


def save_checkpoint(
    model: torch.nn.Module,
    cfg: Any,
    run_id: str,
    step: int,
    *,
    n_steps: int | None = None,
    extra: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Trainable weights after `step`, written atomically; checkpoints older than the previous
    one are removed, and so are the temporary files of this run's dead writers. A failed write
    (full disk, quota, read-only) is a one-line StoreError; no temporary file is left."""
    path = checkpoint_path(cfg, run_id, step)
    files.clean_stale_tmp(path.parent)
    state = {n: p.detach().cpu() for n, p in _trainable(model).items()}
    state.update({EXTRA + k: v.detach().cpu() for k, v in (extra or {}).items()})
    label = f"step {step + 1}/{n_steps}" if n_steps else f"step {step + 1}"
    files.atomic_write(
        path,
        lambda tmp: _torch_save(state, tmp),
        f"the checkpoint of {label} of {run_id}",
        fix="move the store",
        error=StoreError,
    )
    for old in path.parent.glob("step-*.pt"):
        s = _step_of(old)
        if s is not None and s < step:
            old.unlink(missing_ok=True)
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


def read_checkpoint(
    model: torch.nn.Module, path: Path, *, mmap: bool = False
) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, checked against `model` (same trainable names and shapes);
    CheckpointDamaged otherwise. Nothing is copied into the model. ``mmap``: the tensors are
    memory-mapped from the file (read when used)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - truncated zip, bad pickle, I/O error ...
        text = " ".join(str(exc).split()).split(". ")[0][:160] or type(exc).__name__
        raise CheckpointDamaged(f"unreadable ({type(exc).__name__}: {text})") from None
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
    return state


def load_checkpoint(model: torch.nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """Copy a checkpoint into `model`'s trainable weights and return its extra tensors (a
    strategy's state); CheckpointDamaged (and the model unchanged) if it cannot be used."""
    state = read_checkpoint(model, path)
    params = _trainable(model)
    with torch.no_grad():
        for name, value in state.items():
            if name in params:
                params[name].copy_(value)
    return {k[len(EXTRA) :]: v for k, v in state.items() if k.startswith(EXTRA)}


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
    step to continue from (0 if none: recompute from scratch). A damaged checkpoint is logged
    in one line and skipped, like a missing one. ``on_extra(tensors)`` receives the loaded
    checkpoint's extra tensors (a strategy's state)."""
    who = label or run_id
    for step, path in _checkpoints(cfg, run_id, before):
        try:
            extra = load_checkpoint(model, path)
        except CheckpointDamaged as exc:
            log.warning(
                "%s: checkpoint of step %d/%d (%s) is damaged (%s); skipped",
                who,
                step + 1,
                n_steps,
                path,
                exc,
            )
            continue
        if on_extra is not None:
            on_extra(extra)
        return step + 1
    return 0


def language_state_path(cfg: Any, run_id: str, index: int, locale: str) -> Path:
    """<store>/checkpoints/<run_id>/language-<index:03d>-<locale>.pt (a post-hoc merge)."""
    return checkpoint_dir(cfg, run_id) / f"language-{index:03d}-{locale}.pt"


def save_language_state(
    model: torch.nn.Module, cfg: Any, run_id: str, index: int, locale: str, meta: dict[str, Any]
) -> Path:
    """One language's trained weights (the trainable ones, CPU) and its training record
    ``meta`` (JSON), each written atomically, the record last: a language is done when both
    are there. A failed write is a one-line StoreError."""
    path = language_state_path(cfg, run_id, index, locale)
    files.clean_stale_tmp(path.parent)
    state = {n: p.detach().cpu() for n, p in _trainable(model).items()}
    what = f"the trained weights of {locale} for the merge of {run_id}"
    files.atomic_write(
        path, lambda tmp: _torch_save(state, tmp), what, fix="move the store", error=StoreError
    )
    files.atomic_write(
        path.with_suffix(".json"),
        json.dumps(meta, sort_keys=True).encode(),
        what,
        fix="move the store",
        error=StoreError,
    )
    return path


def load_language_state(
    model: torch.nn.Module, cfg: Any, run_id: str, index: int, locale: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """(weights memory-mapped, record) of a language saved by :func:`save_language_state`, or
    None when it is missing or cannot be used (logged in one line): train it again."""
    path = language_state_path(cfg, run_id, index, locale)
    record = path.with_suffix(".json")
    if not path.is_file() or not record.is_file():
        return None
    try:
        state = read_checkpoint(model, path, mmap=True)
        meta = json.loads(record.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise CheckpointDamaged("its record is not a JSON object")
    except (CheckpointDamaged, OSError, ValueError) as exc:
        log.warning(
            "%s: saved weights of %s (%s) are damaged (%s); trained again",
            run_id,
            locale,
            path,
            exc,
        )
        return None
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
        self.record = self.path.with_suffix(".json")
        self.label = label or f"{run_id} step {step + 1}"
        self.interval_s, self.clock = interval_s, clock
        self.saves = 0

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (tensors, numbers, strings, lists, tuples and dicts of them)
        atomically, then its record (sha256, epoch, batch); a failed write is a StoreError."""
        files.clean_stale_tmp(self.path.parent)
        digest: list[str] = []
        what = f"the mid-step checkpoint of {self.label}"
        files.atomic_write(
            self.path,
            lambda tmp: _torch_save(state, tmp),
            what,
            fix="move the store",
            error=StoreError,
            validate=lambda tmp: digest.append(files.sha256_file(tmp)),
        )
        rec = {"sha256": digest[-1], "epoch": state.get("epoch"), "batch": state.get("batch")}
        files.atomic_write(
            self.record,
            json.dumps(rec, sort_keys=True).encode(),
            what,
            fix="move the store",
            error=StoreError,
        )
        self.saves += 1

    def load(self, check: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any] | None:
        """The saved state, or None when there is none or it cannot be used (damaged, or
        ``check(state)`` raised CheckpointDamaged: logged in one line; the step restarts)."""
        if not self.path.is_file() and not self.record.is_file():
            return None
        try:
            if not self.path.is_file() or not self.record.is_file():
                raise CheckpointDamaged("its file or its record is missing")
            try:
                rec = json.loads(self.record.read_text(encoding="utf-8"))
                want = rec["sha256"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise CheckpointDamaged(f"unreadable record ({type(exc).__name__})") from None
            if files.sha256_file(self.path) != want:
                raise CheckpointDamaged("its checksum does not match")
            try:
                state = torch.load(self.path, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - truncated zip, bad pickle, I/O error ...
                raise CheckpointDamaged(f"unreadable ({type(exc).__name__})") from None
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
