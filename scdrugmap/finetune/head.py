"""The classification head trained with the adapters: an MLP on the cell embedding.

Foundation-model embeddings of cells differ from each other by little next
to what they share, so the head first standardises each dimension with the
mean and spread of the training cells' embeddings (fixed before training,
saved with the head); without it a small head spends most of a short
fine-tuning run finding the scale.
"""

from __future__ import annotations

import torch
from torch import nn

HIDDEN = 256
DROPOUT = 0.1


class ResponseHead(nn.Module):
    """Cell embedding -> logits (resistant, sensitive)."""

    def __init__(self, dim: int, hidden: int = HIDDEN, dropout: float = DROPOUT) -> None:
        super().__init__()
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 2)
        )

    @torch.no_grad()
    def standardise_with(self, embeddings: torch.Tensor) -> None:
        self.shift.copy_(embeddings.mean(0))
        self.scale.copy_(embeddings.std(0).clamp_min(1e-6) if len(embeddings) > 1 else 1.0)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.net((embeddings - self.shift) / self.scale)
