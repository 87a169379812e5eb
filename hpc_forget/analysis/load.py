"""The store adapter: the ONLY module of the analysis that talks to :mod:`hpc_forget.store.store`.

:func:`load_store` reads a results store into :class:`StoreData`: the store's own
:class:`~hpc_forget.store.format.RunRecord` of each run (matrix ``R`` with NaN, missing cells,
provenance) and the store's problems. See docs/analysis.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hpc_forget.errors import AnalysisError

if TYPE_CHECKING:
    from hpc_forget.store.format import RunRecord


@dataclass
class StoreData:
    path: str
    runs: list[RunRecord]
    problems: list[str] = field(default_factory=list)


def load_store(path: str | Path) -> StoreData:
    """Read every run of the store at ``path`` (a store folder or a consolidated ``.h5``).

    The ONLY function that uses the Store API (docs/design.md): ``Store(path).runs()`` (each
    :class:`~hpc_forget.store.format.RunRecord` holds its matrix ``R``, NaN = not computed, and
    its missing cells ``missing()``), then ``Store.problems()``. A run whose scores do not fit
    its header is skipped with a problem line.
    """
    p = Path(path)
    if not p.exists():
        raise AnalysisError(
            f"{path}: no such store; pass the folder given to `hpc-forget run` "
            "(or a copy of its consolidated .h5)"
        )
    from hpc_forget.store.store import Store

    store = Store(p)
    runs: list[RunRecord] = []
    skipped: list[str] = []
    for rec in store.runs():
        try:
            rec.missing()  # the scores must index by the header's steps and languages
        except Exception as exc:  # one damaged run must not stop the report
            skipped.append(f"{rec.run_id}: skipped, cannot read its scores ({exc})")
            continue
        runs.append(rec)
    problems = [str(x) for x in store.problems()] + skipped
    return StoreData(str(p), runs, problems)
