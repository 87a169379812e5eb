"""Strategies that add a term to every training batch's loss: L2-SP, EWC (separate and
online) and cross-lingual alignment of parallel utterances. The penalties are pure functions
of tensors, tested on their own."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from hpc_forget.data.batching import collate
from hpc_forget.run.hooks import StepContext, Strategy
from hpc_forget.run.weights import trainable_copy

if TYPE_CHECKING:
    from hpc_forget.run.training import StepData


def l2_penalty(
    params: Mapping[str, torch.Tensor],
    anchor: Mapping[str, torch.Tensor],
    weight: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """sum_j w_j (theta_j - anchor_j)^2 over the names both hold (w = 1 without ``weight``):
    L2-SP's penalty, and EWC's with the diagonal Fisher as weight. Zero, with a zero
    gradient, at the anchor."""
    total = None
    for n, p in params.items():
        if n not in anchor:
            continue
        d = (p - anchor[n].to(p.device)) ** 2
        term = (d * weight[n].to(p.device)).sum() if weight is not None else d.sum()
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return total


def _trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


class L2sp(Strategy):
    """L2-SP (Li et al., 2018): loss + lam/2 * ||theta - anchor||^2, the anchor being the
    weights before the step (previous) or before the first step (initial)."""

    name = "l2sp"
    adds_loss = True

    def __init__(self, lam: float = 0.01, anchor: str = "previous"):
        self.lam, self.anchor = lam, anchor
        self.needs_initial = anchor == "initial"

    def before_step(self, model: torch.nn.Module, data: StepData, ctx: StepContext) -> StepData:
        if self.anchor == "previous":
            ctx.state["previous"] = trainable_copy(model)
        return data

    def batch_loss(self, model, batch, loss, ctx):  # noqa: ANN001 - the hook's signature
        anchor = ctx.state[self.anchor]
        return loss + 0.5 * self.lam * l2_penalty(_trainable(model), anchor)


def diagonal_fisher(
    model: torch.nn.Module, input_ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]]
) -> dict[str, torch.Tensor]:
    """The empirical diagonal Fisher of the trainable weights: the mean over the examples of
    the squared gradient of each example's loss (one example per backward, dropout off).
    The model's gradients are cleared afterwards and no random state is used."""
    params = _trainable(model)
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    device = next(iter(params.values())).device
    was_training = model.training
    model.eval()
    for i in range(len(input_ids)):
        batch = collate(input_ids, labels, [i], pad_id=0, pad_multiple=1)
        batch = {k: v.to(device) for k, v in batch.items()}
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        for n, p in params.items():
            if p.grad is not None:
                fisher[n] += p.grad.detach() ** 2
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    n = max(1, len(input_ids))
    return {k: v / n for k, v in fisher.items()}


