"""Small parts several strategies compose: auxiliary unimodal heads, masked unimodal losses and
per-modality true-class scores.

MMPareto, G-Blending and InfoReg* train a joint model plus one linear classifier per modality
(:class:`UnimodalHeads`), each with its own cross-entropy over the samples that have the modality
(:func:`unimodal_losses`). OGM-GE and InfoReg compare modalities by how much probability each
one's own prediction puts on the true class (:func:`true_class_scores`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from altmodal.data.batch import Batch
from altmodal.strategies.base import Strategy


class UnimodalHeads(nn.Module):
    """One linear classifier per modality on top of that modality's encoder features."""

    def __init__(self, modalities: Sequence[str], dim: int, num_classes: int):
        super().__init__()
        self.fc = nn.ModuleDict({m: nn.Linear(dim, num_classes) for m in modalities})

    def forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """modality -> (B, C) logits of its own head."""
        return {m: layer(features[m]) for m, layer in self.fc.items()}


def unimodal_losses(strategy: Strategy, logits: Mapping[str, Tensor], batch: Batch) -> dict[str, Tensor]:
    """modality -> cross-entropy of its (B, C) logits over the samples that have the modality
    (summed over them and divided by their GLOBAL count; 0 when no sample has it)."""
    return {m: strategy.cross_entropy(v, batch.label, batch.present[m]) for m, v in logits.items()}


def true_class_scores(strategy: Strategy, logits: Mapping[str, Tensor], batch: Batch) -> Tensor:
    """(M,) per modality, the mean over the global batch's samples that have it of
    softmax(logits)[label]; NaN for a modality no sample of the global batch has."""
    scores = []
    for m, v in logits.items():
        rows = batch.present[m]
        prob = torch.softmax(v.detach().float(), dim=1).gather(1, batch.label[:, None]).squeeze(1)
        total = strategy.dist.sum((prob * rows).sum())
        count = strategy.dist.sum(rows.sum().to(torch.float32))
        scores.append(torch.where(count > 0, total / count.clamp_min(1), float("nan")))  # no host read
    return torch.stack(scores)
