"""The paper's metrics (sections 3.3 and 3.4) as pure functions of R matrices.

Every function here takes an **order-aligned** matrix ``R`` (T x T, floats, NaN = not
measured): ``R[i, j]`` is the test score on the language trained at step ``j`` after training
step ``i`` (0-based). Build it from a store matrix with :func:`order_aligned`: in the store the
columns follow the run's ``languages`` list, not the training order.

NaN policy: each metric is computed from the cells present. A difference needs both of its
cells; an average is taken over the terms available; a metric with no term available is NaN,
never 0. docs/metrics.md gives every formula, the reading chosen for each open choice, the
other conventions and a worked 3 x 3 example.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from hpc_forget.analysis.options import (  # noqa: F401 (re-exported)
    CONVENTIONS,
    HOP_P_SET_DEFAULT,
    P_SET_DEFAULT,
    P_SETS,
)
from hpc_forget.errors import MetricsError

MIN_CI_UNITS = 3
"""Fewer top-level bootstrap units than this: no CI (a resample of 2 units spans [min, max])."""
HOPS: tuple[int, ...] = tuple(range(10))


# --------------------------------------------------------------------------- helpers


def nanmean(x: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """Mean over the non-NaN entries; NaN where there is none (no warning)."""
    x = np.asarray(x, dtype=float)
    ok = ~np.isnan(x)
    n = ok.sum(axis=axis)
    s = np.where(ok, x, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = s / n
    if np.ndim(m) == 0:
        return float(m) if n else float("nan")
    return np.where(n > 0, m, np.nan)


def _check_square(R: np.ndarray) -> np.ndarray:
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1]:
        raise MetricsError(
            f"an R matrix must be T x T (steps x languages in training order), got {R.shape}"
        )
    return R


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise MetricsError(
            f"unknown convention {convention!r}: use one of {', '.join(CONVENTIONS)}"
        )


def _baseline(baseline: Sequence[float] | np.ndarray | None, T: int) -> np.ndarray:
    if baseline is None:
        return np.zeros(T)
    b = np.asarray(baseline, dtype=float)
    if b.shape != (T,):
        raise MetricsError(f"baseline must have one score per language ({T}), got {b.shape}")
    return b


def order_aligned(matrix: np.ndarray, languages: Sequence[str], steps: Sequence[str]) -> np.ndarray:
    """The T x T R of a sequential run: column j is the language trained at step j.

    ``matrix`` is the store's steps x languages array (columns in ``languages`` order) and
    ``steps[i]`` names the language trained at step i. Languages evaluated but never trained
    are dropped (R is about the training sequence).
    """
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape != (len(steps), len(languages)):
        raise MetricsError(
            f"matrix shape {m.shape} does not match {len(steps)} steps x {len(languages)} languages"
        )
    col = {lang: j for j, lang in enumerate(languages)}
    missing = [s for s in steps if s not in col]
    if missing:
        raise MetricsError(f"step language {missing[0]!r} is not among the run's languages")
    if len(set(steps)) != len(steps):
        raise MetricsError("a sequential run trains each language once; steps repeat a language")
    return m[:, [col[s] for s in steps]]


# --------------------------------------------------------------------------- section 3.3


def avg_f1_learned(R: np.ndarray) -> np.ndarray:
    """A_i = mean of R[i, 0..i]: average F1 over the languages learned so far (Fig. 2)."""
    R = _check_square(R)
    T = R.shape[0]
    learned = np.tril(np.ones((T, T), dtype=bool))
    return np.asarray(nanmean(np.where(learned, R, np.nan), axis=1))


def final_f1(R: np.ndarray) -> float:
    """Mean of the last row: F1 over all languages after the whole sequence (Table 1)."""
    R = _check_square(R)
    return float(nanmean(R[-1]))


def window_change(R: np.ndarray, p_set: str = "common") -> np.ndarray:
    """W[a, b] = P_a - P_b for a > b, the building block of eq. 9, 13 and 14.

    ``p_set="common"`` (default): both averages run over the same languages, those learned up
    to step b (columns 0..b), paired per language: W[a, b] = mean_j<=b (R[a, j] - R[b, j]).
    It is the change in the previously learned languages, as eq. 9's text describes.
    ``p_set="seen"``: P_k is the Fig. 2 value A_k (columns 0..k each), so W = A_a - A_b:
    eq. 13-14's "average performance on tasks seen up to step i".
    Entries with a <= b are NaN.
    """
    R = _check_square(R)
    if p_set not in P_SETS:
        raise MetricsError(f"unknown p_set {p_set!r}: use one of {', '.join(P_SETS)}")
    T = R.shape[0]
    if p_set == "seen":
        A = avg_f1_learned(R)
        W = A[:, None] - A[None, :]
    else:
        # D[a, b, j] = R[a, j] - R[b, j], kept for j <= b
        D = R[:, None, :] - R[None, :, :]
        keep = np.arange(T)[None, :, None] >= np.arange(T)[None, None, :]
        W = np.asarray(nanmean(np.where(keep, D, np.nan), axis=2))
    W = np.where(np.arange(T)[:, None] > np.arange(T)[None, :], W, np.nan)
    return W


def performance_shift(R: np.ndarray, p_set: str = "common") -> np.ndarray:
    """Eq. 9's summand for one order: s[t] = P_t - P_{t+1}, t = 0..T-2 (positive = a drop)."""
    W = window_change(R, p_set)
    T = W.shape[0]
    return np.array([-W[t + 1, t] for t in range(T - 1)])


