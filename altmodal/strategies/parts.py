"""Small parts several strategies compose: auxiliary unimodal heads, masked unimodal losses,
per-modality true-class scores, modality dropout, the mean present feature, and SMIL's features
and draws of samples.

MMPareto, G-Blending and InfoReg* train a joint model plus one linear classifier per modality
(:class:`UnimodalHeads`), each with its own cross-entropy over the samples that have the modality
(:func:`unimodal_losses`). OGM-GE and InfoReg compare modalities by how much probability each
one's own prediction puts on the true class (:func:`true_class_scores`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from altmodal.data.batch import Batch, to_device
from altmodal.data.dataset import MultimodalDataset, iterate
from altmodal.model import Model
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


def mean_present(features: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
    """(B, d) each sample's mean over the modalities it has of their (B, d) features (0 where it has
    none): what SMIL reconstructs from and ShaSpec fills an absent modality with."""
    mask = torch.stack([present[m] for m in features], dim=1).to(next(iter(features.values())).dtype)  # (B, M)
    stacked = torch.stack(list(features.values()), dim=1)  # (B, M, d)
    return (stacked * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)


def each_present_alone(
    fuse: Callable[[Mapping[str, Tensor], Mapping[str, Tensor]], Tensor], features: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """modality -> ``fuse``'s prediction with only that modality present (models that fill an
    absent modality from the present ones: ShaSpec, SMIL)."""
    every = torch.ones(
        len(next(iter(features.values()))), dtype=torch.bool, device=next(iter(features.values())).device
    )
    return {m: fuse(features, {k: every if k == m else ~every for k in features}) for m in features}


def drop_masks(present: Mapping[str, Tensor], rate: float, generator: torch.Generator) -> dict[str, Tensor]:
    """modality -> (B,) CPU mask: each present entry kept with probability 1 - ``rate``; a sample
    that would keep none keeps one of the modalities it had, chosen uniformly."""
    before = torch.stack([present[m] for m in present], dim=1)  # (B, M)
    keep = before & (torch.rand(before.shape, generator=generator) >= rate)
    lost = before.any(dim=1) & ~keep.any(dim=1)
    if bool(lost.any()):
        scores = torch.rand(before.shape, generator=generator).masked_fill(~before, -1.0)
        restored = torch.zeros_like(keep).scatter_(1, scores.argmax(dim=1, keepdim=True), True)
        keep |= restored & lost[:, None]
    return {m: keep[:, j] for j, m in enumerate(present)}


def drop_modalities(batch: Batch, rate: float, generator: torch.Generator) -> Batch:
    """``batch`` with modalities dropped by :func:`drop_masks` (drawn on the host, with a CPU
    ``generator``), their inputs zeroed, the host masks kept (ModDrop; ShaSpec's random dropping)."""
    if rate == 0:
        return batch
    host = drop_masks(batch.host_masks(), rate, generator)
    dropped = batch.with_present({m: to_device(mask, batch.label.device) for m, mask in host.items()})
    return dataclasses.replace(dropped, host_present=host)


@torch.no_grad()
def step_features(model: Model, dataset: MultimodalDataset, batch_size: int) -> dict[str, Tensor]:
    """modality -> (n, d) features of ``dataset``'s samples that have it, in sample order, as a
    training step computes them (in training mode: normalisation from the batch), the running
    statistics left as they were (SMIL's priors)."""
    kept = {name: b.clone() for name, b in model.named_buffers()}
    parts: dict[str, list[Tensor]] = {}
    for batch in iterate(dataset, batch_size, shuffle=False):
        batch = batch.to(model.device)
        for m, f in model.encode(batch).items():
            parts.setdefault(m, []).append(f[batch.present[m]].double().cpu())
    for name, b in model.named_buffers():
        b.copy_(kept[name])
    return {m: torch.cat(f) for m, f in parts.items()}


def draw(dataset: MultimodalDataset, size: int, seed: Sequence[int], model: Model) -> Batch | None:
    """``size`` samples of ``dataset`` drawn without replacement by ``seed`` (this process's share
    of them, on the model's device, augmented); None when it is empty (SMIL's complete batch)."""
    if len(dataset) == 0:
        return None
    rng = np.random.default_rng(list(seed))
    chosen = rng.choice(len(dataset), min(size, len(dataset)), replace=False)
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    return dataset.gather(chosen[model.dist.rank :: model.dist.world_size], generator, model.device)
