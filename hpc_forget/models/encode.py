"""Sub-word label alignment: words and BIO tags to input ids and labels on each word's first
sub-word.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpc_forget.errors import ModelError

if TYPE_CHECKING:  # heavy imports stay lazy where the module is only imported for a name
    from transformers import (
        PreTrainedTokenizerBase,
    )

log = logging.getLogger(__name__)


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


def concat_encoded(parts: list[tuple[Encoded, list[Any]]]) -> tuple[Encoded, list[Any]]:
    """Concatenate (encoding, examples) pairs, in order (MULTI trains and early-stops on all
    languages together; replay mixes earlier languages in)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0][0]
    merged = {}
    for f in dataclasses.fields(first):
        vals = [getattr(p[0], f.name) for p in parts]
        merged[f.name] = sum(vals) if isinstance(vals[0], int) else [x for v in vals for x in v]
    return type(first)(**merged), [ex for p in parts for ex in p[1]]


def subset_encoded(
    enc: Encoded, examples: list[Any], idx: Sequence[int]
) -> tuple[Encoded, list[Any]]:
    """The examples ``idx`` of an encoding, in that order. The counters (truncated, empty
    words) describe the whole set and are 0 in a subset."""
    kw = {
        f.name: 0
        if isinstance(getattr(enc, f.name), int)
        else [getattr(enc, f.name)[i] for i in idx]
        for f in dataclasses.fields(enc)
    }
    return type(enc)(**kw), [examples[i] for i in idx]