def p_avg(matrices: Sequence[np.ndarray], p_set: str = "common") -> np.ndarray:
    """Eq. 9: the shift at each step t averaged over orders (N = number of matrices)."""
    if not matrices:
        raise MetricsError("p_avg needs at least one R matrix")
    shifts = [performance_shift(R, p_set) for R in matrices]
    if len({s.shape for s in shifts}) != 1:
        raise MetricsError("p_avg averages orders of the same length; got different T")
    return np.asarray(nanmean(np.stack(shifts), axis=0))


def performance_change(R: np.ndarray, p_set: str = "common") -> np.ndarray:
    """Fig. 3 for one order: c[i] = P_i - P_{i-1}, the change after training step i.

    Positive = the languages learned before step i improved. c[0] is NaN (nothing learned
    before the first language). Equals -performance_shift shifted by one, and MBT_0 = MFT_0.
    """
    W = window_change(R, p_set)
    T = W.shape[0]
    return np.array([np.nan] + [W[i, i - 1] for i in range(1, T)])


# --------------------------------------------------------------------------- section 3.4


def cft(
    R: np.ndarray,
    convention: str = "paper",
    baseline: Sequence[float] | np.ndarray | None = None,
) -> float:
    """Forward transfer under ``convention``.

    - paper / paper-literal (eq. 10-11): mean over i = 0..T-2 of mean_{j>i} R[i, j] (raw
      scores on not-yet-trained languages; no baseline).
    - gem (GEM reference code): (1/T) * sum_i fwt_i, fwt_0 = 0, fwt_i = R[i-1, i] - b_i.
    - avalanche: mean over i = 1..T-1 of R[i-1, i] - b_i.
    - mhamdi: mean over i = 1..T-1 of mean_{k<i} (R[k, i] - b_i).

    ``baseline`` b: the untrained model's score per language (order-aligned); None = 0.
    """
    R = _check_square(R)
    _check_convention(convention)
    T = R.shape[0]
    if T < 2:
        return float("nan")
    b = _baseline(baseline, T)
    if convention in ("paper", "paper-literal"):
        upper = np.triu(np.ones((T, T), dtype=bool), k=1)
        X = np.asarray(nanmean(np.where(upper, R, np.nan), axis=1))[: T - 1]
        return float(nanmean(X))
    one_hop = np.array([R[i - 1, i] - b[i] for i in range(1, T)])
    if convention == "avalanche":
        return float(nanmean(one_hop))
    if convention == "gem":
        if np.isnan(one_hop).all():
            return float("nan")
        return float(nanmean(np.concatenate([[0.0], one_hop])))
    # mhamdi
    per_lang = [nanmean(R[:i, i] - b[i]) for i in range(1, T)]
    return float(nanmean(np.array(per_lang)))


def cbt(R: np.ndarray, convention: str = "paper") -> float:
    """Backward transfer under ``convention`` (negative = forgetting).

    - paper (eq. 12, read 0-based): mean over i = 0..T-2 of R[T-1, i] - R[i, i].
    - paper-literal (eq. 12 read 1-based): (1/(T-1)) * sum_{i=0..T-2} (R[T-2, i] - R[i, i]);
      uses the second-to-last row and its last term is always 0.
    - gem (GEM reference code): mean over i = 0..T-1 of R[T-1, i] - R[i, i] (divides by T,
      includes the last task, whose term is 0).
    - avalanche: minus the stream forgetting, mean over i = 0..T-2 of R[T-1, i] - R[i, i]
      (excludes the current task). Equals "paper".
    - mhamdi: mean over steps i = 1..T-1 of mean_{j<i} (R[i, j] - R[j, j]).
    """
    R = _check_square(R)
    _check_convention(convention)
    T = R.shape[0]
    if T < 2:
        return float("nan")
    diag = np.diag(R)
    if convention in ("paper", "avalanche"):
        return float(nanmean(R[T - 1, : T - 1] - diag[: T - 1]))
    if convention == "paper-literal":
        return float(nanmean(R[T - 2, : T - 1] - diag[: T - 1]))
    if convention == "gem":
        return float(nanmean(R[T - 1, :] - diag))
    per_step = [nanmean(R[i, :i] - diag[:i]) for i in range(1, T)]
    return float(nanmean(np.array(per_step)))


