"""From a config to tasks: language orders, run keys and the task list.

A *run* is one cell of the study grid (method, model, rank, order, seed, strategy, data scale)
and owns one R matrix (or one F1 row) in the store. A *task* is the unit a worker executes: a
sequential chain is one task of T steps; MULTI is one task of one step; MONO and NON-SHARED
LoRA are one task per language.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpc_forget.study.identity import run_settings, settings_digest
from hpc_forget.study.methods import METHOD_KIND, is_full
from hpc_forget.study.orders import order_name, resolve_order

if TYPE_CHECKING:
    from hpc_forget.study.config import ExperimentConfig


@dataclass(frozen=True)
class RunKey:
    method: str
    model: str
    rank: int
    order: str
    seed: int
    strategy: str = "none"
    data_scale: float = 1.0
    settings: str = (
        ""  # identity.settings_digest of identity.run_settings: all else that scores depend on
    )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def run_id(self) -> str:
        digest = hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:8]
        model = re.sub(r"[^A-Za-z0-9.]+", "-", self.model.rstrip("/").split("/")[-1]).strip("-")
        parts = [self.method, model or "model"]
        if not is_full(self.rank):
            parts.append(f"r{self.rank}")
        if self.order:
            parts.append(f"o{self.order}")
        parts.append(f"s{self.seed}")
        if self.strategy != "none":
            parts.append(self.strategy.partition("(")[0])  # the parameters are in the digest
        if self.data_scale != 1.0:
            parts.append(f"d{self.data_scale:g}")
        return "_".join(parts) + "_" + digest


@dataclass(frozen=True)
class Task:
    key: RunKey
    kind: str  # sequential | joint | per-language
    languages: tuple[str, ...]
    steps: tuple[str, ...]
    step_indices: tuple[int, ...]

    @property
    def run_id(self) -> str:
        return self.key.run_id

    @property
    def task_id(self) -> str:
        if self.kind == "per-language":
            return f"{self.run_id}-s{self.step_indices[0]}"
        return self.run_id

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key.as_dict(),
            "kind": self.kind,
            "languages": list(self.languages),
            "steps": list(self.steps),
            "step_indices": list(self.step_indices),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Task:
        return cls(
            key=RunKey(**d["key"]),
            kind=d["kind"],
            languages=tuple(d["languages"]),
            steps=tuple(d["steps"]),
            step_indices=tuple(d["step_indices"]),
        )


def plan(cfg: ExperimentConfig) -> list[Task]:
    """Expand a config into tasks, in a deterministic order.

    Each method runs with every strategy it composes with (study/strategies.py) and every
    data-scale fraction. A merging strategy on a per-language method (MONO, NON-SHARED LoRA)
    is one ``joint`` task: it trains each language's model, merges them and tests the merged
    model on every language (one F1 row, like MULTI).
    """
    tasks: list[Task] = []
    for model in cfg.models:
        for seed in cfg.seeds:
            for method in cfg.methods:
                kind = METHOD_KIND[method.name]
                for rank in method.ranks:
                    settings = settings_digest(run_settings(cfg, method.name, rank))
                    for strategy in cfg.strategies:
                        if not strategy.composes_with(method.name):
                            continue
                        for fraction in cfg.data.train_fractions:
                            key = functools.partial(
                                RunKey,
                                method=method.name,
                                model=model,
                                rank=rank,
                                seed=seed,
                                strategy=strategy.canonical,
                                data_scale=fraction,
                                settings=settings,
                            )
                            tasks.extend(_tasks(cfg, kind, key, strategy.name))
    return tasks


def _tasks(
    cfg: ExperimentConfig, kind: str, key: Callable[..., RunKey], strategy: str
) -> list[Task]:
    langs = cfg.data.languages
    if kind == "sequential":
        out = []
        for spec in cfg.orders:
            order = resolve_order(spec, langs)
            out.append(
                Task(key(order=order_name(spec)), kind, langs, order, tuple(range(len(order))))
            )
        return out
    if kind == "joint":
        return [Task(key(order=""), kind, langs, ("all",), (0,))]
    if strategy == "merge":  # per-language models merged into one, tested on every language
        return [Task(key(order=""), "joint", langs, ("merged",), (0,))]
    return [Task(key(order=""), kind, langs, langs, (i,)) for i in range(len(langs))]


def format_plan(tasks: list[Task]) -> str:
    """A readable listing: one line per task."""
    lines = [f"{len(tasks)} tasks, {len({t.run_id for t in tasks})} runs"]
    for t in tasks:
        steps = [t.steps[i] for i in t.step_indices]
        what = " -> ".join(steps) if t.kind == "sequential" else ", ".join(steps)
        lines.append(f"  {t.task_id:<60} {t.kind:<12} {len(steps)} step(s): {what}")
    return "\n".join(lines)
