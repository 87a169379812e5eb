"""Models: tokenizer/model loading, tiny models, sub-word label alignment, LoRA, parameter counts.

See docs/models.md. Everything that touches the Hugging Face Hub goes through `load_tokenizer`,
`load_model`, `load_config` and `prefetch_model`; every user-facing failure is a one-line
`ModelError`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hpc_forget import files
from hpc_forget.errors import ModelError
from hpc_forget.models.params import (  # noqa: F401 - PAPER_TABLE1, Row, format_params: re-exported
    PAPER_TABLE1,
    PRESETS,
    XLMR_BASE_CONFIG,
    Counts,
    Row,
    build_rows,
    format_params,
    is_xlmr_base_shape,
    lora_ranks,
)

if TYPE_CHECKING:  # heavy imports stay lazy where the module is only imported for a name
    from peft import PeftModel
    from transformers import (
        PretrainedConfig,
        PreTrainedModel,
        PreTrainedTokenizerBase,
        XLMRobertaConfig,
    )

log = logging.getLogger(__name__)

TINY = "tiny"  # the preset that builds a tiny model from the run's own training texts

TINY_MARKER = "hpc_forget_tiny.json"  # how the tiny model was built; written last
_TINY_FORMAT = 2  # bump when build_tiny's output changes, so cached tiny models are rebuilt
_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # XLM-R ids 0..3; <mask> is the last id


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


def _revision(spec: str, revision: str | None) -> tuple[str, str | None]:
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__).rstrip(".")


def _resolve_source(
    spec: str, *, cache_dir: str | os.PathLike | None, revision: str | None
) -> tuple[str, bool, str | None]:
    """Where from_pretrained should read `spec`: (path or hub id, is_local, revision).

    A ``NAME@REVISION`` spec pins the revision (a commit hash, tag or branch).

    In offline mode a hub id is resolved to its snapshot folder in the cache first, so that a
    missing model fails at once (transformers would otherwise still probe the network for
    optional files) and loading never touches the network.
    """
    spec, revision = _revision(spec, revision)
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
            f"cannot load model folder '{source}' ({_first_line(exc)}): point at a folder "
            "written by save_pretrained (config.json, weights, tokenizer files)"
        )
    return ModelError(
        f"cannot load model '{name}' from the Hugging Face Hub ({_first_line(exc)}): check the "
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
            return f"is damaged ({_first_line(exc)})"
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
                    return f"{name} is not valid JSON ({_first_line(exc)}: truncated or damaged)"
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
def _quiet_transformers() -> Iterator[None]:
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
        with _quiet_transformers():
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
        with torch.random.fork_rng(devices=[]), _quiet_transformers():
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
    return model


def load_config(
    spec: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
    num_labels: int | None = None,
) -> PretrainedConfig:
    """The model config of a spec; presets and "tiny" come from built-in values (no download)."""
    from transformers import AutoConfig, XLMRobertaConfig

    extra = {} if num_labels is None else {"num_labels": num_labels}
    name, _ = _revision(spec, revision)
    if name in PRESETS:
        return XLMRobertaConfig(**XLMR_BASE_CONFIG, **extra)
    if name == TINY:
        return tiny_config(4000, num_labels or 2)
    source, is_local, revision = _resolve_source(spec, cache_dir=cache_dir, revision=revision)
    kwargs: dict[str, Any] = {} if is_local else {"cache_dir": cache_dir, "revision": revision}
    _check_folder(spec, source, is_local, ("config.json",))
    try:
        with _quiet_transformers():
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
    spec, revision = _revision(spec, revision)
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
            f"cannot prefetch model '{name}' ({_first_line(exc)}): check the id and revision, "
            "and run the prefetch on a node with internet (a login node)"
        ) from None


# ---------------------------------------------------------------------------------------------
# Tiny models
# ---------------------------------------------------------------------------------------------


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


def _canonical_texts(texts: Iterable[str]) -> list[str]:
    return sorted({t for t in texts if t and t.strip()})


def _canonical_vocab(pieces: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Make a trained Unigram vocabulary bit-for-bit reproducible.

    `tokenizers`' Unigram trainer returns the same pieces for the same input, but (a) scores
    differ in the last bits between runs (hash-ordered float sums) and (b) rare characters that
    EM pruned are appended with scores min_score + k*1e-4 in hash order. We round scores to
    5 decimals, give every single character in the bottom band one common score (they are only
    used where no longer piece covers a character, so their order does not matter), and sort
    by (score desc, piece).
    """
    lowest = min(score for _, score in pieces)
    floor = round(lowest, 3) - 0.01
    out = []
    for piece, score in pieces:
        if len(piece) == 1 and score < lowest + 0.05:
            out.append((piece, floor))
        else:
            out.append((piece, round(score, 5)))
    return sorted(out, key=lambda ps: (-ps[1], ps[0]))


