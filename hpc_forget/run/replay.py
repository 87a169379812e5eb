"""Experience replay: a fixed buffer of k training examples of each earlier language, drawn
from the run's seed, mixed into every later step's training data."""

from __future__ import annotations

import dataclasses
import random
from typing import TYPE_CHECKING

from hpc_forget.models.encode import concat_encoded, subset_encoded
from hpc_forget.run.hooks import StepContext, Strategy

if TYPE_CHECKING:
    import torch

    from hpc_forget.run.training import StepData


def buffer_indices(n: int, k: int, run_seed: int, locale: str) -> list[int]:
    """The k (or all n, if fewer) examples of ``locale`` the buffer keeps: the same at every
    step and after a resume, sorted."""
    return sorted(random.Random(f"replay:{run_seed}:{locale}").sample(range(n), min(k, n)))


class Replay(Strategy):
    """Mix k examples of each earlier language into the step's training data (the dev set, and
    so early stopping, stay the current language's)."""

    name = "replay"

    def __init__(self, k: int = 20):
        self.k = k

    def before_step(self, model: torch.nn.Module, data: StepData, ctx: StepContext) -> StepData:
        if not ctx.earlier or ctx.data_of is None:
            return data
        parts = [(data.train, [])]
        for loc in ctx.earlier:
            enc, examples = ctx.data_of(loc, "train")
            idx = buffer_indices(len(enc.input_ids), self.k, ctx.run_seed, loc)
            parts.append(subset_encoded(enc, examples, idx))
        ctx.state["replayed"] = {loc: self.k for loc in ctx.earlier}
        train, _ = concat_encoded(parts)
        return dataclasses.replace(data, train=train)
