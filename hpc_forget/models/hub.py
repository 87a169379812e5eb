"""Model specs, presets and offline mode; loading tokenizers, models and configs from the Hub, a
local folder or a preset; ``prefetch_model``. Every user-facing failure is a one-line
``ModelError`` (docs/models.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hpc_forget.errors import ModelError, first_line
from hpc_forget.models.params import (
    PRESET_SPECS,
    PRESETS,
    preset_config,
)

if TYPE_CHECKING:  # heavy imports stay lazy where the module is only imported for a name
    from transformers import (
        PretrainedConfig,
        PreTrainedModel,
        PreTrainedTokenizerBase,
        XLMRobertaConfig,
    )

log = logging.getLogger(__name__)


TINY = "tiny"  # the preset that builds a tiny model from the run's own training texts


# ---------------------------------------------------------------------------------------------
# Specs, presets and offline mode
# ---------------------------------------------------------------------------------------------

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def split_spec(spec: str) -> tuple[str, str | None]:
    """``NAME@REVISION`` -> (NAME, REVISION); an existing folder (even with ``@`` in its name) and
    a spec without ``@`` -> (spec, None). See config.split_revision."""
    from hpc_forget.study.config import split_revision

    if "@" not in spec or Path(spec).expanduser().exists():
        return spec, None
    return split_revision(spec)


def hub_id(spec: str) -> str:
    """The hub id or path a spec stands for (a preset name becomes its hub id; a pinned
    ``@REVISION`` is dropped: see split_spec)."""
    name, _ = split_spec(spec)
    return PRESETS.get(name, name)


def pinned_revision(spec: str, revision: str | None) -> tuple[str, str | None]:
    """(name, revision) from a spec and an explicit revision; ModelError if they disagree."""
    name, pinned = split_spec(spec)
    if pinned and revision and pinned != revision:
        raise ModelError(
            f"model '{spec}' pins revision {pinned} but revision {revision} was asked for:"
            " name one revision"
        )
    if name == TINY and pinned:
        raise ModelError(
            f"model '{spec}': the 'tiny' preset is built locally and has no revision; write tiny"
        )
    return name, pinned or revision


def is_offline() -> bool:
    """True when HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set now (or was at import)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return env.strip().upper() in {"1", "ON", "YES", "TRUE"} or bool(constants.HF_HUB_OFFLINE)


def _looks_like_path(spec: str) -> bool:
    """True for specs that can only be paths ("/x", "./x", "~/x", "a/b/c"), not hub ids."""
    return spec.startswith(("/", ".", "~")) or "\\" in spec or not _HUB_ID.match(spec)


