"""Compact embedding rows (run/embeddings.py): the training loop's fast path against the
straightforward dense loop."""

from __future__ import annotations

import pytest
import torch

from hpc_forget.run.embeddings import (
    RowSubset,
    compact_rows,
    compact_rows_apply,
    restore_rows,
    used_rows,
)


def _tiny(vocab: int = 50, labels: int = 5):
    from transformers import AutoModelForTokenClassification

    from hpc_forget.models.hub import tiny_config

    torch.manual_seed(0)
    return AutoModelForTokenClassification.from_config(tiny_config(vocab, labels))


def test_used_rows_are_the_distinct_ids_without_padding_or_out_of_range_ids():
    rows = used_rows(([[0, 5, 3, 1], [5, 7]], [[9, 1, 3], [60]]), 50, padding_idx=1)
    assert rows.tolist() == [0, 3, 5, 7, 9]
    assert used_rows(([],), 50, padding_idx=None).tolist() == []


def test_the_fast_path_applies_only_where_it_is_the_same_step():
    model = _tiny()
    assert compact_rows_apply(model, weight_decay=0.0, adds_loss=False)
    assert not compact_rows_apply(model, weight_decay=0.01, adds_loss=False)  # every row decays
    assert not compact_rows_apply(model, weight_decay=0.0, adds_loss=True)  # penalties by name
    model.get_input_embeddings().weight.requires_grad_(False)  # frozen (LoRA, freeze)
    assert not compact_rows_apply(model, weight_decay=0.0, adds_loss=False)
    assert not compact_rows_apply(torch.nn.Linear(2, 2), weight_decay=0.0, adds_loss=False)


def test_tied_output_embeddings_keep_the_dense_path():
    model = _tiny()
    emb = model.get_input_embeddings()
    head = torch.nn.Linear(emb.embedding_dim, emb.num_embeddings, bias=False)
    head.weight = emb.weight
    model.get_output_embeddings = lambda: head
    assert not compact_rows_apply(model, weight_decay=0.0, adds_loss=False)


def test_a_row_subset_embeds_every_id_as_the_full_matrix_and_trains_only_its_rows():
    full = torch.nn.Embedding(20, 4, padding_idx=1)
    ref = full.weight.detach().clone()
    sub = RowSubset(full, torch.tensor([0, 3, 7]))
    ids = torch.tensor([[0, 3, 1, 12], [7, 7, 19, 1]])  # 1 = padding, 12 and 19 not trained
    out = sub(ids)
    assert torch.equal(out, ref[ids])
    out.sum().backward()
    assert [n for n, _ in sub.named_parameters()] == ["weight"]
    assert sub.weight.grad.tolist() == [[1.0] * 4, [1.0] * 4, [2.0] * 4]
    assert full.weight.grad is None  # the full matrix gets no (dense) gradient


def test_compact_rows_are_written_back_and_the_module_restored():
    model = _tiny()
    emb = model.get_input_embeddings()
    before = emb.weight.detach().clone()
    sub = compact_rows(model, torch.tensor([2, 4]), torch.device("cpu"))
    assert model.get_input_embeddings() is sub
    names = dict(model.named_parameters())
    assert names["roberta.embeddings.word_embeddings.weight"] is sub.weight  # one name, as before
    with torch.no_grad():
        sub.weight += 1.0
    restore_rows(model, sub)
    assert model.get_input_embeddings() is emb
    after = emb.weight.detach()
    assert torch.equal(after[[2, 4]], before[[2, 4]] + 1.0)
    keep = [i for i in range(len(before)) if i not in (2, 4)]
    assert torch.equal(after[keep], before[keep])


