"""MASSIVE 1.1 loading, annot_utt -> word-level BIO, the fixed label map, subsampling, inspection.

Every source form (a folder of per-locale JSONL files, the official ``.tar.gz``, a Hugging Face
Hub id, a ``save_to_disk`` folder, the shipped samples) is read into one canonical in-memory form:
a :class:`Corpus` of :class:`Example` (id, locale, split, words, BIO tags). See docs/data.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpc_forget import files
from hpc_forget.errors import DataError

# The 55 MASSIVE slot types, sorted; derived once from en-US.jsonl (MASSIVE 1.1) and fixed here.
SLOT_TYPES: tuple[str, ...] = (
    "alarm_type",
    "app_name",
    "artist_name",
    "audiobook_author",
    "audiobook_name",
    "business_name",
    "business_type",
    "change_amount",
    "coffee_type",
    "color_type",
    "cooking_type",
    "currency_name",
    "date",
    "definition_word",
    "device_type",
    "drink_type",
    "email_address",
    "email_folder",
    "event_name",
    "food_type",
    "game_name",
    "game_type",
    "general_frequency",
    "house_place",
    "ingredient",
    "joke_type",
    "list_name",
    "meal_type",
    "media_type",
    "movie_name",
    "movie_type",
    "music_album",
    "music_descriptor",
    "music_genre",
    "news_topic",
    "order_type",
    "person",
    "personal_info",
    "place_name",
    "player_setting",
    "playlist_name",
    "podcast_descriptor",
    "podcast_name",
    "radio_name",
    "relation",
    "song_name",
    "sport_type",
    "time",
    "time_zone",
    "timeofday",
    "transport_agency",
    "transport_descriptor",
    "transport_name",
    "transport_type",
    "weather_descriptor",
)

# "O", then B-<t>, I-<t> for each slot type in SLOT_TYPES order: 111 labels, ids = positions.
LABELS: tuple[str, ...] = ("O",) + tuple(f"{p}-{t}" for t in SLOT_TYPES for p in ("B", "I"))

SPLITS: tuple[str, ...] = ("train", "dev", "test")
# Locales the official conversion splits into characters (keeping ASCII runs whole).
CHAR_SPLIT_LOCALES: frozenset[str] = frozenset({"ja-JP", "zh-CN", "zh-TW"})

HUB_ID = "AmazonScience/massive"
# MASSIVE on the Hub is a loading-script dataset, which `datasets` 4+ refuses to run ("Dataset
# scripts are no longer supported"); the Hub's parquet conversion of it lives on this branch,
# one folder per config: <config>/<split>/0000.parquet (config = locale, or all_1.1).
HUB_PARQUET_REVISION = "refs/convert/parquet"
HUB_SPLITS: tuple[str, ...] = ("train", "validation", "test")
SAMPLES_DIR: Path = Path(__file__).resolve().parents[1] / "assets" / "massive"
SAMPLE_SEED = 0
# Rows per locale and split in the shipped samples (de-DE and sw-KE have no train split).
SAMPLE_SIZES: dict[str, dict[str, int]] = {
    "en-US": {"train": 2000, "dev": 300, "test": 300},
    "th-TH": {"train": 2000, "dev": 300, "test": 300},
    "de-DE": {"dev": 600, "test": 300},
    "sw-KE": {"dev": 600, "test": 300},
}

_SLOT_SET = frozenset(SLOT_TYPES)
_SPLIT_ALIASES = {"train": "train", "dev": "dev", "validation": "dev", "test": "test"}
_SKIP_HINT = "fix the row, or set data.skip_invalid: true to skip invalid rows"
_CHAR_WORD = re.compile(r"[^\s\x80-\U0010ffff]+|\S")  # an ASCII run, or one non-ASCII char
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")
_ROW_FIELDS = ("id", "locale", "partition", "utt", "annot_utt")


class _RowError(Exception):
    """Why one row is invalid (a short reason, no location)."""


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
        name = _canonical_split(split)
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
# label map and the annot_utt -> BIO conversion


def label2id() -> dict[str, int]:
    """The fixed label map: ``LABELS[i] -> i`` (``O`` is 0)."""
    return {label: i for i, label in enumerate(LABELS)}


def id2label() -> dict[int, str]:
    """The inverse of :func:`label2id`."""
    return dict(enumerate(LABELS))


def split_words(text: str, locale: str) -> list[str]:
    """Words as MASSIVE defines them: whitespace-separated, except ja-JP, zh-CN and zh-TW where
    each non-ASCII character is a word and each run of ASCII non-space characters is one word."""
    if locale in CHAR_SPLIT_LOCALES:
        return _CHAR_WORD.findall(text)
    return text.split()


def _segments(annot: str) -> list[tuple[str, str | None]]:
    """Split annot_utt into (text, slot type or None) pieces; raise _RowError if malformed."""
    out: list[tuple[str, str | None]] = []
    pos, n = 0, len(annot)
    while pos < n:
        lb = annot.find("[", pos)
        rb = annot.find("]", pos)
        if rb != -1 and (lb == -1 or rb < lb):
            raise _RowError(f"unbalanced ']' at character {rb + 1} of annot_utt")
        if lb == -1:
            out.append((annot[pos:], None))
            break
        if lb > pos:
            out.append((annot[pos:lb], None))
        if rb == -1:
            raise _RowError(f"unbalanced '[' at character {lb + 1} of annot_utt (never closed)")
        nested = annot.find("[", lb + 1, rb)
        if nested != -1:
            raise _RowError(f"unbalanced '[' at character {lb + 1} of annot_utt (nested span)")
        slot, colon, value = annot[lb + 1 : rb].partition(":")
        slot = slot.strip()
        if not colon:
            raise _RowError(f"span at character {lb + 1} of annot_utt has no 'type : value' form")
        if slot not in _SLOT_SET:
            raise _RowError(f"unknown slot type {_short(slot)} (not one of the 55 MASSIVE types)")
        if not value.strip():
            raise _RowError(f"empty span [{slot} : ] at character {lb + 1} of annot_utt")
        out.append((value, slot))
        pos = rb + 1
    return out


def _bio(annot: str, utt: str, locale: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    words: list[str] = []
    tags: list[str] = []
    for text, slot in _segments(annot):
        piece = split_words(text, locale)
        words.extend(piece)
        if slot is None:
            tags.extend(["O"] * len(piece))
        else:
            tags.append(f"B-{slot}")
            tags.extend([f"I-{slot}"] * (len(piece) - 1))
    utt_words = split_words(utt, locale)
    if words != utt_words:
        if not utt_words:
            raise _RowError("utt has no words")
        i = next(
            (k for k, (a, b) in enumerate(zip(words, utt_words, strict=False)) if a != b), None
        )
        if i is None:
            raise _RowError(f"annot_utt has {len(words)} words, utt has {len(utt_words)}")
        raise _RowError(
            f"annot_utt and utt differ at word {i + 1} "
            f"({_short(words[i])} vs {_short(utt_words[i])})"
        )
    if not words:
        raise _RowError("utt has no words")
    return tuple(words), tuple(tags)


def annot_to_bio(annot_utt: str, utt: str, locale: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Convert one MASSIVE annotation to (words, BIO tags).

    A span ``[type : value]`` gives ``B-type`` to its first word and ``I-type`` to the others;
    words outside spans get ``O``. The words recovered from ``annot_utt`` must equal the words of
    ``utt``. Raises DataError (one line, no location) if the annotation is invalid.
    """
    try:
        return _bio(annot_utt, utt, locale)
    except _RowError as e:
        raise DataError(str(e)) from None


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _canonical_split(name: object) -> str | None:
    return _SPLIT_ALIASES.get(name) if isinstance(name, str) else None