def _local_dir(spec: str) -> Path | None:
    """The folder a spec names, None for a hub id; ModelError for a path that does not exist."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelError(
            f"model path '{spec}' is a file, not a folder: point at the folder that holds "
            "config.json and the weights"
        )
    if _looks_like_path(spec):
        raise ModelError(
            f"model path '{spec}' does not exist: check the path, or use a hub id such as "
            f"{PRESETS['xlm-roberta-base']!r} or a preset ({', '.join(sorted(PRESETS))})"
        )
    return None


def _cache_name(cache_dir: str | os.PathLike | None) -> str:
    if cache_dir is not None:
        return str(cache_dir)
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _not_offline_message(name: str, reason: str) -> str:
    return (
        f"model '{name}' is not available offline ({reason}): fetch it once on a login node "
        f"with `hpc-forget prefetch CONFIG --cache DIR` (or `huggingface-cli download {name}`)"
    )


def _why(exc: BaseException) -> str:
    """The first line of a loading failure, uncut, without its final full stop."""
    return first_line(exc, None).rstrip(".")


def _resolve_source(
    spec: str, *, cache_dir: str | os.PathLike | None, revision: str | None
) -> tuple[str, bool, str | None]:
    """Where from_pretrained should read `spec`: (path or hub id, is_local, revision).

    A ``NAME@REVISION`` spec pins the revision (a commit hash, tag or branch).

    In offline mode a hub id is resolved to its snapshot folder in the cache first, so that a
    missing model fails at once (transformers would otherwise still probe the network for
    optional files) and loading never touches the network.
    """
    spec, revision = pinned_revision(spec, revision)
    if spec == TINY:
        raise ModelError(
            "the 'tiny' preset is built from the run's own training texts: call "
            "resolve_model_spec('tiny', texts_fn=..., cache_dir=...) and load the folder it returns"
        )
    if spec not in PRESETS and (local := _local_dir(spec)) is not None:
        return str(local), True, None
    name = hub_id(spec)
    if is_offline():
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            path = snapshot_download(
                name, cache_dir=cache_dir, revision=revision, local_files_only=True
            )
        except (LocalEntryNotFoundError, OSError, ValueError):
            reason = f"HF_HUB_OFFLINE is set and it is not in the cache {_cache_name(cache_dir)}"
            if revision:
                reason += f" at revision {revision}"
            raise ModelError(_not_offline_message(name, reason)) from None
        return str(path), True, revision
    return name, False, revision


def _load_failed(spec: str, source: str, is_local: bool, exc: BaseException) -> ModelError:
    name = hub_id(spec)
    if is_local:
        return ModelError(
            f"cannot load model folder '{source}' ({_why(exc)}): point at a folder "
            "written by save_pretrained (config.json, weights, tokenizer files)"
        )
    return ModelError(
        f"cannot load model '{name}' from the Hugging Face Hub ({_why(exc)}): check the "
        "id and revision; on nodes without internet set HF_HUB_OFFLINE=1 and fetch it once on "
        f"a login node with `hpc-forget prefetch CONFIG --cache DIR` (or `huggingface-cli "
        f"download {name}`)"
    )


_JSON_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "generation_config.json",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
    "hpc_forget_tiny.json",
)
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "sentencepiece.bpe.model",
)
_MODEL_FILES = ("config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def _safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is unusable (header and size checked, data not read), or None."""
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes)"
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return f"is truncated ({size} bytes)"
        n = int.from_bytes(head, "little")
        if n > 100_000_000:
            return "is not a safetensors file (bad header length)"
        if 8 + n > size:
            return f"is truncated ({size} bytes, its header alone needs {8 + n})"
        try:
            header = json.loads(fh.read(n))
            end = max(
                (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
                default=0,
            )
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "is not a safetensors file (damaged header)"
    want = 8 + n + end
    if size < want:
        return f"is truncated ({size} of {want} bytes)"
    if size > want:
        return f"is damaged ({size - want} bytes more than its header describes)"
    return None


def _torch_bin_problem(path: Path) -> str | None:
    """Why a PyTorch .bin weights file is unusable (zip directory or pickle start), or None."""
    import zipfile

    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes)"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            return f"is damaged ({_why(exc)})"
        return None
    with path.open("rb") as fh:
        start = fh.read(2)
    if start[:1] != b"\x80":  # neither a zip (torch >= 1.6) nor a legacy pickle
        return "is truncated or not a PyTorch weights file (no zip directory)"
    return None


