"""Model merging: linear averaging, task arithmetic and TIES, over tensors and over models.

Three layers, each usable alone:

- per tensor (pure): :func:`linear`, :func:`task_arithmetic`, :func:`ties` and the dispatch
  :func:`merge_tensors`; :func:`merge_states` does the same over dicts name -> tensor;
- per model: :class:`MergeView` is what a merge combines of one model state, and
  :func:`merge_into` writes the merged tensors into a model;
- the sequential strategy :class:`Merge` (``merge`` with VANILLA and SHARED LoRA): after each
  step, the trained model is merged with the model from before the step. The post-hoc merge
  of per-language models (MONO, NON-SHARED LoRA) is the engine's (run/engine.py), on these
  same functions.

LoRA. An adapted module's weight is ``W + scaling * B @ A``. What is merged is that effective
weight (equivalently the update ``ΔW = scaling * B @ A``, since the frozen ``W`` is common): a
weighted average of effective weights is ``W + sum_i w_i ΔW_i``, a true weighted combination
of the updates. PEFT's ``add_weighted_adapter(combination_type="linear")`` instead averages
``A`` and ``B`` separately (``sqrt(w_i)`` on each side), so the merged update is
``sum_i sum_j sqrt(w_i w_j) B_i A_j``: it has cross terms ``B_i A_j`` (i != j) that none of
the models learned. PEFT also refuses to combine adapters that both save the classifier
(``modules_to_save``), and every adapter here trains its own head; the head's weights are
merged here like any other trained tensor. A merged ``ΔW`` has rank up to the sum of the
ranks, so it cannot be stored in one rank-r adapter: :func:`merge_into` keeps the adapter in
the model as it is and puts the difference between the merged effective weight and the
current one into the module's frozen base weight. The effective weight is then exactly the
merged one (up to one float rounding of the base), and training can go on from the adapter.

Numbers: every merge computes in float64 and returns the inputs' dtype. Linear averaging is
a chain of ``torch.lerp``, so merging identical tensors gives them back bit for bit, and so
does a weight of 1 on one of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from hpc_forget.errors import ConfigError, ModelError
from hpc_forget.run.hooks import StepContext, Strategy
from hpc_forget.run.weights import trainable_copy

if TYPE_CHECKING:
    from hpc_forget.run.training import StepData

__all__ = [
    "EFFECTIVE",
    "HOWS",
    "LoraModule",
    "Merge",
    "MergeView",
    "linear",
    "live_bases",
    "live_trained",
    "lora_modules",
    "merge_into",
    "merge_states",
    "merge_tensors",
    "task_arithmetic",
    "ties",
    "trim",
]

HOWS = ("linear", "task_arithmetic", "ties")
EFFECTIVE = ".effective_weight"
"""Suffix of a :class:`MergeView` key standing for a LoRA module's effective weight."""

_F64 = torch.float64


# --------------------------------------------------------------------------------------------
# per tensor


def _check(tensors: Sequence[torch.Tensor], base: torch.Tensor | None, what: str) -> None:
    if len(tensors) == 0:
        raise ConfigError(f"merge: nothing to merge ({what})")
    shape = tuple(tensors[0].shape)
    for t in [*tensors[1:], *([base] if base is not None else [])]:
        if tuple(t.shape) != shape:
            raise ModelError(
                f"merge: {what} has shape {shape} in one model and {tuple(t.shape)} in another;"
                " only models of one architecture can be merged"
            )


def linear(
    tensors: Sequence[torch.Tensor], weights: Sequence[float] | None = None, *, what: str = "x"
) -> torch.Tensor:
    """The weighted average ``sum_i w_i t_i / sum_i w_i`` (equal weights by default), as a chain
    of ``lerp`` in float64: identical tensors, or a weight of 1 on one tensor and 0 on the
    others, give that tensor back exactly."""
    _check(tensors, None, what)
    w = [1.0] * len(tensors) if weights is None else [float(x) for x in weights]
    if len(w) != len(tensors) or any(x < 0 or x != x for x in w) or sum(w) <= 0:
        raise ConfigError(
            f"merge: linear needs one non-negative weight per model, not all zero; got {w}"
        )
    dtype, device = tensors[0].dtype, tensors[0].device
    out: torch.Tensor | None = None
    total = 0.0
    for t, wi in zip(tensors, w, strict=True):
        if out is not None and wi == 0:
            continue
        x = t.to(device=device, dtype=_F64)
        total += wi
        out = x.clone() if out is None or total == wi else torch.lerp(out, x, wi / total)
    assert out is not None
    return out.to(dtype)


