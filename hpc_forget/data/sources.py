"""Every source form of MASSIVE (a folder of JSONL files, the official .tar.gz, a Hub id, a
``save_to_disk`` folder, the shipped samples) read into a :class:`~hpc_forget.data.corpus.Corpus`:
``load_massive``.
"""

from __future__ import annotations

import re
import tarfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hpc_forget.data.corpus import (
    Corpus,
    CorpusBuilder,
    add_dataset_rows,
    add_jsonl_rows,
    check_locales,
)
from hpc_forget.data.labels import canonical_split
from hpc_forget.errors import DataError, first_line

HUB_ID = "AmazonScience/massive"
# MASSIVE on the Hub is a loading-script dataset, which `datasets` 4+ refuses to run ("Dataset
# scripts are no longer supported"); the Hub's parquet conversion of it lives on this branch,
# one folder per config: <config>/<split>/0000.parquet (config = locale, or all_1.1).
HUB_PARQUET_REVISION = "refs/convert/parquet"
HUB_SPLITS: tuple[str, ...] = ("train", "validation", "test")
SAMPLES_DIR: Path = Path(__file__).resolve().parents[1] / "assets" / "massive"

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")

# --------------------------------------------------------------------------------------------
# the source forms


def _load_folder(
    path: Path, wanted: Sequence[str] | None, builder: CorpusBuilder, src: str
) -> list:
    files = {p.name[: -len(".jsonl")]: p for p in sorted(path.glob("*.jsonl")) if p.is_file()}
    if not files:
        for sub in ("1.1/data", "data"):  # an extracted official tarball
            if (path / sub).is_dir() and any((path / sub).glob("*.jsonl")):
                return _load_folder(path / sub, wanted, builder, src)
    locales = check_locales(wanted, files, src, "" if files else _folder_contents(path))
    for loc in locales:
        p = files[loc]
        try:
            data = p.read_bytes()
        except OSError as e:
            raise DataError(f"{p}: cannot read ({e.strerror}) — check the file") from None
        add_jsonl_rows(builder, data, file=str(p), where=str(p), locale=loc)
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


def _load_tarball(path: Path, wanted: Sequence[str] | None, builder: CorpusBuilder) -> list:
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
                add_jsonl_rows(builder, data, file=where, where=where, locale=loc)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(
            f"{src}: not a readable tar archive ({type(e).__name__}: {first_line(e)}) — "
            "expected the official MASSIVE .tar.gz; download it again"
        ) from None
    return check_locales(wanted, seen, src, "" if seen else "the archive has no such members")


def _load_disk(path: Path, wanted: Sequence[str] | None, builder: CorpusBuilder) -> list:
    import datasets

    src = str(path)
    try:
        obj = datasets.load_from_disk(src)
    except Exception as e:  # noqa: BLE001 - any failure is reported as one line
        raise DataError(
            f"{src}: cannot load the save_to_disk folder ({type(e).__name__}: {first_line(e)}) "
            "— re-save it with datasets.save_to_disk"
        ) from None
    parts = list(obj.items()) if isinstance(obj, datasets.DatasetDict) else [(None, obj)]
    available: set[str] = set()
    for _, ds in parts:
        if "locale" in ds.column_names:
            available.update(x for x in ds.unique("locale") if isinstance(x, str))
    locales = check_locales(wanted, available, src)
    for split_name, ds in parts:
        split = _split_of_key(split_name)
        name = f"{src}[{split_name}]" if split_name is not None else src
        add_dataset_rows(builder, ds, name=name, locale=None, split=split, keep=set(locales))
    return locales


def hub_parquet_files(config: str) -> dict[str, str]:
    """``data_files`` of one config in the Hub's parquet conversion, split -> glob."""
    return {split: f"{config}/{split}/*.parquet" for split in HUB_SPLITS}


def _load_hub(name: str, wanted: Sequence[str] | None, builder: CorpusBuilder) -> list:
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
                f"{first_line(e)}) — check the dataset id and locale, or pass a local folder "
                "or .tar.gz"
            ) from None
        parts = list(dd.items()) if isinstance(dd, Mapping) else [(None, dd)]
        for split_name, ds in parts:
            label = f"{name}[{config + '/' if wanted is not None else ''}{split_name}]"
            add_dataset_rows(
                builder,
                ds,
                name=label,
                locale=config if wanted is not None else None,
                split=_split_of_key(split_name),
            )
    if wanted is None:
        return check_locales(None, builder.examples, name)
    return list(wanted)


def _split_of_key(key: str | None) -> str | None:
    """A DatasetDict key as a split; unknown keys map to themselves so rows fail as bad split."""
    if key is None:
        return None
    return canonical_split(key) or key


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
    builder = CorpusBuilder(skip_invalid)
    if form in ("folder", "samples"):
        if form == "samples" and not where.is_dir():
            raise DataError(f"{where}: the shipped samples are missing — reinstall hpc-forget")
        got = _load_folder(where, wanted, builder, src)
    elif form == "file":
        loc = where.name[: -len(".jsonl")]
        check_locales(wanted, [loc], src)
        try:
            data = where.read_bytes()
        except OSError as e:
            raise DataError(f"{where}: cannot read ({e.strerror}) — check the file") from None
        add_jsonl_rows(builder, data, file=str(where), where=str(where), locale=loc)
        got = [loc]
    elif form == "tarball":
        got = _load_tarball(where, wanted, builder)
    elif form == "disk":
        got = _load_disk(where, wanted, builder)
    else:
        got = _load_hub(where, wanted, builder)
    return builder.corpus(got, src, form)
