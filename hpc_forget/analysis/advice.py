"""The order advisor: the language order a store's measurements predict to forget least.

The paper ends by proposing "vitality-aware scheduling": ordering languages to reduce
forgetting. ``hpc-forget advise-order STORE`` proposes such an order from the R matrices of the
store's sequential runs, under a stated, fitted model of forgetting (docs/advice.md).

The model
---------
In a sequential run of ``T`` languages, ``order[p]`` trained at step ``p``, the final F1 of the
language ``l = order[p]`` is

    final(l) = learned[l] - sum_{k = p+1 .. T-1} (forget[l] + damage[order[k]])

* ``learned[l]``: the F1 of ``l`` just after training it (``R[p, p]``), its mean over the runs;
* ``forget[l]``: what ``l`` loses at every later step, whatever is trained then (the receiver
  side, a per-language, per-step reading of MBT_0);
* ``damage[m]``: what training ``m`` takes from every language learned before it (the donor
  side, a per-language, per-step reading of MFT_0, with the sign turned into a loss).

It is fitted by least squares on every one-step drop of a learned language in the runs used:
``R[k-1, p] - R[k, p]`` for ``k > p`` is one equation ``forget[order[p]] + damage[order[k]]``.
Because ``R[T-1, p] = R[p, p] - (the drops of l)``, a model that fits every drop predicts every
final score exactly. ``forget`` and ``damage`` are determined up to a constant moved from one
to the other; no prediction of a ``T``-language order depends on it.

The search
----------
The predicted final average F1 over the chosen languages is

    (sum_l learned[l] - (T-1) sum_l forget[l] + sum_l (forget[l] - damage[l]) p_l) / T,

linear in the positions ``p_l``, so the best order sorts the languages by ``forget - damage``,
ascending (languages that damage others and keep well go first; those that forget fast and
harm little go last): exact, by the rearrangement inequality. Up to :data:`BRUTE_FORCE_MAX`
languages the advisor instead enumerates every order on the formula for ``final`` itself (an
exact search that does not rest on that argument); beyond, it sorts. It says which it used.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hpc_forget.analysis import metrics
from hpc_forget.analysis.load import load_store
from hpc_forget.analysis.reduce import method_label
from hpc_forget.errors import AnalysisError, one_line
from hpc_forget.study.languages import group_of
from hpc_forget.study.orders import advised_name

if TYPE_CHECKING:
    from hpc_forget.store.format import RunRecord

BRUTE_FORCE_MAX = 8
"""Up to this many languages the search enumerates every order (8! = 40,320)."""

MODEL_TEXT = (
    "final F1 of language l trained at position p of T = "
    "learned[l] - sum over the later steps k of (forget[l] + damage[order[k]])"
)
MODEL_TERMS = (
    ("learned[l]", "F1 of l just after it was trained (R[p,p]), mean over the runs"),
    ("forget[l]", "F1 l loses at every later step, as a receiver (per-step MBT_0)"),
    ("damage[m]", "F1 training m takes from every language learned before it (per-step MFT_0)"),
)
MODEL_FIT = "least squares on every one-step drop R[k-1,p] - R[k,p] (k > p) of the runs used"


# ------------------------------------------------------------------------------ the model


@dataclass(frozen=True)
class ForgettingModel:
    """The fitted model (module docstring). Every dict is keyed by locale."""

    learned: dict[str, float]
    forget: dict[str, float]
    damage: dict[str, float]
    learned_runs: dict[str, int]  # runs that measured R[p, p] of the language
    forget_drops: dict[str, int]  # drops in which the language is the receiver
    damage_drops: dict[str, int]  # drops in which the language is the one trained
    drops: int
    drop_rmse: float
    notes: tuple[str, ...] = ()


def fit_forgetting(sequences: Sequence[tuple[Sequence[str], np.ndarray]]) -> ForgettingModel:
    """Fit :class:`ForgettingModel` to runs given as ``(order, R)``, ``R`` order-aligned
    (``R[i, j]``: F1 of ``order[j]`` after step ``i``; NaN = not measured).

    A language that never has a later step (always trained last) gets the mean ``forget`` of
    the others; one never trained after another gets the mean ``damage``; both are noted.
    """
    langs = sorted({lang for order, _ in sequences for lang in order})
    col = {lang: i for i, lang in enumerate(langs)}
    n = len(langs)
    learned_sum = dict.fromkeys(langs, 0.0)
    learned_n = dict.fromkeys(langs, 0)
    rows: list[tuple[int, int]] = []
    ys: list[float] = []
    for order, R in sequences:
        R = np.asarray(R, dtype=float)
        T = len(order)
        for p, lang in enumerate(order):
            if math.isfinite(R[p, p]):
                learned_sum[lang] += float(R[p, p])
                learned_n[lang] += 1
            for k in range(p + 1, T):
                before, after = R[k - 1, p], R[k, p]
                if math.isfinite(before) and math.isfinite(after):
                    rows.append((col[lang], n + col[order[k]]))
                    ys.append(float(before - after))
    if not rows:
        raise AnalysisError(
            "the runs used hold no score of a learned language after a later step, so there "
            "is no forgetting to fit — the advisor needs sequential runs of 2 or more languages"
        )
    X = np.zeros((len(rows), 2 * n))
    for r, (i, j) in enumerate(rows):
        X[r, i] = X[r, j] = 1.0
    y = np.asarray(ys)
    counts = X.sum(axis=0).astype(int)
    used = np.flatnonzero(counts)
    beta = np.zeros(2 * n)
    beta[used] = np.linalg.lstsq(X[:, used], y, rcond=None)[0]
    resid = y - X @ beta
    notes: list[str] = []
    groups = _components(rows)
    if groups > 1:
        notes.append(
            f"the measured drops fall into {groups} groups of languages that never meet in one "
            "run, so how forgetting splits between receivers and donors across them is a "
            "minimum-norm guess — run orders that mix them"
        )
    fitted_forget = [beta[i] for i in range(n) if counts[i]]
    fitted_damage = [beta[n + i] for i in range(n) if counts[n + i]]
    mean_forget = float(np.mean(fitted_forget)) if fitted_forget else 0.0
    mean_damage = float(np.mean(fitted_damage)) if fitted_damage else 0.0
    no_forget = [lang for lang in langs if not counts[col[lang]]]
    no_damage = [lang for lang in langs if not counts[n + col[lang]]]
    if no_forget:
        notes.append(
            f"never scored after a later step, so given the mean forget: {', '.join(no_forget)}"
        )
    if no_damage:
        notes.append(
            f"never trained after another language, so given the mean damage: "
            f"{', '.join(no_damage)}"
        )
    return ForgettingModel(
        learned={lang: learned_sum[lang] / learned_n[lang] for lang in langs if learned_n[lang]},
        forget={
            lang: float(beta[col[lang]]) if counts[col[lang]] else mean_forget for lang in langs
        },
        damage={
            lang: float(beta[n + col[lang]]) if counts[n + col[lang]] else mean_damage
            for lang in langs
        },
        learned_runs=dict(learned_n),
        forget_drops={lang: int(counts[col[lang]]) for lang in langs},
        damage_drops={lang: int(counts[n + col[lang]]) for lang in langs},
        drops=len(rows),
        drop_rmse=float(np.sqrt(np.mean(resid**2))),
        notes=tuple(notes),
    )


def _components(rows: Iterable[tuple[int, int]]) -> int:
    """Connected components of the graph of (receiver, donor) columns the drops link."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in rows:
        parent[find(a)] = find(b)
    return len({find(x) for x in parent})