# --------------------------------------------------------------------------------------------
# rows -> corpus


class _Builder:
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
                raise _RowError(f"row is a JSON {type(row).__name__}, not an object")
            rid = row.get("id", "")
            rid = str(rid) if isinstance(rid, str | int) and not isinstance(rid, bool) else ""
            ex = self._convert(row, locale, split)
            seen = self.seen.setdefault(ex.locale, {})
            if ex.id in seen:
                raise _RowError(f"duplicate id {_short(ex.id)} (first at {seen[ex.id]})")
            seen[ex.id] = where
        except _RowError as e:
            bad = InvalidRow(
                file=file,
                line=line,
                id=rid,
                reason=str(e),
                where=where,
                locale=locale or _field_str(row, "locale"),
                split=split or _canonical_split(_field_str(row, "partition")) or "",
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
                raise _RowError(f"missing field {name!r}")
        rid = row["id"]
        if isinstance(rid, bool) or not isinstance(rid, str | int):
            raise _RowError(f"field 'id' must be a string, got {_short(rid)}")
        rid = str(rid)
        utt, annot = row["utt"], row["annot_utt"]
        if not isinstance(utt, str) or not isinstance(annot, str):
            raise _RowError("fields 'utt' and 'annot_utt' must be strings")
        row_locale = row.get("locale")
        if row_locale is None and locale is None:
            raise _RowError("missing field 'locale'")
        if row_locale is not None and (not isinstance(row_locale, str) or not row_locale):
            raise _RowError(f"bad locale {_short(row_locale)}")
        if locale is not None and row_locale is not None and row_locale != locale:
            raise _RowError(f"locale {row_locale!r} in the {locale} data")
        loc = row_locale if row_locale is not None else locale
        part = row.get("partition")
        if part is None and split is None:
            raise _RowError("missing field 'partition'")
        if part is not None:
            name = _canonical_split(part)
            if name is None:
                raise _RowError(f"bad partition {_short(part)} (expected train, dev or test)")
            if split is not None and name != split:
                raise _RowError(f"partition {part!r} in the {split} split")
        else:
            name = split
        if name not in SPLITS:
            raise _RowError(f"bad split {_short(name)} (expected train, dev/validation or test)")
        words, tags = _bio(annot, utt, loc)
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


def _jsonl_lines(data: bytes) -> Iterator[tuple[int, bytes, Any]]:
    """(line number, raw line, parsed row or _RowError) for each non-blank line."""
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            row: Any = json.loads(raw)
        except UnicodeDecodeError:
            row = _RowError("line is not UTF-8")
        except json.JSONDecodeError as e:
            row = _RowError(f"bad JSON ({e.msg} at column {e.colno})")
        yield lineno, raw, row


def _add_jsonl(builder: _Builder, data: bytes, *, file: str, where: str, locale: str) -> None:
    """Parse one per-locale JSONL file (``where`` is the display name lines are appended to).

    A file with no line, or in which no line is JSON, is not a MASSIVE file at all: one
    DataError naming it (even with skip_invalid), instead of one invalid row per line."""
    builder.files[locale] = where
    lines = list(_jsonl_lines(data))
    if not lines:
        raise DataError(
            f"{where}: no rows (the file is empty) — restore {locale}.jsonl from the MASSIVE"
            " release, or remove it"
        )
    if lines and all(isinstance(row, _RowError) for _, _, row in lines):
        lineno, _, first = lines[0]
        raise DataError(
            f"{where}: not a JSON Lines file (line {lineno}: {first}) — expected one MASSIVE"
            " JSON object per line"
        )
    for lineno, _, row in lines:
        at = f"{where}:{lineno}"
        if isinstance(row, _RowError):
            builder.reject(InvalidRow(file, lineno, "", str(row), at, locale, ""))
        else:
            builder.add(row, file=file, line=lineno, where=at, locale=locale, split=None)


def _add_dataset(
    builder: _Builder,
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


def _check_locales(
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


# --------------------------------------------------------------------------------------------
# the source forms


def _load_folder(path: Path, wanted: Sequence[str] | None, builder: _Builder, src: str) -> list:
    files = {p.name[: -len(".jsonl")]: p for p in sorted(path.glob("*.jsonl")) if p.is_file()}
    if not files:
        for sub in ("1.1/data", "data"):  # an extracted official tarball
            if (path / sub).is_dir() and any((path / sub).glob("*.jsonl")):
                return _load_folder(path / sub, wanted, builder, src)
    locales = _check_locales(wanted, files, src, "" if files else _folder_contents(path))
    for loc in locales:
        p = files[loc]
        try:
            data = p.read_bytes()
        except OSError as e:
            raise DataError(f"{p}: cannot read ({e.strerror}) — check the file") from None
        _add_jsonl(builder, data, file=str(p), where=str(p), locale=loc)
    return locales


def _folder_contents(path: Path) -> str:
    """What a folder without <locale>.jsonl files holds, in a few words."""
    try:
        names = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))
    except OSError as e:
        return f"cannot list it: {e.strerror}"
    if not names:
        return "the folder is empty"
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"it holds {len(names)} other entr{'y' if len(names) == 1 else 'ies'}: {shown}"


_MAGIC = {
    ".tar.gz": (b"\x1f\x8b", "gzip"),
    ".tgz": (b"\x1f\x8b", "gzip"),
    ".tar.bz2": (b"BZh", "bzip2"),
    ".tar.xz": (b"\xfd7zXZ", "xz"),
}


def _check_archive(path: Path) -> None:
    """DataError if a .tar.gz/.tgz/.tar.bz2/.tar.xz does not start like one."""
    for suffix, (magic, kind) in _MAGIC.items():
        if path.name.endswith(suffix):
            try:
                with path.open("rb") as fh:
                    head = fh.read(len(magic))
            except OSError as e:
                raise DataError(f"{path}: cannot read ({e.strerror}) — check the file") from None
            if head != magic:
                raise DataError(
                    f"{path}: not a {kind} file (it does not start with the {kind} signature)"
                    " — expected the official MASSIVE archive (amazon-massive-dataset-1.1.tar.gz);"
                    " download it again"
                )
            return


def _load_tarball(path: Path, wanted: Sequence[str] | None, builder: _Builder) -> list:
    """One streaming pass over the archive: members ``.../<locale>.jsonl`` are parsed as they
    come (the official layout is ``1.1/data/<locale>.jsonl``)."""
    src = str(path)
    seen: dict[str, str] = {}  # locale -> member name
    _check_archive(path)
    try:
        with tarfile.open(path, "r|*") as tar:
            for m in tar:
                base = m.name.rsplit("/", 1)[-1]
                if not (m.isfile() and base.endswith(".jsonl") and not base.startswith(".")):
                    continue
                loc = base[: -len(".jsonl")]
                if loc in seen:
                    raise DataError(
                        f"{src}: two members for {loc} ({seen[loc]}, {m.name}) — "
                        "keep one MASSIVE version per archive"
                    )
                seen[loc] = m.name
                if wanted is not None and loc not in wanted:
                    continue
                fh = tar.extractfile(m)
                data = fh.read() if fh is not None else b""
                where = f"{src}[{m.name}]"
                _add_jsonl(builder, data, file=where, where=where, locale=loc)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(
            f"{src}: not a readable tar archive ({type(e).__name__}: {_first_line(e)}) — "
            "expected the official MASSIVE .tar.gz; download it again"
        ) from None
    return _check_locales(wanted, seen, src, "" if seen else "the archive has no such members")


def _load_disk(path: Path, wanted: Sequence[str] | None, builder: _Builder) -> list:
    import datasets

    src = str(path)
    try:
        obj = datasets.load_from_disk(src)
    except Exception as e:  # noqa: BLE001 - any failure is reported as one line
        raise DataError(
            f"{src}: cannot load the save_to_disk folder ({type(e).__name__}: {_first_line(e)}) "
            "— re-save it with datasets.save_to_disk"
        ) from None
    parts = list(obj.items()) if isinstance(obj, datasets.DatasetDict) else [(None, obj)]
    available: set[str] = set()
    for _, ds in parts:
        if "locale" in ds.column_names:
            available.update(x for x in ds.unique("locale") if isinstance(x, str))
    locales = _check_locales(wanted, available, src)
    for split_name, ds in parts:
        split = _split_of_key(split_name)
        name = f"{src}[{split_name}]" if split_name is not None else src
        _add_dataset(builder, ds, name=name, locale=None, split=split, keep=set(locales))
    return locales


def hub_parquet_files(config: str) -> dict[str, str]:
    """``data_files`` of one config in the Hub's parquet conversion, split -> glob."""
    return {split: f"{config}/{split}/*.parquet" for split in HUB_SPLITS}


def _load_hub(name: str, wanted: Sequence[str] | None, builder: _Builder) -> list:
    """A Hub dataset through its parquet conversion (no loading script is ever run)."""
    import datasets

    default = "all_1.1" if name == HUB_ID else "default"
    configs = list(wanted) if wanted is not None else [default]
    for config in configs:
        try:
            dd = datasets.load_dataset(
                name, data_files=hub_parquet_files(config), revision=HUB_PARQUET_REVISION
            )
        except Exception as e:  # noqa: BLE001 - any failure is reported as one line
            what = f"locale {config}" if wanted is not None else "the dataset"
            raise DataError(
                f"{name}: cannot load {what} from the Hugging Face Hub ({type(e).__name__}: "
                f"{_first_line(e)}) — check the dataset id and locale, or pass a local folder "
                "or .tar.gz"
            ) from None
        parts = list(dd.items()) if isinstance(dd, Mapping) else [(None, dd)]
        for split_name, ds in parts:
            label = f"{name}[{config + '/' if wanted is not None else ''}{split_name}]"
            _add_dataset(
                builder,
                ds,
                name=label,
                locale=config if wanted is not None else None,
                split=_split_of_key(split_name),
            )
    if wanted is None:
        return _check_locales(None, builder.examples, name)
    return list(wanted)


def _split_of_key(key: str | None) -> str | None:
    """A DatasetDict key as a split; unknown keys map to themselves so rows fail as bad split."""
    if key is None:
        return None
    return _canonical_split(key) or key


def _first_line(e: BaseException, limit: int = 160) -> str:
    text = (str(e).strip().splitlines() or [""])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def _resolve(source: str) -> tuple[str, Any]:
    """(form, location) for a source string; raise DataError for a missing local path."""
    if source in ("samples", "builtin:samples"):
        return "samples", SAMPLES_DIR
    if source.startswith("hf:"):
        return "hub", source[3:]
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            return "disk", path
        return "folder", path
    if path.exists() and not path.is_dir() and not path.is_file():
        raise DataError(
            f"{source}: not a regular file or folder (a device or pipe) — pass a folder of"
            " <locale>.jsonl files, the official .tar.gz, a save_to_disk folder, a Hub id or"
            " 'samples'"
        )
    if path.is_file() and _is_empty(path):
        if source.endswith(_TAR_SUFFIXES):
            expected = "the official MASSIVE .tar.gz"
        elif path.suffix == ".jsonl":
            expected = "MASSIVE JSON Lines (one JSON object per line)"
        else:
            expected = "a <locale>.jsonl file, a folder of them or the official .tar.gz"
        raise DataError(f"{source}: empty file (0 bytes) — expected {expected}")
    if path.is_file():
        if source.endswith(_TAR_SUFFIXES) or tarfile.is_tarfile(path):
            return "tarball", path
        if path.suffix == ".jsonl":
            return "file", path
        raise DataError(
            f"{source}: not a MASSIVE source — pass a folder of <locale>.jsonl files, the "
            "official .tar.gz, a save_to_disk folder, a Hub id or 'samples'"
        )
    first = source.split("/", 1)[0]
    looks_local = source.startswith((".", "/", "~")) or Path(first).exists()
    if _HUB_NAME.match(source) and not looks_local:
        return "hub", source
    raise DataError(
        f"{source}: no such file or folder — pass a folder of <locale>.jsonl files, the "
        "official .tar.gz, a save_to_disk folder, a Hub id (e.g. AmazonScience/massive) or "
        "'samples'"
    )


def load_massive(
    source: str | Path,
    locales: Sequence[str] | None = None,
    *,
    skip_invalid: bool = False,
) -> Corpus:
    """Load MASSIVE 1.1 from any source form into a :class:`Corpus`.

    ``source``: a folder of ``<locale>.jsonl`` files, one such file, the official ``.tar.gz``,
    a ``save_to_disk`` folder, a Hugging Face Hub id (``AmazonScience/massive``, or
    ``hf:<id>``), or ``samples`` / ``builtin:samples`` (the files shipped in the package).
    ``locales``: which to load (default: all the source has). Invalid rows raise DataError
    unless ``skip_invalid``, which records them in ``corpus.invalid``.
    """
    src = str(source)
    if isinstance(locales, str):
        locales = [locales]
    wanted = list(dict.fromkeys(locales)) if locales is not None else None
    form, where = _resolve(src)
    builder = _Builder(skip_invalid)
    if form in ("folder", "samples"):
        if form == "samples" and not where.is_dir():
            raise DataError(f"{where}: the shipped samples are missing — reinstall hpc-forget")
        got = _load_folder(where, wanted, builder, src)
    elif form == "file":
        loc = where.name[: -len(".jsonl")]
        _check_locales(wanted, [loc], src)
        try:
            data = where.read_bytes()
        except OSError as e:
            raise DataError(f"{where}: cannot read ({e.strerror}) — check the file") from None
        _add_jsonl(builder, data, file=str(where), where=str(where), locale=loc)
        got = [loc]
    elif form == "tarball":
        got = _load_tarball(where, wanted, builder)
    elif form == "disk":
        got = _load_disk(where, wanted, builder)
    else:
        got = _load_hub(where, wanted, builder)
    return builder.corpus(got, src, form)


# --------------------------------------------------------------------------------------------
# subsampling and per-locale splits


def _rank(seed: int | str, ex_id: str) -> bytes:
    return hashlib.sha256(f"{seed}\x00{ex_id}".encode()).digest()


def _id_key(ex_id: str) -> tuple:
    return (0, int(ex_id), "") if ex_id.isascii() and ex_id.isdigit() else (1, 0, ex_id)


def _ranked(examples: Iterable[Example], seed: int | str) -> list[Example]:
    """Examples in a seed-determined order that depends only on their ids (then content)."""
    return sorted(
        examples, key=lambda e: (_rank(seed, e.id), _id_key(e.id), e.locale, e.split, e.words)
    )


def _sort_by_id(examples: Iterable[Example]) -> list[Example]:
    return sorted(examples, key=lambda e: (_id_key(e.id), e.locale, e.split, e.words, e.tags))


def _check_fraction(fraction: float, option: str) -> None:
    ok = isinstance(fraction, int | float) and not isinstance(fraction, bool)
    if not ok or math.isnan(fraction) or not 0 < fraction <= 1:
        raise DataError(f"{option}={fraction!r}: must be a number in (0, 1] — fix the option")


def _check_cap(cap: int | None, option: str) -> None:
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise DataError(f"{option}={cap!r}: must be a positive integer or None — fix the option")


def subsample(
    examples: Iterable[Example],
    *,
    max_examples: int | None = None,
    fraction: float = 1.0,
    seed: int = 0,
) -> list[Example]:
    """A deterministic subset, independent of the input order, returned sorted by id.

    Each example is ranked by a hash of (seed, id); ``fraction`` (the data-scale factor) keeps
    the first ``floor(fraction * n + 0.5)`` (at least 1), then ``max_examples`` caps that. So a
    smaller fraction or cap gives a subset of a larger one, and parallel locales (same ids) get
    the same ids.
    """
    _check_fraction(fraction, "fraction")
    _check_cap(max_examples, "max_examples")
    items = _sort_by_id(examples)
    n = len(items)
    keep = n if fraction == 1 else min(n, max(1, math.floor(fraction * n + 0.5)))
    if max_examples is not None:
        keep = min(keep, max_examples)
    if keep >= n:
        return items
    return _sort_by_id(_ranked(items, seed)[:keep])


def prepare_splits(
    corpus: Corpus,
    locale: str,
    *,
    max_train: int | None = None,
    max_eval: int | None = None,
    train_fraction: float = 1.0,
    seed: int = 0,
    missing_train: str = "error",
    dev_fraction_for_train: float = 0.5,
) -> Splits:
    """Train/dev/test for one locale.

    Train is ``subsample(train, fraction=train_fraction, max_examples=max_train, seed=seed)``.
    Dev and test are capped at ``max_eval`` with a fixed seed (0), so every run of a locale is
    scored on the same examples. A locale with no train split (de-DE, sw-KE): with
    ``missing_train="error"`` a DataError; with ``"split-dev"`` a fixed, seed-independent
    ``dev_fraction_for_train`` of its dev split (ranked by id hash) becomes its train split and
    the rest stays dev (disjoint).
    """
    if missing_train not in ("error", "split-dev"):
        raise DataError(
            f"missing_train={missing_train!r}: unknown value — use 'error' or 'split-dev'"
        )
    _check_fraction(train_fraction, "train_fraction")
    _check_fraction(dev_fraction_for_train, "dev_fraction_for_train")
    _check_cap(max_train, "max_train")
    _check_cap(max_eval, "max_eval")
    train, dev, test = (corpus.split(locale, s) for s in SPLITS)
    origin = corpus.origin(locale)
    if not (train or dev or test):
        bad = sum(1 for r in corpus.invalid if r.locale == locale)
        why = f"all {bad} rows are invalid" if bad else "the file has no rows"
        raise DataError(
            f"{origin}: no rows for locale {locale} ({why}) — restore the file from the MASSIVE"
            " release, or drop the locale from data.languages"
        )
    if not test:
        raise DataError(
            f"{origin}: locale {locale} has no test rows (partition 'test') — it cannot be"
            " scored; use a file with its test split, or drop the locale"
        )
    if not train:
        if missing_train == "error":
            raise DataError(
                f"{origin}: locale {locale} has no train split — set "
                "data.missing_train: split-dev to train on part of its dev split, or drop the locale"
            )
        if len(dev) < 2 or dev_fraction_for_train >= 1:
            raise DataError(
                f"{origin}: locale {locale} has {len(dev)} dev rows — too few to split "
                "into train and dev with dev_fraction_for_train < 1"
            )
        ranked = _ranked(_sort_by_id(dev), "split-dev")
        k = min(len(dev) - 1, max(1, math.floor(dev_fraction_for_train * len(dev) + 0.5)))
        train = [Example(e.id, e.locale, "train", e.words, e.tags) for e in ranked[:k]]
        dev = ranked[k:]
    if not dev:
        raise DataError(
            f"{origin}: locale {locale} has no dev rows (partition 'dev') — they are needed for"
            " model selection; use a file with its dev split, or drop the locale"
        )
    return Splits(
        train=tuple(subsample(train, max_examples=max_train, fraction=train_fraction, seed=seed)),
        dev=tuple(subsample(dev, max_examples=max_eval, seed=0)),
        test=tuple(subsample(test, max_examples=max_eval, seed=0)),
    )


# --------------------------------------------------------------------------------------------
# shipped samples


def make_samples(
    src_dir: str | Path,
    out_dir: str | Path,
    sizes: Mapping[str, Mapping[str, int]] = SAMPLE_SIZES,
    seed: int = SAMPLE_SEED,
) -> dict[str, Path]:
    """Write ``<out_dir>/<locale>.jsonl`` samples: lines copied byte for byte from
    ``<src_dir>/<locale>.jsonl``, in file order, each ending in a newline.

    Per split, the valid rows are ranked by sha256(f"{seed}\\0{id}"); ids present in that split
    in every locale asking for it come first, then the locale's other ids; each locale takes
    the first ``sizes[locale][split]``. So dev/test ids are shared across locales, and a locale
    taking more rows (de-DE dev 600) holds those of one taking fewer (en-US dev 300).
    """
    src, out = Path(src_dir), Path(out_dir)
    rows: dict[str, dict[str, dict[str, tuple[int, bytes]]]] = {}  # locale/split/id -> line
    for loc in sizes:
        path = src / f"{loc}.jsonl"
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e.strerror}) — check src_dir") from None
        builder = _Builder(skip_invalid=True)
        rows[loc] = {s: {} for s in SPLITS}
        for lineno, raw, row in _jsonl_lines(data):
            if isinstance(row, _RowError):
                continue
            where = f"{path}:{lineno}"
            ex = builder.add(row, file=str(path), line=lineno, where=where, locale=loc, split=None)
            if ex is not None:
                rows[loc][ex.split][ex.id] = (lineno, raw.rstrip(b"\r"))
    chosen: dict[str, list[tuple[int, bytes]]] = {loc: [] for loc in sizes}
    for split in SPLITS:
        takers = [loc for loc in sizes if sizes[loc].get(split, 0) > 0]
        if not takers:
            continue
        shared = set.intersection(*(set(rows[loc][split]) for loc in takers))
        ranked_shared = sorted(shared, key=lambda i: _rank(seed, i))
        for loc in takers:
            n, own = sizes[loc][split], rows[loc][split]
            order = ranked_shared + sorted(set(own) - shared, key=lambda i: _rank(seed, i))
            if n > len(order):
                raise DataError(
                    f"{src / f'{loc}.jsonl'}: the {split} split has {len(order)} valid rows but "
                    f"sizes asks for {n} — lower the size"
                )
            chosen[loc].extend(own[i] for i in order[:n])
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for loc, picked in chosen.items():
        path = out / f"{loc}.jsonl"
        blob = b"".join(raw + b"\n" for _, raw in sorted(picked))
        files.atomic_write(path, blob, "the samples", fix="choose another out_dir", error=DataError)
        written[loc] = path
    return written


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
