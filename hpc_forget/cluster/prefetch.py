"""``hpc-forget prefetch CONFIG --cache DIR``: fetch what jobs need, on the login node.

Compute nodes often have no internet, so jobs run with ``HF_HUB_OFFLINE=1`` and
``HF_DATASETS_OFFLINE=1`` and read only the shared cache. ``prefetch`` fills that cache:

- **models** named by Hub id or preset are downloaded with ``huggingface_hub`` at a pinned
  revision into the Hugging Face cache layout under DIR (``models--org--name/...``), where
  ``models.load_model(spec, cache_dir=DIR)`` finds them offline. The cache's ``refs/main``
  points to the pinned commit, so loads without a revision read exactly that snapshot. A model
  can also come from a local folder (a mirror): it is copied into the same layout under a
  content-hash commit.
- **MASSIVE**, when ``data.source`` is a URL or a Hub id: the official tarball (``https://`` or
  ``file://``, sha256-checked) into ``DIR/massive/``, or the Hub's parquet form converted to one
  ``<locale>.jsonl`` per locale. At job time the worker reads the cached copy instead.

Everything fetched is verified (the files a model needs; every configured locale in the data)
and recorded in ``DIR/prefetch.json`` (what, from where, revision, sha256, when). That record is
also a lock: a later prefetch fetches the recorded revision again unless asked to update.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hpc_forget.data.sources import HUB_ID as MASSIVE_HUB
from hpc_forget.data.sources import HUB_PARQUET_REVISION as MASSIVE_HUB_REVISION
from hpc_forget.errors import PrefetchError
from hpc_forget.files import sha256_file, tree_digest, utc_now, write_json

RECORD = "prefetch.json"
RECORD_FORMAT = "hpc-forget-prefetch"
# The official URL (README of github.com/alexa/massive). Amazon publishes no checksum; this
# sha256 (40,251,390 bytes) is the one several independent projects record for the file, and a
# download of the official URL is checked against it unless the URL carries its own #sha256=.
MASSIVE_URL = (
    "https://amazon-massive-nlu-dataset.s3.amazonaws.com/amazon-massive-dataset-1.1.tar.gz"
)
MASSIVE_SHA256 = "4cba5faa11c71437928e17cb1b9b3d8b8e727e7ea363a3a9a8045e19c0491577"
MASSIVE_BYTES = 40_251_390
KNOWN_SHA256: dict[str, str] = {MASSIVE_URL: MASSIVE_SHA256}
DATA_KEY = "massive"  # the key of the data item in `sources`
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_WEIGHTS = ("*.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
_TOKENIZER = ("tokenizer.json", "sentencepiece.bpe.model", "tokenizer_config.json", "vocab.txt")


@dataclass
class Item:
    kind: str  # "model" | "data"
    spec: str  # as written in the config (model spec, data.source)
    source: str  # where it was fetched from
    revision: str  # commit sha (models, hub data) or "" (tarball)
    path: str  # relative to the cache directory
    sha256: str  # of the file (tarball) or of the sorted (path, sha256) list (folders)
    files: int
    bytes: int
    fetched_at: str


@dataclass
class PrefetchRecord:
    cache_dir: str
    items: list[Item] = field(default_factory=list)

    def find(self, kind: str, spec: str) -> Item | None:
        return next((i for i in self.items if i.kind == kind and i.spec == spec), None)

    def put(self, item: Item) -> None:
        self.items = [i for i in self.items if not (i.kind == item.kind and i.spec == item.spec)]
        self.items.append(item)

    def summary(self) -> str:
        lines = [f"cache {self.cache_dir}: {len(self.items)} item(s) recorded in {RECORD}"]
        for i in self.items:
            rev = f" @ {i.revision[:12]}" if i.revision else ""
            lines.append(
                f"  {i.kind:<5} {i.spec}{rev}: {i.files} file(s), {i.bytes / 1e6:.1f} MB,"
                f" sha256 {i.sha256[:16]}…  -> {i.path}"
            )
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# what a config needs (pure)


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://", "file://"))


def data_needs_fetch(source: str) -> bool:
    """A URL or a Hub id needs the network; 'samples' and local paths do not."""
    if is_url(source) or source.startswith("hf:"):
        return True
    if source in ("samples", "builtin:samples") or Path(source).expanduser().exists():
        return False
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", source))


def model_needs_fetch(spec: str) -> bool:
    """Presets and Hub ids need the network; 'tiny' and local folders do not."""
    from hpc_forget.models.hub import TINY, split_spec
    from hpc_forget.models.params import PRESETS

    spec, _ = split_spec(spec)
    if spec == TINY:
        return False
    if spec in PRESETS:
        return True
    return not Path(spec).expanduser().exists() and not spec.startswith(("/", ".", "~"))


def prefetch_hint(cfg_name: str, cache_dir: str) -> str:
    """What to run, for the one-line job-time errors."""
    return (
        f"run `hpc-forget prefetch CONFIG --cache {shlex.quote(cache_dir)}` on the login node"
        f" (CONFIG: the config of study {cfg_name!r}; submit with the same --cache), then resubmit"
    )


def default_cache(cfg: Any) -> str:
    """The cache jobs use: the config's cache_dir, else <store>/cache (as the engine does)."""
    return str(Path(cfg.cache_dir or Path(cfg.store) / "cache").absolute())