def predict_final(model: ForgettingModel, order: Sequence[str]) -> dict[str, float]:
    """The model's final F1 of every language of ``order`` after training it in that order."""
    out: dict[str, float] = {}
    for p, lang in enumerate(order):
        later = order[p + 1 :]
        out[lang] = (
            model.learned[lang]
            - len(later) * model.forget[lang]
            - sum(model.damage[m] for m in later)
        )
    return out


def predicted_average(model: ForgettingModel, order: Sequence[str]) -> float:
    """The model's final average F1 over the languages of ``order``."""
    final = predict_final(model, order)
    return float(np.mean(list(final.values()))) if final else float("nan")


def best_order(model: ForgettingModel, languages: Sequence[str]) -> tuple[tuple[str, ...], str]:
    """The order of ``languages`` with the highest predicted final average F1, and how it was
    found: every order enumerated (up to :data:`BRUTE_FORCE_MAX` languages) or the exact sort
    by ``forget - damage`` (module docstring)."""
    langs = sorted(languages)
    T = len(langs)
    if T <= BRUTE_FORCE_MAX:
        a = np.array([model.learned[x] for x in langs])
        d = np.array([model.forget[x] for x in langs])
        g = np.array([model.damage[x] for x in langs])
        perms = np.array(list(itertools.permutations(range(T))), dtype=np.int64).reshape(-1, T)
        G = g[perms]
        later_damage = np.cumsum(G[:, ::-1], axis=1)[:, ::-1] - G
        final = a[perms] - d[perms] * (T - 1 - np.arange(T)) - later_damage
        best = int(np.argmax(final.mean(axis=1)))
        how = f"brute force over all {len(perms):,} orders of {T} languages (exact)"
        return tuple(langs[i] for i in perms[best]), how
    order = sorted(langs, key=lambda x: (model.forget[x] - model.damage[x], x))
    how = (
        f"sort of {T} languages by forget - damage, ascending (exact: the predicted average "
        "is linear in the positions)"
    )
    return tuple(order), how


