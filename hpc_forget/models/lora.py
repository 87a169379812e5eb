"""LoRA adapters (PEFT) over an encoder's linear layers."""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import TYPE_CHECKING

import torch
from torch import nn

from hpc_forget.errors import ModelError

if TYPE_CHECKING:  # heavy imports stay lazy where the module is only imported for a name
    from peft import PeftModel
    from transformers import (
        PreTrainedModel,
    )

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# LoRA
# ---------------------------------------------------------------------------------------------


def lora_targets(model: nn.Module, *, include_pooler: bool = False) -> list[str]:
    """Names of the nn.Linear modules LoRA goes on: every linear layer inside the encoder
    (query, key, value, attention output dense, intermediate dense, output dense), and the
    pooler's dense layer when asked. Never the token classifier."""
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        parts = name.split(".")
        if "encoder" in parts or (include_pooler and "pooler" in parts):
            names.append(name)
    return names


def add_lora(
    model: PreTrainedModel,
    rank: int,
    *,
    dropout: float = 0.1,
    seed: int | None = None,
    train_head: bool = True,
) -> PeftModel:
    """Wrap `model` (in place) with one LoRA adapter of rank `rank` (alpha = rank, bias none)
    on every encoder linear layer; the classifier trains alongside as a per-adapter copy
    (`modules_to_save`). Only LoRA and the classifier are trainable. `seed`, when given, fixes
    the LoRA A initialisation without touching the caller's RNG state. ``train_head=False``
    keeps the classifier frozen at its initial weights (only the adapter trains, as the paper
    words it), so the forgetting measured is the adapter's alone."""
    from peft import LoraConfig, TaskType, get_peft_model

    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise ModelError(
            f"LoRA rank must be a positive integer (got {rank!r}): rank 0 means full "
            "fine-tuning, so do not add LoRA"
        )
    targets = lora_targets(model)
    if not targets:
        raise ModelError(
            f"no linear layers under an 'encoder' module in {type(model).__name__}: "
            "LoRA placement supports BERT-style encoders (XLM-R, E5)"
        )
    config = LoraConfig(
        task_type=TaskType.TOKEN_CLS,
        r=rank,
        lora_alpha=rank,
        lora_dropout=dropout,
        bias="none",
        target_modules=targets,
        modules_to_save=["classifier"],
    )
    rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with rng, warnings.catch_warnings():
        # PEFT calls a transformers property that transformers 5 deprecates: not our business
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        if seed is not None:
            torch.manual_seed(seed)
        peft_model = get_peft_model(model, config)
    if not train_head:
        for name, p in peft_model.named_parameters():
            if "classifier" in name.split("."):
                p.requires_grad_(False)
    return peft_model
