"""Tokenizers and encoders: hub and local loading, the tiny model, sub-word label alignment,
LoRA, parameter counts (paper Table 1; ``models.params`` imports no torch). May import study
and data."""
