"""Figures: worker fallback, Fig. 7 values, Fig. 2 axis."""

from __future__ import annotations

import pytest
from _analysis_runs import small_runs

from hpc_forget.analysis import figures, load, reduce
from hpc_forget.analysis.options import AnalysisOptions

_PARENT_PID = None


def _dying_figure_job(*args):
    """A figure job that kills the worker process it runs in (module level: picklable)."""
    import os

    if os.getpid() != _PARENT_PID:
        os._exit(3)
    return _REAL_FIGURE_JOB(*args)


_REAL_FIGURE_JOB = figures._figure_job


@pytest.mark.slow
def test_a_dead_figure_worker_falls_back_to_drawing_in_process(tmp_path, monkeypatch):
    import os
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("relies on forked workers")
    monkeypatch.setattr(sys.modules[__name__], "_PARENT_PID", os.getpid())
    monkeypatch.setattr(figures, "_figure_job", _dying_figure_job)
    data = load.StoreData("mem", small_runs())
    m = reduce.compute_metrics(data, AnalysisOptions(bootstrap=0))
    figs = figures.write_figures(data, m, tmp_path, workers=2)
    assert {f.name[:4] for f in figs} == {"fig2", "fig3", "fig4", "fig5", "fig6", "fig7"}


def test_fig7_prints_values_and_fig2_counts_whole_languages(tmp_path, monkeypatch):
    from matplotlib.ticker import MaxNLocator

    data = load.StoreData("mem", small_runs()[:1])
    m = reduce.compute_metrics(data, AnalysisOptions(bootstrap=0))
    run, R, label = figures._fig7_runs(data, m)[0]
    hm = figures._Heatmap(
        (3, 3),
        (4, 4),
        xlabel="x",
        ylabel="y",
        cbar="c",
        margins=dict.fromkeys(("left", "bottom", "right", "top"), 0.5),
    )
    hm.draw(R * 100, run.steps, run.steps, label, 0, 100, annotate="{:.0f}")
    assert sorted(t.get_text() for t in hm.texts) == sorted(f"{v * 100:.0f}" for v in R.flat)
    hm.draw(R * 100, run.steps, run.steps, label, 0, 100)  # the next panel: no stale values
    assert hm.texts == [] and not hm.ax.texts
    figs = figures.fig7(data, m, tmp_path, pdf=False)
    assert figs and figures.FIG7_ANNOTATE_MAX_T == 16
    saved = {}
    real_save = figures._save

    def spy(fig, *a, **k):
        saved["locator"] = fig.axes[0].xaxis.get_major_locator()
        return real_save(fig, *a, **k)

    monkeypatch.setattr(figures, "_save", spy)
    assert figures.fig2(m, tmp_path)[0].png.is_file()
    assert isinstance(saved["locator"], MaxNLocator)
