"""Prediction and slot F1.

Prediction sorts the examples by length and runs big batches of one padded width each; the
predicted label of every word (its first sub-word) stays on the device until the end, so one
evaluation costs one host sync. An R row (every language's test set) is one pass
(:func:`predict_languages`). Slot F1 is seqeval's micro average in its default mode, which is
what the official MASSIVE scorer reports, computed on word-level BIO tags.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from seqeval.metrics import f1_score

from hpc_forget.data.batching import collate, eval_batches


def slot_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> float:
    """seqeval micro F1 (default mode) over word-level BIO sequences, as a 0..1 float."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sequences but {len(pred)} predictions")
    for g, p in zip(gold, pred, strict=True):
        if len(g) != len(p):
            raise ValueError("a prediction has a different number of words than its gold sequence")
    return float(f1_score([list(g) for g in gold], [list(p) for p in pred]))


@torch.inference_mode()
def predict_words(
    model: Any,
    encoded: Any,
    *,
    batch_size: int,
    pad_id: int,
    pad_multiple: int,
    device: torch.device,
    autocast: Any = None,
) -> list[np.ndarray]:
    """Predicted label ids per example, one per word kept by the encoder (first sub-words)."""
    was_training = model.training
    model.eval()
    lengths = [len(x) for x in encoded.input_ids]
    flat: list[torch.Tensor] = []
    order: list[np.ndarray] = []
    for idx in eval_batches(lengths, batch_size, pad_multiple):
        batch = collate(
            encoded.input_ids, encoded.labels, idx, pad_id=pad_id, pad_multiple=pad_multiple
        )
        labels = batch["labels"].to(device, non_blocking=True)
        ids = batch["input_ids"].to(device, non_blocking=True)
        mask = batch["attention_mask"].to(device, non_blocking=True)
        if autocast is not None:
            with autocast():
                logits = model(input_ids=ids, attention_mask=mask).logits
        else:
            logits = model(input_ids=ids, attention_mask=mask).logits
        pred = logits.argmax(-1)
        flat.append(pred[labels != -100])  # row-major: example by example, word by word
        order.append(idx)
    if was_training:
        model.train()
    if not flat:
        return []
    all_pred = torch.cat(flat).cpu().numpy()  # the one host sync
    counts_sorted = [sum(1 for v in encoded.labels[i] if v != -100) for idx in order for i in idx]
    pieces = np.split(all_pred, np.cumsum(counts_sorted)[:-1])
    out: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(lengths)
    for i, piece in zip((i for idx in order for i in idx), pieces, strict=True):
        out[i] = piece
    return out


@dataclass
class _Joined:
    input_ids: list
    labels: list


def predict_languages(
    model: Any, encoded: Mapping[str, Any], **kwargs: Any
) -> dict[str, list[np.ndarray]]:
    """:func:`predict_words` over several languages' sets in one pass (one R row): the sets
    are joined, so every batch is full and of one padded width, whichever language its
    utterances come from; the predictions come back per language, in each set's order.
    ``kwargs`` are predict_words' own."""
    names = list(encoded)
    joined = _Joined(
        [x for n in names for x in encoded[n].input_ids],
        [x for n in names for x in encoded[n].labels],
    )
    flat = predict_words(model, joined, **kwargs)
    out: dict[str, list[np.ndarray]] = {}
    at = 0
    for n in names:
        k = len(encoded[n].input_ids)
        out[n], at = flat[at : at + k], at + k
    return out


def score_examples(
    examples: Sequence[Any], predicted: Sequence[np.ndarray], labels: Sequence[str]
) -> tuple[float, int]:
    """Slot F1 of predictions against the examples' gold word tags.

    Returns (f1, n_truncated_words): words the encoder dropped at max_length are predicted "O"
    and counted, so a truncation never goes unreported.
    """
    gold, pred = [], []
    dropped = 0
    for ex, p in zip(examples, predicted, strict=True):
        tags = [labels[int(j)] for j in p]
        if len(tags) < len(ex.tags):
            dropped += len(ex.tags) - len(tags)
            tags += ["O"] * (len(ex.tags) - len(tags))
        gold.append(ex.tags)
        pred.append(tags)
    return slot_f1(gold, pred), dropped