# ------------------------------------------------------------------------------ the store


@dataclass(frozen=True)
class Selection:
    """Which of the store's sequential runs the model is fitted on."""

    method: str
    model: str
    rank: int
    strategy: str
    data_scale: float
    settings: str
    run_ids: tuple[str, ...]
    others: tuple[str, ...] = ()  # one line per group of sequential runs left out

    @property
    def label(self) -> str:
        scale = f", data x{self.data_scale:g}" if self.data_scale != 1.0 else ""
        several = any(x.startswith("settings ") for x in self.others)
        settings = f", settings {self.settings}" if several and self.settings else ""
        return (
            f"{method_label(self.method, self.rank)} [{self.model}, strategy {self.strategy}"
            f"{scale}{settings}]"
        )


_FIELDS = ("method", "strategy", "model", "rank", "data_scale", "settings")
_PREFERRED: dict[str, tuple[Any, ...]] = {
    "method": ("vanilla", "shared_lora"),
    "strategy": ("none",),
    "data_scale": (1.0,),
}
_OPTION = {"method": "--method", "strategy": "--strategy", "model": "--model", "rank": "--rank"}


def _field(run: RunRecord, name: str) -> Any:
    k = run.key
    if name == "rank":
        return int(k.get("rank", 0) or 0)
    if name == "data_scale":
        return float(k.get("data_scale", 1.0) if k.get("data_scale") is not None else 1.0)
    if name == "strategy":
        return str(k.get("strategy", "none") or "none")
    return str(k.get(name, "") or "")


