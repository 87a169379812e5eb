"""What identifies a run: every setting that can change its scores, and nothing else.

A run's key (:class:`hpc_forget.study.planning.RunKey`) holds the grid axes (method, model with its
revision, rank, order, seed, strategy, data scale) and ``settings``: a digest of
:func:`run_settings`, the rest of the resolved config that can change a score (data selection,
languages, the hyper-parameters that apply to this method, the label scheme). Two runs share an
id only when all of these agree, so a changed config never returns old scores: it makes new
runs beside the old ones in the same store.

Settings that cannot change a score are left out, so they never split a store: the config's
name, the store path, the cache folder, CPU threads, progress bars and every Slurm option.

Pure functions of plain data; no torch, no h5py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hpc_forget.errors import UserError
from hpc_forget.study.methods import is_full

if TYPE_CHECKING:
    from hpc_forget.study.config import ExperimentConfig

NOT_SCORE_KEYS: tuple[str, ...] = (
    "name",
    "store",
    "cache_dir",
    "train.cpu_threads",
    "train.checkpoint_minutes",
)
"""Config keys that cannot change a score (documented in docs/config.md)."""

GRID_KEYS: tuple[str, ...] = (
    "models",
    "methods",
    "ranks",
    "orders",
    "seeds",
    "strategies",
    "data.train_fraction",
)
"""Config keys expanded into the run key's own fields (one run per combination)."""

SETTINGS_DIGEST_LEN = 12

LATER_KEYS: Mapping[str, Any] = {"train.lora_head": "train", "train.processes": 1}
"""Settings added after stores existed, left out of the digest at these defaults, so the runs
of an older store keep their ids (a non-default value is a new setting, in the digest)."""


def _labels_digest() -> str:
    from hpc_forget.data.labels import LABELS

    return hashlib.sha256("\n".join(LABELS).encode()).hexdigest()[:12]


def _applies(train_key: str, rank: int) -> bool:
    """Whether a train key can act on a run of this LoRA rank (0 = full fine-tuning)."""
    if is_full(rank):
        return "lora" not in train_key
    return not train_key.endswith("_full")


def run_settings(cfg: ExperimentConfig, method: str, rank: int) -> dict[str, Any]:
    """The settings, beyond the run key's fields, that can change the scores of a run.

    ``{"data": {...}, "train": {...}, "labels": "<digest>"}`` with the config's own key names.
    Train keys that do not apply to the run (``*_full`` in a LoRA run, ``*lora*`` in a full
    fine-tuning run) are left out, and ``lr_head_lora: null`` is resolved to ``lr_lora``.
    """
    from hpc_forget.study.config import config_to_dict

    d = config_to_dict(cfg)
    data = dict(d["data"])
    data.pop("train_fraction")  # in the key, as data_scale
    train = {
        k: v
        for k, v in d["train"].items()
        if f"train.{k}" not in NOT_SCORE_KEYS
        and _applies(k, rank)
        and not (f"train.{k}" in LATER_KEYS and LATER_KEYS[f"train.{k}"] == v)
    }
    if "lr_head_lora" in train and train["lr_head_lora"] is None:
        train["lr_head_lora"] = train["lr_lora"]
    return {"data": data, "train": train, "labels": _labels_digest()}


def settings_digest(settings: Mapping[str, Any]) -> str:
    """A short, stable digest of a settings dict (part of the run key and so of the run id)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:SETTINGS_DIGEST_LEN]


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"data": {"max_train": 400}}`` -> ``{"data.max_train": 400}``; lists stay values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, name + "."))
        else:
            out[name] = v
    return out


def differing_keys(settings: Sequence[Mapping[str, Any]]) -> list[str]:
    """The dotted keys whose values are not the same in all of ``settings`` (sorted)."""
    flat = [flatten(s) for s in settings]
    keys = sorted({k for f in flat for k in f})
    missing = object()
    return [k for k in keys if len({json.dumps(f.get(k, missing), default=str) for f in flat}) > 1]


def _short(v: Any) -> str:
    if isinstance(v, list):
        text = ",".join(str(x) for x in v)
    else:
        text = "null" if v is None else str(v)
    return text if len(text) <= 40 else text[:37] + "..."


def settings_labels(settings: Sequence[Mapping[str, Any]]) -> list[str]:
    """A label per settings dict naming only the keys in which they differ.

    ``[{"data": {"max_train": 800}}, {"data": {"max_train": 400}}]`` ->
    ``["data.max_train=800", "data.max_train=400"]``; identical settings give ``""``.
    """
    keys = differing_keys(settings)
    flat = [flatten(s) for s in settings]
    return [", ".join(f"{k}={_short(f.get(k))}" for k in keys if k in f) for f in flat]


def grid_key(key: Mapping[str, Any]) -> str:
    """A run key without its settings digest: the grid cell, whatever the settings."""
    return json.dumps({k: v for k, v in key.items() if k != "settings"}, sort_keys=True)


def other_settings_note(
    planned: Mapping[str, tuple[Mapping[str, Any], Mapping[str, Any]]],
    stored: Mapping[str, tuple[Mapping[str, Any], Mapping[str, Any]]],
) -> str | None:
    """One line saying that a store also holds runs of other settings, and which keys differ.

    ``planned`` and ``stored`` map run id -> (key, settings): the runs a config plans, and the
    runs in the store. A stored run counts when it is not planned but fills the same grid cell
    (same key apart from ``settings``) as a planned run.
    """
    by_cell = {grid_key(k): s for k, s in planned.values()}
    keys: set[str] = set()
    others = 0
    for run_id, (key, s) in stored.items():
        mine = by_cell.get(grid_key(key))
        if run_id in planned or mine is None:
            continue
        others += 1
        keys.update(differing_keys([mine, s]))
    return _note(others, keys)


def _note(count: int, keys: set[str]) -> str | None:
    if not count:
        return None
    what = ", ".join(sorted(keys)) if keys else "settings"
    return (
        f"note: the store also holds {count} run(s) of these cells with other settings"
        f" (differing in {what}); they are kept beside these runs and analysed as separate groups"
    )


def run_slug(run_id: str) -> str:
    """The readable part of a run id (its grid cell), without the trailing digest."""
    return run_id.rsplit("_", 1)[0]


def store_note(store: Any, cfg: ExperimentConfig, planned_ids: set[str]) -> str | None:
    """:func:`other_settings_note` for a store and a config's planned run ids, cheaply: run
    ids are listed from file names, and only the run files of the config's own grid cells
    under other settings are read (``status`` stays fast on big stores)."""
    slugs = {run_slug(r) for r in planned_ids}
    count, keys = 0, set()
    for run_id in store.run_ids():
        if run_id in planned_ids or run_slug(run_id) not in slugs:
            continue
        try:
            rec = store.run(run_id)
        except UserError:  # damaged: the store's problems() reports it
            continue
        mine = run_settings(cfg, rec.key["method"], rec.key["rank"])
        count += 1
        keys.update(differing_keys([mine, rec.settings]))
    return _note(count, keys)
