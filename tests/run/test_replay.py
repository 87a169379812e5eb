"""Experience replay: the buffer holds exactly k examples of each earlier language."""

from __future__ import annotations

from hpc_forget.run.hooks import StepContext
from hpc_forget.run.replay import Replay, buffer_indices
from hpc_forget.run.training import StepData
from hpc_forget.study.config import TrainConfig
from hpc_forget.study.methods import step_hyper


class _Enc:
    pass


def test_buffer_is_deterministic_and_of_size_k():
    a = buffer_indices(100, 7, 3, "de-DE")
    assert a == buffer_indices(100, 7, 3, "de-DE") and len(set(a)) == 7
    assert a != buffer_indices(100, 7, 4, "de-DE")
    assert buffer_indices(5, 7, 3, "de-DE") == [0, 1, 2, 3, 4]


def test_the_buffer_holds_k_of_each_earlier_language_and_none_of_later(tmp_path, tiny_model_dir):
    from hpc_forget.data.corpus import Example
    from hpc_forget.data.labels import LABELS
    from hpc_forget.models.encode import encode
    from hpc_forget.models.hub import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    label2id = {lab: i for i, lab in enumerate(LABELS)}
    data = {}
    for loc in ("a-A", "b-B", "c-C", "d-D"):
        exs = [Example(f"{loc}{i}", loc, "train", (f"w{i}",), ("O",)) for i in range(30)]
        data[loc] = (encode(exs, tok, label2id, 16), exs)
    seen = []

    def data_of(loc, split):
        seen.append(loc)
        return data[loc]

    ctx = StepContext(
        "r",
        2,
        4,
        ("c-C",),
        step_hyper("vanilla", 0, TrainConfig()),
        0,
        earlier=("a-A", "b-B"),
        data_of=data_of,
        run_seed=1,
    )
    cur = data["c-C"][0]
    out = Replay(k=5).before_step(None, StepData(train=cur, dev=cur, dev_examples=[]), ctx)
    assert len(out.train.input_ids) == 30 + 2 * 5
    assert set(seen) == {"a-A", "b-B"}  # never a later language (d-D) nor the current one
    extra = out.train.input_ids[30:]
    for loc, chunk in (("a-A", extra[:5]), ("b-B", extra[5:])):
        idx = buffer_indices(30, 5, 1, loc)
        assert chunk == [data[loc][0].input_ids[i] for i in idx]


def test_replay_mixes_examples_into_the_second_step(tmp_path, tiny_model_dir):
    from _strategy_runs import run_strategy

    _, plain, _ = run_strategy(tmp_path / "a", tiny_model_dir)
    _, rep, _ = run_strategy(tmp_path / "b", tiny_model_dir, {"name": "replay", "k": 6})
    assert rep.step_meta[0]["train_examples"] == plain.step_meta[0]["train_examples"]
    assert rep.step_meta[1]["train_examples"] == plain.step_meta[1]["train_examples"] + 6