def fwt_k(R: np.ndarray, k: int, baseline: Sequence[float] | np.ndarray | None = None) -> float:
    """M'hamdi et al.'s k-hop forward transfer: mean over i of R[i, i+k] - b_{i+k}."""
    R = _check_square(R)
    T = R.shape[0]
    if k < 1:
        raise MetricsError(f"k-hop forward transfer needs k >= 1, got {k}")
    b = _baseline(baseline, T)
    terms = np.array([R[i, i + k] - b[i + k] for i in range(T - k)])
    return float(nanmean(terms)) if terms.size else float("nan")


def transfer_all(
    R: np.ndarray, baseline: Sequence[float] | np.ndarray | None = None
) -> dict[str, dict[str, float]]:
    """{convention: {"backward": ..., "forward": ...}} for every convention."""
    return {c: {"backward": cbt(R, c), "forward": cft(R, c, baseline)} for c in CONVENTIONS}


def mft(R: np.ndarray, h: int, p_set: str = HOP_P_SET_DEFAULT) -> np.ndarray:
    """Eq. 13 per position: MFT_h[i] = P_{i+h} - P_{i-1} for the language trained at step i.

    NaN where i = 0 or i + h > T-1. Over a window of h+1 steps that *starts* with step i.
    """
    if h < 0:
        raise MetricsError(f"hop distance must be >= 0, got {h}")
    W = window_change(R, p_set)
    T = W.shape[0]
    return np.array([W[i + h, i - 1] if i >= 1 and i + h < T else np.nan for i in range(T)])


def mbt(R: np.ndarray, h: int, p_set: str = HOP_P_SET_DEFAULT) -> np.ndarray:
    """Eq. 14 per position: MBT_h[i] = P_i - P_{i-h-1} for the language trained at step i.

    NaN where i - h - 1 < 0. Over a window of h+1 steps that *ends* with step i.
    """
    if h < 0:
        raise MetricsError(f"hop distance must be >= 0, got {h}")
    W = window_change(R, p_set)
    T = W.shape[0]
    return np.array([W[i, i - h - 1] if i - h - 1 >= 0 else np.nan for i in range(T)])


def hop_matrices(
    R: np.ndarray, hops: Sequence[int] = HOPS, p_set: str = HOP_P_SET_DEFAULT
) -> tuple[np.ndarray, np.ndarray]:
    """(MFT, MBT), each len(hops) x T (rows = hops, columns = training positions).

    ``p_set`` defaults to ``"seen"``: eq. 13-14 define P_i as the average performance on the
    tasks seen up to step i (eq. 9's default is ``"common"``; docs/metrics.md)."""
    W = window_change(R, p_set)
    T = W.shape[0]
    f = np.full((len(hops), T), np.nan)
    b = np.full((len(hops), T), np.nan)
    for r, h in enumerate(hops):
        for i in range(T):
            if i >= 1 and i + h < T:
                f[r, i] = W[i + h, i - 1]
            if i - h - 1 >= 0:
                b[r, i] = W[i, i - h - 1]
    return f, b


def hop_scalars(values: np.ndarray) -> np.ndarray:
    """Eq. 13-14's scalar per hop for one order: 1/|L| sum over the languages with a value.

    ``values`` is a hop_matrices output (hops x positions); returns one value per hop (NaN
    where no language has a window of that length)."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 2:
        raise MetricsError(f"hop values must be hops x positions, got shape {v.shape}")
    return np.asarray(nanmean(v, axis=1))


def per_language(values: np.ndarray, order: Sequence[str]) -> dict[str, float]:
    """Map per-position values (last axis = training position) to languages."""
    v = np.asarray(values, dtype=float)
    if v.shape[-1] != len(order):
        raise MetricsError(f"{v.shape[-1]} positions but an order of {len(order)} languages")
    return {lang: v[..., i] for i, lang in enumerate(order)}


def average_per_language(
    runs: Sequence[tuple[np.ndarray, Sequence[str]]],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Average per-position values over orders, per language.

    ``runs`` holds (values, order) pairs, values with the training position as last axis.
    For each language: the mean over runs of the value at that language's position in each
    run's order, skipping NaN. Returns (mean, count), both keyed by language.
    """
    acc: dict[str, list[np.ndarray]] = {}
    for values, order in runs:
        for lang, v in per_language(values, order).items():
            acc.setdefault(lang, []).append(np.asarray(v, dtype=float))
    mean = {lang: np.asarray(nanmean(np.stack(vs), axis=0)) for lang, vs in acc.items()}
    count = {lang: (~np.isnan(np.stack(vs))).sum(axis=0) for lang, vs in acc.items()}
    return mean, count


