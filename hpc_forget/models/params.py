"""Model presets, their shapes, and the parameter counts of the paper's Table 1 — no torch.

The presets (:data:`PRESET_SPECS`): XLM-R base and large, and the multilingual E5 family
(small, base, large, large-instruct), each with the values of its public ``config.json``.
`hpc-forget params` for a preset needs only the preset's shape: the counts of a BERT-style
encoder (XLM-R, E5) are closed-form sums over its layers, so the command starts without
importing torch or transformers. Other models (hub ids, paths, ``tiny``) are counted by
`hpc_forget.models.counts.params_table`, which builds the model on the ``meta`` device and hands the
counts to :func:`build_rows`; tests/models/test_params.py checks that both agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hpc_forget.study.methods import DISPLAY_NAME

# The public config.json of xlm-roberta-base (multilingual-e5-base has the same shapes), so
# that `params` and planning work with no download.
XLMR_BASE_CONFIG: dict[str, Any] = {
    "vocab_size": 250002,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}

# The public config.json of xlm-roberta-large (multilingual-e5-large and
# multilingual-e5-large-instruct, fine-tuned from it, have the same shapes).
XLMR_LARGE_CONFIG: dict[str, Any] = {
    **XLMR_BASE_CONFIG,
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
}

# The public config.json of multilingual-e5-small: a BERT (model_type "bert", from
# microsoft/Multilingual-MiniLM-L12-H384) with XLM-R's SentencePiece vocabulary (250,037
# pieces), two token types and 512 positions.
E5_SMALL_CONFIG: dict[str, Any] = {
    "vocab_size": 250037,
    "hidden_size": 384,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}


@dataclass(frozen=True)
class Preset:
    """A built-in model: its hub id, its transformers ``model_type`` and its config's shape."""

    hub_id: str
    model_type: str
    config: Mapping[str, Any]


PRESET_SPECS: dict[str, Preset] = {
    "xlm-roberta-base": Preset("FacebookAI/xlm-roberta-base", "xlm-roberta", XLMR_BASE_CONFIG),
    "xlm-roberta-large": Preset("FacebookAI/xlm-roberta-large", "xlm-roberta", XLMR_LARGE_CONFIG),
    "multilingual-e5-small": Preset("intfloat/multilingual-e5-small", "bert", E5_SMALL_CONFIG),
    "multilingual-e5-base": Preset(
        "intfloat/multilingual-e5-base", "xlm-roberta", XLMR_BASE_CONFIG
    ),
    "multilingual-e5-large": Preset(
        "intfloat/multilingual-e5-large", "xlm-roberta", XLMR_LARGE_CONFIG
    ),
    "multilingual-e5-large-instruct": Preset(
        "intfloat/multilingual-e5-large-instruct", "xlm-roberta", XLMR_LARGE_CONFIG
    ),
}

#: Preset name -> hub id.
PRESETS: dict[str, str] = {name: p.hub_id for name, p in PRESET_SPECS.items()}


def preset_name(model: str) -> str | None:
    """The preset a name or a preset's hub id stands for (``"intfloat/multilingual-e5-base"``
    -> ``"multilingual-e5-base"``), else None. A pinned ``@REVISION`` must be split off first."""
    if model in PRESET_SPECS:
        return model
    return next((name for name, p in PRESET_SPECS.items() if p.hub_id == model), None)


def preset_config(preset: str) -> dict[str, Any]:
    """A copy of a preset's config values (for its transformers config class); KeyError if
    ``preset`` is not a preset name."""
    return dict(PRESET_SPECS[preset].config)


#: The shape keys the counts depend on (and that decide whether the paper's figures apply).
SHAPE_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
)

# Paper Table 1, "Params (M)" column (XLM-R base, 52 languages); keys: (method, rank).
PAPER_TABLE1: dict[tuple[str, int], float] = {
    ("multi", 0): 278.04,
    ("multi", 32): 5.36,
    ("multi", 64): 10.72,
    ("multi", 256): 42.86,
    ("mono", 0): 14458.27,
    ("vanilla", 0): 278.04,
    ("shared_lora", 32): 5.36,
    ("shared_lora", 64): 10.72,
    ("shared_lora", 256): 42.86,
    ("nonshared_lora", 32): 278.04,
    ("nonshared_lora", 64): 557.19,
    ("nonshared_lora", 256): 2228.75,
}