def select_runs(
    runs: Sequence[RunRecord],
    *,
    store: str = "the store",
    method: str | None = None,
    model: str | None = None,
    rank: int | None = None,
    strategy: str | None = None,
) -> tuple[Selection, list[RunRecord]]:
    """The sequential runs to fit on: those of one method, strategy, model, rank, data scale
    and settings. Given values must exist; the others default to VANILLA (else SHARED LoRA),
    strategy ``none``, data scale 1, and otherwise the value with the most runs."""
    chosen = [r for r in runs if r.kind == "sequential"]
    if not chosen:
        raise AnalysisError(
            f"{store}: no sequential runs (vanilla, shared_lora) — the advisor fits its model "
            "of forgetting on their R matrices; run a study with at least one order first"
        )
    wanted = {"method": method, "model": model, "rank": rank, "strategy": strategy}
    others: list[str] = []
    for name in _FIELDS:
        values = sorted({_field(r, name) for r in chosen}, key=str)
        want = wanted.get(name)
        if want is not None:
            if want not in values:
                raise AnalysisError(
                    one_line(
                        f"{store}: no sequential runs with {name} {want} among those left "
                        f"({', '.join(map(str, values))}) — check {_OPTION[name]}"
                    )
                )
            value = want
        else:
            count = {v: sum(_field(r, name) == v for r in chosen) for v in values}
            preferred = [v for v in _PREFERRED.get(name, ()) if v in count]
            value = preferred[0] if preferred else max(values, key=lambda v: count[v])
            for v in values:
                if v != value:
                    hint = f" (pass {_OPTION[name]} {v})" if name in _OPTION else ""
                    others.append(f"{name} {v}: {count[v]} run(s) not used{hint}")
        chosen = [r for r in chosen if _field(r, name) == value]
    first = chosen[0]
    sel = Selection(
        method=_field(first, "method"),
        model=_field(first, "model"),
        rank=_field(first, "rank"),
        strategy=_field(first, "strategy"),
        data_scale=_field(first, "data_scale"),
        settings=_field(first, "settings"),
        run_ids=tuple(sorted(r.run_id for r in chosen)),
        others=tuple(others),
    )
    return sel, sorted(chosen, key=lambda r: r.run_id)


@dataclass(frozen=True)
class OrderPrediction:
    """One of the store's own orders, restricted to the chosen languages."""

    name: str  # the run key's order ("1", "custom-...", ...)
    order: tuple[str, ...]
    predicted: float
    measured: float | None  # mean final average F1 of its runs over exactly these languages
    runs: int
    measured_runs: int


@dataclass(frozen=True)
class Advice:
    store: str
    selection: Selection
    model: ForgettingModel
    languages: tuple[str, ...]
    order: tuple[str, ...]
    predicted: float
    predicted_final: dict[str, float]
    search: str
    store_orders: tuple[OrderPrediction, ...]
    final_rmse: float  # the model's final scores against the measured ones, every run used
    notes: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return advised_name(self.order)

    @property
    def best_store_order(self) -> OrderPrediction | None:
        return max(self.store_orders, key=lambda o: o.predicted, default=None)

    @property
    def gain_over_best(self) -> float | None:
        best = self.best_store_order
        return None if best is None else self.predicted - best.predicted

    @property
    def gain_over_mean(self) -> float | None:
        if not self.store_orders:
            return None
        return self.predicted - float(np.mean([o.predicted for o in self.store_orders]))

    def as_json(self) -> dict[str, Any]:
        m, s = self.model, self.selection
        best = self.best_store_order
        return {
            "store": self.store,
            "runs_used": {
                "method": s.method,
                "model": s.model,
                "rank": s.rank,
                "strategy": s.strategy,
                "data_scale": s.data_scale,
                "settings": s.settings,
                "run_ids": list(s.run_ids),
                "not_used": list(s.others),
            },
            "model": {
                "formula": MODEL_TEXT,
                "terms": dict(MODEL_TERMS),
                "fit": MODEL_FIT,
                "drops": m.drops,
                "drop_rmse": _finite(m.drop_rmse),
                "final_rmse": _finite(self.final_rmse),
                "languages": {
                    lang: {
                        "vitality": group_of(lang, "vitality"),
                        "learned": m.learned.get(lang),
                        "forget": m.forget[lang],
                        "damage": m.damage[lang],
                        "learned_runs": m.learned_runs[lang],
                        "forget_drops": m.forget_drops[lang],
                        "damage_drops": m.damage_drops[lang],
                    }
                    for lang in sorted(m.forget)
                },
            },
            "search": self.search,
            "languages": list(self.languages),
            "advised": {
                "name": self.name,
                "order": list(self.order),
                "predicted_final_avg_f1": self.predicted,
                "predicted_final_f1": dict(self.predicted_final),
            },
            "store_orders": [
                {
                    "name": o.name,
                    "order": list(o.order),
                    "predicted_final_avg_f1": o.predicted,
                    "measured_final_avg_f1": o.measured,
                    "runs": o.runs,
                    "measured_runs": o.measured_runs,
                }
                for o in self.store_orders
            ],
            "gain": {
                "over_best": self.gain_over_best,
                "best": None if best is None else best.name,
                "over_mean": self.gain_over_mean,
                "orders": len(self.store_orders),
            },
            "notes": list(self.notes),
        }


