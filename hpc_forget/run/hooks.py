"""The seam for anti-forgetting strategies: the points of a run where such a method acts.

A strategy is created once per task (``get_strategy(task.key.strategy)``) and sees every
step of that task in order. The engine and the training loop call its hooks:

- :meth:`Strategy.before_step` — before a step trains: freeze parameters, snapshot weights,
  prepare extra data (return a new :class:`~hpc_forget.run.training.StepData`, e.g. with
  replayed examples of earlier languages mixed into ``train``);
- :meth:`Strategy.batch_loss` — for every training batch, when :attr:`Strategy.adds_loss`:
  add a term to the loss (a penalty towards earlier weights, distillation, ...);
- :meth:`Strategy.after_step` — after the step's best weights are restored, before the step
  is evaluated: change the weights (merge, average), estimate statistics for the next step;
- :meth:`Strategy.after_run` — after the task's last step: combine models.

The default, ``none``, does nothing: every score is bit-identical to a loop without hooks.
What a strategy keeps between steps goes in ``ctx.state`` (one dict per task). A sequential
chain resumed from a checkpoint gets back what :meth:`Strategy.state_tensors` saved with that
checkpoint, and ``state["initial"]`` when :attr:`Strategy.needs_initial` is set; anything
else must be rebuilt in ``before_step``.

A step resumed from its mid-step checkpoint (a stop request or a periodic checkpoint between
two batches) runs ``before_step`` again on the step's starting weights, as the first time,
and only then gets its weights, optimizer and random states back; what ``batch_loss`` changes
as the batches go by (a random stream of its own) is saved by :meth:`Strategy.midstep_state`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from hpc_forget.run.training import StepData
    from hpc_forget.study.methods import StepHyper


@dataclass
class StepContext:
    """What a strategy knows about the step in progress."""

    run_id: str
    step: int  # 0-based index of the step in its run
    n_steps: int
    trained: tuple[str, ...]  # the languages this step trains on
    hyper: StepHyper
    seed: int  # the step's seed
    state: dict[str, Any] = field(default_factory=dict)  # kept across the task's steps
    earlier: tuple[str, ...] = ()  # sequential runs: the languages of the steps before
    run_seed: int = 0  # the run's seed (the same at every step)
    pad_id: int = 0
    data_of: Callable[[str, str], tuple[Any, list[Any]]] | None = None
    """``data_of(locale, split)`` -> (Encoded, examples) of any language of the run."""


class Strategy:
    """No-op hooks; a strategy overrides the ones it needs."""

    name = "none"
    adds_loss = False  # True: batch_loss is called for every batch (off: no per-batch call)
    needs_initial = False  # True: the engine puts the weights before step 1 in state["initial"]

    def state_tensors(self, state: dict[str, Any]) -> dict[str, torch.Tensor]:
        """What of ``state`` later steps need, saved with the step's checkpoint so a resumed
        chain continues exactly (default: nothing; the state is rebuilt in before_step)."""
        return {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """Put :meth:`state_tensors`' output back into ``state`` (on resume)."""
        return None

    def midstep_state(self, ctx: StepContext) -> dict[str, Any]:
        """What of ``ctx.state`` changes from batch to batch, saved in a mid-step checkpoint
        (plain values: numbers, strings, tuples, lists, dicts, tensors). Default: nothing."""
        return {}

    def load_midstep_state(self, saved: dict[str, Any], ctx: StepContext) -> None:
        """Put :meth:`midstep_state`'s output back (after before_step, on a mid-step resume)."""
        return None

    def before_step(self, model: torch.nn.Module, data: StepData, ctx: StepContext) -> StepData:
        return data

    def batch_loss(
        self,
        model: torch.nn.Module,
        batch: Mapping[str, torch.Tensor],
        loss: torch.Tensor,
        ctx: StepContext,
    ) -> torch.Tensor:
        return loss

    def after_step(self, model: torch.nn.Module, ctx: StepContext) -> None:
        return None

    def after_run(self, model: torch.nn.Module, ctx: StepContext) -> None:
        return None


class NoStrategy(Strategy):
    """``none``: the paper's methods as published."""
