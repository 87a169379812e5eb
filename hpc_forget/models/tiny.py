"""The tiny model: a small XLM-R with a tokenizer trained on the run's own texts, pretrained
with a short masked-language-model loop, cached by what it was built from; which weights a
resolved spec stands for (provenance).
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
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hpc_forget import files
from hpc_forget.errors import ModelError

if TYPE_CHECKING:  # heavy imports stay lazy where the module is only imported for a name
    from transformers import (
        PreTrainedTokenizerBase,
    )

from hpc_forget.models.hub import (
    TINY,
    folder_problem,
    hub_id,
    pinned_revision,
    quiet_transformers,
    split_spec,
    tiny_config,
)

log = logging.getLogger(__name__)

TINY_MARKER = "hpc_forget_tiny.json"  # how the tiny model was built; written last
_TINY_FORMAT = 2  # bump when build_tiny's output changes, so cached tiny models are rebuilt
_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # XLM-R ids 0..3; <mask> is the last id

# ---------------------------------------------------------------------------------------------
# Tiny models
# ---------------------------------------------------------------------------------------------


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
    with quiet_transformers():
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
    with torch.random.fork_rng(devices=[]), quiet_transformers(), _one_cpu_thread():
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
    base, revision = pinned_revision(spec, None)
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


@contextlib.contextmanager
def build_lock(final: Path) -> Iterator[bool]:
    """An exclusive lock on ``<final's folder>/.<name>.lock`` (POSIX ``lockf``, which NFS
    passes on to its lock manager): concurrent builders of one cache entry — the array jobs
    of one submission starting together — wait for the first instead of each building it.
    The kernel drops the lock when its holder dies. Yields False, without a lock, where the
    folder cannot hold a lock file (read-only): the atomic rename still keeps builds safe."""
    import fcntl

    path = _lock_path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log.info("waiting for another process building %s", final)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX)
            except OSError:  # a filesystem without locks: build as before
                yield False
                return
        yield True
    finally:
        os.close(fd)


def cached_tiny(final: Path, build: Callable[[Path], Any]) -> Path:
    """`final` if it holds a complete, undamaged tiny model; otherwise build one into a
    temporary folder (`build(tmp)`) and rename it into place, holding :func:`build_lock` so
    concurrent callers (the arrays of one submission) build it once and the others wait and
    use it. A damaged or half-written folder is logged in one line and rebuilt; temporary
    folders of builders that died are removed; a full disk is one line and leaves nothing
    behind."""
    if final.is_dir() and tiny_problem(final) is None:
        return final
    with build_lock(final) as locked:
        try:
            return _cached_tiny(final, build)
        finally:  # later callers return above; a waiter re-checks `final` under the lock
            if locked:
                with contextlib.suppress(OSError):
                    os.unlink(_lock_path(final))


def _lock_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.lock")


def _cached_tiny(final: Path, build: Callable[[Path], Any]) -> Path:
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