@pytest.fixture(scope="module")
def step_data(massive_dir, tiny_model_dir):
    from hpc_forget.data.sources import load_massive
    from hpc_forget.data.splits import prepare_splits
    from hpc_forget.models.encode import encode
    from hpc_forget.models.hub import load_tokenizer
    from hpc_forget.run.training import StepData

    tok = load_tokenizer(str(tiny_model_dir))
    corpus = load_massive(str(massive_dir), ["en-US"])
    splits = prepare_splits(corpus, "en-US", max_train=400, max_eval=100, seed=0)
    from transformers import AutoConfig

    label2id = AutoConfig.from_pretrained(tiny_model_dir).label2id
    train = encode(list(splits.train), tok, label2id, 64)
    dev = encode(list(splits.dev), tok, label2id, 64)
    return StepData(train, dev, list(splits.dev)), tok.pad_token_id, label2id


def _model(tiny_model_dir):
    from transformers import AutoModelForTokenClassification

    torch.manual_seed(0)  # the classifier is initialised here
    return AutoModelForTokenClassification.from_pretrained(tiny_model_dir)


def _train(tiny_model_dir, step_data, *, fast, should_stop=lambda: False, midstep=None, model=None):

    from hpc_forget.run.training import make_accelerator, train_step
    from hpc_forget.study.methods import StepHyper

    data, pad_id, label2id = step_data
    model = _model(tiny_model_dir) if model is None else model
    labels = sorted(label2id, key=label2id.get)
    result = train_step(
        model,
        data,
        StepHyper(lr=2e-3, max_epochs=6, patience=6, lora_rank=0, batch_size=16),
        accelerator=make_accelerator("fp32", cpu_threads=1),
        labels=labels,
        pad_id=pad_id,
        seed=0,
        fast=fast,
        should_stop=should_stop,
        midstep=midstep,
    )
    return model, result


def test_the_fast_path_trains_the_same_step_as_the_dense_loop(tiny_model_dir, step_data):
    """The equivalence the speed rests on: same dev F1 curve and losses, and the same weights
    within float tolerance (the gradient norm is summed over fewer zeros), every unused row
    exactly as it was."""
    dense, r_dense = _train(tiny_model_dir, step_data, fast=False)
    fast, r_fast = _train(tiny_model_dir, step_data, fast=True)
    assert r_dense.dev_curve[-1] > 0  # it learned something: the comparison means something
    assert r_fast.dev_curve == pytest.approx(r_dense.dev_curve, abs=1e-6)
    assert r_fast.train_loss == pytest.approx(r_dense.train_loss, rel=1e-5)
    assert r_fast.best_dev_f1 == pytest.approx(r_dense.best_dev_f1, abs=1e-6)
    assert type(fast.get_input_embeddings()) is torch.nn.Embedding
    a, b = dense.state_dict(), fast.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    start = _model(tiny_model_dir)
    data = step_data[0]
    used = set(used_rows((data.train.input_ids, data.dev.input_ids), 10**9, None).tolist())
    w0 = start.get_input_embeddings().weight.detach()
    w1 = fast.get_input_embeddings().weight.detach()
    unused = [i for i in range(len(w0)) if i not in used]
    assert unused and torch.equal(w1[unused], w0[unused])
    assert not torch.equal(w1[sorted(used - {1})], w0[sorted(used - {1})])


def test_a_fast_step_stopped_mid_way_restores_the_model_and_resumes_bit_for_bit(
    tiny_model_dir, step_data, tmp_path
):
    from types import SimpleNamespace

    from hpc_forget.run.checkpoints import MidStep
    from hpc_forget.run.training import Preempted

    def midstep():
        return MidStep(SimpleNamespace(store=str(tmp_path)), "run", 0, interval_s=0.0)

    _, whole = _train(tiny_model_dir, step_data, fast=True)
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] == 40  # in epoch 2 (25 batches an epoch)

    model = _model(tiny_model_dir)
    with pytest.raises(Preempted):
        _train(
            tiny_model_dir, step_data, fast=True, should_stop=stop, midstep=midstep(), model=model
        )
    assert type(model.get_input_embeddings()) is torch.nn.Embedding  # restored on the way out
    assert midstep().path.exists()
    _, resumed = _train(tiny_model_dir, step_data, fast=True, midstep=midstep())
    assert resumed.dev_curve == whole.dev_curve
    assert resumed.train_loss == whole.train_loss
