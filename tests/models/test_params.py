"""Closed-form parameter counts (no torch) agree with counting a model built on `meta`."""

from __future__ import annotations

import pytest

from hpc_forget.models.params import (
    PRESETS,
    XLMR_BASE_CONFIG,
    build_rows,
    encoder_counts,
    preset_name,
    preset_params_table,
)


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("n_languages", [52, 3])
def test_preset_table_equals_the_meta_model_count(preset, n_languages):
    from hpc_forget.models.counts import params_table

    assert preset_params_table(preset, n_languages=n_languages) == params_table(
        preset, n_languages=n_languages
    )


def test_closed_form_matches_a_differently_shaped_encoder():
    from hpc_forget.models.counts import params_table
    from hpc_forget.models.hub import tiny_config

    cfg = tiny_config(100, 5)
    shape = cfg.to_dict()
    counts = encoder_counts(shape, [4, 8], num_labels=5)
    assert build_rows(counts, n_languages=3, published=False) == params_table(
        cfg, n_languages=3, ranks=(4, 8), num_labels=5
    )


def test_paper_figures():
    rows = {(r.method, r.rank): r for r in preset_params_table("xlm-roberta-base")}
    assert rows[("multi", 0)].paper == 278_043_648
    assert rows[("shared_lora", 32)].paper == 5_357_568
    assert rows[("multi", 0)].published == 278.04
    assert "typo" in rows[("nonshared_lora", 32)].note
    from hpc_forget.models.counts import params_for

    assert params_for("xlm-roberta-base") == preset_params_table("xlm-roberta-base")
    assert XLMR_BASE_CONFIG["hidden_size"] == 768


def test_counts_imports_no_torch():
    """`hpc-forget params` for a preset imports hpc_forget.models.counts: no torch."""
    import subprocess
    import sys

    code = (
        "import sys, hpc_forget.models.counts as c; c.params_for('xlm-roberta-base');"
        " assert 'torch' not in sys.modules, 'torch imported'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


# The one-model count (paper convention: the encoder with its pooler) of each preset, the
# figure `hpc-forget params` prints for MULTI; the hub's model cards round them to 278M, 560M
# and 118M.
FULL_MODEL = {
    "xlm-roberta-base": 278_043_648,
    "multilingual-e5-base": 278_043_648,
    "xlm-roberta-large": 559_890_432,
    "multilingual-e5-large": 559_890_432,
    "multilingual-e5-large-instruct": 559_890_432,
    "multilingual-e5-small": 117_653_760,
}


@pytest.mark.parametrize("preset", sorted(FULL_MODEL))
def test_preset_sizes(preset):
    rows = {(r.method, r.rank): r for r in preset_params_table(preset)}
    assert rows[("multi", 0)].paper == FULL_MODEL[preset]
    base_shape = FULL_MODEL[preset] == FULL_MODEL["xlm-roberta-base"]
    # the paper's printed figures belong to the XLM-R base shape only
    assert (rows[("multi", 0)].published == 278.04) is base_shape
    assert all(r.published is None for r in rows.values()) is not base_shape


def test_every_preset_is_listed():
    assert set(PRESETS) == set(FULL_MODEL)
    assert PRESETS["multilingual-e5-large-instruct"] == "intfloat/multilingual-e5-large-instruct"
    assert preset_name("intfloat/multilingual-e5-small") == "multilingual-e5-small"
    assert preset_name("multilingual-e5-large") == "multilingual-e5-large"
    assert preset_name("org/other") is None
    with pytest.raises(KeyError):
        preset_params_table("org/other")
