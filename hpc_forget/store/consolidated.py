"""The consolidated file: every run and step of a store in one ``.h5`` (a laptop copy, read-only)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hpc_forget.errors import StoreError
from hpc_forget.files import utc_now

# HDF5's own file locking fails on Lustre and many NFS mounts (errno 11, 37, 38, 524). We never
# rely on it: every open below passes locking=False; the variable covers other HDF5 users.
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")

import h5py  # noqa: E402
import numpy as np  # noqa: E402

from hpc_forget import __version__  # noqa: E402
from hpc_forget.store import format as layout  # noqa: E402
from hpc_forget.store.format import (  # noqa: E402
    CONSOLIDATED_FORMAT,
    SCHEMA_VERSION,
    _attr_str,
    _check_not_empty,
    _check_step,
    _Damaged,
    _Header,
    _read_header_group,
    _reason,
    _schema_fix,
    _schema_problem,
    _Step,
    _step_label,
    _str_array,
    _write_header_attrs,
)

# --------------------------------------------------------------------------------------------
# Consolidated file
# --------------------------------------------------------------------------------------------


@dataclass
class _Consolidated:
    """A consolidated file: run headers read at once, step rows read per run when needed."""

    path: Path
    headers: dict[str, _Header]
    problems: list[str]  # problems inside this file (damaged runs)
    recorded_problems: list[str]  # problems of the store when it was consolidated
    created_at: str
    row_cache: dict[str, tuple[dict[int, _Step], list[str]]] = field(default_factory=dict)

    def rows(self, run_id: str) -> tuple[dict[int, _Step], list[str]]:
        """The readable step rows of `run_id` and one problem line per damaged row."""
        if run_id not in self.headers:
            return {}, []
        if run_id not in self.row_cache:
            self.load([run_id])
        return self.row_cache[run_id]

    def load(self, run_ids: Iterable[str]) -> None:
        """Read the rows of several runs in one open of the file."""
        todo = [r for r in run_ids if r in self.headers and r not in self.row_cache]
        if not todo:
            return
        try:
            with layout._open_h5(self.path) as f:
                for run_id in todo:
                    probs: list[str] = []
                    try:
                        rows = _read_consolidated_rows(
                            f["runs"][run_id], self.headers[run_id], self.path, probs
                        )
                    except Exception as exc:
                        why = str(exc) if isinstance(exc, _Damaged) else _reason(exc)
                        rows, probs = {}, [f"{self.path}: run {run_id}: {why}; skipped"]
                    self.row_cache[run_id] = (rows, probs)
        except Exception as exc:  # replaced by a damaged file since the headers were read
            for run_id in todo:
                line = f"{self.path}: run {run_id}: {_reason(exc)}; skipped"
                self.row_cache.setdefault(run_id, ({}, [line]))


def _consolidated_version(path: Path) -> None:
    """StoreError if `path` is an HDF5 file of another schema version; _Damaged if unreadable."""
    _check_not_empty(path)
    try:
        with layout._open_h5(path) as f:
            fmt = f.attrs.get("format")
            version = f.attrs.get("schema_version")
            by = f.attrs.get("hpc_forget_version", "")
    except Exception as exc:
        raise _Damaged(_reason(exc)) from None
    if isinstance(fmt, bytes):
        fmt = fmt.decode("utf-8", "replace")
    if fmt != CONSOLIDATED_FORMAT:
        raise _Damaged(f"not an hpc-forget consolidated store (format attribute {fmt!r})")
    by = f"hpc-forget {by}" if isinstance(by, str) and by else ""
    problem = _schema_problem(version, by)
    if problem is not None:
        fix = _schema_fix(version, by, "consolidated file")
        if isinstance(version, int | np.integer) and version < SCHEMA_VERSION:
            fix = (
                "consolidate the store directory again with this version,"
                f" or use {by or 'the hpc-forget that wrote it'} to read it"
            )
        raise StoreError(f"{path}: consolidated store {problem} — {fix}")


def _read_consolidated(path: Path) -> _Consolidated:
    _consolidated_version(path)
    problems: list[str] = []
    headers: dict[str, _Header] = {}
    try:
        with layout._open_h5(path) as f:
            created = _attr_str(f.attrs, "created_at")
            recorded = json.loads(_attr_str(f.attrs, "problems"))
            runs = f.get("runs")
            names = list(runs.keys()) if isinstance(runs, h5py.Group) else []
            for name in names:
                try:
                    g = runs[name]
                    h = _read_header_group(g)
                    src = [int(x) for x in np.asarray(g.attrs.get("source", (-1,) * 3)).ravel()]
                except Exception as exc:
                    why = str(exc) if isinstance(exc, _Damaged) else _reason(exc)
                    problems.append(f"{path}: run {name}: {why}; skipped")
                    continue
                if len(src) == 3 and src[0] >= 0:
                    h = dataclasses.replace(h, ident=(src[0], src[1], src[2]))
                headers[h.run_id] = h
    except (_Damaged, StoreError):
        raise
    except Exception as exc:
        raise _Damaged(_reason(exc)) from None
    return _Consolidated(path, headers, problems, [str(p) for p in recorded], created)


def _read_consolidated_rows(
    g: h5py.Group, h: _Header, path: Path, problems: list[str]
) -> dict[int, _Step]:
    n_steps, n_lang = len(h.steps), len(h.languages)
    present = np.asarray(g["present"][()], dtype=bool)
    r = np.asarray(g["R"][()], dtype=np.float64)
    evaluated = np.asarray(g["evaluated"][()], dtype=bool)
    dev = g["dev_curves"][()]
    meta = g["step_meta"].asstr()[()]
    prov = g["provenance"].asstr()[()]
    written = g["written_at"].asstr()[()]
    crcs = np.asarray(g["step_crc32"][()], dtype=np.int64)
    source = np.asarray(g["source"][()], dtype=np.int64)
    if (
        present.shape != (n_steps,)
        or r.shape != (n_steps, n_lang)
        or evaluated.shape != (n_steps, n_lang)
        or source.shape != (n_steps, 3)
        or len(dev) != n_steps
        or len(meta) != n_steps
    ):
        raise _Damaged("dataset shapes do not match the run header")
    rows: dict[int, _Step] = {}
    for i in np.flatnonzero(present):
        i = int(i)
        ident = tuple(int(x) for x in source[i]) if source[i, 0] >= 0 else None
        s = _Step(
            run_id=h.run_id,
            step=i,
            languages=h.languages,
            scores=r[i].copy(),
            evaluated=evaluated[i].copy(),
            dev_curve=np.asarray(dev[i], dtype=np.float64),
            meta_json=str(meta[i]),
            prov_json=str(prov[i]),
            written_at=str(written[i]),
            crc=int(crcs[i]),
            ident=ident,  # type: ignore[arg-type]
        )
        try:
            _check_step(s)
        except _Damaged as d:
            problems.append(f"{path}: run {h.run_id} {_step_label(i, n_steps)}: {d}; skipped")
            continue
        rows[i] = s
    return rows


def _write_consolidated(
    path: Path, runs: list[tuple[_Header, dict[int, _Step]]], problems: list[str]
) -> None:
    """Write the consolidated file at `path` (a temporary name; the caller renames it)."""
    with layout._open_h5(path, "w") as f:
        f.attrs["format"] = CONSOLIDATED_FORMAT
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["created_at"] = utc_now("milliseconds")
        f.attrs["hpc_forget_version"] = __version__
        f.attrs["n_runs"] = len(runs)
        f.attrs["n_steps"] = sum(len(rows) for _, rows in runs)
        f.attrs["problems"] = json.dumps(problems)
        top = f.create_group("runs")
        for h, rows in runs:
            _write_consolidated_run(top.create_group(h.run_id), h, rows)
        f.flush()


def _write_consolidated_run(g: h5py.Group, h: _Header, rows: dict[int, _Step]) -> None:
    n_steps, n_lang = len(h.steps), len(h.languages)
    _write_header_attrs(g, h)
    g.attrs["source"] = np.asarray(h.ident if h.ident is not None else (-1, -1, -1), np.int64)
    present = np.zeros(n_steps, bool)
    r = np.full((n_steps, n_lang), np.nan)
    evaluated = np.zeros((n_steps, n_lang), bool)
    dev = np.empty(n_steps, dtype=object)
    meta = [""] * n_steps
    prov = [""] * n_steps
    written = [""] * n_steps
    crcs = np.zeros(n_steps, np.int64)
    source = np.full((n_steps, 3), -1, np.int64)
    for i in range(n_steps):
        dev[i] = np.zeros(0)
    for i, s in rows.items():
        present[i] = True
        r[i] = s.scores
        evaluated[i] = s.evaluated
        dev[i] = np.asarray(s.dev_curve, np.float64)
        meta[i], prov[i], written[i] = s.meta_json, s.prov_json, s.written_at
        crcs[i] = s.crc
        if s.ident is not None:
            source[i] = s.ident
    g.create_dataset("present", data=present)
    g.create_dataset("R", data=r)
    g.create_dataset("evaluated", data=evaluated)
    g.create_dataset("dev_curves", data=dev, dtype=h5py.vlen_dtype(np.float64))
    g.create_dataset("step_meta", data=_str_array(meta))
    g.create_dataset("provenance", data=_str_array(prov))
    g.create_dataset("written_at", data=_str_array(written))
    g.create_dataset("step_crc32", data=crcs)
    g.create_dataset("source", data=source)
