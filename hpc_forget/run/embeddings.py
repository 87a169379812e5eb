"""Compact embedding rows: a full fine-tuning step trains only the word-embedding rows its
data uses (the training loop's fast path; docs/benchmarks.md).

XLM-R's 250,002-piece vocabulary puts 192M of XLM-R base's 278M weights in the word
embedding, and one language's MASSIVE training set uses a few thousand pieces. A dense step
still builds a 250k-row gradient that is zero outside those rows, clips it and lets AdamW read
and write all of it: on CPU that is most of a step's time, and under DDP most of the
all-reduce. A row that never gets a gradient does not move under AdamW with the step's fresh
state (both moments stay zero, so its update is exactly zero) as long as it has no weight
decay, so training only the used rows computes the same step. The training loop takes this
path when :func:`compact_rows_apply` says it may, and the step's result equals the dense
loop's up to floating-point summation order (the gradient norm is summed over fewer zeros);
``tests/run/test_embeddings.py`` checks both.

During the step the model's input embedding is a :class:`RowSubset`: its trainable
``weight`` holds the used rows (under the embedding's own parameter name, so checkpoints and
optimizers see one parameter as before) and every other id reads the frozen full matrix, so
any input is embedded correctly. :func:`restore_rows` writes the rows back and puts the
original embedding module back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


class RowSubset(torch.nn.Module):
    """An input embedding whose trainable ``weight`` holds the rows ``rows`` of ``full``.

    ``full`` (the original :class:`torch.nn.Embedding`) is kept as a plain attribute, not a
    sub-module: it is not a parameter of the model while the step runs (no dense gradient,
    not in the optimizer, not broadcast by DDP). Ids outside ``rows`` (the padding id among
    them) are looked up in it without a gradient.
    """

    def __init__(self, full: torch.nn.Embedding, rows: torch.Tensor) -> None:
        super().__init__()
        device = full.weight.device
        self.__dict__["full"] = full  # not registered: see the class docstring
        self.rows = rows.to(device)
        index = torch.full((full.num_embeddings,), -1, dtype=torch.long, device=device)
        index[self.rows] = torch.arange(len(rows), device=device)
        self.register_buffer("index", index, persistent=False)
        self.weight = torch.nn.Parameter(full.weight.detach()[self.rows].clone())
        self.num_embeddings, self.embedding_dim = full.num_embeddings, full.embedding_dim
        self.padding_idx = full.padding_idx

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        at = self.index[input_ids]
        hit = (at >= 0).unsqueeze(-1)
        trained = F.embedding(at.clamp(min=0), self.weight)
        return torch.where(hit, trained, F.embedding(input_ids, self.full.weight.detach()))


def used_rows(
    id_lists: Iterable[Sequence[Sequence[int]]], vocab_size: int, padding_idx: int | None
) -> torch.Tensor:
    """The sorted distinct token ids of every sequence in ``id_lists``, without the padding
    id (whose row the embedding never trains) and ids outside the vocabulary (pure)."""
    parts = [np.fromiter((t for seq in ids for t in seq), dtype=np.int64) for ids in id_lists]
    ids = np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)
    ids = ids[(ids >= 0) & (ids < vocab_size)]
    if padding_idx is not None:
        ids = ids[ids != padding_idx]
    return torch.from_numpy(ids)


def compact_rows_apply(model: torch.nn.Module, *, weight_decay: float, adds_loss: bool) -> bool:
    """Whether a step may train only the used rows of ``model``'s input embedding: it is a
    plain trainable :class:`torch.nn.Embedding` that no output layer shares, it has no weight
    decay (decay would move every row), and no strategy adds a loss term (a penalty over the
    named weights expects their full shapes)."""
    get = getattr(model, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    if type(emb) is not torch.nn.Embedding or not emb.weight.requires_grad:
        return False
    if weight_decay != 0 or adds_loss:
        return False
    out = getattr(model, "get_output_embeddings", lambda: None)()
    return out is None or getattr(out, "weight", None) is not emb.weight


@torch.no_grad()
def compact_rows(model: torch.nn.Module, rows: torch.Tensor, device: torch.device) -> RowSubset:
    """Replace ``model``'s input embedding by a :class:`RowSubset` of ``rows`` on ``device``
    (the full matrix moved there first, as preparing the model moves the rest); undo with
    :func:`restore_rows`."""
    full = model.get_input_embeddings()
    full.weight.data = full.weight.data.to(device)
    sub = RowSubset(full, rows)
    model.set_input_embeddings(sub)
    return sub


@torch.no_grad()
def restore_rows(model: torch.nn.Module, sub: RowSubset) -> None:
    """Write ``sub``'s trained rows into the original embedding and put that back in
    ``model`` (its weight moved to where the rows are, as the rest of the model)."""
    full = sub.full
    full.weight.data = full.weight.data.to(sub.weight.device)
    full.weight[sub.rows.to(sub.weight.device)] = sub.weight.to(full.weight.dtype)
    model.set_input_embeddings(full)


@contextmanager
def fast_embedding_rows(
    model: torch.nn.Module, data: Any, device: torch.device, *, on: bool
) -> Iterator[None]:
    """While the block runs, ``model``'s input embedding trains only the rows ``data``'s
    training and dev sets use (``on``; else nothing changes); afterwards, however the block
    ends, the rows are written back and the original embedding is in place again."""
    if not on:
        yield
        return
    emb = model.get_input_embeddings()
    rows = used_rows(
        (data.train.input_ids, data.dev.input_ids), emb.num_embeddings, emb.padding_idx
    )
    sub = compact_rows(model, rows, device)
    try:
        yield
    finally:
        restore_rows(model, sub)
