"""Batches grouped by length, padded to a few distinct shapes.

MASSIVE utterances are ~10 sub-words, so padding, kernel launches and host syncs dominate the
cost, not FLOPs. Training batches are drawn from length-sorted pools of shuffled examples
(``pool`` batches at a time) so each batch holds examples of similar length; every batch is
padded to a multiple of ``pad_multiple`` so the model sees few distinct shapes. Evaluation
sorts the whole set by length and uses big batches of one padded width each.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def train_batches(
    lengths: Sequence[int], batch_size: int, *, seed: int, pool: int = 50
) -> list[np.ndarray]:
    """Indices of each training batch for one epoch: shuffled, then length-grouped in pools."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    lens = np.asarray(lengths)
    batches: list[np.ndarray] = []
    span = batch_size * pool
    for start in range(0, len(order), span):
        chunk = order[start : start + span]
        chunk = chunk[np.argsort(lens[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]


def eval_batches(
    lengths: Sequence[int], batch_size: int, pad_multiple: int = 1
) -> list[np.ndarray]:
    """Indices of evaluation batches: the whole set sorted by length, cut into batches of at
    most ``batch_size`` that each hold one padded width (lengths rounded up to
    ``pad_multiple``). A set that fits one batch is not padded to its longest utterance:
    MASSIVE's test sets (~3k utterances of ~10 sub-words, a few of 40+) cost the sub-words
    they have, in as many shapes as there are padded widths."""
    lens = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lens, kind="stable")
    if len(order) == 0:
        return []
    width = -(-lens[order] // max(1, pad_multiple))
    cuts = np.flatnonzero(np.diff(width)) + 1  # where the padded width changes
    batches: list[np.ndarray] = []
    for part in np.split(order, cuts):
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    return batches


def padded_length(max_len: int, multiple: int) -> int:
    return -(-max_len // multiple) * multiple


def collate(
    input_ids: Sequence[Sequence[int]],
    labels: Sequence[Sequence[int]],
    idx: np.ndarray,
    *,
    pad_id: int,
    pad_multiple: int,
) -> dict[str, torch.Tensor]:
    """Pad the examples ``idx`` into tensors (input_ids, attention_mask, labels)."""
    width = padded_length(max(len(input_ids[i]) for i in idx), pad_multiple)
    n = len(idx)
    ids = np.full((n, width), pad_id, dtype=np.int64)
    lab = np.full((n, width), -100, dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    for row, i in enumerate(idx):
        k = len(input_ids[i])
        ids[row, :k] = input_ids[i]
        lab[row, :k] = labels[i]
        mask[row, :k] = 1
    return {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.from_numpy(lab),
    }
