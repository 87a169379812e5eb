"""The canonical in-memory form of MASSIVE: :class:`Example`, :class:`Corpus`, :class:`Splits`,
and reading rows (JSONL lines or dataset rows) into a corpus with line-exact errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from hpc_forget.data.labels import SPLITS, RowError, bio_tags, canonical_split, short_repr
from hpc_forget.errors import DataError

_SKIP_HINT = "fix the row, or set data.skip_invalid: true to skip invalid rows"

_ROW_FIELDS = ("id", "locale", "partition", "utt", "annot_utt")


@dataclass(frozen=True, slots=True)
class Example:
    """One utterance: words (see docs/data.md for the word rule) and one BIO tag per word."""

    id: str
    locale: str
    split: str
    words: tuple[str, ...]
    tags: tuple[str, ...]


@dataclass(frozen=True)
class InvalidRow:
    """A row that could not be converted. ``where`` is ``file:line`` or ``dataset[...] row i``."""

    file: str
    line: int  # 1-based line in a JSONL file; 0-based row index in a Hugging Face dataset
    id: str
    reason: str
    where: str
    locale: str = ""
    split: str = ""

    @property
    def message(self) -> str:
        return f"{self.where}: {self.reason} — {_SKIP_HINT}"


@dataclass(frozen=True)
class Corpus:
    """Examples per locale and split. Two corpora are equal when they hold the same examples,
    whatever source they came from."""

    locales: list[str]
    examples: dict[str, dict[str, tuple[Example, ...]]]  # locale -> split -> examples
    source: str = field(default="", compare=False)
    form: str = field(default="", compare=False)  # folder | tarball | hub | disk | samples
    invalid: list[InvalidRow] = field(default_factory=list, compare=False)
    files: dict[str, str] = field(default_factory=dict, compare=False)
    """locale -> the file (or archive member) its rows came from, where there is one."""

    def origin(self, locale: str) -> str:
        """Where a locale's rows came from, for messages: its file, else the source."""
        return self.files.get(locale) or self.source

    def split(self, locale: str, split: str) -> list[Example]:
        """The examples of one locale and split (``validation`` is read as ``dev``); [] if the
        locale has no such split (de-DE and sw-KE have no train split)."""
        name = canonical_split(split)
        if name is None:
            raise DataError(f"split {split!r}: unknown split — use one of train, dev, test")
        if locale not in self.examples:
            raise DataError(
                f"{self.source}: locale {locale!r} is not loaded; available: "
                f"{', '.join(self.locales) or 'none'} — load it or pick one of these"
            )
        return list(self.examples[locale].get(name, ()))

    def counts(self) -> dict[str, dict[str, int]]:
        """Row counts per locale and split."""
        return {
            loc: {s: len(self.examples[loc].get(s, ())) for s in SPLITS} for loc in self.locales
        }


@dataclass(frozen=True)
class Splits:
    """What one locale trains, selects and tests on."""

    train: tuple[Example, ...]
    dev: tuple[Example, ...]
    test: tuple[Example, ...]


# --------------------------------------------------------------------------------------------
# rows -> corpus


class CorpusBuilder:
    """Accumulates converted rows and invalid rows, checking ids are unique per locale."""

    def __init__(self, skip_invalid: bool) -> None:
        self.skip_invalid = skip_invalid
        self.examples: dict[str, dict[str, list[Example]]] = {}
        self.seen: dict[str, dict[str, str]] = {}  # locale -> id -> where first seen
        self.invalid: list[InvalidRow] = []
        self.files: dict[str, str] = {}  # locale -> file or archive member

    def add(
        self,
        row: Any,
        *,
        file: str,
        line: int,
        where: str,
        locale: str | None,
        split: str | None,
    ) -> Example | None:
        """Convert one row; return it, or None if it was invalid and skipped. ``locale`` and
        ``split``: what the container says (a file name, a Hugging Face split); None where only
        the row says it."""
        rid = ""
        try:
            if not isinstance(row, dict):
                raise RowError(f"row is a JSON {type(row).__name__}, not an object")
            rid = row.get("id", "")
            rid = str(rid) if isinstance(rid, str | int) and not isinstance(rid, bool) else ""
            ex = self._convert(row, locale, split)
            seen = self.seen.setdefault(ex.locale, {})
            if ex.id in seen:
                raise RowError(f"duplicate id {short_repr(ex.id)} (first at {seen[ex.id]})")
            seen[ex.id] = where
        except RowError as e:
            bad = InvalidRow(
                file=file,
                line=line,
                id=rid,
                reason=str(e),
                where=where,
                locale=locale or _field_str(row, "locale"),
                split=split or canonical_split(_field_str(row, "partition")) or "",
            )
            self.reject(bad)
            return None
        self.examples.setdefault(ex.locale, {}).setdefault(ex.split, []).append(ex)
        return ex

    def reject(self, bad: InvalidRow) -> None:
        if not self.skip_invalid:
            raise DataError(bad.message)
        self.invalid.append(bad)

    @staticmethod
    def _convert(row: dict, locale: str | None, split: str | None) -> Example:
        for name in ("id", "utt", "annot_utt"):
            if row.get(name) is None:
                raise RowError(f"missing field {name!r}")
        rid = row["id"]
        if isinstance(rid, bool) or not isinstance(rid, str | int):
            raise RowError(f"field 'id' must be a string, got {short_repr(rid)}")
        rid = str(rid)
        utt, annot = row["utt"], row["annot_utt"]
        if not isinstance(utt, str) or not isinstance(annot, str):
            raise RowError("fields 'utt' and 'annot_utt' must be strings")
        row_locale = row.get("locale")
        if row_locale is None and locale is None:
            raise RowError("missing field 'locale'")
        if row_locale is not None and (not isinstance(row_locale, str) or not row_locale):
            raise RowError(f"bad locale {short_repr(row_locale)}")
        if locale is not None and row_locale is not None and row_locale != locale:
            raise RowError(f"locale {row_locale!r} in the {locale} data")
        loc = row_locale if row_locale is not None else locale
        part = row.get("partition")
        if part is None and split is None:
            raise RowError("missing field 'partition'")
        if part is not None:
            name = canonical_split(part)
            if name is None:
                raise RowError(f"bad partition {short_repr(part)} (expected train, dev or test)")
            if split is not None and name != split:
                raise RowError(f"partition {part!r} in the {split} split")
        else:
            name = split
        if name not in SPLITS:
            raise RowError(f"bad split {short_repr(name)} (expected train, dev/validation or test)")
        words, tags = bio_tags(annot, utt, loc)
        return Example(id=rid, locale=loc, split=name, words=words, tags=tags)

    def corpus(self, locales: Sequence[str], source: str, form: str) -> Corpus:
        examples = {
            loc: {s: tuple(self.examples.get(loc, {}).get(s, ())) for s in SPLITS}
            for loc in locales
        }
        return Corpus(
            list(locales),
            examples,
            source=source,
            form=form,
            invalid=self.invalid,
            files={loc: self.files[loc] for loc in locales if loc in self.files},
        )