# --------------------------------------------------------------------------------------------
# the record


def read_record(cache_dir: str | os.PathLike) -> PrefetchRecord:
    path = Path(cache_dir) / RECORD
    if not path.is_file():
        return PrefetchRecord(str(cache_dir))
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PrefetchError(f"{path}: unreadable ({exc}); delete it and prefetch again") from None
    if raw.get("format") != RECORD_FORMAT:
        raise PrefetchError(f"{path}: not an hpc-forget prefetch record; use another --cache")
    return PrefetchRecord(str(cache_dir), [Item(**i) for i in raw.get("items", [])])


def write_record(rec: PrefetchRecord) -> None:
    path = Path(rec.cache_dir) / RECORD
    data = {"format": RECORD_FORMAT, "version": 1, "items": [asdict(i) for i in rec.items]}
    write_json(path, data)


# --------------------------------------------------------------------------------------------
# hashing and verification


def verify_model_folder(folder: Path, what: str) -> None:
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    if "config.json" not in names:
        raise PrefetchError(f"{what}: {folder} has no config.json; fetch the model again")
    if not any(p.match(g) for p in folder.iterdir() for g in _WEIGHTS):
        raise PrefetchError(f"{what}: {folder} has no weights (*.safetensors); fetch it again")
    if not names & set(_TOKENIZER):
        raise PrefetchError(f"{what}: {folder} has no tokenizer files; fetch the model again")


def _check_massive_row(line: bytes, where: str) -> None:
    try:
        row = json.loads(line)
    except ValueError:
        raise PrefetchError(
            f"{where}: the first row is not JSON; the download is damaged"
        ) from None
    missing = {"id", "locale", "partition", "annot_utt"} - set(row)
    if missing:
        raise PrefetchError(f"{where}: rows lack {sorted(missing)}; is this MASSIVE 1.1?")


def verify_massive_tarball(path: Path, locales: Iterable[str]) -> None:
    """Every wanted ``<locale>.jsonl`` is in the archive and its first row is a MASSIVE row."""
    wanted = set(locales)
    seen: set[str] = set()
    try:
        with tarfile.open(path, "r|*") as tar:
            for m in tar:
                base = m.name.rsplit("/", 1)[-1]
                loc = base[: -len(".jsonl")] if base.endswith(".jsonl") else None
                if m.isfile() and loc in wanted and loc not in seen:
                    fh = tar.extractfile(m)
                    _check_massive_row(fh.readline() if fh else b"", f"{path}[{m.name}]")
                    seen.add(loc)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise PrefetchError(f"{path}: not a readable tarball ({exc}); download it again") from None
    if wanted - seen:
        raise PrefetchError(
            f"{path}: has no {sorted(wanted - seen)[0]}.jsonl; check data.languages or the source"
        )


