"""Strategies that act on the weights directly: hard layer freezing and post-hoc weight
reversion, and the choice of weights they act on (a part of the encoder, by name)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch

from hpc_forget.errors import ConfigError
from hpc_forget.run.hooks import StepContext, Strategy

if TYPE_CHECKING:
    from hpc_forget.run.training import StepData

_LAYER = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.")
_PEFT_PREFIX = "base_model.model."


def _plain(name: str) -> str:
    return name[len(_PEFT_PREFIX) :] if name.startswith(_PEFT_PREFIX) else name


def select_parameters(
    model: torch.nn.Module, part: str, k: int = 0, listed: tuple[str, ...] = ()
) -> list[tuple[str, torch.nn.Parameter]]:
    """The parameters of ``part``: ``all``; ``embeddings``; ``bottom``/``top``: the k lowest or
    highest encoder layers; ``listed``: names containing one of the ``listed`` prefixes (PEFT's
    ``base_model.model.`` is ignored, so ``encoder.layer.0`` works with and without LoRA).
    A selection that matches no parameter is a one-line ConfigError."""
    named = list(model.named_parameters())
    layers = sorted({int(m.group(1)) for n, _ in named if (m := _LAYER.search(_plain(n)))})
    if part == "all":
        return named
    if part == "embeddings":
        out = [(n, p) for n, p in named if ".embeddings." in f".{_plain(n)}"]
    elif part in ("bottom", "top"):
        chosen = set(layers[:k] if part == "bottom" else layers[len(layers) - k :] if k else [])
        out = [
            (n, p)
            for n, p in named
            if (m := _LAYER.search(_plain(n))) and int(m.group(1)) in chosen
        ]
        if k and not out:
            raise ConfigError(
                f"strategy: part={part} selects no layer: the model has no encoder.layer.N"
            )
        return out
    elif part == "listed":
        out = [(n, p) for n, p in named if any(x in _plain(n) for x in listed)]
    else:
        raise ConfigError(
            f"strategy: part {part!r}: use one of all, embeddings, bottom, top, listed"
        )
    if not out:
        raise ConfigError(
            f"strategy: part={part}{' listed=' + '+'.join(listed) if listed else ''} matches no"
            " parameter of the model; name prefixes such as embeddings or encoder.layer.0"
        )
    return out


def trainable_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every trainable weight, by name."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


class Freeze(Strategy):
    """Hard layer freezing: the chosen weights never train (bit-identical after every step)."""

    name = "freeze"

    def __init__(self, part: str = "embeddings", k: int = 2, listed: tuple[str, ...] = ()):
        self.part, self.k, self.listed = part, k, tuple(listed)

    def before_step(self, model: torch.nn.Module, data: StepData, ctx: StepContext) -> StepData:
        for _, p in select_parameters(model, self.part, self.k, self.listed):
            p.requires_grad_(False)
        return data


class Revert(Strategy):
    """Post-hoc weight reversion: after each step, move a fraction ``alpha`` of the chosen
    weights back toward those before the step (``previous``) or before the first step
    (``initial``)."""

    name = "revert"
    needs_initial = True

    def __init__(
        self,
        alpha: float = 0.5,
        anchor: str = "previous",
        part: str = "all",
        k: int = 2,
        listed: tuple[str, ...] = (),
    ):
        self.alpha, self.anchor = alpha, anchor
        self.part, self.k, self.listed = part, k, tuple(listed)
        self.needs_initial = anchor == "initial"

    def before_step(self, model: torch.nn.Module, data: StepData, ctx: StepContext) -> StepData:
        if self.anchor == "previous":
            ctx.state["previous"] = trainable_copy(model)
        return data

    def after_step(self, model: torch.nn.Module, ctx: StepContext) -> None:
        anchor = ctx.state["previous" if self.anchor == "previous" else "initial"]
        with torch.no_grad():
            for n, p in select_parameters(model, self.part, self.k, self.listed):
                if n in anchor:
                    p.lerp_(anchor[n].to(p.device), self.alpha)