def _is_lfs_pointer(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(24) == b"version https://git-lfs."


def folder_problem(folder: str | os.PathLike, names: Iterable[str] | None = None) -> str | None:
    """Why the files of a model folder cannot be loaded, naming the file, or None.

    Checks, without loading anything: the JSON files parse, `.safetensors` files are as long
    as their header says, `.bin` files have a zip directory, no listed file is empty. `names`
    limits the check to those files (default: every known file, weights included).
    """
    folder = Path(folder)
    wanted = None if names is None else set(names)
    try:
        entries = sorted(p for p in folder.iterdir() if p.is_file())
    except OSError as exc:
        return f"cannot be listed ({exc.strerror})"
    for p in entries:
        name = p.name
        is_weights = name.endswith((".safetensors", ".bin"))
        if wanted is not None and name not in wanted and not (is_weights and "*" in wanted):
            continue
        try:
            if name in _JSON_FILES:
                data = p.read_bytes()
                if not data.strip():
                    return f"{name} is empty"
                try:
                    json.loads(data)
                except ValueError as exc:
                    return f"{name} is not valid JSON ({_why(exc)}: truncated or damaged)"
            elif is_weights and _is_lfs_pointer(p):
                return (
                    f"weights file {name} is a Git LFS pointer, not the weights (the folder was"
                    " cloned without git-lfs: run `git lfs pull` in it)"
                )
            elif name.endswith(".safetensors"):
                if why := _safetensors_problem(p):
                    return f"weights file {name} {why}"
            elif name.endswith(".bin") and name != "training_args.bin":
                if why := _torch_bin_problem(p):
                    return f"weights file {name} {why}"
            elif name == "sentencepiece.bpe.model" and p.stat().st_size == 0:
                return f"{name} is empty"
        except OSError as exc:
            return f"{name} cannot be read ({exc.strerror})"
    return None


def _damaged_fix(spec: str, folder: Path) -> str:
    """What to do about a damaged file in `folder` (the model that `spec` names)."""
    parts = folder.resolve().parts
    if "snapshots" in parts and folder.resolve().parent.name == "snapshots":
        repo = folder.resolve().parents[1]  # <cache>/models--Org--name: blobs live there too
        return (
            f"delete {repo} and fetch it again with `hpc-forget prefetch CONFIG --cache DIR`"
            " on a login node"
        )
    if folder.name.startswith("tiny-"):
        return f"delete {folder}; the next run rebuilds it"
    return (
        "copy the model folder again (or re-save it with save_pretrained); if `hpc-forget"
        " prefetch` wrote it, delete it and run the prefetch again"
    )


def _check_folder(spec: str, source: str, is_local: bool, names: Iterable[str]) -> None:
    """ModelError naming the damaged file of a local (or cached) model folder, if any."""
    if not is_local:
        return
    if (why := folder_problem(source, names)) is not None:
        raise ModelError(f"model folder '{source}': {why} — {_damaged_fix(spec, Path(source))}")


def _loading_failed(
    spec: str,
    source: str,
    is_local: bool,
    exc: BaseException,
    cache_dir: str | os.PathLike | None = None,
) -> ModelError:
    """A failed from_pretrained as one line: the damaged file if a check finds one (for a hub
    id, in its cached snapshot), else the library's first line."""
    folder: str | None = source if is_local else None
    if folder is None and not isinstance(exc, OSError | ValueError | KeyError):
        with contextlib.suppress(Exception):
            from huggingface_hub import snapshot_download

            folder = snapshot_download(hub_id(spec), cache_dir=cache_dir, local_files_only=True)
    if folder is not None and (why := folder_problem(folder)) is not None:
        return ModelError(f"model folder '{folder}': {why} — {_damaged_fix(spec, Path(folder))}")
    return _load_failed(spec, source, is_local, exc)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bars and load reports; restore the settings after."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_tokenizer(
    spec: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
) -> PreTrainedTokenizerBase:
    """Load the (fast) tokenizer of a hub id, a local folder or a preset.

    A folder holding only a SentencePiece `sentencepiece.bpe.model` (no tokenizer_config.json,
    no config.json) is read as an XLM-R tokenizer.
    """
    from transformers import AutoTokenizer, XLMRobertaTokenizerFast

    source, is_local, revision = _resolve_source(spec, cache_dir=cache_dir, revision=revision)
    cls: Any = AutoTokenizer
    folder = Path(source)
    if (
        is_local
        and not (folder / "tokenizer_config.json").exists()
        and not (folder / "config.json").exists()
        and (folder / "sentencepiece.bpe.model").exists()
    ):
        cls = XLMRobertaTokenizerFast
    kwargs: dict[str, Any] = {} if is_local else {"cache_dir": cache_dir, "revision": revision}
    _check_folder(spec, source, is_local, ("config.json", *_TOKENIZER_FILES))
    try:
        with quiet_transformers():
            tok = cls.from_pretrained(source, **kwargs)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception for bad JSON
        raise _loading_failed(spec, source, is_local, exc, cache_dir) from None
    if not tok.is_fast:
        raise ModelError(
            f"tokenizer of '{spec}' is not a fast tokenizer: label alignment needs word_ids(); "
            "install `tokenizers` and use a model with a tokenizer.json"
        )
    return tok