def _finite(x: float) -> float | None:
    """JSON has no NaN: an undefined number is null."""
    return x if math.isfinite(x) else None


def _aligned(run: RunRecord) -> np.ndarray:
    return metrics.order_aligned(run.R, run.languages, run.steps)


def _languages(given: Iterable[str] | None, known: Sequence[str]) -> tuple[str, ...]:
    if given is None:
        return tuple(sorted(known))
    langs = tuple(x.strip() for x in given if x.strip())
    if not langs:
        raise AnalysisError("no languages given — name at least one, e.g. --languages en-US,de-DE")
    dups = sorted({x for x in langs if langs.count(x) > 1})
    if dups:
        raise AnalysisError(one_line(f"languages listed twice: {', '.join(dups)} — give each once"))
    return langs


def advise(
    store: str,
    languages: Iterable[str] | None = None,
    *,
    method: str | None = None,
    model: str | None = None,
    rank: int | None = None,
    strategy: str | None = None,
) -> Advice:
    """`hpc-forget advise-order`: fit the model on the store's sequential runs (see
    :func:`select_runs`), find the best order of ``languages`` (default: every language those
    runs trained) and predict the store's own orders over the same languages."""
    data = load_store(store)
    sel, runs = select_runs(
        data.runs, store=str(store), method=method, model=model, rank=rank, strategy=strategy
    )
    seqs = [(tuple(r.steps), _aligned(r)) for r in runs]
    fitted = fit_forgetting(seqs)
    langs = _languages(languages, list(fitted.learned))
    unknown = [x for x in langs if x not in fitted.learned]
    if unknown:
        raise AnalysisError(
            one_line(
                f"{store}: no measurement for {', '.join(unknown)} in the runs used "
                f"({sel.label}) — the store has: {', '.join(sorted(fitted.learned))}"
            )
        )
    order, search = best_order(fitted, langs)
    notes = list(fitted.notes)
    wanted = set(langs)
    by_order: dict[tuple[str, tuple[str, ...]], list[tuple[RunRecord, np.ndarray]]] = {}
    partial = 0
    for run, (steps, R) in zip(runs, seqs, strict=True):
        if not wanted <= set(steps):
            partial += 1
            continue
        restricted = tuple(x for x in steps if x in wanted)
        by_order.setdefault((str(run.key.get("order", "")), restricted), []).append((run, R))
    if partial:
        notes.append(
            f"{partial} run(s) used do not train every chosen language: fitted on, not compared"
        )
    own: list[OrderPrediction] = []
    for (name, restricted), members in sorted(by_order.items()):
        measured = [
            metrics.final_f1(R)
            for run, R in members
            if set(run.steps) == wanted and np.isfinite(R[-1]).all()
        ]
        own.append(
            OrderPrediction(
                name=name or "?",
                order=restricted,
                predicted=predicted_average(fitted, restricted),
                measured=float(np.mean(measured)) if measured else None,
                runs=len(members),
                measured_runs=len(measured),
            )
        )
    errors = []
    for steps, R in seqs:
        final = predict_final(fitted, steps)
        errors += [
            final[lang] - R[-1, j] for j, lang in enumerate(steps) if math.isfinite(R[-1, j])
        ]
    final_rmse = float(np.sqrt(np.mean(np.square(errors)))) if errors else float("nan")
    misses = [o.predicted - o.measured for o in own if o.measured is not None]
    if misses and own:
        order_rmse = float(np.sqrt(np.mean(np.square(misses))))
        gain = predicted_average(fitted, order) - max(o.predicted for o in own)
        if order_rmse > gain:
            notes.append(
                f"the model misses the measured final average F1 of the store's orders by "
                f"{_pts(order_rmse)} points (RMSE), more than the predicted gain "
                f"({_pts(gain, sign=True)}): the advice is within the model's error here"
            )
    return Advice(
        store=str(store),
        selection=sel,
        model=fitted,
        languages=langs,
        order=order,
        predicted=predicted_average(fitted, order),
        predicted_final=predict_final(fitted, order),
        search=search,
        store_orders=tuple(own),
        final_rmse=final_rmse,
        notes=tuple(notes),
    )


