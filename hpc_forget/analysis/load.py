"""The store adapter: the ONLY module of the analysis that talks to :mod:`hpc_forget.store.store`.

:func:`load_store` turns a results store into plain :class:`RunData` records (matrices with NaN,
missing cells, provenance). See docs/analysis.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpc_forget.errors import AnalysisError


@dataclass
class RunData:
    """One run of the store, as plain data (what the analysis needs from the Store)."""

    run_id: str
    key: dict[str, Any]
    kind: str
    languages: list[str]
    steps: list[str]
    matrix: np.ndarray  # steps x languages, NaN = not computed
    missing: list[tuple[int, str]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    provenance: dict[int, dict[str, Any]] = field(default_factory=dict)
    step_meta: dict[int, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    """What beyond the key the scores depend on (``RunRecord.settings``)."""

    def expected_cells(self) -> list[tuple[int, str]]:
        """The (step, language) cells this run's kind fills: the store's one rule
        (:func:`hpc_forget.store.store.expected_cells`)."""
        from hpc_forget.store.store import expected_cells

        return expected_cells(self.kind, self.languages, self.steps)


@dataclass
class StoreData:
    path: str
    runs: list[RunData]
    problems: list[str] = field(default_factory=list)


def load_store(path: str | Path) -> StoreData:
    """Read every run of the store at ``path`` (a store folder or a consolidated ``.h5``).

    The ONLY function that uses the Store API (docs/design.md): ``Store(path).runs()``, each
    record's matrix (``RunRecord.R`` when present, else ``Store.matrix``) and missing cells
    (``RunRecord.missing()``, else ``Store.missing``), then ``Store.problems()``.
    """
    p = Path(path)
    if not p.exists():
        raise AnalysisError(
            f"{path}: no such store; pass the folder given to `hpc-forget run` "
            "(or a copy of its consolidated .h5)"
        )
    from hpc_forget.store.store import Store

    store = Store(p)
    runs: list[RunData] = []
    skipped: list[str] = []
    for rec in store.runs():
        try:
            R = getattr(rec, "R", None)
            matrix = np.asarray(
                R if R is not None and np.size(R) else store.matrix(rec.run_id), dtype=float
            )
            missing = (
                rec.missing()
                if callable(getattr(rec, "missing", None))
                else store.missing(rec.run_id)
            )
            missing = [(int(s), str(lang)) for s, lang in missing]
        except Exception as exc:  # one damaged run must not stop the report
            skipped.append(f"{rec.run_id}: skipped, cannot read its scores ({exc})")
            continue
        runs.append(
            RunData(
                run_id=rec.run_id,
                key=dict(rec.key),
                kind=rec.kind,
                languages=list(rec.languages),
                steps=list(rec.steps),
                matrix=matrix,
                missing=missing,
                config=dict(getattr(rec, "config", None) or {}),
                provenance={
                    int(k): dict(v) for k, v in (getattr(rec, "provenance", None) or {}).items()
                },
                step_meta={
                    int(k): dict(v) for k, v in (getattr(rec, "step_meta", None) or {}).items()
                },
                settings=dict(getattr(rec, "settings", None) or {}),
            )
        )
    problems = [str(x) for x in store.problems()] + skipped
    return StoreData(str(p), runs, problems)