def load_model(
    spec: str,
    labels: Sequence[str],
    *,
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
    seed: int = 0,
) -> PreTrainedModel:
    """A token-classification model with a fresh classifier for `labels`.

    The classifier head is initialised under `torch.manual_seed(seed)` inside a forked RNG, so
    it is the same for the same seed and the caller's RNG state is left alone.
    """
    return _load_model_info(spec, labels, cache_dir=cache_dir, revision=revision, seed=seed)[0]


def _load_model_info(
    spec: str,
    labels: Sequence[str],
    *,
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
    seed: int = 0,
) -> tuple[PreTrainedModel, tuple[str, ...]]:
    """load_model, and the names of the modules from_pretrained initialised at random (the
    weights missing from, or mis-shaped in, the checkpoint: the classifier)."""
    from transformers import AutoModelForTokenClassification

    labels = list(labels)
    if not labels or len(set(labels)) != len(labels):
        raise ModelError(
            f"labels for model '{spec}' must be a non-empty list without duplicates "
            f"(got {len(labels)}, {len(set(labels))} distinct): pass the dataset's label map"
        )
    source, is_local, revision = _resolve_source(spec, cache_dir=cache_dir, revision=revision)
    kwargs: dict[str, Any] = {} if is_local else {"cache_dir": cache_dir, "revision": revision}
    _check_folder(spec, source, is_local, (*_MODEL_FILES, "*"))
    try:
        with torch.random.fork_rng(devices=[]), quiet_transformers():
            torch.manual_seed(seed)
            model, info = AutoModelForTokenClassification.from_pretrained(
                source,
                num_labels=len(labels),
                id2label=dict(enumerate(labels)),
                label2id={label: i for i, label in enumerate(labels)},
                ignore_mismatched_sizes=True,  # a saved classifier of another size is replaced
                output_loading_info=True,
                **kwargs,
            )
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - SafetensorError, torch's RuntimeError, ...
        raise _loading_failed(spec, source, is_local, exc, cache_dir) from None

    def encoder_keys(kind: str) -> list[str]:
        keys = (k[0] if isinstance(k, tuple) else k for k in info.get(kind, ()))
        return sorted(k for k in keys if not k.startswith("classifier."))

    for kind, what in (("missing_keys", "missing from"), ("mismatched_keys", "mis-shaped in")):
        if keys := encoder_keys(kind):
            log.warning(
                "model '%s': %d encoder weights are %s the checkpoint and were randomly "
                "initialised (%s%s)",
                spec,
                len(keys),
                what,
                ", ".join(keys[:3]),
                ", ..." if len(keys) > 3 else "",
            )
    fresh = {
        (k[0] if isinstance(k, tuple) else k).rsplit(".", 1)[0]
        for kind in ("missing_keys", "mismatched_keys")
        for k in info.get(kind, ())
    }
    return model, tuple(sorted(fresh))


