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

METHOD_KIND: dict[str, str] = {
    "multi": "joint",
    "mono": "per-language",
    "vanilla": "sequential",
    "shared_lora": "sequential",
    "nonshared_lora": "per-language",
}
DISPLAY_NAME: dict[str, str] = {
    "multi": "MULTI",
    "mono": "MONO",
    "vanilla": "VANILLA",
    "shared_lora": "SHARED LoRA",
    "nonshared_lora": "NON-SHARED LoRA",
}


@dataclass(frozen=True)
class StepHyper:
    """The hyper-parameters of one training step (one language, or all for MULTI)."""

    lr: float
    max_epochs: int
    patience: int
    lora_rank: int  # 0 = full fine-tuning
    head_lr: float | None = None  # the classifier's own lr (LoRA runs); None = lr
    min_epochs: int = 0  # epochs trained before patience may end the step


def step_hyper(method: str, rank: int, train: TrainConfig) -> StepHyper:
    """Paper defaults: 5e-5 / 50 epochs / patience 5 without LoRA, 5e-6 / 100 / 15 with it."""
    if method not in METHOD_KIND:
        raise ValueError(f"unknown method {method!r}")
    if rank:
        return StepHyper(
            train.lr_lora,
            train.max_epochs_lora,
            train.patience_lora,
            rank,
            train.lr_head_lora,
            train.min_epochs_lora,
        )
    return StepHyper(
        train.lr_full, train.max_epochs_full, train.patience_full, 0, None, train.min_epochs_full
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
