"""A toy token classifier (embedding, dropout, linear head) with the model interface the
training loop uses, for tests of the loop itself: fast, no tokenizer, no Hub."""

from __future__ import annotations

import random
from types import SimpleNamespace

import torch
from transformers.modeling_outputs import TokenClassifierOutput

VOCAB, LABELS = 40, 5


class Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, 16)
        self.drop = torch.nn.Dropout(0.1)
        self.classifier = torch.nn.Linear(16, LABELS)

    def forward(self, input_ids, attention_mask=None, labels=None):  # noqa: ANN001
        logits = self.classifier(self.drop(self.embed(input_ids)))
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, LABELS), labels.reshape(-1), ignore_index=-100
            )
        return TokenClassifierOutput(loss=loss, logits=logits)


def toy_encoded(n: int, seed: int = 0) -> SimpleNamespace:
    """``n`` encoded examples of 3..9 tokens (labels: token id mod LABELS)."""
    rng = random.Random(seed)
    ids = [[rng.randrange(1, VOCAB) for _ in range(rng.randint(3, 9))] for _ in range(n)]
    return SimpleNamespace(input_ids=ids, labels=[[t % LABELS for t in x] for x in ids])
