"""QMF: quality-aware multimodal fusion (Zhang et al., "Provable Dynamic Fusion for Low-Quality
Multimodal Data", ICML 2023).

Each modality has its own encoder and head. A modality's confidence in a sample is an energy
score, c_m = logsumexp(o_m) / T (T = 10); the fused logits are sum_m c_m.detach() * o_m over the
present modalities. The loss is the sum of the unimodal cross-entropies (plus the fused one,
``qmf_fused_loss``, as in MLA's QMF baseline) plus ``qmf_lambda`` times a ranking regulariser: per
modality, a history holds every training sample's accumulated cross-entropy, and the confidences
of sample pairs (each sample with the next one in the batch) should be ordered inversely to their
min-max-normalised histories, by a margin equal to the normalised history gap:

    L_rank = mean over pairs of relu(t_ij * (c_i - c_j) + |h_i - h_j|),   t_ij = sign(h_i - h_j).

This is the margin-ranking loss of confidence-aware learning that QMF builds on, and the default
(``qmf_ranking=margin``). The released QMF code adds the margin to the second input of
MarginRankingLoss with the target negated, which turns the margin into a tolerance:
relu(t (c_i - c_j) - |h_i - h_j|); ``qmf_ranking=tolerance`` uses that form. As in that code,
the history is updated with the batch's losses before the regulariser is computed. Under data
parallelism every process records every sample's loss, so the histories stay identical.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from altmodal.config import option, require
from altmodal.data.batch import Batch
from altmodal.strategies.base import DataSpec, StepOutput, Strategy
from altmodal.strategies.joint import present_rows


@dataclass(frozen=True)
class QMFOptions:
    qmf_temperature: float = option(10.0, "energy temperature T of the confidence logsumexp(o)/T")
    qmf_lambda: float = option(0.1, "weight of the ranking regulariser")
    qmf_fused_loss: bool = option(True, "add the cross-entropy of the fused logits to the loss")
    qmf_ranking: Literal["margin", "tolerance"] = option(
        "margin",
        "ranking term: margin (relu(t(c_i - c_j) + |dh|), confidence-aware learning's loss) or tolerance "
        "(relu(t(c_i - c_j) - |dh|), the released QMF code)",
    )

    def __post_init__(self) -> None:
        require(self.qmf_temperature > 0, "qmf_temperature", self.qmf_temperature, "positive")
        require(self.qmf_lambda >= 0, "qmf_lambda", self.qmf_lambda, "non-negative")


def confidence(logits: Tensor, temperature: float) -> Tensor:
    """(B, C) logits -> (B,) energy confidence logsumexp(o) / T."""
    return torch.logsumexp(logits, dim=1) / temperature


def normalise_history(history: Tensor, seen: Tensor) -> Tensor:
    """Min-max normalise accumulated losses over the samples seen so far (others stay 0; all
    are 0 before any is seen). Computed on the device without reading it back."""
    low = torch.where(seen, history, math.inf).min()
    high = torch.where(seen, history, -math.inf).max()
    span = (high - low).clamp_min(1e-12)
    return torch.where(seen, (history - low) / span, torch.zeros_like(history))


def ranking_targets(history: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Targets t = sign(h_i - h_j) and margins |h_i - h_j| for each sample i of a batch paired
    with the next one j (the last with the first), from normalised histories."""
    h_i = history[index]
    h_j = torch.roll(h_i, -1)
    return torch.sign(h_i - h_j), (h_i - h_j).abs()


def ranking_loss(conf: Tensor, target: Tensor, margin: Tensor, form: str = "margin") -> Tensor:
    """(B,) per-pair hinge. ``margin``: the higher-loss sample's confidence must sit ``margin``
    below; ``tolerance`` (released code): it may sit up to ``margin`` above without a penalty."""
    sign = 1.0 if form == "margin" else -1.0
    return F.relu(target * (conf - torch.roll(conf, -1)) + sign * margin) * (target != 0)


class QMF(Strategy):
    name = "qmf"
    options_class = QMFOptions
    history: Tensor
    seen: Tensor

    def __init__(self, encoders: Mapping[str, nn.Module], spec: DataSpec, options: QMFOptions, dim: int):
        super().__init__(encoders, spec, options)
        self.heads = nn.ModuleDict({m: nn.Linear(dim, spec.num_classes) for m in self.modalities})
        shape = (len(self.modalities), spec.num_samples)
        self.register_buffer("history", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("seen", torch.zeros(shape, dtype=torch.bool))

    def unimodal_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {m: self.heads[m](features[m]) for m in self.modalities}

    def fuse(self, features: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        return self._fuse(self.unimodal_logits(features), present)

    def _fuse(self, logits: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        total = torch.zeros_like(next(iter(logits.values())))
        for m, o in logits.items():
            weight = confidence(o, self.options.qmf_temperature).detach() * present[m]
            total = total + weight.unsqueeze(1) * o
        return total

    def training_step(self, batch: Batch) -> StepOutput:
        logits = self.unimodal_logits(self.encode(batch))
        opts: Any = self.options
        loss = torch.zeros((), device=self.device)
        for j, m in enumerate(self.modalities):
            rows = batch.present[m]
            per_sample = F.cross_entropy(logits[m], batch.label, reduction="none")
            loss = loss + self.mean_loss(per_sample, rows)
            self._record(j, batch.index, per_sample.detach(), rows)
            history = normalise_history(self.history[j], self.seen[j])
            target, margin = ranking_targets(history, batch.index)
            pairs = rows & torch.roll(rows, -1)
            conf = confidence(logits[m], opts.qmf_temperature)
            rank = ranking_loss(conf, target.float(), margin.float(), opts.qmf_ranking)
            loss = loss + opts.qmf_lambda * self.mean_loss(rank, pairs)
        if opts.qmf_fused_loss:
            loss = loss + self.cross_entropy(self._fuse(logits, batch.present), batch.label)
        self.optimize(loss)
        return StepOutput(loss.detach(), present_rows({m: v.detach() for m, v in logits.items()}, batch))

    def _record(self, j: int, index: Tensor, losses: Tensor, rows: Tensor) -> None:
        """Add the batch's per-sample losses to modality j's history (all processes' samples)."""
        index, losses, rows = (self.dist.gather(t).to(self.history.device) for t in (index, losses, rows))
        losses = torch.where(rows, losses.to(self.history.dtype), 0.0)  # absent rows add nothing
        self.history[j].index_add_(0, index, losses)
        self.seen[j, index] |= rows
