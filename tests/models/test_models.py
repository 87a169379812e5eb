"""Tests for hpc_forget.models: loading, offline mode, tiny models, alignment, LoRA, params."""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from hpc_forget.errors import ModelError
from hpc_forget.models import tiny
from hpc_forget.models.counts import params_table
from hpc_forget.models.encode import Encoded, encode
from hpc_forget.models.hub import (
    hub_id,
    load_config,
    load_model,
    load_tokenizer,
    prefetch_model,
    tiny_config,
)
from hpc_forget.models.lora import add_lora, lora_targets
from hpc_forget.models.params import PRESETS, format_params
from hpc_forget.models.tiny import build_tiny, resolve_model_spec, train_tokenizer

LABELS = ("O", "B-time", "I-time", "B-date", "I-date")
L2I = {t: i for i, t in enumerate(LABELS)}


@dataclass(frozen=True)
class Ex:
    words: tuple[str, ...]
    tags: tuple[str, ...]
    id: str = "x"


def ex(text: str, tags: str | None = None) -> Ex:
    words = tuple(text.split())
    return Ex(words, tuple(tags.split()) if tags else ("O",) * len(words))


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


# ------------------------------------------------------------------------- specs, offline


# preset -> (hub id, model_type, layers, hidden, intermediate, heads, vocab, positions, types),
# from each model's public config.json
PUBLISHED_SHAPES = {
    "xlm-roberta-base": ("FacebookAI/xlm-roberta-base", "xlm-roberta", 12, 768, 3072, 12, 250002, 514, 1),
    "xlm-roberta-large": ("FacebookAI/xlm-roberta-large", "xlm-roberta", 24, 1024, 4096, 16, 250002, 514, 1),
    "multilingual-e5-small": ("intfloat/multilingual-e5-small", "bert", 12, 384, 1536, 12, 250037, 512, 2),
    "multilingual-e5-base": ("intfloat/multilingual-e5-base", "xlm-roberta", 12, 768, 3072, 12, 250002, 514, 1),
    "multilingual-e5-large": ("intfloat/multilingual-e5-large", "xlm-roberta", 24, 1024, 4096, 16, 250002, 514, 1),
    "multilingual-e5-large-instruct": (
        "intfloat/multilingual-e5-large-instruct", "xlm-roberta", 24, 1024, 4096, 16, 250002, 514, 1,
    ),
}  # fmt: skip


def _no_texts() -> list[str]:
    raise AssertionError("texts are needed only for tiny")


def test_presets_resolve_to_their_hub_ids_and_shapes(tmp_path: Path) -> None:
    assert set(PRESETS) == set(PUBLISHED_SHAPES)
    for preset, (hub, model_type, *shape) in PUBLISHED_SHAPES.items():
        assert PRESETS[preset] == hub_id(preset) == hub
        assert hub_id(f"{preset}@abc") == hub
        assert resolve_model_spec(preset, texts_fn=_no_texts, cache_dir=tmp_path) == hub
        cfg = load_config(preset, num_labels=111)  # built in: no download
        assert cfg.model_type == model_type and cfg.num_labels == 111
        assert [
            cfg.num_hidden_layers,
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.num_attention_heads,
            cfg.vocab_size,
            cfg.max_position_embeddings,
            cfg.type_vocab_size,
        ] == shape, preset


@pytest.mark.parametrize("loader", ["model", "tokenizer", "config"])
def test_offline_missing_hub_id_fails_fast_with_one_line(
    loader: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    call = {
        "model": lambda: load_model("nobody-xyz/missing", LABELS, cache_dir=tmp_path),
        "tokenizer": lambda: load_tokenizer("nobody-xyz/missing", cache_dir=tmp_path),
        "config": lambda: load_config("nobody-xyz/missing", cache_dir=tmp_path),
    }[loader]
    start = time.monotonic()
    with pytest.raises(ModelError) as err:
        call()
    assert time.monotonic() - start < 5
    msg = one_line(err)
    assert msg.startswith("model 'nobody-xyz/missing' is not available offline (")
    assert str(tmp_path) in msg
    assert "`hpc-forget prefetch CONFIG --cache DIR`" in msg
    assert "`huggingface-cli download nobody-xyz/missing`" in msg


def test_offline_preset_names_its_hub_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="model 'FacebookAI/xlm-roberta-base' is not available"):
        load_tokenizer("xlm-roberta-base", cache_dir=tmp_path)