def task_arithmetic(
    tensors: Sequence[torch.Tensor], base: torch.Tensor, scale: float = 1.0, *, what: str = "x"
) -> torch.Tensor:
    """Task arithmetic (Ilharco et al. 2023): ``base + scale * sum_i (t_i - base)``."""
    _check(tensors, base, what)
    b = base.to(device=tensors[0].device, dtype=_F64)
    acc = torch.zeros_like(b)
    for t in tensors:
        acc += t.to(device=b.device, dtype=_F64) - b
    return (b + scale * acc).to(tensors[0].dtype)


def trim(tau: torch.Tensor, density: float) -> torch.Tensor:
    """``tau`` with all but its ``round(density * numel)`` largest-magnitude entries set to 0
    (entries tied with the smallest kept magnitude are kept too)."""
    n = tau.numel()
    k = round(density * n)
    if k >= n:
        return tau
    if k <= 0:
        return torch.zeros_like(tau)
    mag = tau.abs()
    threshold = mag.flatten().kthvalue(n - k + 1).values
    return torch.where(mag >= threshold, tau, torch.zeros_like(tau))


def ties(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    scale: float = 1.0,
    density: float = 0.2,
    *,
    what: str = "x",
) -> torch.Tensor:
    """TIES-Merging (Yadav et al. 2023) of one tensor: trim each task vector ``t_i - base`` to
    its top ``density`` fraction by magnitude, elect each entry's sign as the sign of the sum of
    the trimmed values, average only the trimmed values that agree with it (the "disjoint
    mean": zeros and opposite signs are not counted), and return ``base + scale * that``.

    Trimming is per tensor (as in PEFT's and mergekit's implementations; the paper trims the
    whole flattened task vector at once). Two passes over ``tensors``, one tensor at a time, so
    a lazy sequence keeps memory at a few tensors whatever the number of models."""
    _check(tensors, base, what)
    b = base.to(device=tensors[0].device, dtype=_F64)

    def trimmed(t: torch.Tensor) -> torch.Tensor:
        return trim(t.to(device=b.device, dtype=_F64) - b, density)

    total = torch.zeros_like(b)
    for t in tensors:
        total += trimmed(t)
    sign = torch.sign(total)
    agreeing = torch.zeros_like(b)
    count = torch.zeros_like(b)
    for t in tensors:
        tau = trimmed(t)
        keep = (torch.sign(tau) == sign) & (tau != 0)
        agreeing += torch.where(keep, tau, torch.zeros_like(tau))
        count += keep
    return (b + scale * agreeing / count.clamp(min=1)).to(tensors[0].dtype)


def merge_tensors(
    how: str,
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None = None,
    *,
    weights: Sequence[float] | None = None,
    scale: float = 1.0,
    density: float = 0.2,
    what: str = "x",
) -> torch.Tensor:
    """One merged tensor: ``how`` is linear (``weights``), task_arithmetic (``base``, ``scale``)
    or ties (``base``, ``scale``, ``density``)."""
    if how == "linear":
        return linear(tensors, weights, what=what)
    if how not in HOWS:
        raise ConfigError(f"merge: how={how!r}: use one of {', '.join(HOWS)}")
    if base is None:
        raise ConfigError(f"merge: how={how} needs the base (initial) weights of {what}")
    if how == "task_arithmetic":
        return task_arithmetic(tensors, base, scale, what=what)
    return ties(tensors, base, scale, density, what=what)


def _same_names(states: Sequence[Mapping[str, Any]], base: Mapping[str, Any] | None) -> list[str]:
    if not states:
        raise ConfigError("merge: no models to merge")
    names = list(states[0])
    for s in [*states[1:], *([base] if base is not None else [])]:
        if set(s) != set(names):
            odd = sorted(set(s) ^ set(names))
            raise ModelError(
                f"merge: the models have different weights ({len(odd)} names differ, e.g."
                f" {odd[0]}); only models of one architecture can be merged"
            )
    return names


def merge_states(
    how: str,
    states: Sequence[Mapping[str, torch.Tensor]],
    base: Mapping[str, torch.Tensor] | None = None,
    *,
    weights: Sequence[float] | None = None,
    scale: float = 1.0,
    density: float = 0.2,
) -> dict[str, torch.Tensor]:
    """:func:`merge_tensors` name by name over dicts name -> tensor (every state, and ``base``
    when given, must have the same names and shapes)."""
    return dict(_merged(how, states, base, weights=weights, scale=scale, density=density))