@dataclass(frozen=True)
class Row:
    """One line of the parameter table (counts are plain parameter counts, not millions).

    method: the config name (multi, mono, vanilla, shared_lora, nonshared_lora); `display`
        is the paper's name. rank 0 = full fine-tuning.
    models: how many independently trained copies the method has (52 for mono and
        nonshared_lora with 52 languages, else 1).
    paper: the paper's convention computed from the config (XLMRobertaModel with pooler;
        LoRA on all its linear layers, pooler included; classifier not counted).
    ours: what this implementation trains (token classification model: no pooler; LoRA on
        the encoder linear layers; a hidden*L+L classifier in every trained copy).
    published: the figure printed in the paper's Table 1 (millions), for the XLM-R base
        shape with 52 languages only; None otherwise.
    note: why `paper` and `published` disagree, if they do.
    """

    method: str
    rank: int
    display: str
    models: int
    paper: int
    ours: int
    published: float | None = None
    note: str = ""

    @property
    def paper_m(self) -> float:
        return round(self.paper / 1e6, 2)

    @property
    def ours_m(self) -> float:
        return round(self.ours / 1e6, 2)


def is_xlmr_base_shape(shape: Mapping[str, Any]) -> bool:
    """True when ``shape`` (a config dict or object's attributes) is XLM-R base's."""
    return all(shape.get(k) == XLMR_BASE_CONFIG[k] for k in SHAPE_KEYS)


@dataclass(frozen=True)
class Counts:
    """What `build_rows` needs: full models and LoRA adapters in both conventions."""

    full_paper: int  # encoder with pooler (XLMRobertaModel)
    full_ours: int  # token classification model (no pooler, with classifier)
    classifier: int  # hidden*labels + labels
    lora_paper: Mapping[int, int]  # rank -> LoRA size on every linear layer incl. the pooler
    lora_ours: Mapping[int, int]  # rank -> LoRA size on the encoder's linear layers


def encoder_counts(shape: Mapping[str, Any], ranks: Sequence[int], num_labels: int) -> Counts:
    """Closed-form counts of a BERT-style encoder (XLM-R, RoBERTa, E5) of ``shape``."""
    v, h = int(shape["vocab_size"]), int(shape["hidden_size"])
    layers, inter = int(shape["num_hidden_layers"]), int(shape["intermediate_size"])
    positions, types = int(shape["max_position_embeddings"]), int(shape["type_vocab_size"])
    embeddings = (v + positions + types) * h + 2 * h  # + LayerNorm
    attention = 4 * (h * h + h) + 2 * h  # query, key, value, output dense + LayerNorm
    feed_forward = (h * inter + inter) + (inter * h + h) + 2 * h  # + LayerNorm
    encoder = embeddings + layers * (attention + feed_forward)
    pooler = h * h + h
    classifier = h * num_labels + num_labels
    per_rank = layers * (4 * (h + h) + (h + inter) + (inter + h))  # LoRA A+B per unit rank
    return Counts(
        full_paper=encoder + pooler,
        full_ours=encoder + classifier,
        classifier=classifier,
        lora_paper={r: r * (per_rank + 2 * h) for r in ranks},
        lora_ours={r: r * per_rank + classifier for r in ranks},
    )


def lora_ranks(ranks: Sequence[int]) -> list[int]:
    """The LoRA ranks a table lists (rank 0, full fine-tuning, is always listed)."""
    return sorted({int(r) for r in ranks if int(r) > 0})


def build_rows(counts: Counts, *, n_languages: int, published: bool) -> list[Row]:
    """The table's rows from the counts; ``published``: the paper's figures apply."""
    n = n_languages
    ranks = sorted(counts.lora_paper)

    def row(method: str, rank: int, models: int, paper: int, ours: int) -> Row:
        value = PAPER_TABLE1.get((method, rank)) if published else None
        note = ""
        if value is not None and round(paper / 1e6, 2) != value:
            note = (
                f"paper prints {value:,.2f} (MULTI's figure); {n} x {counts.lora_paper[rank]:,} "
                f"= {paper / 1e6:,.2f}M, so likely a typo"
            )
        return Row(method, rank, DISPLAY_NAME[method], models, paper, ours, value, note)

    lp, lo = counts.lora_paper, counts.lora_ours
    rows = [row("multi", 0, 1, counts.full_paper, counts.full_ours)]
    rows += [row("multi", r, 1, lp[r], lo[r]) for r in ranks]
    rows.append(row("mono", 0, n, n * counts.full_paper, n * counts.full_ours))
    rows.append(row("vanilla", 0, 1, counts.full_paper, counts.full_ours))
    rows += [row("shared_lora", r, 1, lp[r], lo[r]) for r in ranks]
    rows += [row("nonshared_lora", r, n, n * lp[r], n * lo[r]) for r in ranks]
    return rows


