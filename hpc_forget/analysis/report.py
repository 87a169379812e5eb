"""report.html, one self-contained page with the figures embedded as base64 PNGs:
:func:`write_report`."""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpc_forget.analysis.figures import FigureInfo
from hpc_forget.analysis.load import StoreData
from hpc_forget.analysis.tables import Table, table_html

if TYPE_CHECKING:
    from hpc_forget.store.format import RunRecord

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
h1,h2,h3{font-weight:600} table{border-collapse:collapse;margin:1em 0;font-size:13px}
caption{text-align:left;font-weight:600;padding:4px 0} th,td{border:1px solid #ccc;padding:3px 7px}
th{background:#f3f3f3} td{text-align:right} td:first-child,td:nth-child(2){text-align:left}
tr.section td{font-style:italic;background:#fafafa;text-align:left} .note{color:#555;font-size:12px}
figure{margin:1.5em 0} figure img{max-width:100%} figcaption{font-size:13px;color:#333}
pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px} details{margin:.4em 0}
.warn{color:#a40}
"""


def _provenance_summary(run: RunRecord) -> dict[str, list[str]]:
    vals: dict[str, list[str]] = {}
    for p in run.provenance.values():
        for k, v in p.items():
            s = (
                json.dumps(v, sort_keys=True, default=str)
                if isinstance(v, (dict, list))
                else str(v)
            )
            lst = vals.setdefault(k, [])
            if s not in lst:
                lst.append(s)
    return vals


STRATEGY_FIGURE = "strategy_comparison"


def _figure_html(f: FigureInfo) -> str:
    e = html.escape
    if f.png is not None and f.png.exists():
        b64 = base64.b64encode(f.png.read_bytes()).decode("ascii")
        return (
            f"<figure id='{e(f.name)}'><img alt='{e(f.name)}' src='data:image/png;base64,{b64}'>"
            f"<figcaption>{e(f.caption)}</figcaption></figure>"
        )
    if f.pdf is not None:
        return f"<p>{e(f.caption)} Not embedded: see <code>figures/{e(f.pdf.name)}</code>.</p>"
    return ""


def _strategies_section(table: Table, figures: Sequence[FigureInfo]) -> str:
    """Each strategy against none: how to read it, the forest plot and the table."""
    fig = next((f for f in figures if f.name == STRATEGY_FIGURE), None)
    return (
        "<h2 id='strategies'>Strategies against none</h2>"
        "<p>Each anti-forgetting strategy is paired with the <code>none</code> runs of the same "
        "method, model, rank, data scale and settings: run by run on the same order and seed "
        "(sequential methods), or language by language against each language's own model "
        "(a per-language method merged after training: final F1 only). &Delta; is the mean "
        "over the pairs of strategy &minus; none, right of 0 (positive) = better than none "
        "for every metric; its 95% CI is a paired bootstrap of the orders (or languages), so "
        "an interval that excludes 0 is a difference the orders agree on. A row that could "
        "not be paired says why. See docs/analysis.md.</p>"
        + (_figure_html(fig) if fig is not None else "")
        + table_html(table)
    )


def write_report(
    data: StoreData,
    metrics: Mapping[str, Any],
    tables: Sequence[Table],
    figures: Sequence[FigureInfo],
    out_dir: str | Path,
) -> Path:
    """Write out_dir/report.html: every table, every figure (PNG embedded), provenance."""
    e = html.escape
    s = metrics["settings"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>hpc-forget report: {e(metrics['store'])}</title><style>{_CSS}</style></head><body>",
        "<h1>hpc-forget analysis report</h1>",
        f"<p>Store <code>{e(metrics['store'])}</code>, analysed {e(metrics['created'])}: "
        f"{len(metrics['runs'])} runs in {len(metrics['groups'])} groups. "
        f"Transfer convention <b>{e(s['convention'])}</b>; P averaged over the <b>{e(s['p_set'])}</b> "
        f"language set in eq. 9 / Fig. 3 and over the <b>{e(s['hop_p_set'])}</b> set in eq. 13-14 "
        f"(MFT, MBT); vitality groups {e(json.dumps(s['vitality']))}; "
        f"{s['bootstrap']['resamples']} bootstrap resamples (seed {s['bootstrap']['seed']}) of the "
        "orders, then the seeds within each order. Missing cells are never read as 0.</p>",
    ]
    if metrics.get("settings_note"):
        parts.append(f"<p class='warn'>{e(metrics['settings_note'])}</p>")
    if metrics["problems"]:
        parts.append(
            "<h3 class='warn'>Store problems</h3><ul>"
            + "".join(f"<li>{e(p)}</li>" for p in metrics["problems"])
            + "</ul>"
        )
    n_missing = sum(len(v) for v in metrics["missing"].values())
    if n_missing:
        parts.append(
            f"<p class='warn'>{len(metrics['missing'])} run(s) are incomplete ({n_missing} missing cells): "
            "see <a href='#missing'>Missing cells</a>.</p>"
        )
    compared = next((t for t in tables if t.name == "strategy_comparison" and t.rows), None)
    if compared is not None:
        parts.append(_strategies_section(compared, figures))
    parts.append("<h2>Tables</h2>")
    for t in tables:
        if (t.name == "missing" and not t.rows) or t.name == "strategy_comparison":
            continue
        if t.name in (
            "per_language_f1",
            "per_language_transfer",
            "groupings",
            "headline",
            "hop_transfer",
        ):
            parts.append(f"<details><summary>{e(t.title)}</summary>{table_html(t)}</details>")
        else:
            parts.append(table_html(t))
    parts.append("<h2>Figures</h2>")
    for f in figures:
        if f.name == STRATEGY_FIGURE:
            continue
        parts.append(_figure_html(f))
    # provenance
    parts.append("<h2>Runs, configuration and provenance</h2>")
    gl = {g["id"]: g for g in metrics["groups"]}
    rrec = {r["run_id"]: r for r in metrics["runs"]}
    parts.append(
        "<table><caption>Runs (each table and figure row averages the runs of its group)</caption>"
        "<thead><tr><th>Run</th><th>Group</th><th>Kind</th><th>Order</th><th>Seed</th>"
        "<th>Cells present</th></tr></thead><tbody>"
    )
    for r in metrics["runs"]:
        g = gl.get(r["group"], {})
        parts.append(
            f"<tr><td>{e(r['run_id'])}</td><td>{e(g.get('label', ''))} ({e(str(r['key'].get('model', '')))})</td>"
            f"<td>{e(r['kind'])}</td><td>{e(str(r['key'].get('order', '')))}</td>"
            f"<td>{e(str(r['key'].get('seed', '')))}</td><td>{r['cells_present']}/{r['cells_expected']}</td></tr>"
        )
    parts.append("</tbody></table>")
    configs: dict[str, tuple[str, list[str]]] = {}
    for run in data.runs:
        txt = json.dumps(run.config, indent=2, sort_keys=True, default=str)
        h = hashlib.sha256(txt.encode()).hexdigest()[:8]
        configs.setdefault(h, (txt, []))[1].append(run.run_id)
    for h, (txt, ids) in configs.items():
        parts.append(
            f"<details><summary>Config {h} (used by {len(ids)} run(s))</summary>"
            f"<p class='note'>{e(', '.join(ids))}</p><pre>{e(txt)}</pre></details>"
        )
    for run in data.runs:
        prov = _provenance_summary(run)
        meta_keys = sorted({k for m in run.step_meta.values() for k in m})
        body = "".join(
            f"<tr><td>{e(k)}</td><td>{e('; '.join(v))}</td></tr>" for k, v in sorted(prov.items())
        )
        parts.append(
            f"<details><summary>Provenance of {e(run.run_id)} "
            f"({len(run.provenance)} step(s) recorded)</summary><table><tbody>{body}</tbody></table>"
            f"<p class='note'>key: {e(json.dumps(rrec[run.run_id]['key'], sort_keys=True))}; "
            f"step meta fields: {e(', '.join(meta_keys))}</p></details>"
        )
    parts.append("</body></html>")
    path = Path(out_dir) / "report.html"
    path.write_text("".join(parts), encoding="utf-8")
    return path
