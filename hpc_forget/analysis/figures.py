"""Fig. 2-7 and the strategy comparison as PNG and PDF (matplotlib, Agg canvas, no pyplot):
:func:`write_figures`."""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hpc_forget.analysis import metrics as M
from hpc_forget.analysis.compare import COMPARED, comparison_entries
from hpc_forget.analysis.load import StoreData
from hpc_forget.analysis.reduce import as_float, slug
from hpc_forget.study import languages as L

if TYPE_CHECKING:
    from hpc_forget.store.format import RunRecord

FIG7_PNG_LIMIT = 8
FIG7_ANNOTATE_MAX_T = 16
"""Fig. 7 prints each cell's F1 (%) when the order has at most this many languages."""
FIG_DPI = 100


@dataclass
class FigureInfo:
    name: str
    caption: str
    png: Path | None
    pdf: Path | None


def _new_figure(w: float, h: float, constrained: bool = True):  # -> matplotlib.figure.Figure
    """A figure on its own Agg canvas: no pyplot, no global state, nothing to close."""
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=FIG_DPI, layout="constrained" if constrained else None)


def _margins(fig, *, left: float, bottom: float, right: float, top: float) -> None:
    """Fixed margins in inches (cheaper than constrained layout for label-heavy figures)."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, bottom=bottom / h, right=1 - right / w, top=1 - top / h)


@contextlib.contextmanager
def _pdf_fonts() -> Iterator[None]:
    """PDFs with the 14 core fonts (no font embedding): 2-3x faster for label-heavy figures.
    Figure text is kept ASCII (:func:`_ascii`) so the core fonts can show all of it."""
    import logging

    import matplotlib as mpl

    log = logging.getLogger("matplotlib.font_manager")
    level = log.level
    log.setLevel(logging.ERROR)  # "Failed to find font weight normal for Helvetica"
    try:
        with mpl.rc_context({"pdf.use14corefonts": True}):
            yield
    finally:
        log.setLevel(level)


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


LABEL_MAX = 60
"""Longer group labels (a strategy's canonical text can be long) are cut in legends and tick
labels: the first characters, "...", and 6 hex of a digest, so cut labels stay distinct."""


def _label(text: str, limit: int = LABEL_MAX) -> str:
    """``text`` as ASCII, cut to ``limit`` characters (:data:`LABEL_MAX`)."""
    text = _ascii(text)
    if len(text) <= limit:
        return text
    import hashlib

    return f"{text[: limit - 10]}...#{hashlib.sha256(text.encode()).hexdigest()[:6]}"


def _save(fig, d: Path, name: str, caption: str, png: bool = True, pdf: bool = True) -> FigureInfo:
    p_png = d / f"{name}.png" if png else None
    p_pdf = d / f"{name}.pdf" if pdf else None
    if p_png:
        fig.savefig(p_png, dpi=FIG_DPI)
    if p_pdf:
        with _pdf_fonts():
            fig.savefig(p_pdf)
    return FigureInfo(name, caption, p_png, p_pdf)


def _arr(x: Any) -> np.ndarray:
    return np.array([as_float(v) for v in (x or [])], dtype=float)


def _cmap():
    import matplotlib as mpl

    # the paper: cooler = better; grey = not computable / missing
    return mpl.colormaps["coolwarm_r"].with_extremes(bad="0.85")


class _Heatmap:
    """One heatmap figure reused for many panels of the same shape (ticks are built once,
    which is most of the cost of a 52-language figure)."""

    def __init__(
        self,
        shape: tuple[int, int],
        size: tuple[float, float],
        *,
        xlabel: str,
        ylabel: str,
        cbar: str,
        margins: Mapping[str, float],
    ) -> None:
        self.shape = shape
        self.fig = _new_figure(*size, constrained=False)
        _margins(self.fig, **margins)
        self.ax = self.fig.add_subplot()
        self.im = self.ax.imshow(
            np.zeros(shape), aspect="auto", cmap=_cmap(), interpolation="nearest"
        )
        self.ax.set_xticks(range(shape[1]))
        self.ax.set_yticks(range(shape[0]))
        # no tick marks (the cells show the grid) and fixed axis-label positions: matplotlib
        # would otherwise measure every tick label of every panel to place them
        self.ax.tick_params(bottom=False, left=False)
        self.ax.set_xlabel(xlabel)
        self.ax.set_ylabel(ylabel)
        self.fig.colorbar(self.im, ax=self.ax, label=cbar, fraction=0.04, pad=0.02)
        w, h = size
        ax_w = (w - margins["left"] - margins["right"]) * 0.94  # the colorbar takes ~6%
        ax_h = h - margins["bottom"] - margins["top"]
        self.ax.xaxis.set_label_coords(0.5, -(margins["bottom"] - 0.28) / ax_h)
        self.ax.yaxis.set_label_coords(-(margins["left"] - 0.3) / ax_w, 0.5)
        self.fs = 6 if max(shape) > 20 else 8
        self.texts: list[Any] = []

    def draw(
        self,
        values: np.ndarray,
        xlabels: Sequence[str],
        ylabels: Sequence[str],
        title: str,
        vmin: float,
        vmax: float,
        annotate: str | None = None,
    ):
        """Draw one panel; ``annotate`` (a format such as ``"{:.0f}"``) prints each cell's
        value, in black or white for contrast with the cell's colour."""
        self.im.set_data(np.ma.masked_invalid(values))
        self.im.set_clim(vmin, vmax)
        for t in self.texts:
            t.remove()
        self.texts = []
        if annotate:
            span = (vmax - vmin) or 1.0
            fs = 7 if max(self.shape) <= 10 else 5.5
            for (i, j), v in np.ndenumerate(np.asarray(values, dtype=float)):
                if math.isnan(v):
                    continue
                dark = abs((v - vmin) / span - 0.5) > 0.3  # the ends of coolwarm are dark
                self.texts.append(
                    self.ax.text(
                        j,
                        i,
                        annotate.format(v),
                        ha="center",
                        va="center",
                        fontsize=fs,
                        color="white" if dark else "black",
                    )
                )
        self.ax.set_xticklabels([_ascii(x) for x in xlabels], rotation=90, fontsize=self.fs)
        self.ax.set_yticklabels([_ascii(x) for x in ylabels], fontsize=self.fs)
        import textwrap

        width = max(30, int(self.fig.get_size_inches()[0] * 13))  # ~13 chars an inch at 9 pt
        self.ax.set_title(textwrap.fill(_ascii(title), width, break_on_hyphens=False), fontsize=9)
        return self.fig


def fig2(metrics: Mapping[str, Any], d: Path) -> list[FigureInfo]:
    groups = metrics["groups"]
    models = list(dict.fromkeys(g["key"]["model"] for g in groups))
    if not groups:
        return []
    fig = _new_figure(6.5 * len(models), 4.2)
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    import matplotlib as mpl
    from matplotlib.ticker import MaxNLocator

    for ax, model in zip(axes, models, strict=True):
        ax.set_prop_cycle(color=mpl.colormaps["tab20"].colors)
        for g in (g for g in groups if g["key"]["model"] == model):
            c = g["curves"]["avg_f1"]
            y, s = _arr(c["mean"]) * 100, _arr(c["std"]) * 100
            x = np.arange(1, len(y) + 1)
            seq = "mft" in g
            (line,) = ax.plot(x, y, ls="-" if seq else ":", lw=1.5, label=_label(g["label"]))
            if seq and np.any(~np.isnan(s)):
                ax.fill_between(x, y - s, y + s, color=line.get_color(), alpha=0.15, lw=0)
        ax.set_title(_ascii(model))
        ax.set_xlabel("number of learned languages")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # a count: whole numbers
        ax.set_ylabel("average F1 over learned languages (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return [
        _save(
            fig,
            d,
            "fig2_avg_f1",
            "Fig. 2: average F1 over the learned languages after each step "
            "(solid: sequential, mean ± std over orders and seeds; dotted: non-sequential methods, "
            "mean F1 over the first k languages of the orders).",
        )
    ]


def _script_colors(langs: Sequence[str]) -> list[str]:
    return [
        "tab:blue" if (lang in L.LANGUAGES and L.is_latin(lang)) else "tab:orange" for lang in langs
    ]


def fig3(metrics: Mapping[str, Any], d: Path) -> list[FigureInfo]:
    """Per sequential group: the change after training each language (bars sorted)."""
    out = []
    made: dict[int, tuple[Any, Any, Any]] = {}  # one figure per language count, reused
    for g in metrics["groups"]:
        if "perf_change" not in g:
            continue
        items = [(lang, as_float(v["mean"]) * 100) for lang, v in g["perf_change"].items()]
        items = [x for x in items if not math.isnan(x[1])]
        if not items:
            continue
        items.sort(key=lambda x: -x[1])
        n = len(items)
        langs = [x[0] for x in items]
        if n not in made:
            fig = _new_figure(max(6.0, 0.13 * n + 1.5), 3.6, constrained=False)
            _margins(fig, left=0.8, bottom=0.6, right=0.2, top=0.35)
            ax = fig.add_subplot()
            bars = ax.bar(range(n), np.zeros(n))
            ax.set_xticks(range(n))
            ax.tick_params(axis="x", bottom=False)
            ax.set_xlim(-0.7, n - 0.3)
            ax.axhline(0, color="k", lw=0.6)
            ax.set_ylabel("change in avg F1 of learned (pts)", fontsize=8)
            made[n] = (fig, ax, bars)
        fig, ax, bars = made[n]
        for bar, (_, v), c in zip(bars, items, _script_colors(langs), strict=True):
            bar.set_height(v)
            bar.set_color(c)
        lo, hi = min(0.0, min(v for _, v in items)), max(0.0, max(v for _, v in items))
        pad = 0.05 * (hi - lo or 1.0)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_xticklabels([_ascii(x) for x in langs], rotation=90, fontsize=6)
        ax.set_title(
            _ascii(f"{g['label']} - {g['key']['model']} (blue: Latin script, orange: non-Latin)"),
            fontsize=9,
        )
        out.append(
            _save(
                fig,
                d,
                f"fig3_change_{g['id']}",
                f"Fig. 3: change in the average F1 of the previously learned languages after training "
                f"each language, mean over {len(g['runs'])} run(s) of {g['label']} ({g['key']['model']}).",
            )
        )
    return out


def fig4(metrics: Mapping[str, Any], d: Path) -> list[FigureInfo]:
    groups = metrics["groups"]
    if not groups:
        return []
    models = list(dict.fromkeys(g["key"]["model"] for g in groups))
    labels = list(dict.fromkeys(g["label"] for g in groups))
    fig = _new_figure(max(6.0, 0.9 * len(labels) + 2), 4.0)
    ax = fig.add_subplot()
    width = 0.8 / len(models)
    for k, model in enumerate(models):
        ys, es = [], []
        for lab in labels:
            g = next((g for g in groups if g["label"] == lab and g["key"]["model"] == model), None)
            s = g["headline"]["f1"] if g else {}
            ys.append(as_float(s.get("mean")) * 100)
            es.append(as_float(s.get("std")) * 100 if s.get("std") is not None else 0.0)
        ax.bar(
            np.arange(len(labels)) + (k - (len(models) - 1) / 2) * width,
            ys,
            width,
            yerr=es,
            label=_ascii(model),
            capsize=2,
        )
    ax.set_xticks(
        range(len(labels)), [_label(x) for x in labels], rotation=30, ha="right", fontsize=8
    )
    ax.set_ylabel("F1 (%)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return [
        _save(
            fig,
            d,
            "fig4_models",
            "Fig. 4: the base models compared: Table 1 F1 per method "
            "(error bars: std over orders and seeds).",
        )
    ]


def strategy_figure(metrics: Mapping[str, Any], d: Path) -> list[FigureInfo]:
    """Forest plot of each strategy against none: one panel per compared metric, a row per
    strategy group, the paired difference (strategy - none) with its 95% CI; a row that has
    no difference says why (no pair, n/a). Nothing when the store holds only none."""
    entries = comparison_entries(metrics)
    if not entries:
        return []
    multi = len({e["key"]["model"] for e in entries}) > 1
    labels = [
        _label(f"{e['label']} ({e['key']['model']})" if multi else e["label"], 90) for e in entries
    ]
    n = len(entries)
    fig = _new_figure(
        2.6 * len(COMPARED) + 0.055 * max(len(x) for x in labels) + 0.5, 0.45 * n + 1.4
    )
    axes = fig.subplots(1, len(COMPARED), sharey=True, squeeze=False)[0]
    y = np.arange(n)[::-1]
    for ax, (name, title) in zip(axes, COMPARED, strict=True):
        scale, unit = (1.0, "") if name in ("cbt", "cft") else (100.0, " (pts)")
        for yi, e in zip(y, entries, strict=True):
            c = e["metrics"][name]
            dif = c.get("difference") or {}
            if dif.get("mean") is None:
                why = "n/a" if str(c.get("status") or "").startswith("n/a") else "no pair"
                ax.text(
                    0.5,
                    yi,
                    why,
                    transform=ax.get_yaxis_transform(),  # x: the panel's middle; y: the row
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="0.45",
                )
                continue
            m = dif["mean"] * scale
            if dif.get("ci_low") is not None:
                lo, hi = dif["ci_low"] * scale, dif["ci_high"] * scale
                ax.errorbar(m, yi, xerr=[[m - lo], [hi - m]], fmt="o", color="tab:blue", capsize=3)
            else:  # no CI (too few orders): a hollow marker
                ax.plot(m, yi, "o", mfc="none", color="tab:blue")
        ax.axvline(0, color="k", lw=0.7)
        ax.set_title(f"{title}: strategy - none{unit}", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.set_ylim(-0.7, n - 0.3)
    axes[0].set_yticks(y, labels, fontsize=7)
    return [
        _save(
            fig,
            d,
            "strategy_comparison",
            "Strategies against none on the same method, model, rank, data scale and orders: "
            "the paired difference strategy - none (F1 and MBT_0 in F1 points, CBT and CFT as "
            "fractions; right of 0 = better than none), with its 95% bootstrap CI (hollow: too "
            "few orders for an interval; 'no pair': no none run to pair with; 'n/a': not "
            "defined for a merged per-language method).",
        )
    ]


def fig5_6(metrics: Mapping[str, Any], d: Path) -> list[FigureInfo]:
    """MBT (Fig. 5) and MFT (Fig. 6) heatmaps of every sequential group: hops x languages,
    languages sorted by their mean over hops, descending."""
    out: list[FigureInfo] = []
    maps: dict[tuple[int, int], _Heatmap] = {}
    for g in metrics["groups"]:
        if "mbt" not in g:
            continue
        for which, no in (("mbt", 5), ("mft", 6)):
            data = g[which]
            langs = list(data)
            H = np.array([_arr(data[x]["by_hop"]) for x in langs]).T * 100  # hops x languages
            if H.size == 0 or np.isnan(H).all():
                continue
            score = np.asarray(M.nanmean(H, axis=0))
            idx = sorted(
                range(len(langs)), key=lambda i: (math.isnan(score[i]), -np.nan_to_num(score[i]))
            )
            H = H[:, idx]
            langs = [langs[i] for i in idx]
            lim = float(np.nanmax(np.abs(H))) or 1.0
            if H.shape not in maps:
                maps[H.shape] = _Heatmap(
                    H.shape,
                    (max(6.0, 0.13 * H.shape[1] + 2), 3.2),
                    xlabel="language (sorted by mean over hops)",
                    ylabel="hop distance h",
                    cbar="F1 points",
                    margins={"left": 0.6, "bottom": 0.75, "right": 0.3, "top": 0.35},
                )
            name = "MBT" if which == "mbt" else "MFT"
            fig = maps[H.shape].draw(
                H,
                langs,
                [str(h) for h in g["hops"]],
                f"{name} - {g['label']} ({g['key']['model']})",
                -lim,
                lim,
            )
            what = (
                "Fig. 5: multi-hop backward transfer MBT_h (eq. 14)"
                if which == "mbt"
                else "Fig. 6: multi-hop forward transfer MFT_h (eq. 13)"
            )
            out.append(
                _save(
                    fig,
                    d,
                    f"fig{no}_{which}_{g['id']}",
                    f"{what} per language (F1 points), mean over {len(g['runs'])} run(s) of "
                    f"{g['label']} ({g['key']['model']}); languages sorted by their mean over hops, "
                    "descending; grey = not computable.",
                )
            )
    return out


def _fig7_runs(
    data: StoreData, metrics: Mapping[str, Any]
) -> list[tuple[RunRecord, np.ndarray, str]]:
    group_of = {r["run_id"]: r["group"] for r in metrics["runs"]}
    gorder = {g["id"]: i for i, g in enumerate(metrics["groups"])}
    labels = {g["id"]: f"{g['label']} ({g['key']['model']})" for g in metrics["groups"]}
    seq = [r for r in data.runs if r.kind == "sequential"]
    seq.sort(
        key=lambda r: (
            gorder.get(group_of.get(r.run_id), 0),
            str(r.key.get("order", "")),
            r.key.get("seed", 0),
        )
    )
    out = []
    for run in seq:
        try:
            R = M.order_aligned(run.R, run.languages, run.steps)
        except M.MetricsError:
            continue
        label = (
            f"R of {labels.get(group_of.get(run.run_id), run.run_id)}, order {run.key.get('order', '')}, "
            f"seed {run.key.get('seed', '')}"
        )
        out.append((run, R, label))
    return out


def fig7(
    data: StoreData,
    metrics: Mapping[str, Any],
    d: Path,
    png_limit: int = FIG7_PNG_LIMIT,
    pdf: bool = True,
    png: bool = True,
) -> list[FigureInfo]:
    """The R heatmap of every sequential run: one multi-page PDF with every run, and PNGs for
    the first ``png_limit`` runs in table order (the HTML report embeds those)."""
    runs = _fig7_runs(data, metrics)
    out: list[FigureInfo] = []
    if not runs:
        return out
    maps: dict[int, _Heatmap] = {}

    def draw(run: RunRecord, R: np.ndarray, label: str):
        T = len(R)
        if T not in maps:
            side = max(4.0, 0.11 * T + 1.8)
            maps[T] = _Heatmap(
                (T, T),
                (side + 1.3, side),
                xlabel="evaluated language (training order)",
                ylabel="after training step",
                cbar="test F1 (%)",
                margins={"left": 0.9, "bottom": 0.75, "right": 0.75, "top": 0.5},
            )
        return maps[T].draw(
            R * 100,
            run.steps,
            [f"{i + 1} {s}" for i, s in enumerate(run.steps)],
            label,
            0,
            100,
            annotate="{:.0f}" if T <= FIG7_ANNOTATE_MAX_T else None,
        )

    if png:
        # one run per group first (order 1 of each), then the next run of each group, ...
        group_of = {r["run_id"]: r["group"] for r in metrics["runs"]}
        seen: dict[Any, int] = {}
        nth = []
        for run, _, _ in runs:
            g = group_of.get(run.run_id)
            nth.append(seen.get(g, 0))
            seen[g] = nth[-1] + 1
        picked = sorted(range(len(runs)), key=lambda i: (nth[i], i))[:png_limit]
        for run, R, label in (runs[i] for i in picked):
            name = f"fig7_R_{slug(run.run_id)}"
            draw(run, R, label).savefig(d / f"{name}.png", dpi=FIG_DPI)
            out.append(
                FigureInfo(
                    name,
                    f"Fig. 7: {label} (run {run.run_id}); rows: after each training step, "
                    "columns: languages in training order.",
                    d / f"{name}.png",
                    None,
                )
            )
    if pdf:
        from matplotlib.backends.backend_pdf import PdfPages

        pdf_path = d / "fig7_R_all_runs.pdf"
        with _pdf_fonts(), PdfPages(pdf_path) as pages:
            for run, R, label in runs:
                pages.savefig(draw(run, R, label))
        out.append(
            FigureInfo(
                "fig7_R_all_runs",
                f"Fig. 7: the R heatmap of each of the {len(runs)} sequential "
                f"runs (one page per run; PNGs for the first {min(png_limit, len(runs))}).",
                None,
                pdf_path,
            )
        )
    return out


def _figure_job(
    job: str, data: StoreData, metrics: Mapping[str, Any], d: Path, png_limit: int
) -> list[FigureInfo]:
    """One share of the figures (a top-level function so a worker process can run it)."""
    if job == "fig7-pdf":
        return fig7(data, metrics, d, png_limit, png=False)
    if job == "fig7-png":
        return fig7(data, metrics, d, png_limit, pdf=False)
    if job == "heatmaps":
        return fig5_6(metrics, d)
    return fig2(metrics, d) + fig3(metrics, d) + fig4(metrics, d) + strategy_figure(metrics, d)


# longest first: with 2 workers the shares finish close together
_JOBS = ("fig7-pdf", "heatmaps", "plots", "fig7-png")


def _order_figures(results: Iterable[list[FigureInfo]]) -> list[FigureInfo]:
    figs = [f for r in results for f in r]
    rank = {"fig2": 0, "fig3": 1, "fig4": 2, "stra": 2.5, "fig5": 3, "fig6": 4, "fig7": 5}
    return sorted(figs, key=lambda f: (rank.get(f.name[:4], 9), f.name.startswith("fig7_R_all")))


def _warm_matplotlib() -> None:
    """Import matplotlib's figure, Agg and PDF modules and load the font cache."""
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.backends.backend_pdf  # noqa: F401
    import matplotlib.figure  # noqa: F401
    from matplotlib import font_manager

    font_manager.findfont(font_manager.FontProperties())


def _mp_context():
    import multiprocessing as mp

    return mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")


class FigureWork:
    """The figure jobs, running in ``workers`` processes (in-process when 1 or when no
    process can be started) while the caller does other work."""

    def __init__(
        self, data: StoreData, metrics: Mapping[str, Any], d: Path, png_limit: int, workers: int
    ) -> None:
        stale = [*d.glob("fig[2-7]_*.png"), *d.glob("fig[2-7]_*.pdf")]
        for old in stale + [d / "strategy_comparison.png", d / "strategy_comparison.pdf"]:
            old.unlink(missing_ok=True)  # figures of an earlier analysis into the same folder
        self.jobs = [(j, data, metrics, d, png_limit) for j in _JOBS]
        self.ex = None
        self.futures: list = []
        if workers > 1:
            from concurrent.futures import ProcessPoolExecutor

            _warm_matplotlib()  # forked workers inherit it instead of each loading it

            try:
                self.ex = ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context())
                self.futures = [self.ex.submit(_figure_job, *j) for j in self.jobs]
            except (OSError, RuntimeError, ImportError):
                self.close()

    def result(self) -> list[FigureInfo]:
        from concurrent.futures import BrokenExecutor

        try:
            if self.futures:
                try:
                    results = [f.result() for f in self.futures]
                except BrokenExecutor:  # a worker died (e.g. out of memory): draw here
                    self.close(wait=False)
                else:
                    self.close()
                    return _order_figures(results)
            return _order_figures(_figure_job(*j) for j in self.jobs)
        finally:
            self.close(wait=False)

    def close(self, wait: bool = True) -> None:
        """Stop the workers. After a failure (wait=False) they are terminated: waiting for a
        pool that broke or failed to pickle a job can hang."""
        if self.ex is None:
            return
        ex, self.ex, self.futures = self.ex, None, []
        if wait:
            ex.shutdown(wait=True)
            return
        procs = list((getattr(ex, "_processes", None) or {}).values())
        ex.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.terminate()


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def write_figures(
    data: StoreData,
    metrics: Mapping[str, Any],
    out_dir: str | Path,
    *,
    fig7_png_limit: int = FIG7_PNG_LIMIT,
    workers: int | None = None,
) -> list[FigureInfo]:
    """Write Fig. 2-7 (and the strategy comparison, with strategies) under out_dir/figures/
    (PNG and PDF).

    ``workers`` processes share the work (default: 2, or 1 on a one-core machine).
    """
    d = Path(out_dir) / "figures"
    d.mkdir(parents=True, exist_ok=True)
    n = workers if workers is not None else default_workers()
    return FigureWork(data, metrics, d, fig7_png_limit, n).result()
