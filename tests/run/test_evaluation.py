"""Slot F1 and batched prediction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from hpc_forget.run.evaluation import predict_languages, predict_words, score_examples, slot_f1


def test_slot_f1_matches_hand_computed_micro_f1():
    gold = [["B-time", "I-time", "O", "B-date"], ["O", "B-place_name"]]
    pred = [["B-time", "I-time", "O", "O"], ["O", "B-place_name"]]
    # 3 gold spans, 2 predicted, 2 correct: P = 1, R = 2/3, F1 = 0.8
    assert slot_f1(gold, pred) == pytest.approx(0.8)
    assert slot_f1(gold, gold) == 1.0


def test_slot_f1_rejects_misaligned_input():
    with pytest.raises(ValueError, match="different number of words"):
        slot_f1([["O", "O"]], [["O"]])


@dataclass
class _Enc:
    input_ids: list
    labels: list


@dataclass
class _Ex:
    tags: tuple


class _Echo(torch.nn.Module):
    """A fake token classifier whose logits put the max at (input id mod n_labels)."""

    def __init__(self, n_labels: int):
        super().__init__()
        self.n = n_labels

    def forward(self, input_ids, attention_mask):
        logits = torch.nn.functional.one_hot(input_ids % self.n, self.n).float()

        class Out:
            pass

        out = Out()
        out.logits = logits
        return out


def test_predict_words_returns_first_subword_predictions_in_input_order():
    # example 0: 2 words, the second split in two sub-words; example 1: 1 word
    enc = _Enc(
        input_ids=[[0, 3, 4, 9, 2], [0, 5, 2]],
        labels=[[-100, 3, 4, -100, -100], [-100, 1, -100]],
    )
    preds = predict_words(
        _Echo(10), enc, batch_size=1, pad_id=1, pad_multiple=8, device=torch.device("cpu")
    )
    assert [p.tolist() for p in preds] == [[3, 4], [5]]


def test_one_pass_over_several_languages_gives_each_its_own_predictions_in_order():
    sets = {
        "a": _Enc([[0, 3, 4, 9, 2], [0, 5, 2]], [[-100, 3, 4, -100, -100], [-100, 1, -100]]),
        "b": _Enc(
            [[0, 7, 2]] + [[0] + [6] * 20 + [2]], [[-100, 1, -100], [-100] + [1] * 20 + [-100]]
        ),
        "c": _Enc([], []),
    }
    kw = {"batch_size": 512, "pad_id": 1, "pad_multiple": 8, "device": torch.device("cpu")}
    joined = predict_languages(_Echo(10), sets, **kw)
    assert list(joined) == ["a", "b", "c"]
    for name, enc in sets.items():
        alone = predict_words(_Echo(10), enc, **kw)
        assert [p.tolist() for p in joined[name]] == [p.tolist() for p in alone]
    assert [p.tolist() for p in joined["a"]] == [[3, 4], [5]]


def test_truncated_words_are_counted_not_hidden():
    labels = ["O", "B-x", "I-x"]
    ex = [_Ex(("B-x", "I-x", "O"))]
    f1, dropped = score_examples(ex, [np.array([1, 2])], labels)
    assert dropped == 1 and f1 == 1.0
