"""The shared HDF5 results store (issue #3); the full schema and its reasons are in docs/store.md.

A store is a directory that many processes on many nodes write at once, on NFS, Lustre or GPFS,
without any file lock::

    STORE/
      STORE.json                  marker: {"format": "hpc-forget-store", "schema_version": 1, ...}
      runs/<run_id>.h5            one per run: key, kind, languages, steps, labels, config
      steps/<run_id>/<step>.h5    one per finished step (step as 6 digits): the R row and metadata
      consolidated.h5             optional: every run and step in one file (laptop copy)

Every file is written whole under a hidden temporary name in its final directory, fsync'd, read
back and checked, then renamed into place with ``os.replace`` (atomic on all three filesystems).
A file is never modified after the rename, so readers never see a partial row; they ignore hidden
names (``.*``: temporary files, NFS ``.nfs*`` files) and report damaged or foreign files by name
in :meth:`Store.problems` instead of reading them. The file formats are in
:mod:`hpc_forget.store.format`, the consolidated file in :mod:`hpc_forget.store.consolidated`.

This package imports only the standard library, numpy and h5py: the ``store selftest`` writer
processes import it, and so do analysis scripts on a laptop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hpc_forget import files
from hpc_forget.errors import StoreError, shorten
from hpc_forget.files import utc_now

# HDF5's own file locking fails on Lustre and many NFS mounts (errno 11, 37, 38, 524). We never
# rely on it: every open below passes locking=False; the variable covers other HDF5 users.
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")

import numpy as np  # noqa: E402

from hpc_forget import __version__  # noqa: E402
from hpc_forget.store import format as layout  # noqa: E402
from hpc_forget.store.consolidated import (  # noqa: E402
    _Consolidated,
    _consolidated_version,
    _read_consolidated,
    _write_consolidated,
)
from hpc_forget.store.format import (  # noqa: E402
    _RUN_ID,
    _STEP_NAME,
    CONSOLIDATED,
    CONSOLIDATED_FORMAT,
    MARKER,
    RUNS_DIR,
    SCHEMA_VERSION,
    STEPS_DIR,
    STORE_FORMAT,
    RunRecord,
    StoreWarning,
    _atomic_write_bytes,
    _check_run_id,
    _Damaged,
    _dumps,
    _Header,
    _is_hidden,
    _make_header,
    _os_message,
    _read_marker,
    _read_run_file,
    _read_step_file,
    _run_file_bytes,
    _same_row,
    _Step,
    _step_crc,
    _step_file_bytes,
    _step_label,
)

# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


class Store:
    """A results store: a directory (read/write) or one consolidated ``.h5`` file (read-only).

    Reader methods reflect the store at the moment of the call (it may be being written); parsed
    files are cached in memory by (inode, size, mtime), so a repeated call costs a directory
    listing and a stat per file. See docs/store.md.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser()
        self.single_file = self.path.is_file() or (
            self.path.suffix == ".h5" and not self.path.exists()
        )
        self._marker_ok = False
        self._headers: dict[str, _Header] = {}  # writer-side cache of run headers
        self._cache: dict[str, tuple[tuple[int, int, int], _Header | _Step | _Damaged]] = {}
        self._cons_cache: tuple[tuple[int, int, int], _Consolidated | _Damaged] | None = None
        self._problems: dict[str, str] = {}
        if self.single_file:
            if self.path.exists():
                try:
                    _consolidated_version(self.path)
                except _Damaged as d:
                    raise StoreError(
                        f"{self.path}: not a readable hpc-forget consolidated store ({d});"
                        " copy it again or point to the store directory"
                    ) from None
        elif (self.path / MARKER).is_file():
            _read_marker(self.path / MARKER)
            self._marker_ok = True

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # --- layout ------------------------------------------------------------------------------

    def run_file(self, run_id: str) -> Path:
        """Path of the run file of `run_id` (it may not exist)."""
        return self.path / RUNS_DIR / f"{run_id}.h5"

    def step_file(self, run_id: str, step: int) -> Path:
        """Path of the step file of (`run_id`, `step`) (it may not exist)."""
        return self.path / STEPS_DIR / run_id / f"{step:06d}.h5"

    # --- writers -----------------------------------------------------------------------------

    def _require_directory(self, action: str) -> None:
        if self.single_file:
            raise StoreError(
                f"{self.path}: a single .h5 file is a read-only consolidated store; {action}"
                " needs a store directory"
            )

    def _ensure_marker(self) -> None:
        """Create the directory and STORE.json if needed. Raises OSError (callers word it) or
        StoreError for a marker of another schema version."""
        if self._marker_ok:
            return
        marker = self.path / MARKER
        self.path.mkdir(parents=True, exist_ok=True)
        if marker.is_file():
            _read_marker(marker)
        else:
            data = {
                "format": STORE_FORMAT,
                "schema_version": SCHEMA_VERSION,
                "created_at": utc_now("milliseconds"),
                "created_by": f"hpc-forget {__version__}",
                "layout": "runs/<run_id>.h5, steps/<run_id>/<step:06d>.h5, consolidated.h5",
            }
            files.atomic_write_raw(marker, (json.dumps(data, indent=2) + "\n").encode(), None)
        self._marker_ok = True

    def check_writable(self) -> None:
        """Create the store if needed and prove it can be written (a probe file is created,
        fsync'd and removed). StoreError naming the path otherwise; call before training."""
        self._require_directory("writing")
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(
                f"{self.path}: exists and is not a directory; choose a store directory"
            )
        if (self.path / MARKER).is_file():
            _read_marker(self.path / MARKER)  # another schema version: that error, not this one
        try:
            self._ensure_marker()
            for sub in (RUNS_DIR, STEPS_DIR):
                (self.path / sub).mkdir(exist_ok=True)
            probe = files.tmp_name(self.path / "probe")
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                files.write_all(fd, b"hpc-forget write probe\n")
                os.fsync(fd)
            finally:
                os.close(fd)
                files.remove_quietly(probe)
        except OSError as exc:
            why = exc.strerror or shorten(str(exc), 120)
            raise StoreError(
                f"{self.path}: results store is not writable ({why});"
                " choose a writable store location or fix its permissions"
            ) from None

    def put_run(
        self,
        run_id: str,
        *,
        key: dict,
        kind: str,
        languages: list[str],
        steps: list[str],
        labels: list[str],
        config: dict,
        settings: dict | None = None,
    ) -> None:
        """Write the run file once. Idempotent: the same key/kind/languages/steps/labels/
        settings is a no-op, whatever the config (only its score-free keys can differ, and the
        first is kept); a different one is a StoreError.

        ``settings``: everything beyond the key that the scores depend on
        (:func:`hpc_forget.study.identity.run_settings`); the key's ``settings`` digest names it."""
        self._require_directory("put_run")
        h = _make_header(
            run_id, key=key, kind=kind, languages=languages, steps=steps, labels=labels,
            config=config, settings=settings or {},
        )  # fmt: skip
        final = self.run_file(run_id)
        try:
            self._ensure_marker()
        except OSError as exc:
            raise StoreError(_os_message(exc, self.path / MARKER, f"run {run_id}")) from None
        self.clean_run_tmp(run_id)
        if final.exists():
            try:
                old = _read_run_file(final)
            except _Damaged as d:
                warnings.warn(f"{final}: {d}; rewriting it", StoreWarning, stacklevel=2)
            else:
                _compare_headers(final, old, h)
                self._headers[run_id] = old
                return
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(_os_message(exc, final.parent, f"run {run_id}")) from None
        _atomic_write_bytes(final, _run_file_bytes(h), f"the run file of {run_id}", _read_run_file)
        self._headers[run_id] = h

    def _writer_header(self, run_id: str) -> _Header:
        h = self._headers.get(run_id)
        if h is not None:
            return h
        _check_run_id(run_id)
        final = self.run_file(run_id)
        if not final.exists():
            raise StoreError(f"{final}: no run file for {run_id}; call put_run before put_step")
        try:
            h = _read_run_file(final)
        except _Damaged as d:
            raise StoreError(f"{final}: {d}; call put_run again to rewrite it") from None
        self._headers[run_id] = h
        return h

    def put_step(
        self,
        run_id: str,
        step: int,
        *,
        scores: dict[str, float],
        dev_curve: list[float],
        meta: dict,
        provenance: dict,
    ) -> None:
        """Write one step's scores atomically: afterwards the step file is complete, or absent
        (or as before). Idempotent: if the step is already stored with the same scores, nothing
        happens; with different scores the first is kept and a StoreWarning says so. Touches
        only this run's file and this step's file (cost independent of the store size)."""
        self._require_directory("put_step")
        h = self._writer_header(run_id)
        if isinstance(step, bool) or not isinstance(step, int | np.integer):
            raise StoreError(f"put_step {run_id}: step must be an int index, got {step!r}")
        step = int(step)
        if not 0 <= step < len(h.steps):
            raise StoreError(
                f"put_step {run_id}: step index {step} is out of range; the run has"
                f" {len(h.steps)} steps (indices 0..{len(h.steps) - 1})"
            )
        where = f"{_step_label(step, len(h.steps))} of {run_id}"
        s = _make_step(h, step, scores, dev_curve, meta, provenance, where)
        final = self.step_file(run_id, step)
        if final.exists():
            try:
                old = _read_step_file(final)
            except _Damaged as d:
                warnings.warn(f"{final}: {d}; rewriting it", StoreWarning, stacklevel=2)
            else:
                if not _same_row(old, s):
                    warnings.warn(
                        f"{final}: {where} is already stored with different scores; kept the"
                        " first (delete the file to store the new ones)",
                        StoreWarning,
                        stacklevel=2,
                    )
                return
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(_os_message(exc, final.parent, where)) from None

        def validate(tmp: Path) -> None:
            try:
                back = _read_step_file(tmp)
            except _Damaged as d:
                raise StoreError(
                    f"{final}: read-back of {where} failed ({d}); not stored"
                ) from None
            if back.crc != s.crc:
                raise StoreError(f"{final}: read-back of {where} differs; not stored")

        _atomic_write_bytes(final, _step_file_bytes(s), where, validate)

    # --- readers -----------------------------------------------------------------------------

    def _require_store(self) -> None:
        if self.single_file:
            if not self.path.exists():
                raise StoreError(f"{self.path}: no such file; check the path")
            return
        if not self.path.is_dir():
            raise StoreError(
                f"{self.path}: no results store here (no such directory); check the path"
            )
        if not self._marker_ok:
            marker = self.path / MARKER
            if marker.is_file():
                _read_marker(marker)
                self._marker_ok = True
            elif not (self.path / CONSOLIDATED).is_file():
                raise StoreError(
                    f"{self.path}: not an hpc-forget results store (no {MARKER}); check the path"
                )

    def _problem(self, path: str | Path, reason: str) -> None:
        self._problems[str(path)] = f"{path}: {reason}"

    def _load(self, path: Path, ident: tuple[int, int, int], reader: Callable[[Path], Any]) -> Any:
        """Parse `path` with `reader`, cached by file identity; _Damaged instances are returned."""
        key = str(path)
        hit = self._cache.get(key)
        if hit is not None and hit[0] == ident:
            return hit[1]
        try:
            value = reader(path)
        except _Damaged as d:
            value = d
        self._cache[key] = (ident, value)
        return value

    def _cons(self) -> _Consolidated | None:
        path = self.path if self.single_file else self.path / CONSOLIDATED
        try:
            st = os.stat(path)
        except OSError:
            return None
        ident = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._cons_cache is None or self._cons_cache[0] != ident:
            try:
                value: _Consolidated | _Damaged = _read_consolidated(path)
            except _Damaged as d:
                value = d
            self._cons_cache = (ident, value)
        value = self._cons_cache[1]
        if isinstance(value, _Damaged):
            if self.single_file:
                raise StoreError(f"{path}: not a readable consolidated store ({value})")
            self._problem(path, f"{value}; skipped, reading the step files only")
            return None
        for line in value.problems:
            self._problems[line] = line
        if self.single_file:
            for line in value.recorded_problems:
                self._problems[line] = f"(when consolidated) {line}"
        return value

    def _run_ids(self, cons: _Consolidated | None) -> set[str]:
        ids = set(cons.headers) if cons else set()
        if self.single_file:
            return ids
        for entry in _scandir(self.path / RUNS_DIR):
            if _is_hidden(entry.name):
                continue
            if not entry.name.endswith(".h5") or not _RUN_ID.match(entry.name[:-3]):
                self._problem(entry.path, "unexpected file in runs/ (not <run_id>.h5); skipped")
                continue
            ids.add(entry.name[:-3])
        return ids

    def _header(self, run_id: str, cons: _Consolidated | None) -> _Header | None:
        fallback = cons.headers.get(run_id) if cons else None
        if self.single_file:
            return fallback
        path = self.run_file(run_id)
        try:
            st = os.stat(path)
        except OSError:
            return fallback
        ident = (st.st_ino, st.st_size, st.st_mtime_ns)
        if fallback is not None and fallback.ident == ident:
            return fallback  # the consolidated header is a copy of exactly this file
        value = self._load(path, ident, _read_run_file)
        if isinstance(value, _Damaged):
            note = "; using the consolidated copy" if fallback else "; run skipped"
            self._problem(path, f"{value}{note}")
            return fallback
        if value.run_id != run_id:
            self._problem(path, f"holds run {value.run_id!r}, not {run_id!r}; skipped")
            return fallback
        return dataclasses.replace(value, ident=ident)

    def _steps(self, h: _Header, cons: _Consolidated | None) -> dict[int, _Step]:
        rows: dict[int, _Step] = {}
        if cons is not None and h.run_id in cons.headers:
            c = cons.headers[h.run_id]
            if (c.kind, c.key_json, c.languages, c.steps) == (
                h.kind,
                h.key_json,
                h.languages,
                h.steps,
            ):
                cached, probs = cons.rows(h.run_id)
                rows.update(cached)
                for line in probs:
                    self._problems[line] = line
        if self.single_file:
            return rows
        for entry in _scandir(self.path / STEPS_DIR / h.run_id):
            if _is_hidden(entry.name):
                continue
            m = _STEP_NAME.match(entry.name)
            if not m:
                self._problem(entry.path, "unexpected file in a step directory; skipped")
                continue
            step = int(m.group(1))
            try:
                st = entry.stat()
            except OSError:
                continue  # vanished (replaced) since the listing
            ident = (st.st_ino, st.st_size, st.st_mtime_ns)
            known = rows.get(step)
            if known is not None and known.ident == ident:
                continue  # the consolidated row is a copy of exactly this file
            value = self._load(Path(entry.path), ident, _read_step_file)
            note = "; using the consolidated copy" if known is not None else "; skipped"
            if isinstance(value, _Damaged):
                self._problem(entry.path, f"{value}{note}")
                continue
            if value.run_id != h.run_id or value.step != step:
                self._problem(
                    entry.path,
                    f"holds {_step_label(value.step)} of {value.run_id!r}, not this one{note}",
                )
                continue
            if value.languages != h.languages or step >= len(h.steps):
                self._problem(entry.path, f"does not match the run file {h.run_id}.h5{note}")
                continue
            rows[step] = dataclasses.replace(value, ident=ident)
        return rows

    def _record(self, run_id: str) -> RunRecord | None:
        cons = self._cons()
        h = self._header(run_id, cons)
        if h is None:
            return None
        return _make_record(h, self._steps(h, cons))

    def _scan_all(self) -> list[tuple[_Header, dict[int, _Step]]]:
        """Every readable run with its readable steps; records problems on the way."""
        self._require_store()
        cons = self._cons()
        out = []
        run_ids = sorted(self._run_ids(cons))
        if cons is not None:
            cons.load(run_ids)  # one open of the consolidated file for all runs
        for run_id in run_ids:
            h = self._header(run_id, cons)
            if h is not None:
                out.append((h, self._steps(h, cons)))
        self._check_orphans({h.run_id for h, _ in out})
        return out

    def runs(self) -> list[RunRecord]:
        """Every run with a readable run file (or consolidated copy), sorted by run id."""
        return [_make_record(h, rows) for h, rows in self._scan_all()]

    def _check_orphans(self, known: set[str]) -> None:
        if self.single_file:
            return
        for entry in _scandir(self.path / STEPS_DIR):
            if _is_hidden(entry.name) or entry.name in known:
                continue
            if self._header(entry.name, None) is not None:
                continue  # its run file appeared after runs/ was listed (being written now)
            self._problem(entry.path, f"no readable run file {RUNS_DIR}/{entry.name}.h5; skipped")

    def run_ids(self) -> set[str]:
        """The ids of the runs the store holds, from file names alone (no HDF5 read)."""
        if not self.path.exists():
            return set()
        return self._run_ids(self._cons())

    def run(self, run_id: str) -> RunRecord:
        """One run; StoreError if the store has no readable run `run_id`."""
        self._require_store()
        rec = self._record(run_id)
        if rec is None:
            raise StoreError(
                f"{self.path}: no readable run {run_id!r}; check the run id (see problems())"
            )
        return rec

    def matrix(self, run_id: str) -> np.ndarray:
        """steps x languages test F1 of `run_id`; NaN where not computed (never zeros)."""
        return self.run(run_id).R

    def missing(self, run_id: str) -> list[tuple[int, str]]:
        """(step, language) cells the run kind expects that have no score yet."""
        return self.run(run_id).missing()

    def has_step(self, run_id: str, step: int) -> bool:
        """Is this step stored and readable (a damaged file counts as absent)?"""
        if self.single_file:
            return step in self.done_steps(run_id)
        path = self.step_file(run_id, step)
        try:
            st = os.stat(path)
        except OSError:
            pass
        else:
            value = self._load(path, (st.st_ino, st.st_size, st.st_mtime_ns), _read_step_file)
            if isinstance(value, _Step) and value.run_id == run_id and value.step == step:
                return True
        cons = self._cons()
        return cons is not None and step in cons.rows(run_id)[0]

    def done_steps(self, run_id: str) -> set[int]:
        """Steps of `run_id` that are stored and readable (empty if the run is unknown)."""
        if not self.path.exists():
            return set()
        rec = self._record(run_id)
        return rec.done_steps if rec is not None else set()

    def listed_steps(self, run_id: str) -> set[int]:
        """Steps of `run_id` whose step file is in place, from the directory listing alone (no
        HDF5 read): fast enough for ``status`` over 10,000 tasks. A step file is renamed into
        place only when complete, so a listed step is written; a damaged one still counts here
        (:meth:`done_steps` reads and checks). A consolidated file falls back to
        :meth:`done_steps`."""
        if self.single_file:
            return self.done_steps(run_id)
        steps: set[int] = set()
        try:
            with os.scandir(self.step_file(run_id, 0).parent) as it:
                for e in it:
                    n = e.name
                    if not _is_hidden(n) and n.endswith(".h5") and n[:-3].isdigit():
                        steps.add(int(n[:-3]))
        except OSError:
            pass
        return steps

    def problems(self) -> list[str]:
        """Damaged, foreign or unexpected files that readers skip, one line each (path first)."""
        self._require_store()
        self._problems = {}
        self._scan_all()
        return sorted(self._problems.values())

    # --- consolidation -----------------------------------------------------------------------

    def consolidate(self, out: str | os.PathLike | None = None) -> Path:
        """Write every readable run and step into one HDF5 file (default
        ``<store>/consolidated.h5``) atomically: a killed or failed consolidation leaves the
        previous file intact. Step files stay (they remain the source of truth). Also removes
        temporary files older than STALE_TMP_S. Returns the path written."""
        self._require_store()
        if out is None:
            if self.single_file:
                raise StoreError(
                    f"{self.path}: is already a consolidated file; give an output path"
                )
            out = self.path / CONSOLIDATED
        dest = _consolidate_target(Path(out).expanduser())
        self._problems = {}
        runs = self._scan_all()
        problems = sorted(self._problems.values())
        tmp = files.tmp_name(dest)
        what = "the consolidated store"
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            _write_consolidated(tmp, runs, problems)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                _read_consolidated(tmp)
            except _Damaged as d:
                raise StoreError(f"{dest}: read-back failed ({d}); previous file kept") from None
            os.replace(tmp, dest)
        except BaseException as exc:
            files.remove_quietly(tmp)
            if isinstance(exc, OSError):
                fix = "move the store" if dest.parent == self.path else "choose another --out path"
                raise StoreError(files.write_error_message(exc, dest, what, fix)) from None
            raise
        files.fsync_dir(dest.parent)
        if not self.single_file:
            self._clean_stale_tmp()
        return dest

    def export(self, dest: str | os.PathLike) -> Path:
        """Consolidate into `dest` (a file, or a directory to hold consolidated.h5): the one
        file to copy to a laptop; open it there with ``Store(dest)``."""
        return self.consolidate(out=dest)

    def clean_run_tmp(self, run_id: str) -> list[Path]:
        """Remove the temporary files that killed writers of `run_id` left (its run file's and
        its step files'): those of a dead process on this host, or older than STALE_TMP_S
        from another host. Other runs' files and live writers' files are never touched.
        put_run calls it, so the next writer of a run cleans up after the previous one."""
        name = f"{run_id}.h5"
        removed = files.clean_stale_tmp(self.path / RUNS_DIR, lambda n: n == name)
        return removed + files.clean_stale_tmp(self.path / STEPS_DIR / run_id)

    def _clean_stale_tmp(self) -> None:
        """consolidate(): the stale temporary files of every run, and of the store's own files."""
        files.clean_stale_tmp(self.path)
        files.clean_stale_tmp(self.path / RUNS_DIR)
        for e in _scandir(self.path / STEPS_DIR):
            if e.is_dir():
                files.clean_stale_tmp(Path(e.path))


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _consolidate_target(dest: Path) -> Path:
    """The file consolidate() writes for `dest` (a folder gets consolidated.h5), or a one-line
    StoreError for a path it must not or cannot write: under a regular file, a folder where
    the file would go, a device, an existing file that is not a consolidated store."""
    if dest.is_dir():
        dest = dest / CONSOLIDATED
        if dest.is_dir():
            raise StoreError(f"{dest}: is a folder; choose another output path (--out)")
    for parent in dest.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise StoreError(
                    f"{dest}: {parent} is a file, not a folder; choose an output path (--out)"
                    " in a folder"
                )
            break
    if dest.exists() and not dest.is_file():
        raise StoreError(f"{dest}: not a regular file; choose another output path (--out)")
    if dest.is_file() and dest.stat().st_size:
        with open(dest, "rb") as fh:
            head = fh.read(len(_HDF5_SIGNATURE))
        foreign = head != _HDF5_SIGNATURE
        if not foreign:
            with contextlib.suppress(Exception):  # unreadable HDF5: a damaged earlier copy
                with layout._open_h5(dest) as f:
                    fmt = f.attrs.get("format")
                fmt = fmt.decode("utf-8", "replace") if isinstance(fmt, bytes) else fmt
                foreign = fmt != CONSOLIDATED_FORMAT
        if foreign:
            raise StoreError(
                f"{dest}: exists and is not an hpc-forget consolidated store; not overwritten"
                " — choose another output path (--out) or delete the file"
            )
    return dest


