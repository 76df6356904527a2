"""Uni-modal ensemble (UME; Du et al., "On Uni-Modal Feature Learning in Supervised Multi-Modal
Learning", ICML 2023) and single-modality training.

Every modality has its own encoder and its own linear head and is trained on its own loss; the
losses are summed into one backward, so each branch gets exactly the gradients it would get alone
(disjoint parameters: no gradient crosses branches). The branches share the batch order and the
model selection (the epoch with the best fused validation accuracy). At test the logits of the
present modalities are averaged. ``unimodal`` is the same with exactly one modality.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from altmodal.data.batch import Batch
from altmodal.data.dataset import Splits
from altmodal.data.registry import without_empty_samples
from altmodal.strategies.base import DataSpec, Loop, StepOutput, Strategy
from altmodal.strategies.joint import present_rows


def average_present(logits: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
    """(B, C) mean of the logits of the modalities present in each sample."""
    weights = torch.stack([present[m].to(torch.float32) for m in logits], dim=1)  # (B, M)
    weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1)
    return sum(weights[:, j : j + 1] * logits[m] for j, m in enumerate(logits))  # type: ignore[return-value]


class UME(Strategy):
    name = "ume"

    def __init__(self, encoders: Mapping[str, nn.Module], spec: DataSpec, options: Any, dim: int):
        super().__init__(encoders, spec, options)
        self.heads = nn.ModuleDict({m: nn.Linear(dim, spec.num_classes) for m in self.modalities})

    def unimodal_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {m: self.heads[m](features[m]) for m in self.modalities}

    def fuse(self, features: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        return average_present(self.unimodal_logits(features), present)

    def training_step(self, batch: Batch) -> StepOutput:
        logits = self.unimodal_logits(self.encode(batch))
        loss = sum(self.cross_entropy(logits[m], batch.label, batch.present[m]) for m in self.modalities)
        assert isinstance(loss, Tensor)
        self.optimize(loss)
        return StepOutput(loss.detach(), present_rows({m: v.detach() for m, v in logits.items()}, batch))


class Unimodal(UME):
    """One modality, its own encoder and head."""

    name = "unimodal"

    def __init__(self, encoders: Mapping[str, nn.Module], spec: DataSpec, options: Any, dim: int):
        if len(encoders) != 1:
            raise ValueError(
                f"strategy unimodal trains one modality; got {len(encoders)} ({', '.join(encoders)}): "
                "pick one with --modalities"
            )
        super().__init__(encoders, spec, options, dim)


def train_alone(loop: Loop, model: Unimodal, splits: Splits) -> dict[str, float]:
    """Train ``model`` with ``loop`` as ``altmodal train --strategy unimodal`` would: on its
    modality only (samples without it left out), best epoch on validation; returns that epoch's
    history row."""
    (modality,) = model.modalities
    own = without_empty_samples(splits.map(lambda view: view.with_modalities([modality])))
    history = loop.fit(model, own)
    return history[model.best_epoch - 1]  # best_epoch counts from 1
