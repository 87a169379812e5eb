"""Length-grouped batches and padding."""

from __future__ import annotations

import numpy as np

from hpc_forget.data.batching import collate, eval_batches, padded_length, train_batches


def test_train_batches_cover_every_example_once_and_are_deterministic():
    lengths = np.random.default_rng(0).integers(3, 40, size=1000).tolist()
    a = train_batches(lengths, 32, seed=1)
    b = train_batches(lengths, 32, seed=1)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    flat = np.concatenate(a)
    assert sorted(flat.tolist()) == list(range(1000))
    assert train_batches(lengths, 32, seed=2)[0].tolist() != a[0].tolist()


def test_train_batches_group_by_length():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 40, size=3200).tolist()
    grouped = train_batches(lengths, 32, seed=0, pool=100)
    spread = np.mean([np.ptp(np.asarray(lengths)[b]) for b in grouped])
    random_spread = np.mean([np.ptp(rng.choice(lengths, 32)) for _ in range(100)])
    assert spread < random_spread / 4


def test_eval_batches_sorted_by_length():
    lengths = [5, 1, 9, 3, 7]
    batches = eval_batches(lengths, 2, pad_multiple=8)
    order = np.concatenate(batches).tolist()
    assert [lengths[i] for i in order] == sorted(lengths)
    assert [len(b) for b in batches] == [2, 2, 1]
    assert eval_batches([], 4) == []


def test_each_eval_batch_holds_one_padded_width_so_a_long_outlier_pads_nothing_else():
    lengths = [10] * 6 + [43] + [12, 9, 17]
    batches = eval_batches(lengths, 512, pad_multiple=8)
    widths = [{padded_length(lengths[i], 8) for i in b} for b in batches]
    assert widths == [{16}, {24}, {48}]  # not one batch of 10 padded to 48
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    assert [len(b) for b in eval_batches([10] * 5, 2, pad_multiple=8)] == [2, 2, 1]


def test_padding_to_a_multiple_gives_few_shapes():
    assert [padded_length(n, 8) for n in (1, 8, 9, 16, 17)] == [8, 8, 16, 16, 24]
    ids = [[0, 5, 6, 2], [0, 7, 2]]
    labels = [[-100, 3, 4, -100], [-100, 1, -100]]
    batch = collate(ids, labels, np.array([0, 1]), pad_id=1, pad_multiple=8)
    assert batch["input_ids"].shape == (2, 8)
    assert batch["input_ids"][1].tolist() == [0, 7, 2, 1, 1, 1, 1, 1]
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert batch["labels"][0].tolist() == [-100, 3, 4, -100] + [-100] * 4