def advised_order(store: str, languages: Sequence[str]) -> tuple[str, ...]:
    """The resolver of ``orders: [{advised: STORE}]`` (study.config.Advise): the advised order
    of the config's ``data.languages``, with the advisor's defaults."""
    return advise(store, languages).order


# ------------------------------------------------------------------------------ text


def _pts(x: float | None, sign: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{100 * x:+.2f}" if sign else f"{100 * x:.2f}"


def format_advice(a: Advice) -> str:
    """What `hpc-forget advise-order` prints: the runs used, the model and its fit, the advised
    order and its predicted final average F1, the store's orders predicted (and measured), the
    predicted gain. F1 in points (0-100)."""
    s, m = a.selection, a.model
    orders = sorted({o.name for o in a.store_orders})
    lines = [
        f"advise-order: {a.store}",
        f"runs used: {len(s.run_ids)} sequential run(s) of {s.label}"
        + (f", orders {', '.join(orders)}" if orders else ""),
    ]
    lines += [f"  not used: {x}" for x in s.others]
    lines += [
        "",
        "model of forgetting:",
        *(f"  {part}" for part in MODEL_TEXT.replace(" = ", " =\n     ").split("\n")),
        *(f"  {term:<11} {text}" for term, text in MODEL_TERMS),
        f"  fitted by {MODEL_FIT}:",
        f"    {m.drops} drops, RMSE {_pts(m.drop_rmse)} F1 points; the final scores of the runs"
        f" used, RMSE {_pts(a.final_rmse)}",
        "  so the best order sorts by forget - damage, ascending: languages that damage",
        "  others go early, languages that forget fast go late",
        "",
        f"  {'language':<10} {'vitality':<8} {'learned':>8} {'forget':>7} {'damage':>7}",
    ]
    for lang in a.languages:
        lines.append(
            f"  {lang:<10} {group_of(lang, 'vitality'):<8} {_pts(m.learned[lang]):>8} "
            f"{_pts(m.forget[lang]):>7} {_pts(m.damage[lang]):>7}"
        )
    lines += [
        "",
        f"search: {a.search}",
        f"advised order ({a.name}): {', '.join(a.order)}",
        f"predicted final average F1: {_pts(a.predicted)}",
    ]
    if a.store_orders:
        width = max(len(o.name) for o in a.store_orders)
        lines += ["", "the store's orders over these languages: predicted, measured final avg F1"]
        for o in a.store_orders:
            measured = (
                f"measured {_pts(o.measured)} ({o.measured_runs} run(s))"
                if o.measured is not None
                else "not measured on exactly these languages"
            )
            lines.append(
                f"  {o.name:<{width}}  predicted {_pts(o.predicted)}  {measured}  "
                f"[{', '.join(o.order)}]"
            )
        best = a.best_store_order
        assert best is not None
        lines.append(
            f"predicted gain: {_pts(a.gain_over_best, sign=True)} F1 points over the best of "
            f"the store's orders ({best.name}), {_pts(a.gain_over_mean, sign=True)} over their "
            f"mean ({len(a.store_orders)} order(s))"
        )
    else:
        lines += ["", "the store has no order over all of these languages to compare with"]
    lines += [f"note: {x}" for x in a.notes]
    lines.append(f"use it in a config: orders: [{{advised: {a.store}}}]")
    return "\n".join(lines)