# --------------------------------------------------------------------------- statistics


def summarize(
    values: Sequence[float | None],
    clusters: Sequence[Any] | None = None,
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float | int | None]:
    """mean, std (ddof=1) over the units, a bootstrap CI of the mean, n and ci_units.

    ``values`` holds one value per run; ``clusters`` (optional, same length) the run's order:
    runs of one order under different seeds are not independent, so the bootstrap resamples
    orders, then seeds within each drawn order (:func:`bootstrap_ci`). None/NaN values are
    dropped. With fewer than 2 values the std is None; the CI is None with fewer than
    :data:`MIN_CI_UNITS` top-level units (``ci_units`` says how many there were). The draws
    come from ``numpy.random.default_rng(seed)``, so a call is deterministic.
    """
    cl = list(clusters) if clusters is not None else list(range(len(values)))
    if len(cl) != len(values):
        raise MetricsError(f"{len(values)} values but {len(cl)} cluster labels")
    pairs = [(float(x), c) for x, c in zip(values, cl, strict=True) if x is not None]
    pairs = [(x, c) for x, c in pairs if not math.isnan(x)]
    v = np.asarray([x for x, _ in pairs], dtype=float)
    n = int(v.size)
    units = _units([c for _, c in pairs])
    out: dict[str, float | int | None] = {
        "mean": float(v.mean()) if n else None,
        "std": float(v.std(ddof=1)) if n >= 2 else None,
        "ci_low": None,
        "ci_high": None,
        "n": n,
        "ci_units": units,
    }
    if n and units >= MIN_CI_UNITS and resamples >= 1:
        lo, hi = bootstrap_ci(v, [c for _, c in pairs], resamples=resamples, seed=seed, level=level)
        out["ci_low"], out["ci_high"] = lo, hi
    return out


def _units(clusters: Sequence[Any]) -> int:
    """Top-level bootstrap units: the clusters, or the runs when there is a single cluster."""
    k = len(set(clusters))
    return len(clusters) if k == 1 else k


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    clusters: Sequence[Any] | None = None,
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (NaN dropped).

    Two stages when ``clusters`` has more than one label: each resample draws as many
    clusters as there are, with replacement, then within each drawn cluster as many of its
    values as it holds, with replacement; the resample's statistic is the mean of all values
    drawn. One cluster (or ``clusters=None``): the values themselves are resampled. NaN CI
    with fewer than 2 units.
    """
    v = np.asarray(values, dtype=float)
    cl = list(clusters) if clusters is not None else list(range(v.size))
    if len(cl) != v.size:
        raise MetricsError(f"{v.size} values but {len(cl)} cluster labels")
    ok = ~np.isnan(v)
    v = v[ok]
    cl = [c for c, k in zip(cl, ok, strict=True) if k]
    labels = list(dict.fromkeys(cl))
    if len(labels) == 1:
        labels, cl = list(range(v.size)), list(range(v.size))
    if len(labels) < 2 or resamples < 1:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    index = {c: i for i, c in enumerate(labels)}
    C = len(labels)
    sizes = np.zeros(C, dtype=int)
    for c in cl:
        sizes[index[c]] += 1
    S = int(sizes.max())
    V = np.zeros((C, S))
    fill = np.zeros(C, dtype=int)
    for x, c in zip(v, cl, strict=True):
        k = index[c]
        V[k, fill[k]] = x
        fill[k] += 1
    k = rng.integers(0, C, size=(resamples, C))  # drawn clusters
    n = sizes[k]  # (B, C)
    j = np.floor(rng.random((resamples, C, S)) * n[..., None]).astype(int)  # within each
    take = np.arange(S)[None, None, :] < n[..., None]
    drawn = V[k[..., None], j]
    means = np.where(take, drawn, 0.0).sum(axis=(1, 2)) / take.sum(axis=(1, 2))
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)
