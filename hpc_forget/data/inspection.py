"""``hpc-forget data inspect``: what a source holds, per locale and split."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hpc_forget.data.labels import SLOT_TYPES, SPLITS
from hpc_forget.data.sources import load_massive

# --------------------------------------------------------------------------------------------
# inspection


def inspect_data(
    source: str | Path, locales: Sequence[str] | None = None, skip_invalid: bool = True
) -> dict:
    """A JSON-ready report: per locale and split the row count, the slot types found and the
    invalid-row count; and every invalid row (where, reason)."""
    corpus = load_massive(source, locales, skip_invalid=skip_invalid)
    per: dict[str, dict[str, dict]] = {}
    for loc in corpus.locales:
        per[loc] = {}
        for split in SPLITS:
            exs = corpus.examples[loc][split]
            found = {t[2:] for e in exs for t in e.tags if t != "O"}
            n_bad = sum(1 for r in corpus.invalid if r.locale == loc and r.split == split)
            per[loc][split] = {"rows": len(exs), "slot_types": sorted(found), "invalid": n_bad}
    return {
        "source": corpus.source,
        "form": corpus.form,
        "locales": per,
        "n_invalid": len(corpus.invalid),
        "invalid": [
            {
                "where": r.where,
                "file": r.file,
                "line": r.line,
                "id": r.id,
                "locale": r.locale,
                "split": r.split,
                "reason": r.reason,
            }
            for r in corpus.invalid
        ],
    }


def format_inspect(report: Mapping[str, Any], max_invalid: int = 20) -> str:
    """The :func:`inspect_data` report as a readable table."""
    head = ("locale", "split", "rows", "slot types", "invalid")
    body = [
        (loc, split, str(cell["rows"]), str(len(cell["slot_types"])), str(cell["invalid"]))
        for loc, cells in report["locales"].items()
        for split, cell in cells.items()
    ]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def fmt(r: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()

    lines = [f"source: {report['source']} ({report['form']})", fmt(head)]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(fmt(r) for r in body)
    every = sorted(
        {t for cells in report["locales"].values() for c in cells.values() for t in c["slot_types"]}
    )
    lines.append(f"slot types found: {len(every)} of {len(SLOT_TYPES)}")
    bad = report["invalid"]
    lines.append(f"invalid rows: {report['n_invalid']}")
    lines.extend(f"  {r['where']}: {r['reason']}" for r in bad[:max_invalid])
    if len(bad) > max_invalid:
        lines.append(f"  ... and {len(bad) - max_invalid} more (--json lists all)")
    return "\n".join(lines)