def preset_params_table(
    preset: str,
    n_languages: int = 52,
    ranks: Sequence[int] = (32, 64, 256),
    num_labels: int = 111,
) -> list[Row]:
    """`params_table` for a preset (``xlm-roberta-base``, ...), from its shape alone."""
    shape = preset_config(preset)
    counts = encoder_counts(shape, lora_ranks(ranks), num_labels)
    published = is_xlmr_base_shape(shape) and n_languages == 52
    return build_rows(counts, n_languages=n_languages, published=published)


def format_params(rows: Sequence[Row], title: str | None = None) -> str:
    """A plain-text table of `params_table` rows (millions, two decimals)."""

    def m(value: float | None) -> str:
        return "-" if value is None else f"{value:,.2f}"

    header = ("method", "r", "models", "published", "paper conv.", "ours", "note")
    body = [
        (
            r.display,
            str(r.rank) if r.rank else "-",
            str(r.models),
            m(r.published),
            m(r.paper / 1e6),
            m(r.ours / 1e6),
            r.note,
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(6)]
    align = ("<", ">", ">", ">", ">", ">")

    def fmt(line: tuple[str, ...]) -> str:
        cells = [f"{c:{a}{w}}" for c, a, w in zip(line[:6], align, widths, strict=True)]
        return ("  ".join(cells) + ("  " + line[6] if line[6] else "")).rstrip()

    lines = [title] if title else []
    lines += [fmt(header), fmt(tuple("-" * w for w in widths) + ("",))]
    lines += [fmt(line) for line in body]
    lines += [
        "",
        "Trainable parameters in millions. published: the paper's Table 1 (XLM-R base, 52",
        "languages). paper conv.: the paper's convention computed from the config",
        "(XLMRobertaModel with pooler; LoRA on every linear layer incl. the pooler; classifier",
        "not counted). ours: what hpc-forget trains (token classification: no pooler; LoRA on",
        "the encoder's linear layers; the classifier, hidden*labels+labels, in every trained",
        "copy). models: independently trained copies (MONO, NON-SHARED: one per language).",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class PresetSize:
    """One line of `hpc-forget params --presets`: a preset's shape and sizes (plain counts).

    full: one model in the paper's convention (encoder with pooler). lora: rank -> one LoRA
    adapter in the paper's convention (every linear layer, pooler included)."""

    preset: str
    hub_id: str
    model_type: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    vocab: int
    positions: int
    full: int
    lora: Mapping[int, int]


def preset_sizes(ranks: Sequence[int] = (32, 64, 256), num_labels: int = 111) -> list[PresetSize]:
    """Every preset's shape and one-model sizes, in :data:`PRESET_SPECS` order (no torch)."""
    out = []
    for name, spec in PRESET_SPECS.items():
        c = spec.config
        counts = encoder_counts(c, lora_ranks(ranks), num_labels)
        out.append(
            PresetSize(
                name,
                spec.hub_id,
                spec.model_type,
                int(c["num_hidden_layers"]),
                int(c["hidden_size"]),
                int(c["intermediate_size"]),
                int(c["num_attention_heads"]),
                int(c["vocab_size"]),
                int(c["max_position_embeddings"]),
                counts.full_paper,
                dict(counts.lora_paper),
            )
        )
    return out


def format_presets(sizes: Sequence[PresetSize]) -> str:
    """A plain-text table of :func:`preset_sizes` (parameters in millions, two decimals)."""
    ranks = sorted({r for s in sizes for r in s.lora})
    header = ("preset", "hub id", "type", "L", "h", "i", "heads", "vocab", "pos", "full")
    header += tuple(f"LoRA r{r}" for r in ranks)
    body = [
        (
            s.preset,
            s.hub_id,
            s.model_type,
            str(s.layers),
            str(s.hidden),
            str(s.intermediate),
            str(s.heads),
            f"{s.vocab:,}",
            str(s.positions),
            f"{s.full / 1e6:,.2f}",
            *(f"{s.lora[r] / 1e6:,.2f}" for r in ranks),
        )
        for s in sizes
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def fmt(line: Sequence[str]) -> str:
        return "  ".join(
            f"{c:<{w}}" if i < 3 else f"{c:>{w}}"
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()

    lines = [fmt(header), fmt(["-" * w for w in widths])] + [fmt(line) for line in body]
    lines += [
        "",
        "Parameters in millions, the paper's convention (the encoder with its pooler; one LoRA",
        "adapter on every linear layer incl. the pooler). L layers, h hidden, i intermediate.",
        "Per method: hpc-forget params --model PRESET.",
    ]
    return "\n".join(lines)