def _merged(
    how: str,
    states: Sequence[Mapping[str, torch.Tensor]],
    base: Mapping[str, torch.Tensor] | None,
    **kw: Any,
) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, merged tensor) for every name the states share, one tensor at a time."""
    for n in _same_names(states, base):
        yield (
            n,
            merge_tensors(
                how, _Column(states, n), base[n] if base is not None else None, what=n, **kw
            ),
        )


class _Column(Sequence[torch.Tensor]):
    """``states[i][name]`` for every i, read only when asked (a lazy view's tensors are
    computed one at a time)."""

    def __init__(self, states: Sequence[Mapping[str, torch.Tensor]], name: str) -> None:
        self.states, self.name = states, name

    def __len__(self) -> int:
        return len(self.states)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [s[self.name] for s in self.states[i]]
        return self.states[i][self.name]


# --------------------------------------------------------------------------------------------
# per model (LoRA-aware)


@dataclass(frozen=True)
class LoraModule:
    """One LoRA-adapted linear layer: its parameter names and ``scaling``."""

    name: str  # the module's name in the model
    a: str  # parameter names of lora_A, lora_B and the frozen base weight
    b: str
    base: str
    scaling: float
    transpose: bool = False  # PEFT's fan_in_fan_out


def lora_modules(model: torch.nn.Module) -> dict[str, LoraModule]:
    """Every LoRA-adapted module of ``model`` (none for a model without LoRA), by name."""
    out: dict[str, LoraModule] = {}
    for name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if not isinstance(lora_a, torch.nn.ModuleDict) or not hasattr(module, "base_layer"):
            continue
        adapters = list(lora_a.keys())
        if not adapters:
            continue
        if len(adapters) != 1 or any(getattr(module, "use_dora", {}).values()):
            raise ModelError(
                f"merge: {name} has adapters {adapters}; merging supports one plain LoRA"
                " adapter per module"
            )
        (ad,) = adapters
        out[name] = LoraModule(
            name=name,
            a=f"{name}.lora_A.{ad}.weight",
            b=f"{name}.lora_B.{ad}.weight",
            base=f"{name}.base_layer.weight",
            scaling=float(module.scaling[ad]),
            transpose=bool(getattr(module, "fan_in_fan_out", False)),
        )
    return out


def live_trained(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's trainable parameters themselves (no copy), by name."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def live_bases(
    model: torch.nn.Module, modules: Mapping[str, LoraModule]
) -> dict[str, torch.Tensor]:
    """The frozen base weight of every LoRA module (the parameters themselves), by module."""
    params = dict(model.named_parameters())
    return {m: params[info.base] for m, info in modules.items()}


def _delta(info: LoraModule, a: torch.Tensor, b: torch.Tensor, device: Any) -> torch.Tensor:
    d = b.to(device=device, dtype=_F64) @ a.to(device=device, dtype=_F64)
    return (d.T if info.transpose else d) * info.scaling


class MergeView(Mapping[str, torch.Tensor]):
    """What a merge combines of one model state: every trained tensor (``trained``: name ->
    tensor, the model's trainable parameter names) except LoRA's A and B, and, for every LoRA
    module, its effective weight ``base + scaling * B @ A`` in float64 (key
    ``<module>`` + :data:`EFFECTIVE`), computed when read. ``bases``: module -> base weight."""

    def __init__(
        self,
        modules: Mapping[str, LoraModule],
        trained: Mapping[str, torch.Tensor],
        bases: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        self.modules, self.trained, self.bases = modules, trained, bases or {}
        lora = {n for info in modules.values() for n in (info.a, info.b, info.base)}
        missing = sorted(
            n for info in modules.values() for n in (info.a, info.b) if n not in trained
        )
        if missing or set(modules) - set(self.bases):
            raise ModelError(
                f"merge: a model state lacks LoRA weights (e.g. {(missing or sorted(modules))[0]})"
            )
        self._keys = [n for n in trained if n not in lora] + [m + EFFECTIVE for m in modules]

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __getitem__(self, key: str) -> torch.Tensor:
        if key.endswith(EFFECTIVE) and key[: -len(EFFECTIVE)] in self.modules:
            info = self.modules[key[: -len(EFFECTIVE)]]
            base = self.bases[info.name]
            w = base.detach().to(_F64)
            return w + _delta(
                info, self.trained[info.a].detach(), self.trained[info.b].detach(), w.device
            )
        if key not in self.trained or key in {i.base for i in self.modules.values()}:
            raise KeyError(key)
        return self.trained[key].detach()


def _write(
    model_params: Mapping[str, torch.nn.Parameter],
    modules: Mapping[str, LoraModule],
    key: str,
    merged: torch.Tensor,
) -> None:
    with torch.no_grad():
        if key.endswith(EFFECTIVE) and key[: -len(EFFECTIVE)] in modules:
            info = modules[key[: -len(EFFECTIVE)]]
            base = model_params[info.base]
            now = base.detach().to(_F64) + _delta(
                info, model_params[info.a].detach(), model_params[info.b].detach(), base.device
            )
            base.add_((merged.to(device=base.device, dtype=_F64) - now).to(base.dtype))
        else:
            p = model_params[key]
            p.copy_(merged.to(device=p.device, dtype=p.dtype))


def merge_into(
    model: torch.nn.Module,
    how: str,
    views: Sequence[Mapping[str, torch.Tensor]],
    base: Mapping[str, torch.Tensor] | None = None,
    *,
    weights: Sequence[float] | None = None,
    scale: float = 1.0,
    density: float = 0.2,
) -> None:
    """Merge ``views`` (:class:`MergeView` of each model state; ``base``: the view of the
    initial state, for task arithmetic and TIES) and write the result into ``model``, one
    tensor at a time: a trained tensor is copied in; a LoRA module keeps its adapter and its
    base weight takes the difference between the merged effective weight and the current one.
    ``model`` may itself be one of the views (its tensors are read before they are written)."""
    modules = lora_modules(model)
    params = dict(model.named_parameters())
    for key, merged in _merged(how, views, base, weights=weights, scale=scale, density=density):
        _write(params, modules, key, merged)


# --------------------------------------------------------------------------------------------
# the sequential strategy


class Merge(Strategy):
    """``merge`` on a sequential chain: after each step, the trained weights are merged with
    those from before the step. linear: ``(1 - weight) * before + weight * after``;
    task_arithmetic and ties: relative to the initial weights (before step 1), with the two
    task vectors ``before - initial`` and ``after - initial``.

    With LoRA, the adapter stays as trained (it goes on training in the next step) and each
    module's frozen base weight takes the difference to the merged effective weight; the base
    weights are saved with each checkpoint (:meth:`state_tensors`), so a resumed chain
    continues from exactly the weights an uninterrupted one has.

    On MONO and NON-SHARED LoRA the engine merges the per-language models after training them
    (run/engine.py); only ``how``, ``scale`` and ``density`` apply there (linear: equal
    weights)."""

    name = "merge"

    def __init__(
        self, how: str = "linear", weight: float = 0.5, scale: float = 1.0, density: float = 0.2
    ) -> None:
        if how not in HOWS:
            raise ConfigError(f"strategy merge: how={how!r}: use one of {', '.join(HOWS)}")
        self.how, self.weight, self.scale, self.density = how, weight, scale, density
        self.needs_initial = how != "linear"

    def before_step(self, model: torch.nn.Module, data: StepData, ctx: StepContext) -> StepData:
        st = ctx.state
        modules = lora_modules(model)
        bases = live_bases(model, modules)
        if self.needs_initial and "initial_bases" not in st:
            # The first step this process runs: the bases are still the loaded model's (a
            # resumed chain's merged bases are put back just below).
            st["initial_bases"] = {m: b.detach().clone() for m, b in bases.items()}
        saved = st.pop("saved_bases", None)
        if saved:
            with torch.no_grad():
                for m, b in bases.items():
                    b.copy_(saved[m])
        st["bases"] = bases
        st["previous"] = trainable_copy(model)
        return data

    def after_step(self, model: torch.nn.Module, ctx: StepContext) -> None:
        st = ctx.state
        modules = lora_modules(model)
        bases = live_bases(model, modules)  # frozen: the same before and after the step
        st["bases"] = bases  # what state_tensors saves (the parameters, after any device move)
        before = MergeView(modules, st["previous"], bases)
        after = MergeView(modules, live_trained(model), bases)
        initial = (
            MergeView(modules, st["initial"], st["initial_bases"]) if self.needs_initial else None
        )
        merge_into(
            model,
            self.how,
            [before, after],
            initial,
            weights=(1.0 - self.weight, self.weight),
            scale=self.scale,
            density=self.density,
        )
        del st["previous"]

    def state_tensors(self, state: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {f"base/{m}": b.detach().cpu() for m, b in state.get("bases", {}).items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        saved = {k[len("base/") :]: v for k, v in tensors.items() if k.startswith("base/")}
        if saved:
            state["saved_bases"] = saved