def _compare_headers(path: Path, old: _Header, new: _Header) -> None:
    for name in ("key", "kind", "languages", "steps", "labels", "settings"):
        a, b = getattr(old, name), getattr(new, name)
        if a != b:
            raise StoreError(
                f"{path}: run {new.run_id} already exists with a different {name}"
                f" ({shorten(repr(a), 80)} != {shorten(repr(b), 80)}); use a new store"
                " or delete this run's files"
            )
    # The configs can differ only in keys that cannot change a score (store path, cache dir,
    # threads, ...): the run id covers the rest. The first is kept, silently.


def _make_step(
    h: _Header,
    step: int,
    scores: Mapping[str, float],
    dev_curve: Sequence[float],
    meta: Mapping,
    provenance: Mapping,
    where: str,
) -> _Step:
    """Validate put_step's arguments and build the row aligned to the run's languages."""
    if not isinstance(scores, Mapping) or not scores:
        raise StoreError(f"put_step {where}: scores must be a non-empty dict language -> F1")
    col = {lang: j for j, lang in enumerate(h.languages)}
    vec = np.full(len(h.languages), np.nan)
    evaluated = np.zeros(len(h.languages), bool)
    for lang, value in scores.items():
        if lang not in col:
            raise StoreError(
                f"put_step {where}: language {lang!r} is not in the run's languages;"
                " score only the languages given to put_run"
            )
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise StoreError(f"put_step {where}: score of {lang!r} is not a number") from None
        if not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise StoreError(
                f"put_step {where}: score of {lang!r} is {v}; scores are F1 in [0, 1]"
                " (divide percentages by 100)"
            )
        vec[col[lang]] = v
        evaluated[col[lang]] = True
    try:
        dev = np.asarray([float(x) for x in dev_curve], dtype=np.float64)
    except (TypeError, ValueError):
        raise StoreError(f"put_step {where}: dev_curve must be a list of numbers") from None
    if not isinstance(meta, Mapping) or not isinstance(provenance, Mapping):
        raise StoreError(f"put_step {where}: meta and provenance must be dicts")
    meta_json = _dumps(dict(meta), f"put_step {where}: meta")
    prov_json = _dumps(dict(provenance), f"put_step {where}: provenance")
    written = utc_now("milliseconds")
    crc = _step_crc(h.run_id, step, h.languages, vec, evaluated, dev, meta_json, prov_json, written)
    return _Step(
        run_id=h.run_id,
        step=step,
        languages=h.languages,
        scores=vec,
        evaluated=evaluated,
        dev_curve=dev,
        meta_json=meta_json,
        prov_json=prov_json,
        written_at=written,
        crc=crc,
    )


def _make_record(h: _Header, rows: dict[int, _Step]) -> RunRecord:
    r = np.full((len(h.steps), len(h.languages)), np.nan)
    for i, s in rows.items():
        r[i, s.evaluated] = s.scores[s.evaluated]
    order = sorted(rows)
    return RunRecord(
        run_id=h.run_id,
        key=dict(h.key),
        kind=h.kind,
        languages=list(h.languages),
        steps=list(h.steps),
        labels=list(h.labels),
        config=dict(h.config),
        settings=dict(h.settings),
        step_meta={i: json.loads(rows[i].meta_json) for i in order},
        dev_curves={i: [float(x) for x in rows[i].dev_curve] for i in order},
        provenance={i: json.loads(rows[i].prov_json) for i in order},
        R=r,
        written_at={i: rows[i].written_at for i in order},
        created_at=h.created_at,
    )


def _scandir(path: Path) -> list[os.DirEntry]:
    """Entries of a directory, sorted by name; empty if it does not exist."""
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
