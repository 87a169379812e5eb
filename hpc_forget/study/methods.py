"""The paper's five training methods: what each step trains and which hyper-parameters apply.

- MULTI: one model (or one LoRA adapter) on every language's training data together.
- MONO: one full model per language.
- VANILLA: one model, full fine-tuning, one language after another.
- SHARED LoRA: one adapter over a frozen base, one language after another.
- NON-SHARED LoRA: one adapter per language over the frozen base.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hpc_forget.study.config import TrainConfig


@dataclass(frozen=True)
class Method:
    """One row of the methods table: every fact about a method lives here."""

    name: str  # as written in configs and stored in run keys
    display: str  # as the paper's tables print it
    kind: str  # sequential | joint | per-language (docs/design.md, "Names used everywhere")
    ranks: str  # "full": rank 0 only; "lora": LoRA ranks only; "any": both


METHODS: tuple[Method, ...] = (
    Method("multi", "MULTI", "joint", "any"),
    Method("mono", "MONO", "per-language", "full"),
    Method("vanilla", "VANILLA", "sequential", "full"),
    Method("shared_lora", "SHARED LoRA", "sequential", "lora"),
    Method("nonshared_lora", "NON-SHARED LoRA", "per-language", "lora"),
)
METHOD_NAMES: tuple[str, ...] = tuple(m.name for m in METHODS)  # the paper's order
METHOD_KIND: dict[str, str] = {m.name: m.kind for m in METHODS}
DISPLAY_NAME: dict[str, str] = {m.name: m.display for m in METHODS}
LORA_METHODS: tuple[str, ...] = tuple(m.name for m in METHODS if m.ranks == "lora")
FULL_ONLY_METHODS: tuple[str, ...] = tuple(m.name for m in METHODS if m.ranks == "full")


def is_full(rank: int) -> bool:
    """Rank 0 means no LoRA: full fine-tuning. The one place this rule is written."""
    return rank == 0


@dataclass(frozen=True)
class StepHyper:
    """Every hyper-parameter of one training step (one language, or all for MULTI), decided
    once per method and rank by :func:`step_hyper`; the training loop takes it whole."""

    lr: float
    max_epochs: int
    patience: int
    lora_rank: int  # 0 = full fine-tuning
    head_lr: float | None = None  # the classifier's own lr (LoRA runs); None = lr
    min_epochs: int = 0  # epochs trained before patience may end the step
    batch_size: int = 32
    eval_batch_size: int = 512
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0  # 0 = no clipping
    pad_multiple: int = 8

    @property
    def full(self) -> bool:
        return is_full(self.lora_rank)


def step_hyper(method: str, rank: int, train: TrainConfig) -> StepHyper:
    """Paper defaults: 5e-5 / 50 epochs / patience 5 without LoRA, 5e-6 / 100 / 15 with it."""
    if method not in METHOD_KIND:
        raise ValueError(f"unknown method {method!r}")
    shared = {
        "batch_size": train.batch_size,
        "eval_batch_size": train.eval_batch_size,
        "weight_decay": train.weight_decay,
        "warmup_ratio": train.warmup_ratio,
        "max_grad_norm": train.max_grad_norm,
        "pad_multiple": train.pad_multiple,
    }
    if is_full(rank):
        return StepHyper(
            train.lr_full,
            train.max_epochs_full,
            train.patience_full,
            0,
            None,
            train.min_epochs_full,
            **shared,
        )
    return StepHyper(
        train.lr_lora,
        train.max_epochs_lora,
        train.patience_lora,
        rank,
        train.lr_head_lora,
        train.min_epochs_lora,
        **shared,
    )


def evaluated_languages(kind: str, languages: tuple[str, ...], step: int) -> tuple[str, ...]:
    """Which languages a step is tested on.

    Sequential steps test every language of the run, seen or not (one row of R); MULTI tests
    every language once; MONO and NON-SHARED test the step's own language.
    """
    if kind in ("sequential", "joint"):
        return languages
    return (languages[step],)


def trained_languages(
    kind: str, steps: tuple[str, ...], languages: tuple[str, ...], step: int
) -> tuple[str, ...]:
    """Which languages' training data a step uses."""
    if kind == "joint":
        return languages
    return (steps[step],)