def test_offline_loads_a_cached_hub_model(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model in the hub cache layout loads by hub id with HF_HUB_OFFLINE=1."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--acme--tiny-xlmr"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_model("acme/tiny-xlmr", LABELS, cache_dir=tmp_path)
    tok = load_tokenizer("acme/tiny-xlmr", cache_dir=tmp_path)
    assert model.config.num_labels == len(LABELS)
    assert tok("hello").input_ids[0] == 0


@pytest.mark.parametrize("spec", ["/nonexistent/model-dir", "./no-such-model", "~/no/such/dir"])
def test_missing_local_path_is_one_line(spec: str) -> None:
    with pytest.raises(ModelError) as err:
        load_model(spec, LABELS)
    assert one_line(err).startswith(f"model path '{spec}' does not exist: ")
    with pytest.raises(ModelError, match="does not exist"):
        load_tokenizer(spec)


def test_folder_without_model_files_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as err:
        load_model(str(tmp_path), LABELS)
    assert one_line(err).startswith(f"cannot load model folder '{tmp_path}' (")


def test_tiny_must_be_resolved_first() -> None:
    with pytest.raises(ModelError) as err:
        load_model("tiny", LABELS)
    assert "resolve_model_spec" in one_line(err)


def test_labels_must_be_distinct(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelError) as err:
        load_model(str(tiny_model_dir), ["O", "O"])
    one_line(err)


def test_prefetch_needs_no_download_for_local_and_tiny(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert prefetch_model(str(tiny_model_dir)) == str(tiny_model_dir)
    assert prefetch_model("tiny") == "tiny"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as err:
        prefetch_model("xlm-roberta-base")
    assert "HF_HUB_OFFLINE is set" in one_line(err)


# ------------------------------------------------------------------------- tiny models


def test_tiny_config_shapes() -> None:
    cfg = tiny_config(1000, 7)
    assert (cfg.vocab_size, cfg.num_labels, cfg.hidden_size, cfg.num_hidden_layers) == (
        1000,
        7,
        64,
        2,
    )
    assert (cfg.max_position_embeddings, cfg.pad_token_id, cfg.type_vocab_size) == (130, 1, 1)
    with pytest.raises(ModelError) as err:
        tiny_config(1000, 7, hidden=65, heads=2)
    one_line(err)


def test_tiny_tokenizer_is_xlmr_like(tiny_tokenizer, tiny_model_dir: Path) -> None:
    from transformers import XLMRobertaTokenizerFast

    tok = tiny_tokenizer
    assert tok.is_fast
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")}
    assert ids == {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": len(tok) - 1}
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.model_max_length == 128
    enc = tok("wake me up at five am")
    assert enc.input_ids[0] == 0 and enc.input_ids[-1] == 2
    assert tok.unk_token_id not in enc.input_ids  # real training text: known pieces
    again = XLMRobertaTokenizerFast.from_pretrained(str(tiny_model_dir))
    assert again("ตั้ง ปลุก ตอน ตี ห้า").input_ids == tok("ตั้ง ปลุก ตอน ตี ห้า").input_ids


def test_train_tokenizer_is_deterministic(tiny_texts: list[str], tmp_path: Path) -> None:
    texts = tiny_texts[:800]
    shuffled = texts + texts[:50]
    random.Random(1).shuffle(shuffled)
    train_tokenizer(texts, tmp_path / "a", vocab_size=500)
    train_tokenizer(shuffled, tmp_path / "b", vocab_size=500)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_train_tokenizer_needs_texts(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as err:
        train_tokenizer(["", "  "], tmp_path)
    one_line(err)


def test_tiny_model_loads_like_a_hub_model(tiny_model_dir: Path, tiny_tokenizer) -> None:
    from transformers import XLMRobertaForTokenClassification

    state = torch.random.get_rng_state()
    a = load_model(str(tiny_model_dir), LABELS, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # caller's RNG untouched
    b = load_model(str(tiny_model_dir), LABELS, seed=3)
    c = load_model(str(tiny_model_dir), LABELS, seed=4)
    assert isinstance(a, XLMRobertaForTokenClassification)
    assert a.config.id2label == dict(enumerate(LABELS))
    assert a.config.label2id == L2I
    assert a.config.vocab_size == len(tiny_tokenizer)
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)
    emb = "roberta.embeddings.word_embeddings.weight"
    assert torch.equal(a.state_dict()[emb], c.state_dict()[emb])  # encoder: from the folder
    batch = tiny_tokenizer(["wake me up at five am"], return_tensors="pt")
    with torch.no_grad():
        logits = a(**batch).logits
    assert logits.shape == (1, batch["input_ids"].shape[1], len(LABELS))


def test_build_tiny_is_reproducible(tiny_texts: list[str], tmp_path: Path) -> None:
    """Same texts and seed: byte-identical folders, MLM pretraining included, whatever the
    caller's thread count (pretraining runs on one thread) and RNG state (left untouched)."""
    texts = tiny_texts[:200]
    kw = {"layers": 1, "hidden": 32, "heads": 4, "mlm_steps": 12}
    threads = torch.get_num_threads()
    state = torch.random.get_rng_state()
    a = build_tiny(texts, tmp_path / "a", LABELS, seed=0, **kw)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.set_num_threads(2)
    try:
        b = build_tiny(list(reversed(texts)), tmp_path / "b", LABELS, seed=0, **kw)
        assert torch.get_num_threads() == 2  # restored after pretraining
    finally:
        torch.set_num_threads(threads)
    c = build_tiny(texts, tmp_path / "c", LABELS, seed=1, **kw)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "hpc_forget_tiny.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    model = load_model(str(a), LABELS)
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (1, 32)
    assert not any(k.startswith("classifier") for k in _saved_keys(a))


def test_build_tiny_mlm_pretraining(
    tiny_texts: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The saved encoder is the MLM-trained one; load_model adds only a fresh classifier."""
    from safetensors.torch import load_file

    texts = tiny_texts[:300]
    kw = {"layers": 1, "hidden": 32, "heads": 4}
    rand = build_tiny(texts, tmp_path / "rand", LABELS, mlm_steps=0, **kw)
    pre = build_tiny(texts, tmp_path / "pre", LABELS, mlm_steps=60, **kw)
    info = json.loads((pre / "hpc_forget_tiny.json").read_text())
    assert info["format"] == tiny._TINY_FORMAT and info["mlm"]["steps"] == 60
    losses = info["mlm"]["loss_per_pass"]
    assert len(losses) >= 2 and losses[-1] < losses[0] - 0.5  # it learned something
    assert json.loads((rand / "hpc_forget_tiny.json").read_text())["mlm"]["loss_per_pass"] == []
    saved_rand, saved_pre = (
        load_file(str(rand / "model.safetensors")),
        load_file(str(pre / "model.safetensors")),
    )
    assert saved_pre.keys() == saved_rand.keys()  # same encoder layout, no MLM head saved
    assert not any(k.startswith(("lm_head", "classifier", "pooler")) for k in saved_pre)
    emb = "embeddings.word_embeddings.weight"
    assert not torch.equal(saved_pre[emb], saved_rand[emb])
    config = json.loads((pre / "config.json").read_text())
    assert config["hidden_dropout_prob"] == 0.1  # fine-tuning keeps XLM-R's dropout
    caplog.clear()
    with caplog.at_level("WARNING", logger="hpc_forget.models"):
        model = load_model(str(pre), LABELS)
    # no encoder weight missing or re-initialised
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert torch.equal(model.roberta.embeddings.word_embeddings.weight, saved_pre[emb])
    with pytest.raises(ModelError) as err:
        build_tiny(texts, tmp_path / "bad", LABELS, mlm_steps=-1, **kw)
    assert "mlm_steps" in one_line(err)


def _saved_keys(folder: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return list(f.keys())


def test_resolve_model_spec_builds_tiny_once(
    tiny_texts: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def texts():
        calls.append(1)
        return tiny_texts[:300]

    kw = {"hidden": 32, "mlm_steps": 0}
    path = resolve_model_spec("tiny", texts_fn=texts, cache_dir=tmp_path, **kw)
    assert Path(path).parent == tmp_path and Path(path).name.startswith("tiny-")
    assert (Path(path) / "config.json").is_file() and (Path(path) / "tokenizer.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [Path(path).name]  # no temp folders left
    assert load_model(path, LABELS).config.hidden_size == 32

    def no_rebuild(*a, **k):
        raise AssertionError("rebuilt a cached tiny model")

    monkeypatch.setattr(tiny, "build_tiny", no_rebuild)
    again = resolve_model_spec(
        "tiny", texts_fn=lambda: list(reversed(tiny_texts[:300])), cache_dir=tmp_path, **kw
    )
    assert again == path and calls == [1]
    monkeypatch.undo()
    other = resolve_model_spec(
        "tiny", texts_fn=lambda: tiny_texts[:200], cache_dir=tmp_path, mlm_steps=0
    )
    assert other != path
    # the MLM steps are part of the key (and reach build_tiny)
    trained = resolve_model_spec(
        "tiny", texts_fn=texts, cache_dir=tmp_path, hidden=32, layers=1, heads=4, mlm_steps=3
    )
    assert trained not in (path, other)
    assert json.loads((Path(trained) / "hpc_forget_tiny.json").read_text())["mlm"]["steps"] == 3
    texts300 = tiny_texts[:300]
    assert tiny.tiny_key(texts300, mlm_steps=0) != tiny.tiny_key(texts300, mlm_steps=1)
    assert tiny.tiny_key(texts300) == tiny.tiny_key(texts300, mlm_steps=tiny.TINY_MLM_STEPS)


def test_resolve_model_spec_other_specs() -> None:
    def never():
        raise AssertionError("texts needed only for tiny")

    kw = {"texts_fn": never, "cache_dir": "/nonexistent"}
    assert resolve_model_spec("xlm-roberta-base", **kw) == "FacebookAI/xlm-roberta-base"
    assert resolve_model_spec("multilingual-e5-base", **kw) == "intfloat/multilingual-e5-base"
    assert resolve_model_spec("org/model", **kw) == "org/model"
    assert resolve_model_spec("~/m", **kw) == str(Path("~/m").expanduser())


# ------------------------------------------------------------------------- alignment


def test_encode_labels_first_subword_only(tiny_tokenizer) -> None:
    tok = tiny_tokenizer
    examples = [
        ex("wake me up at five am", "O O O O B-time I-time"),
        ex("olly quiet"),
        Ex((), ()),
    ]
    enc = encode(examples, tok, L2I)
    assert isinstance(enc, Encoded) and len(enc) == 3
    assert enc.n_words == [6, 2, 0] and enc.truncated == 0 and enc.empty_words == 0
    batch = tok([list(e.words) for e in examples], is_split_into_words=True)
    for i, e in enumerate(examples):
        assert enc.input_ids[i] == batch.input_ids[i]
        word_ids = batch.word_ids(i)
        expected = [
            -100 if w is None or w == word_ids[k - 1] else L2I[e.tags[w]]
            for k, w in enumerate(word_ids)
        ]
        assert enc.labels[i] == expected
        scored = [x for x in enc.labels[i] if x != -100]
        assert scored == [L2I[t] for t in e.tags]
        assert enc.labels[i][0] == enc.labels[i][-1] == -100  # <s>, </s>
    # "wake" splits into several pieces in the tiny vocabulary: only the first is labelled
    assert len(enc.input_ids[0]) > 6 + 2


def test_encode_counts_truncation(tiny_tokenizer) -> None:
    long = ex(" ".join(["wake me up at five am"] * 10), " ".join(["O O O O B-time I-time"] * 10))
    short = ex("stop")
    enc = encode([long, short], tiny_tokenizer, L2I, max_length=16)
    assert len(enc.input_ids[0]) == 16 and enc.input_ids[0][-1] == 2
    assert enc.truncated == 1
    kept = sum(x != -100 for x in enc.labels[0])
    assert 0 < kept < 60 and enc.truncated_words == 60 - kept
    assert enc.n_words == [60, 1]


def test_encode_gives_empty_words_a_position(tiny_model_dir: Path) -> None:
    """A word the tokenizer turns into nothing is encoded as <unk> and still scored."""
    from tokenizers import normalizers

    tok = load_tokenizer(str(tiny_model_dir))
    tok.backend_tokenizer.normalizer = normalizers.Replace("\u200b", "")
    assert tok(["\u200b"], is_split_into_words=True, add_special_tokens=False).input_ids == []
    e = Ex(("wake", "\u200b", "five"), ("O", "B-date", "B-time"))
    enc = encode([e], tok, L2I)
    assert enc.empty_words == 1 and enc.truncated == 0
    assert [x for x in enc.labels[0] if x != -100] == [0, L2I["B-date"], L2I["B-time"]]
    k = [i for i, x in enumerate(enc.labels[0]) if x == L2I["B-date"]][0]
    assert enc.input_ids[0][k] == tok.unk_token_id


def test_encode_real_xlmr_zero_width_space(xlmr_tokenizer) -> None:
    e = Ex(("ส่ง", "\u200b", "อีเมล"), ("O", "O", "O"))
    enc = encode([e], xlmr_tokenizer, L2I)
    assert enc.empty_words == 1
    assert sum(x != -100 for x in enc.labels[0]) == 3


def test_encode_errors_are_one_line(tiny_tokenizer) -> None:
    with pytest.raises(ModelError) as err:
        encode([ex("wake me", "O B-nope")], tiny_tokenizer, L2I)
    assert "'B-nope'" in one_line(err)
    with pytest.raises(ModelError) as err:
        encode([Ex(("a", "b"), ("O",))], tiny_tokenizer, L2I)
    one_line(err)

    class Slow:
        is_fast = False

    with pytest.raises(ModelError) as err:
        encode([ex("a")], Slow(), L2I)
    one_line(err)


def test_xlmr_tokenizer_folder_loads(xlmr_tokenizer) -> None:
    assert xlmr_tokenizer.is_fast and len(xlmr_tokenizer) == 250002
    assert xlmr_tokenizer("wake me up at five am").input_ids == [
        0,
        9908,
        163,
        1257,
        99,
        43606,
        444,
        2,
    ]


# ------------------------------------------------------------------------- LoRA


def _lora_names(model: torch.nn.Module) -> set[str]:
    from peft.tuners.lora import LoraLayer

    return {n for n, m in model.named_modules() if isinstance(m, LoraLayer)}


def test_add_lora_on_every_encoder_linear(tiny_model_dir: Path) -> None:
    model = load_model(str(tiny_model_dir), LABELS)
    cfg = model.config
    expected = {
        f"roberta.encoder.layer.{i}.{leaf}"
        for i in range(cfg.num_hidden_layers)
        for leaf in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        )
    }
    assert set(lora_targets(model)) == expected
    rank = 4
    peft_model = add_lora(model, rank, seed=0)
    assert {n.removeprefix("base_model.model.") for n in _lora_names(peft_model)} == expected
    lora_cfg = peft_model.peft_config["default"]
    assert (lora_cfg.r, lora_cfg.lora_alpha, lora_cfg.lora_dropout, lora_cfg.bias) == (
        4,
        4,
        0.1,
        "none",
    )
    assert "classifier" in lora_cfg.modules_to_save

    h, inter, n_layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    per_layer = rank * (4 * (h + h) + (h + inter) + (inter + h))
    classifier = h * len(LABELS) + len(LABELS)
    trainable = {n: p.numel() for n, p in peft_model.named_parameters() if p.requires_grad}
    assert sum(trainable.values()) == n_layers * per_layer + classifier
    assert all("lora_" in n or "classifier.modules_to_save" in n for n in trainable)


def test_add_lora_seed_and_rank_checks(tiny_model_dir: Path) -> None:
    def lora_a(seed: int) -> torch.Tensor:
        m = add_lora(load_model(str(tiny_model_dir), LABELS), 2, seed=seed)
        return dict(m.named_parameters())[
            "base_model.model.roberta.encoder.layer.0.attention.self.query.lora_A.default.weight"
        ]

    assert torch.equal(lora_a(1), lora_a(1)) and not torch.equal(lora_a(1), lora_a(2))
    for bad in (0, -1, 2.0):
        with pytest.raises(ModelError) as err:
            add_lora(load_model(str(tiny_model_dir), LABELS), bad)  # type: ignore[arg-type]
        one_line(err)


# ------------------------------------------------------------------------- params


def test_params_table_reproduces_paper_table1() -> None:
    rows = params_table("xlm-roberta-base")
    got = {(r.method, r.rank): r for r in rows}
    assert [(r.display, r.rank) for r in rows][:5] == [
        ("MULTI", 0),
        ("MULTI", 32),
        ("MULTI", 64),
        ("MULTI", 256),
        ("MONO", 0),
    ]
    paper = {
        ("multi", 0): 278.04,
        ("multi", 32): 5.36,
        ("multi", 64): 10.72,
        ("multi", 256): 42.86,
        ("mono", 0): 14458.27,
        ("vanilla", 0): 278.04,
        ("shared_lora", 32): 5.36,
        ("shared_lora", 64): 10.72,
        ("shared_lora", 256): 42.86,
        ("nonshared_lora", 64): 557.19,
        ("nonshared_lora", 256): 2228.75,
    }
    for key, value in paper.items():
        assert got[key].paper_m == value, key
        assert got[key].published == value and got[key].note == ""
    typo = got["nonshared_lora", 32]
    assert typo.published == 278.04 and typo.paper_m == 278.59 and "typo" in typo.note
    assert typo.models == 52
    # what this implementation trains: no pooler, classifier 768*111+111 per copy
    classifier = 768 * 111 + 111
    assert got["multi", 0].ours == 278_043_648 - (768 * 768 + 768) + classifier
    assert got["shared_lora", 32].ours == 32 * 12 * 13_824 + classifier
    assert got["nonshared_lora", 64].ours == 52 * (64 * 12 * 13_824 + classifier)
    assert got["mono", 0].ours == 52 * got["vanilla", 0].ours


def test_params_table_other_configs(tiny_model_dir: Path) -> None:
    assert params_table("multilingual-e5-base")[0].published == 278.04
    rows = params_table(str(tiny_model_dir), n_languages=3, ranks=(0, 4), num_labels=5)
    assert [(r.method, r.rank) for r in rows] == [
        ("multi", 0),
        ("multi", 4),
        ("mono", 0),
        ("vanilla", 0),
        ("shared_lora", 4),
        ("nonshared_lora", 4),
    ]
    assert all(r.published is None and r.note == "" for r in rows)
    cfg = tiny_config(100, 5)
    assert params_table(cfg, ranks=(4,), num_labels=5)[1].ours == 4 * 2 * (8 * 64 + 2 * 192) + 325


def test_format_params() -> None:
    text = format_params(params_table("xlm-roberta-base"))
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["method", "r", "models"]
    assert any(
        line.startswith("MONO") and "14,458.27" in line and "14,432.00" in line for line in lines
    )
    nonshared = [line for line in lines if line.startswith("NON-SHARED LoRA   32")]
    assert len(nonshared) == 1 and "278.59" in nonshared[0] and "typo" in nonshared[0]


# ------------------------------------------------------------ damaged model folders, tiny cache


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "foreign":
        path.write_bytes(b"<html>404 Not Found</html>\n" * 4)
    elif how == "longer":
        path.write_bytes(data + b"\0" * 16)
    elif how == "lfs":
        path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n")


@pytest.mark.parametrize(
    ("name", "how", "loader", "needle"),
    [
        ("model.safetensors", "truncated", "model", "weights file model.safetensors is truncated"),
        ("model.safetensors", "empty", "model", "weights file model.safetensors is empty"),
        ("model.safetensors", "foreign", "model", "model.safetensors is not a safetensors file"),
        ("model.safetensors", "longer", "model", "model.safetensors is damaged (16 bytes more"),
        ("model.safetensors", "lfs", "model", "model.safetensors is a Git LFS pointer"),
        ("pytorch_model.bin", "truncated", "model", "weights file pytorch_model.bin is truncated"),
        (
            "pytorch_model.bin",
            "foreign",
            "model",
            "pytorch_model.bin is truncated or not a PyTorch",
        ),
        ("config.json", "truncated", "model", "config.json is not valid JSON"),
        ("config.json", "empty", "tokenizer", "config.json is empty"),
        ("tokenizer.json", "truncated", "tokenizer", "tokenizer.json is not valid JSON"),
        ("tokenizer.json", "empty", "tokenizer", "tokenizer.json is empty"),
        ("tokenizer_config.json", "foreign", "tokenizer", "tokenizer_config.json is not valid"),
    ],
)
def test_damaged_file_in_a_model_folder_is_one_line_naming_it(
    tiny_model_dir: Path, tmp_path: Path, name: str, how: str, loader: str, needle: str
) -> None:
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    if name == "pytorch_model.bin":  # a folder saved with safe_serialization=False
        from safetensors.torch import load_file

        torch.save(load_file(folder / "model.safetensors"), folder / name)
        (folder / "model.safetensors").unlink()
    _damage(folder / name, how)
    with pytest.raises(ModelError) as err:
        if loader == "model":
            load_model(str(folder), LABELS)
        else:
            load_tokenizer(str(folder))
    msg = one_line(err)
    assert msg.startswith(f"model folder '{folder}': ") and needle in msg, msg
    assert "copy the model folder again" in msg


def test_damaged_weights_are_found_even_when_the_header_check_passes(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Same size, damaged header content: the library's error, as one line."""
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    n = int.from_bytes(data[:8], "little")
    header = data[8 : 8 + n].replace(b'"F32"', b'"X32"')
    path.write_bytes(bytes(data[:8]) + header + bytes(data[8 + n :]))
    with pytest.raises(ModelError) as err:
        load_model(str(folder), LABELS)
    assert one_line(err).startswith(f"cannot load model folder '{folder}' (")


def test_damaged_cached_hub_model_says_delete_and_prefetch(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--acme--tiny-xlmr"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    _damage(repo / "snapshots" / commit / "model.safetensors", "truncated")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as err:
        load_model("acme/tiny-xlmr", LABELS, cache_dir=tmp_path)
    msg = one_line(err)
    assert "weights file model.safetensors is truncated" in msg
    assert f"delete {repo.resolve()} and fetch it again with `hpc-forget prefetch" in msg


def _resolve_tiny(texts: list[str], cache: Path) -> Path:
    return Path(
        resolve_model_spec("tiny", texts_fn=lambda: texts, cache_dir=cache, hidden=32, mlm_steps=0)
    )


@pytest.mark.parametrize("how", ["truncated-weights", "no-marker", "empty-tokenizer"])
def test_damaged_tiny_cache_is_rebuilt_with_one_log_line(
    tiny_texts: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    texts = tiny_texts[:300]
    path = _resolve_tiny(texts, tmp_path)
    good = (path / "model.safetensors").read_bytes()
    if how == "truncated-weights":
        _damage(path / "model.safetensors", "truncated")
    elif how == "no-marker":  # killed half-way by an older version that renamed early
        (path / tiny.TINY_MARKER).unlink()
    else:
        _damage(path / "tokenizer.json", "empty")
    with caplog.at_level(logging.WARNING, logger="hpc_forget.models"):
        again = _resolve_tiny(texts, tmp_path)
    assert again == path
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"tiny model cache {path} is damaged (") and "rebuilding it" in line
    assert (path / "model.safetensors").read_bytes() == good  # the same model again
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # nothing left aside
    assert load_model(str(path), LABELS).config.hidden_size == 32


def test_tiny_cache_full_disk_is_one_line_and_leaves_nothing(
    tiny_texts: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    real = tiny.build_tiny

    def full(texts, out, *a, **k):
        train_tokenizer(texts, out, vocab_size=200)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tiny, "build_tiny", full)
    with pytest.raises(ModelError) as err:
        _resolve_tiny(tiny_texts[:300], tmp_path / "cache")
    msg = one_line(err)
    assert "disk full while writing the tiny model cache; earlier results are intact" in msg
    assert list((tmp_path / "cache").iterdir()) == []
    assert real is not full


def test_a_dead_builders_temp_folder_is_removed_by_the_next_build(
    tiny_texts: list[str], tmp_path: Path
) -> None:
    import subprocess
    import sys

    from hpc_forget import files

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    key = tiny.tiny_key(tiny_texts[:300], ("O",), hidden=32, mlm_steps=0)
    dead = tmp_path / f".tiny-{key}.{files.HOST}.{proc.pid}.0a0b.tmp"
    (dead / "sub").mkdir(parents=True)
    other = tmp_path / f".tiny-000000000000.{files.HOST}.{proc.pid}.0a0b.tmp"
    other.mkdir()
    path = _resolve_tiny(tiny_texts[:300], tmp_path)
    assert path.name == f"tiny-{key}" and not dead.exists() and other.exists()