def verify_massive_folder(folder: Path, locales: Iterable[str]) -> None:
    for loc in locales:
        f = folder / f"{loc}.jsonl"
        if not f.is_file():
            raise PrefetchError(f"{folder}: has no {loc}.jsonl; prefetch again")
        with open(f, "rb") as fh:
            _check_massive_row(fh.readline(), str(f))


# --------------------------------------------------------------------------------------------
# models


def _repo_dir(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def _pin_main(cache: Path, repo_id: str, commit: str, revision: str | None = None) -> None:
    """Make offline loads resolve to ``commit``: loads without a revision (``refs/main``), or,
    for a config that pins a tag, branch or short hash, loads of that revision
    (``refs/<revision>``). A full commit hash needs no ref: its snapshot folder is named by it."""
    if revision is not None and _SHA_RE.match(revision):
        return
    refs = _repo_dir(cache, repo_id) / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    (refs / (revision or "main")).write_text(commit)


def cached_snapshot(cache: Path, repo_id: str, revision: str | None) -> Path | None:
    """The snapshot folder an offline load of ``repo_id`` at ``revision`` reads (as
    huggingface_hub resolves it: a full commit names the folder, anything else is a ref), if it
    holds a config.json."""
    repo = _repo_dir(cache, repo_id)
    if revision is not None and _SHA_RE.match(revision):
        commit = revision
    else:
        try:
            commit = (repo / "refs" / (revision or "main")).read_text().strip()
        except OSError:
            return None
    snap = repo / "snapshots" / commit
    return snap if (snap / "config.json").is_file() else None


def _model_from_folder(
    spec: str, repo_id: str, folder: Path, cache: Path, revision: str | None = None
) -> Item:
    """Copy a local model folder into the Hub cache layout under a content-hash commit (or
    under the full commit hash the config pins: the mirror stands for that revision)."""
    verify_model_folder(folder, f"model {spec}")
    digest, n, size = tree_digest(folder)
    if revision is not None and _SHA_RE.match(revision):
        commit = revision
    else:
        commit = hashlib.sha1(digest.encode()).hexdigest()  # 40 hex like a git commit
    snap = _repo_dir(cache, repo_id) / "snapshots" / commit
    if not snap.is_dir():
        snap.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{commit}-", dir=snap.parent))
        try:
            shutil.copytree(folder, tmp, dirs_exist_ok=True, symlinks=False)
            os.replace(tmp, snap)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    _pin_main(cache, repo_id, commit, revision)
    return Item("model", spec, str(folder.absolute()), commit, str(snap.relative_to(cache)),
                digest, n, size, utc_now())  # fmt: skip


def _model_from_hub(
    spec: str, repo_id: str, revision: str | None, cache: Path, pinned: str | None = None
) -> Item:
    """``revision``: what to fetch; ``pinned``: the revision the config names (if any)."""
    from hpc_forget.errors import ModelError
    from hpc_forget.models.hub import prefetch_model, split_spec

    try:
        name, _ = split_spec(spec)
        path = Path(prefetch_model(name, cache_dir=str(cache), revision=revision))
    except ModelError as exc:
        raise PrefetchError(str(exc)) from None
    commit = path.name
    if not _SHA_RE.match(commit):
        raise PrefetchError(f"model {spec}: unexpected snapshot folder {path}")
    verify_model_folder(path, f"model {spec}")
    _pin_main(cache, repo_id, commit, pinned)
    digest, n, size = tree_digest(path)
    return Item("model", spec, f"hub:{repo_id}", commit, os.path.relpath(path, cache), digest,
                n, size, utc_now())  # fmt: skip


# --------------------------------------------------------------------------------------------
# data


def _split_sha(url: str) -> tuple[str, str | None]:
    """``URL#sha256=HEX`` -> (URL, HEX)."""
    base, _, frag = url.partition("#")
    m = re.fullmatch(r"sha256=([0-9a-fA-F]{64})", frag)
    return base, (m.group(1).lower() if m else None)


def _download(url: str, dest_dir: Path, expected: str | None) -> tuple[Path, str, int]:
    """Stream ``url`` into ``dest_dir`` (atomic rename), checking sha256."""
    name = Path(urllib.parse.urlparse(url).path).name or "massive.tar.gz"
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / name
    h, size = hashlib.sha256(), 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=dest_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                out.write(chunk)
                h.update(chunk)
                size += len(chunk)
        digest = h.hexdigest()
        if expected and digest != expected:
            raise PrefetchError(
                f"{url}: sha256 {digest} but {expected} was expected; the download is damaged"
                " or the source changed"
            )
        os.replace(tmp, final)
    except OSError as exc:  # URLError is an OSError
        raise PrefetchError(f"{url}: cannot download ({getattr(exc, 'reason', exc)})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return final, digest, size


def _data_from_url(
    spec: str, url: str, cache: Path, locales: list[str], rec: PrefetchRecord
) -> Item:
    base, expected = _split_sha(url)
    expected = expected or KNOWN_SHA256.get(base)
    old = rec.find("data", spec)
    if old is not None and old.source == base and (cache / old.path).is_file():
        # fetched before: verify instead of downloading again
        expected = expected or old.sha256
        if sha256_file(cache / old.path) == expected:
            verify_massive_tarball(cache / old.path, locales)
            return old
    path, digest, size = _download(base, cache / "massive", expected)
    verify_massive_tarball(path, locales)
    return Item("data", spec, base, "", str(path.relative_to(cache)), digest, 1, size, utc_now())


def parquet_to_jsonl(folder: Path, out: Path, locales: list[str]) -> None:
    """The Hub's parquet form (``<locale>/<split>/*.parquet``) as ``<locale>.jsonl`` files."""
    import pyarrow.parquet as pq

    splits = {"train": "train", "validation": "dev", "dev": "dev", "test": "test"}
    out.mkdir(parents=True, exist_ok=True)
    for loc in locales:
        files = sorted((folder / loc).glob("*/*.parquet")) if (folder / loc).is_dir() else []
        if not files:
            raise PrefetchError(
                f"{folder}: the Hub's parquet form has no {loc}; check data.languages"
            )
        tmp = out / f".{loc}.jsonl.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            for pf in files:
                split = splits.get(pf.parent.name, pf.parent.name)
                for row in pq.read_table(pf).to_pylist():
                    keep = {k: row[k] for k in ("id", "locale", "utt", "annot_utt") if k in row}
                    keep["partition"] = split
                    keep.setdefault("locale", loc)
                    for k in ("scenario", "intent"):
                        if k in row:
                            keep[k] = row[k]
                    f.write(json.dumps(keep, ensure_ascii=False) + "\n")
        os.replace(tmp, out / f"{loc}.jsonl")


def _data_from_hub(
    spec: str, repo_id: str, cache: Path, locales: list[str], local: Path | None
) -> Item:
    """The Hub's parquet conversion of MASSIVE (or a local copy of it), as JSONL per locale."""
    if local is None:
        from huggingface_hub import snapshot_download

        try:
            snap = Path(
                snapshot_download(
                    repo_id,
                    repo_type="dataset",
                    revision=MASSIVE_HUB_REVISION,
                    cache_dir=str(cache),
                    allow_patterns=[f"{loc}/*" for loc in locales],
                )
            )
        except Exception as exc:  # noqa: BLE001 - any hub failure becomes one line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise PrefetchError(
                f"dataset {repo_id}: cannot download ({first}); run prefetch where there is internet"
            ) from None
        revision, source = snap.name, f"hub:{repo_id}@{MASSIVE_HUB_REVISION}"
    else:
        snap, revision, source = local, "", str(local.absolute())
    digest, n, size = tree_digest(snap)
    out = cache / "massive" / f"hub-{digest[:12]}"
    if not all((out / f"{loc}.jsonl").is_file() for loc in locales):
        parquet_to_jsonl(snap, out, locales)
    verify_massive_folder(out, locales)
    return Item(
        "data", spec, source, revision, str(out.relative_to(cache)), digest, n, size, utc_now()
    )


# --------------------------------------------------------------------------------------------
# the command


def prefetch(
    cfg: Any,
    cache_dir: str | os.PathLike | None = None,
    *,
    sources: Mapping[str, str] | None = None,
    revisions: Mapping[str, str] | None = None,
    update: bool = False,
) -> PrefetchRecord:
    """Fetch, verify and record every model and data set ``cfg`` needs from the network.

    ``sources`` overrides where an item comes from: ``{"massive": URL or folder}`` for the data
    (a ``file://`` or ``https://`` tarball, optionally ``#sha256=HEX``; a folder of the Hub's
    parquet form), ``{MODEL_SPEC: folder}`` for a model mirror. ``revisions`` pins a model
    (``{spec: commit}``); otherwise the revision recorded by an earlier prefetch is fetched
    again (``update=True`` takes the Hub's ``main`` now).
    """
    from hpc_forget.models.hub import hub_id, split_spec

    cache = Path(cache_dir).absolute() if cache_dir is not None else Path(default_cache(cfg))
    if cfg.cache_dir and Path(cfg.cache_dir).absolute() != cache:
        raise PrefetchError(
            f"--cache {cache}: the config sets cache_dir {cfg.cache_dir}, where jobs will look;"
            " pass that directory (or change cache_dir in the config)"
        )
    sources = dict(sources or {})
    revisions = dict(revisions or {})
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PrefetchError(
            f"--cache {cache}: cannot create the cache folder ({exc.strerror or exc}); choose a"
            " writable folder that the compute nodes can read"
        ) from None
    rec = read_record(cache)
    locales = list(cfg.data.languages)
    for spec in cfg.models:
        _, pinned = split_spec(spec)  # NAME@REVISION in the config
        if spec in sources:
            mirror = Path(sources[spec]).expanduser()
            rec.put(_model_from_folder(spec, hub_id(spec), mirror, cache, pinned))
        elif model_needs_fetch(spec):
            old = rec.find("model", spec)
            # a commit the config pins > the recorded one (a lock) > a tag/branch the config names
            full = pinned if pinned and _SHA_RE.match(pinned) else None
            locked = old.revision if old and not update else None
            pin = revisions.get(spec) or full or locked or pinned
            rec.put(_model_from_hub(spec, hub_id(spec), pin, cache, pinned))
        write_record(rec)
    src = cfg.data.source
    override = sources.get(DATA_KEY)
    if override is not None or data_needs_fetch(src):
        where = override or src
        if is_url(where):
            rec.put(_data_from_url(src, where, cache, locales, rec))
        elif Path(where).expanduser().is_dir():
            rec.put(_data_from_hub(src, MASSIVE_HUB, cache, locales, Path(where).expanduser()))
        else:
            repo = where[3:] if where.startswith("hf:") else where
            rec.put(_data_from_hub(src, repo, cache, locales, None))
        write_record(rec)
    write_record(rec)
    return rec


# --------------------------------------------------------------------------------------------
# job time


def check_prefetched(cfg: Any, cache_dir: str | os.PathLike | None) -> Any:
    """Before a job runs: every networked item of ``cfg`` is in the cache. Returns the config
    with ``data.source`` pointing at the cached copy when the data was prefetched; raises
    PrefetchError naming the prefetch command otherwise."""
    import dataclasses

    from hpc_forget.models.hub import hub_id, split_spec

    cache = Path(cache_dir) if cache_dir is not None else Path(default_cache(cfg))
    hint = prefetch_hint(cfg.name, str(cache))
    rec = read_record(cache) if (cache / RECORD).is_file() else PrefetchRecord(str(cache))
    for spec in cfg.models:
        if not model_needs_fetch(spec):
            continue
        _, pinned = split_spec(spec)
        # the snapshot the job's offline load will read (at the pinned revision, if any)
        if cached_snapshot(cache, hub_id(spec), pinned) is None:
            at = f" at revision {pinned}" if pinned else ""
            raise PrefetchError(
                f"model {spec} is not in the cache {cache}{at} and jobs have no internet: {hint}"
            )
    src = cfg.data.source
    if data_needs_fetch(src):
        item = rec.find("data", src)
        if item is None or not (cache / item.path).exists():
            raise PrefetchError(
                f"data {src} is not in the cache {cache} and jobs have no internet: {hint}"
            )
        cfg = dataclasses.replace(
            cfg, data=dataclasses.replace(cfg.data, source=str(cache / item.path))
        )
    return cfg
