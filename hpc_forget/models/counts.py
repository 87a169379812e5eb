"""Parameter counts (the paper's Table 1): a preset from its shape alone, any other model from a
meta-device model built from its config. Importing this module imports no torch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from hpc_forget.models.params import (
    PRESETS,
    Counts,
    Row,
    build_rows,
    is_xlmr_base_shape,
    lora_ranks,
    preset_params_table,
)

if TYPE_CHECKING:
    from torch import nn
    from transformers import PretrainedConfig

# ---------------------------------------------------------------------------------------------
# Parameter counts (paper Table 1)
# ---------------------------------------------------------------------------------------------


def _linear_lora_size(model: nn.Module, names: list[str], rank: int) -> int:
    modules = dict(model.named_modules())
    return sum(rank * (modules[n].in_features + modules[n].out_features) for n in names)


def params_table(
    spec_or_config: str | PretrainedConfig = "xlm-roberta-base",
    n_languages: int = 52,
    ranks: Sequence[int] = (32, 64, 256),
    num_labels: int = 111,
) -> list[Row]:
    """Trainable parameters per method, from the config alone (models built on `meta`)."""
    import torch
    from transformers import AutoModel, AutoModelForTokenClassification

    from hpc_forget.models.hub import load_config, quiet_transformers
    from hpc_forget.models.lora import lora_targets

    config = (
        load_config(spec_or_config, num_labels=num_labels)
        if isinstance(spec_or_config, str)
        else spec_or_config.__class__.from_dict(spec_or_config.to_dict())
    )
    config.num_labels = num_labels
    with torch.device("meta"), quiet_transformers():
        try:
            base = AutoModel.from_config(config, add_pooling_layer=True)
        except TypeError:
            base = AutoModel.from_config(config)
        ours_model = AutoModelForTokenClassification.from_config(config)

    classifier = sum(
        p.numel() for n, p in ours_model.named_parameters() if n.startswith("classifier.")
    )
    paper_targets = lora_targets(base, include_pooler=True)
    our_targets = lora_targets(ours_model)
    ranks = lora_ranks(ranks)
    counts = Counts(
        full_paper=sum(p.numel() for p in base.parameters()),
        full_ours=sum(p.numel() for p in ours_model.parameters()),
        classifier=classifier,
        lora_paper={r: _linear_lora_size(base, paper_targets, r) for r in ranks},
        lora_ours={r: _linear_lora_size(ours_model, our_targets, r) + classifier for r in ranks},
    )
    published = is_xlmr_base_shape(config.to_dict()) and n_languages == 52
    return build_rows(counts, n_languages=n_languages, published=published)


def params_for(model: str, n_languages: int = 52) -> list[Row]:
    """`hpc-forget params`: a preset from its shape (no torch); any other model through
    :func:`params_table` (its config from the Hub, a folder or ``tiny``)."""
    if model in PRESETS:
        return preset_params_table(model, n_languages=n_languages)
    return params_table(model, n_languages=n_languages)