def train_tokenizer(
    texts: Iterable[str], out_dir: str | os.PathLike, vocab_size: int = 4000
) -> PreTrainedTokenizerBase:
    """Train an XLM-R-style SentencePiece Unigram tokenizer on `texts`; save it to `out_dir`.

    Whitespace split + Metaspace ("▁", always prepended) like XLM-R, no normaliser; ids
    <s>=0 <pad>=1 </s>=2 <unk>=3, <mask> last. `vocab_size` is an upper bound (Unigram may
    stop short on small data). The input is deduplicated and sorted, and the result is
    canonicalised, so the same texts give byte-identical files.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import XLMRobertaTokenizerFast

    corpus = _canonical_texts(texts)
    if not corpus:
        raise ModelError(
            "no texts to train the tiny tokenizer on: give build_tiny/train_tokenizer "
            "the training utterances"
        )
    trainer_tok = Tokenizer(models.Unigram())
    trainer_tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"),
        ]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=max(vocab_size - 1, len(_SPECIALS) + 1),  # room for <mask>
        special_tokens=list(_SPECIALS),
        unk_token="<unk>",
        show_progress=False,
    )
    trainer_tok.train_from_iterator(corpus, trainer)
    trained = json.loads(trainer_tok.to_str())["model"]["vocab"]
    pieces = [(p, float(s)) for p, s in trained if p not in _SPECIALS and p != "<mask>"]
    vocab = [(s, 0.0) for s in _SPECIALS] + _canonical_vocab(pieces) + [("<mask>", 0.0)]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with _quiet_transformers():
        tok = XLMRobertaTokenizerFast(vocab=vocab, model_max_length=512)
        tok.save_pretrained(str(out))
        return XLMRobertaTokenizerFast.from_pretrained(str(out))


# Masked-language-model pretraining of the tiny model. The paper's LoRA adapts a *pretrained*
# encoder, so the tiny preset plays one: a few hundred MLM steps on the study's own training
# texts (see docs/models.md for what it does and does not fix). A step budget, not epochs,
# bounds the cost whatever the corpus size (600 steps: ~20 s on one CPU thread).
TINY_MLM_STEPS = 600  # default optimizer steps of MLM pretraining (0 = keep the random init)
_MLM: dict[str, Any] = {
    "batch_size": 64,
    "lr": 3e-3,  # AdamW; 5e-3 with batch 32 collapsed the encoder in a trial
    "warmup": 0.06,  # fraction of the steps, then linear decay to 0
    "weight_decay": 0.01,
    "betas": (0.9, 0.98),
    "max_grad_norm": 1.0,
    "mask_prob": 0.15,  # of the non-special tokens; of those 80% <mask>, 10% random, 10% kept
    "max_length": 128,
    "dropout": 0.0,  # while pretraining only (faster on CPU); the saved config keeps 0.1
}


@contextlib.contextmanager
def _one_cpu_thread() -> Iterator[None]:
    """Run torch on one CPU thread (bit-reproducible reductions; restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _mask_tokens(
    ids: torch.Tensor,
    special: torch.Tensor,
    *,
    mask_id: int,
    first_normal: int,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: (inputs, labels); labels are -100 except at the chosen positions."""
    p = _MLM["mask_prob"]
    chosen = (torch.rand(ids.shape, generator=gen) < p) & ~special
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = torch.rand(ids.shape, generator=gen)
    random_ids = torch.randint(first_normal, mask_id, ids.shape, generator=gen)
    inputs = torch.where(chosen & (roll < 0.8), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_ids, inputs)
    return inputs, labels


def pretrain_mlm(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    steps: int,
    seed: int,
) -> list[float]:
    """Train an `XLMRobertaForMaskedLM` in place for `steps` optimizer steps on `texts`, on CPU.

    Length-grouped batches of `_MLM["batch_size"]` in a seeded order (epochs repeat with new
    orders until `steps` is reached); masking 15% of the non-special tokens (80% <mask>,
    10% random, 10% unchanged) from a seeded generator; AdamW with linear warmup and decay.
    The LM head only scores the masked positions. The caller fixes torch's RNG (dropout) and
    the thread count. Returns the mean loss of each pass over the data (rounded).
    """
    from transformers import get_linear_schedule_with_warmup

    from hpc_forget.data.batching import train_batches

    max_length = min(_MLM["max_length"], tokenizer.model_max_length)  # fits the positions
    ids = tokenizer(
        list(texts), truncation=True, max_length=max_length, return_attention_mask=False
    )["input_ids"]
    lengths = [len(x) for x in ids]
    pad_id, mask_id = tokenizer.pad_token_id, tokenizer.mask_token_id
    first_normal = len(_SPECIALS)  # ids 0..3 are specials, <mask> is the last id
    gen = torch.Generator().manual_seed(seed)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "LayerNorm" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "LayerNorm" not in n)]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": _MLM["weight_decay"]},
            {"params": other, "weight_decay": 0.0},
        ],
        lr=_MLM["lr"],
        betas=_MLM["betas"],
        foreach=False,
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(_MLM["warmup"] * steps), steps)
    model.train()
    losses: list[float] = []
    step = epoch = 0
    while step < steps:
        total, n = 0.0, 0
        for idx in train_batches(lengths, _MLM["batch_size"], seed=seed * 1_000_003 + epoch):
            if step >= steps:
                break
            width = max(lengths[i] for i in idx)
            batch = torch.full((len(idx), width), pad_id, dtype=torch.long)
            for row, i in enumerate(idx):
                batch[row, : lengths[i]] = torch.tensor(ids[i])
            special = batch < first_normal
            inputs, labels = _mask_tokens(
                batch, special, mask_id=mask_id, first_normal=first_normal, gen=gen
            )
            where = labels != -100
            if not bool(where.any()):
                continue
            hidden = model.roberta(
                input_ids=inputs, attention_mask=(batch != pad_id).long()
            ).last_hidden_state
            logits = model.lm_head(hidden[where])
            loss = nn.functional.cross_entropy(logits, labels[where])
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), _MLM["max_grad_norm"])
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            total += float(loss.detach())
            n += 1
            step += 1
        if not n:  # no token can be masked (texts of specials/<unk> only): nothing to learn
            break
        losses.append(round(total / n, 4))
        epoch += 1
    model.eval()
    return losses


def build_tiny(
    texts: Iterable[str],
    out_dir: str | os.PathLike,
    labels: Sequence[str],
    seed: int = 0,
    *,
    vocab_size: int = 4000,
    mlm_steps: int = TINY_MLM_STEPS,
    **cfg: int,
) -> Path:
    """Write a complete local model folder: tokenizer trained on `texts`, tiny XLM-R config,
    encoder weights initialised under `seed` and pretrained with masked-language modelling on
    `texts` for `mlm_steps` steps (0 = left random). `cfg` goes to `tiny_config` (hidden,
    layers, heads, intermediate, max_positions). The classifier is not saved: `load_model`
    adds one. Same texts and settings give byte-identical files on the same machine (one CPU
    thread, seeded masking and batch order).
    """
    from transformers import XLMRobertaForMaskedLM, XLMRobertaModel

    if isinstance(mlm_steps, bool) or not isinstance(mlm_steps, int) or mlm_steps < 0:
        raise ModelError(
            f"tiny model mlm_steps must be an integer >= 0 (got {mlm_steps!r}): 0 keeps the "
            "random initialisation"
        )
    out = Path(out_dir)
    corpus = _canonical_texts(texts)
    tok = train_tokenizer(corpus, out, vocab_size=vocab_size)
    labels = list(labels)
    config = tiny_config(len(tok), len(labels), **cfg)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    tok.model_max_length = config.max_position_embeddings - 2
    mlm_losses: list[float] = []
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]), _quiet_transformers(), _one_cpu_thread():
        torch.manual_seed(seed)
        if mlm_steps:
            pre = copy.deepcopy(config)
            pre.hidden_dropout_prob = pre.attention_probs_dropout_prob = _MLM["dropout"]
            mlm = XLMRobertaForMaskedLM(pre)
            mlm_losses = pretrain_mlm(mlm, tok, corpus, steps=mlm_steps, seed=seed)
            model = mlm.roberta
            model.config = config
        else:
            model = XLMRobertaModel(config, add_pooling_layer=False)
        model.save_pretrained(str(out))
        tok.save_pretrained(str(out))
    if mlm_steps:
        log.info(
            "tiny model: %d MLM steps on %d texts in %.1f s (loss per pass %s)",
            mlm_steps,
            len(corpus),
            time.perf_counter() - t0,
            mlm_losses,
        )
    info = {
        "format": _TINY_FORMAT,
        "seed": seed,
        "vocab_size_requested": vocab_size,
        "vocab_size": len(tok),
        "n_texts": len(corpus),
        "texts_sha256": _texts_digest(corpus),
        "config": {k: v for k, v in sorted(cfg.items())},
        "mlm": {"steps": mlm_steps, **_MLM, "loss_per_pass": mlm_losses},
    }
    # Written last and atomically: the tiny cache treats it as the "build complete" marker.
    marker = (json.dumps(info, indent=2, sort_keys=True) + "\n").encode()
    files.atomic_write_raw(out / TINY_MARKER, marker)  # an OSError is worded by cached_tiny
    return out


def _texts_digest(corpus: list[str]) -> str:
    return hashlib.sha256(json.dumps(corpus, ensure_ascii=False).encode()).hexdigest()


def tiny_key(
    texts: Iterable[str],
    labels: Sequence[str] = ("O",),
    *,
    vocab_size: int = 4000,
    mlm_steps: int = TINY_MLM_STEPS,
    **cfg: int,
) -> str:
    """12 hex digits identifying a tiny model built from these texts, labels and settings."""
    blob = json.dumps(
        {
            "format": _TINY_FORMAT,
            "texts": _texts_digest(_canonical_texts(texts)),
            "labels": list(labels),
            "vocab_size": vocab_size,
            "cfg": dict(sorted(cfg.items())),
            "mlm_steps": mlm_steps,
            "mlm": _MLM,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def resolve_model_spec(
    spec: str,
    *,
    texts_fn: Callable[[], Iterable[str]],
    cache_dir: str | os.PathLike,
    labels: Sequence[str] = ("O",),
    vocab_size: int = 4000,
    mlm_steps: int = TINY_MLM_STEPS,
    **cfg: int,
) -> str:
    """A spec `load_model`/`load_tokenizer` can load.

    "tiny" builds (once) a tiny model from `texts_fn()` into <cache_dir>/tiny-<hash> and
    returns that folder; the hash covers the texts, labels and settings (MLM steps included). The build goes to a
    temporary folder renamed into place, so concurrent workers never see half a model.
    Presets become hub ids (a pinned ``@REVISION`` is kept: ``FacebookAI/xlm-roberta-base@REV``);
    paths get "~" expanded; anything else is returned unchanged.
    """
    base, revision = _revision(spec, None)
    if base != TINY:
        name = hub_id(base)
        name = str(Path(name).expanduser()) if name.startswith("~") else name
        return f"{name}@{revision}" if revision else name
    texts = _canonical_texts(texts_fn())
    key = tiny_key(texts, labels, vocab_size=vocab_size, mlm_steps=mlm_steps, **cfg)
    final = Path(cache_dir).expanduser() / f"tiny-{key}"
    build = functools.partial(
        build_tiny, texts, labels=labels, vocab_size=vocab_size, mlm_steps=mlm_steps, **cfg
    )
    return str(cached_tiny(final, build))


def tiny_problem(folder: Path) -> str | None:
    """Why a tiny model cache folder cannot be used (half-written or damaged), or None."""
    marker = folder / TINY_MARKER
    if not marker.is_file():
        return f"no {TINY_MARKER} (the build did not finish)"
    return folder_problem(folder)


def cached_tiny(final: Path, build: Callable[[Path], Any]) -> Path:
    """`final` if it holds a complete, undamaged tiny model; otherwise build one into a
    temporary folder (`build(tmp)`) and rename it into place. A damaged or half-written
    folder is logged in one line and rebuilt; temporary folders of builders that died are
    removed; a full disk is one line and leaves nothing behind."""
    if final.is_dir():
        why = tiny_problem(final)
        if why is None:
            return final
        log.warning("tiny model cache %s is damaged (%s); rebuilding it", final, why)
        aside = files.tmp_name(final)  # a dead builder's name: never mistaken for the model
        with contextlib.suppress(OSError):
            os.rename(final, aside)
            shutil.rmtree(aside, ignore_errors=True)
    root = final.parent
    tmp = files.tmp_name(final)
    try:
        root.mkdir(parents=True, exist_ok=True)
        files.clean_stale_tmp(root, lambda name: name == final.name)
        tmp.mkdir()
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if tiny_problem(final) is not None:  # not a lost race: a real failure
                raise
    except Exception as exc:
        if isinstance(exc, ModelError) or not files.is_write_failure(exc):
            raise
        raise ModelError(
            files.write_error_message(
                exc, final, "the tiny model cache", "set cache_dir to a folder with space"
            )
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


@functools.cache
def resolved_revision(path: str, cache_dir: str | None = None) -> str:
    """Which weights a resolved spec (what resolve_model_spec returned) stands for, for the
    provenance of every score: the commit hash of a Hub model (its snapshot folder in the
    cache, as loaded offline or downloaded by from_pretrained), ``"tiny-<sha256 of the files,
    16 hex>"`` for a tiny model, ``"local"`` for a plain folder, the pinned revision (or
    ``"unknown"``) when the cache holds no snapshot of it."""
    name, revision = split_spec(path)
    folder = Path(name).expanduser()
    if folder.is_dir():
        if folder.parent.name == "snapshots" and _COMMIT_RE.match(folder.name):
            return folder.name
        if (folder / "hpc_forget_tiny.json").is_file():
            return f"tiny-{files.tree_digest(folder)[0][:16]}"
        return "local"
    from huggingface_hub import snapshot_download

    try:
        snap = snapshot_download(
            hub_id(name), cache_dir=cache_dir, revision=revision, local_files_only=True
        )
    except Exception:  # noqa: BLE001 - provenance never fails a step
        return revision or "unknown"
    return Path(snap).name


# ---------------------------------------------------------------------------------------------
# Sub-word label alignment
# ---------------------------------------------------------------------------------------------


@dataclass
class Encoded:
    """Tokenised examples with word-level labels on the first sub-word of each word.

    `labels[i][k]` is the label id at sub-word k, -100 on specials and non-first sub-words.
    The positions with a label, in order, are words 0, 1, ... of example i; there are fewer
    than `n_words[i]` only when the example was truncated (`truncated` counts those).
    `empty_words` counts words the tokenizer turned into no sub-word at all (e.g. a lone
    zero-width space): they were encoded as the unknown token so they still have a position.
    """

    input_ids: list[list[int]]
    labels: list[list[int]]
    n_words: list[int]
    truncated: int = 0
    empty_words: int = 0
    truncated_words: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)


def _empty_words(words: set[str], tokenizer: PreTrainedTokenizerBase) -> set[str]:
    """The words that the tokenizer maps to zero sub-words (one batched call)."""
    uniq = sorted(words)
    if not uniq:
        return set()
    enc = tokenizer(
        [[w] for w in uniq],
        is_split_into_words=True,
        add_special_tokens=False,
        return_attention_mask=False,
    )
    return {w for w, ids in zip(uniq, enc["input_ids"], strict=True) if not ids}


def encode(
    examples: Sequence[Any],
    tokenizer: PreTrainedTokenizerBase,
    label2id: Mapping[str, int],
    max_length: int = 128,
) -> Encoded:
    """Tokenise word-split examples (`.words`, `.tags`) and align BIO tags to sub-words.

    One batched fast-tokenizer call with `is_split_into_words=True`; the label of a word goes
    on its first sub-word, -100 everywhere else. Words that yield no sub-word (e.g. a lone
    zero-width space under XLM-R's normaliser) are replaced by the tokenizer's unknown token,
    so every word keeps exactly one scored position unless truncation cut it.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(
            "encode needs a fast tokenizer (word_ids()): load it with load_tokenizer, which "
            "returns one"
        )
    batch = [list(ex.words) for ex in examples]
    for ex, words in zip(examples, batch, strict=True):
        if len(ex.tags) != len(words):
            raise ModelError(
                f"example {getattr(ex, 'id', '?')!s} has {len(words)} words but "
                f"{len(ex.tags)} tags: fix the data (one BIO tag per word)"
            )

    def tokenize(rows: list[list[str]]) -> tuple[list[list[int]], list[list[int | None]]]:
        enc = tokenizer(
            rows,
            is_split_into_words=True,
            truncation=True,
            max_length=max_length,
            return_attention_mask=False,
        )
        return enc["input_ids"], [enc.word_ids(i) for i in range(len(rows))]

    input_ids, word_ids = tokenize(batch)
    # A word without a position was either cut by truncation or tokenised to nothing. Only
    # those examples are looked at again: their unplaced words are tested one by one, words
    # that give no sub-word become the unknown token, and the example is tokenised again.
    unplaced: dict[int, list[int]] = {}
    for i, wids in enumerate(word_ids):
        present = {w for w in wids if w is not None}
        if len(present) < len(batch[i]):
            unplaced[i] = [j for j in range(len(batch[i])) if j not in present]
    n_empty = 0
    if unplaced:
        empty = _empty_words({batch[i][j] for i, js in unplaced.items() for j in js}, tokenizer)
        redo = []
        for i, js in unplaced.items():
            hits = [j for j in js if batch[i][j] in empty]
            for j in hits:
                batch[i][j] = tokenizer.unk_token
            if hits:
                n_empty += len(hits)
                redo.append(i)
        if redo:
            again_ids, again_wids = tokenize([batch[i] for i in redo])
            for k, i in enumerate(redo):
                input_ids[i], word_ids[i] = again_ids[k], again_wids[k]
    all_labels: list[list[int]] = []
    truncated = truncated_words = 0
    for i, ex in enumerate(examples):
        tags = ex.tags
        row: list[int] = []
        previous = None
        scored = 0
        for word in word_ids[i]:
            if word is None or word == previous:
                row.append(-100)
            else:
                tag = tags[word]
                try:
                    row.append(label2id[tag])
                except KeyError:
                    raise ModelError(
                        f"tag '{tag}' of example {getattr(ex, 'id', '?')!s} is not in the "
                        "label map: use the dataset's label list (data.LABELS)"
                    ) from None
                scored += 1
            previous = word
        all_labels.append(row)
        if scored < len(tags):
            truncated += 1
            truncated_words += len(tags) - scored
    return Encoded(
        input_ids=input_ids,
        labels=all_labels,
        n_words=[len(ex.words) for ex in examples],
        truncated=truncated,
        empty_words=n_empty,
        truncated_words=truncated_words,
    )


# ---------------------------------------------------------------------------------------------
# LoRA
# ---------------------------------------------------------------------------------------------


def lora_targets(model: nn.Module, *, include_pooler: bool = False) -> list[str]:
    """Names of the nn.Linear modules LoRA goes on: every linear layer inside the encoder
    (query, key, value, attention output dense, intermediate dense, output dense), and the
    pooler's dense layer when asked. Never the token classifier."""
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        parts = name.split(".")
        if "encoder" in parts or (include_pooler and "pooler" in parts):
            names.append(name)
    return names


def add_lora(
    model: PreTrainedModel, rank: int, *, dropout: float = 0.1, seed: int | None = None
) -> PeftModel:
    """Wrap `model` (in place) with one LoRA adapter of rank `rank` (alpha = rank, bias none)
    on every encoder linear layer; the classifier trains alongside as a per-adapter copy
    (`modules_to_save`). Only LoRA and the classifier are trainable. `seed`, when given, fixes
    the LoRA A initialisation without touching the caller's RNG state."""
    from peft import LoraConfig, TaskType, get_peft_model

    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise ModelError(
            f"LoRA rank must be a positive integer (got {rank!r}): rank 0 means full "
            "fine-tuning, so do not add LoRA"
        )
    targets = lora_targets(model)
    if not targets:
        raise ModelError(
            f"no linear layers under an 'encoder' module in {type(model).__name__}: "
            "LoRA placement supports BERT-style encoders (XLM-R, E5)"
        )
    config = LoraConfig(
        task_type=TaskType.TOKEN_CLS,
        r=rank,
        lora_alpha=rank,
        lora_dropout=dropout,
        bias="none",
        target_modules=targets,
        modules_to_save=["classifier"],
    )
    rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with rng, warnings.catch_warnings():
        # PEFT calls a transformers property that transformers 5 deprecates: not our business
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        if seed is not None:
            torch.manual_seed(seed)
        return get_peft_model(model, config)


# ---------------------------------------------------------------------------------------------
# Parameter counts (paper Table 1)
# ---------------------------------------------------------------------------------------------


def _linear_lora_size(model: nn.Module, names: list[str], rank: int) -> int:
    modules = dict(model.named_modules())
    return sum(rank * (modules[n].in_features + modules[n].out_features) for n in names)


def params_table(
    spec_or_config: str | PretrainedConfig = "xlm-roberta-base",
    n_languages: int = 52,
    ranks: Sequence[int] = (32, 64, 256),
    num_labels: int = 111,
) -> list[Row]:
    """Trainable parameters per method, from the config alone (models built on `meta`)."""
    from transformers import AutoModel, AutoModelForTokenClassification

    config = (
        load_config(spec_or_config, num_labels=num_labels)
        if isinstance(spec_or_config, str)
        else spec_or_config.__class__.from_dict(spec_or_config.to_dict())
    )
    config.num_labels = num_labels
    with torch.device("meta"), _quiet_transformers():
        try:
            base = AutoModel.from_config(config, add_pooling_layer=True)
        except TypeError:
            base = AutoModel.from_config(config)
        ours_model = AutoModelForTokenClassification.from_config(config)

    classifier = sum(
        p.numel() for n, p in ours_model.named_parameters() if n.startswith("classifier.")
    )
    paper_targets = lora_targets(base, include_pooler=True)
    our_targets = lora_targets(ours_model)
    ranks = lora_ranks(ranks)
    counts = Counts(
        full_paper=sum(p.numel() for p in base.parameters()),
        full_ours=sum(p.numel() for p in ours_model.parameters()),
        classifier=classifier,
        lora_paper={r: _linear_lora_size(base, paper_targets, r) for r in ranks},
        lora_ours={r: _linear_lora_size(ours_model, our_targets, r) + classifier for r in ranks},
    )
    published = is_xlmr_base_shape(config.to_dict()) and n_languages == 52
    return build_rows(counts, n_languages=n_languages, published=published)