def _field_str(row: Any, name: str) -> str:
    value = row.get(name) if isinstance(row, dict) else None
    return value if isinstance(value, str) else ""


def jsonl_lines(data: bytes) -> Iterator[tuple[int, bytes, Any]]:
    """(line number, raw line, parsed row or RowError) for each non-blank line."""
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            row: Any = json.loads(raw)
        except UnicodeDecodeError:
            row = RowError("line is not UTF-8")
        except json.JSONDecodeError as e:
            row = RowError(f"bad JSON ({e.msg} at column {e.colno})")
        yield lineno, raw, row


def add_jsonl_rows(
    builder: CorpusBuilder, data: bytes, *, file: str, where: str, locale: str
) -> None:
    """Parse one per-locale JSONL file (``where`` is the display name lines are appended to).

    A file with no line, or in which no line is JSON, is not a MASSIVE file at all: one
    DataError naming it (even with skip_invalid), instead of one invalid row per line."""
    builder.files[locale] = where
    lines = list(jsonl_lines(data))
    if not lines:
        raise DataError(
            f"{where}: no rows (the file is empty) — restore {locale}.jsonl from the MASSIVE"
            " release, or remove it"
        )
    if lines and all(isinstance(row, RowError) for _, _, row in lines):
        lineno, _, first = lines[0]
        raise DataError(
            f"{where}: not a JSON Lines file (line {lineno}: {first}) — expected one MASSIVE"
            " JSON object per line"
        )
    for lineno, _, row in lines:
        at = f"{where}:{lineno}"
        if isinstance(row, RowError):
            builder.reject(InvalidRow(file, lineno, "", str(row), at, locale, ""))
        else:
            builder.add(row, file=file, line=lineno, where=at, locale=locale, split=None)


def add_dataset_rows(
    builder: CorpusBuilder,
    ds: Any,
    *,
    name: str,
    locale: str | None,
    split: str | None,
    keep: set[str] | None = None,
) -> None:
    """Rows of one Hugging Face ``Dataset`` (columns as in AmazonScience/massive); with ``keep``,
    rows whose ``locale`` is a string not in it are passed over."""
    cols = [c for c in _ROW_FIELDS if c in ds.column_names]
    data = ds.select_columns(cols).to_dict() if cols and ds.num_rows else {}
    locs = data.get("locale")
    for i in range(ds.num_rows):
        if keep is not None and locs is not None and isinstance(locs[i], str):
            if locs[i] not in keep:
                continue
        row = {c: data[c][i] for c in cols}
        builder.add(row, file=name, line=i, where=f"{name} row {i}", locale=locale, split=split)


def check_locales(
    wanted: Sequence[str] | None, available: Iterable[str], source: str, found: str = ""
) -> list[str]:
    """The locales to load; DataError if the source has none or lacks a wanted one. `found`
    says what the source holds instead (e.g. "the folder is empty")."""
    have = sorted(set(available))
    if not have:
        raise DataError(
            f"{source}: no MASSIVE locale files (<locale>.jsonl, e.g. en-US.jsonl) found"
            f"{f' ({found})' if found else ''} — pass a folder of <locale>.jsonl files, the"
            " official .tar.gz or a save_to_disk folder"
        )
    if wanted is None:
        return have
    missing = [loc for loc in wanted if loc not in have]
    if missing:
        raise DataError(
            f"{source}: locale{'s' if len(missing) > 1 else ''} {', '.join(missing)} not found; "
            f"available: {', '.join(have) or 'none'} — pick locales from this list"
        )
    return list(wanted)