class BaseModels:
    """Base models read from disk once per process: a packed array element (docs/slurm.md,
    "Packed arrays") runs many tasks on one model, and reading XLM-R again for each costs
    more than some of their steps.

    ``fresh(spec, labels, seed=...)`` returns what ``load_model(spec, labels, seed=seed)``
    returns, weight for weight: a deep copy of the pristine model loaded the first time, with
    the modules from_pretrained initialises at random (the classifier) initialised again by
    the same ``initialize_weights`` traversal under ``torch.manual_seed(seed)`` in a forked RNG,
    as from_pretrained does (tests/models/test_hub.py compares the two). ``loads`` counts
    the reads from disk."""

    def __init__(self) -> None:
        self._held: dict[tuple, tuple[PreTrainedModel, tuple[str, ...]]] = {}
        self.loads = 0

    def fresh(
        self,
        spec: str,
        labels: Sequence[str],
        *,
        cache_dir: str | os.PathLike | None = None,
        revision: str | None = None,
        seed: int = 0,
    ) -> PreTrainedModel:
        import copy

        key = (spec, tuple(labels), str(cache_dir), revision)
        if key not in self._held:
            model, fresh = _load_model_info(
                spec, labels, cache_dir=cache_dir, revision=revision, seed=seed
            )
            self.loads += 1
            self._held[key] = (copy.deepcopy(model), fresh)
            return model
        pristine, fresh = self._held[key]
        model = copy.deepcopy(pristine)
        names = set(fresh)
        for name, module in model.named_modules():
            module._is_hf_initialized = name not in names
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            model.initialize_weights()
        for _, module in model.named_modules():
            module._is_hf_initialized = True
        return model


def load_config(
    spec: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
    num_labels: int | None = None,
) -> PretrainedConfig:
    """The model config of a spec; presets and "tiny" come from built-in values (no download)."""
    from transformers import AutoConfig

    extra = {} if num_labels is None else {"num_labels": num_labels}
    name, _ = pinned_revision(spec, revision)
    if name in PRESETS:
        return AutoConfig.for_model(PRESET_SPECS[name].model_type, **preset_config(name), **extra)
    if name == TINY:
        return tiny_config(4000, num_labels or 2)
    source, is_local, revision = _resolve_source(spec, cache_dir=cache_dir, revision=revision)
    kwargs: dict[str, Any] = {} if is_local else {"cache_dir": cache_dir, "revision": revision}
    _check_folder(spec, source, is_local, ("config.json",))
    try:
        with quiet_transformers():
            return AutoConfig.from_pretrained(source, **kwargs, **extra)
    except (OSError, ValueError, KeyError) as exc:
        raise _loading_failed(spec, source, is_local, exc, cache_dir) from None


def prefetch_model(
    spec: str, *, cache_dir: str | os.PathLike | None = None, revision: str | None = None
) -> str:
    """Download a hub model's config, tokenizer and safetensors weights into the cache.

    Returns the local folder. Local paths and "tiny" need nothing and are returned as they are.
    A ``NAME@REVISION`` spec fetches that revision.
    """
    spec, revision = pinned_revision(spec, revision)
    if spec == TINY:
        return spec
    local = None if spec in PRESETS else _local_dir(spec)
    if local is not None:
        return str(local)
    from huggingface_hub import snapshot_download

    name = hub_id(spec)
    if is_offline():
        raise ModelError(
            f"cannot prefetch model '{name}': HF_HUB_OFFLINE is set; unset it on a node with "
            "internet (a login node) and run the prefetch there"
        )
    try:
        return snapshot_download(
            name,
            cache_dir=cache_dir,
            revision=revision,
            allow_patterns=[
                "config.json",
                "tokenizer.json",
                "tokenizer_config.json",
                "special_tokens_map.json",
                "sentencepiece.bpe.model",
                "*.safetensors",
                "*.safetensors.index.json",
            ],
        )
    except Exception as exc:  # noqa: BLE001 - any hub failure becomes one line
        raise ModelError(
            f"cannot prefetch model '{name}' ({_why(exc)}): check the id and revision, "
            "and run the prefetch on a node with internet (a login node)"
        ) from None


def tiny_config(
    vocab_size: int,
    num_labels: int,
    *,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 2,
    intermediate: int = 128,
    max_positions: int = 130,
) -> XLMRobertaConfig:
    """An XLM-R config of toy size (max_positions = max_length + 2: XLM-R positions start at 2)."""
    from transformers import XLMRobertaConfig

    if hidden % heads:
        raise ModelError(
            f"tiny model hidden size {hidden} is not a multiple of heads {heads}: "
            "choose hidden = k * heads"
        )
    return XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_positions,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=num_labels,
    )
