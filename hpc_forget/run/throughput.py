"""The throughput record: how fast one model trains and evaluates on one device, measured.

``hpc-forget plan --estimate`` reads it (cluster/estimate.py); a calibration run
(run/calibrate.py, ``plan --estimate --calibrate FILE``) and ``hpc-forget bench`` write it.
A file holds one record or several (one per model):

    {"format": "hpc-forget-throughput", "version": 1, "records": [{...}, ...]}

Each record: ``model``, ``device``, ``precision``, ``batch_size``, ``eval_batch_size``,
``train_utt_per_s``, ``eval_utt_per_s``, ``tokens_per_s`` (training sub-words per second),
``when``, ``host``, ``package_version``, ``source`` (``calibration`` or ``bench``) and a
free-text ``note`` (e.g. "random-init shape-only"). Pure: no torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hpc_forget.errors import EstimateError, one_line
from hpc_forget.files import write_json

THROUGHPUT_FORMAT = "hpc-forget-throughput"
THROUGHPUT_VERSION = 1


@dataclass(frozen=True)
class Throughput:
    """One measurement: utterances per second of training and of evaluation."""

    model: str
    device: str
    precision: str
    batch_size: int
    eval_batch_size: int
    train_utt_per_s: float
    eval_utt_per_s: float
    tokens_per_s: float
    when: str
    host: str
    package_version: str
    source: str = "calibration"  # calibration | bench
    note: str = ""

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in dataclasses.fields(Throughput)}
_RATES = ("train_utt_per_s", "eval_utt_per_s", "tokens_per_s")
_INTS = ("batch_size", "eval_batch_size")
_OPTIONAL = ("source", "note")


def record_from_dict(d: object, where: str) -> Throughput:
    """A record from its JSON object; a EstimateError naming ``where`` and the field if not."""
    if not isinstance(d, dict):
        raise EstimateError(
            f"{where}: a throughput record is a JSON object, got {type(d).__name__}"
        )
    unknown = sorted(set(d) - set(_FIELDS))
    if unknown:
        raise EstimateError(f"{where}: unknown field(s) {', '.join(unknown)}")
    missing = [k for k in _FIELDS if k not in d and k not in _OPTIONAL]
    if missing:
        raise EstimateError(f"{where}: missing field(s) {', '.join(missing)}")
    for k in _RATES:
        v = d[k]
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0
        if not ok:
            raise EstimateError(f"{where}: {k} must be a positive number, got {v!r}")
    for k in _INTS:
        if not isinstance(d[k], int) or isinstance(d[k], bool) or d[k] < 1:
            raise EstimateError(f"{where}: {k} must be a positive integer, got {d[k]!r}")
    for k in _FIELDS:
        if k not in _RATES and k not in _INTS and k in d and not isinstance(d[k], str):
            raise EstimateError(f"{where}: {k} must be a string, got {d[k]!r}")
    return Throughput(**{k: (float(v) if k in _RATES else v) for k, v in d.items()})


def read_throughput(path: str | Path, option: str = "--throughput") -> list[Throughput]:
    """Every record of a throughput file; one-line EstimateErrors naming ``option``."""
    where = f"{option} {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise EstimateError(one_line(f"{where}: cannot read it ({exc.strerror or exc})")) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EstimateError(f"{where}: not JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict) or data.get("format") != THROUGHPUT_FORMAT:
        raise EstimateError(
            f"{where}: not a throughput file (format {THROUGHPUT_FORMAT!r} expected); write one"
            " with `hpc-forget plan CONFIG --estimate --calibrate FILE`"
        )
    if data.get("version") != THROUGHPUT_VERSION:
        raise EstimateError(
            f"{where}: version {data.get('version')!r}; this hpc-forget reads {THROUGHPUT_VERSION}"
        )
    records = data.get("records")
    if not isinstance(records, list) or not records:
        raise EstimateError(f"{where}: 'records' must be a non-empty list")
    return [record_from_dict(r, f"{where}: records[{i}]") for i, r in enumerate(records)]


def throughput_document(records: Sequence[Throughput]) -> dict:
    return {
        "format": THROUGHPUT_FORMAT,
        "version": THROUGHPUT_VERSION,
        "records": [r.as_dict() for r in records],
    }


def write_throughput(path: str | Path, records: Sequence[Throughput]) -> Path:
    """Write ``records`` as one throughput file (whole or not at all)."""
    p = Path(path)
    write_json(p, throughput_document(records))
    return p