class Ewc(Strategy):
    """Elastic weight consolidation (Kirkpatrick et al., 2017): after each step, a diagonal
    Fisher on ``fisher_examples`` of the step's training examples; every later batch adds
    lam/2 * sum F (theta - theta*)^2. ``separate``: one penalty per earlier language, each with
    its own weights theta*; ``online`` (Schwarz et al., 2018): one running Fisher
    F = gamma F + F_new and theta* the weights after the last step."""

    name = "ewc"
    adds_loss = True

    def __init__(
        self,
        lam: float = 100.0,
        fisher_examples: int = 200,
        variant: str = "online",
        gamma: float = 1.0,
    ):
        self.lam, self.n, self.variant, self.gamma = lam, fisher_examples, variant, gamma

    def batch_loss(self, model, batch, loss, ctx):  # noqa: ANN001 - the hook's signature
        penalties = ctx.state.get("ewc", [])
        if not penalties:
            return loss
        params = _trainable(model)
        total = sum(l2_penalty(params, anchor, fisher) for fisher, anchor in penalties)
        return loss + 0.5 * self.lam * total

    def after_step(self, model: torch.nn.Module, ctx: StepContext) -> None:
        if ctx.data_of is None or ctx.step == ctx.n_steps - 1:
            return  # no later step: no penalty needs this step's Fisher
        ids: list[list[int]] = []
        labels: list[list[int]] = []
        for loc in ctx.trained:
            enc, _ = ctx.data_of(loc, "train")
            order = list(range(len(enc.input_ids)))
            random.Random(f"ewc:{ctx.run_seed}:{loc}").shuffle(order)
            ids += [enc.input_ids[i] for i in order[: self.n]]
            labels += [enc.labels[i] for i in order[: self.n]]
        fisher = diagonal_fisher(model, ids, labels)
        anchor = trainable_copy(model)
        penalties = ctx.state.setdefault("ewc", [])
        if self.variant == "separate" or not penalties:
            penalties.append((fisher, anchor))
        else:
            old, _ = penalties[0]
            penalties[0] = ({k: self.gamma * old[k] + fisher[k] for k in fisher}, anchor)

    def state_tensors(self, state: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = {}
        for i, (fisher, anchor) in enumerate(state.get("ewc", [])):
            out.update({f"{i}/fisher/{k}": v for k, v in fisher.items()})
            out.update({f"{i}/anchor/{k}": v for k, v in anchor.items()})
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        pens: dict[int, tuple[dict, dict]] = {}
        for key, v in tensors.items():
            i, what, name = key.split("/", 2)
            pens.setdefault(int(i), ({}, {}))[0 if what == "fisher" else 1][name] = v
        state["ewc"] = [pens[i] for i in sorted(pens)]


def alignment_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean (1 - cosine similarity) of paired sentence representations (rows of ``a`` and
    ``b``): zero for identical representations."""
    return (1 - torch.nn.functional.cosine_similarity(a, b, dim=-1)).mean()


def sentence_repr(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean of the last hidden states over the real (unpadded) tokens."""
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        output_hidden_states=True,
    )
    h = out.hidden_states[-1]
    mask = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
    return (h * mask).sum(1) / mask.sum(1).clamp(min=1)


class Align(Strategy):
    """Cross-lingual alignment: MASSIVE rows with the same id are translations. Each training
    batch adds beta * alignment_loss over ``pairs`` parallel utterances (current language,
    an earlier one), drawn with the step's seed."""

    name = "align"
    adds_loss = True

    def __init__(self, beta: float = 0.1, pairs: int = 16):
        self.beta, self.pairs = beta, pairs

    def before_step(self, model: torch.nn.Module, data: StepData, ctx: StepContext) -> StepData:
        found: list[tuple[Any, int, Any, int]] = []
        if ctx.data_of is not None:
            for cur in ctx.trained:
                enc_c, ex_c = ctx.data_of(cur, "train")
                at = {ex.id: i for i, ex in enumerate(ex_c)}
                for loc in ctx.earlier:
                    enc_e, ex_e = ctx.data_of(loc, "train")
                    found += [(enc_c, at[e.id], enc_e, j) for j, e in enumerate(ex_e) if e.id in at]
        ctx.state["align_pairs"] = found
        ctx.state["align_rng"] = random.Random(f"align:{ctx.seed}")
        return data

    def midstep_state(self, ctx: StepContext) -> dict[str, Any]:
        rng = ctx.state.get("align_rng")
        return {"rng": rng.getstate()} if rng is not None else {}

    def load_midstep_state(self, saved: dict[str, Any], ctx: StepContext) -> None:
        if "rng" in saved and "align_rng" in ctx.state:
            version, internal, gauss = saved["rng"]
            ctx.state["align_rng"].setstate((version, tuple(internal), gauss))

    def batch_loss(self, model, batch, loss, ctx):  # noqa: ANN001 - the hook's signature
        found = ctx.state.get("align_pairs") or []
        if not found or self.beta == 0:  # no term: no extra forward (nor its dropout draws)
            return loss
        chosen = ctx.state["align_rng"].sample(found, min(self.pairs, len(found)))
        device = batch["input_ids"].device

        def side(k: int) -> dict[str, torch.Tensor]:
            ids = [c[k].input_ids[c[k + 1]] for c in chosen]
            b = collate(ids, ids, list(range(len(ids))), pad_id=ctx.pad_id, pad_multiple=8)
            return {n: v.to(device) for n, v in b.items()}

        a, b = sentence_repr(model, side(0)), sentence_repr(model, side(2))
        return loss + self.beta * alignment_loss(a, b)
