"""ReconBoost: boosting with modality reconcilement (Hua, Xu, Bao, Yang & Huang, "ReconBoost:
Boosting Can Achieve Modality Reconcilement", ICML 2024).

Modalities learn in turn, as learners of a boosted ensemble F(x) = beta sum_m g_m(x_m), where
g_m = H(E_m(x_m)) reads one head H shared by all modalities (Linear(d, 256) + ReLU + Linear, as
the code) and beta is a learned scale. A stage trains one modality's learner, then rectifies the
whole ensemble:

- boosting (``reconboost_boost_epochs`` epochs): learner m fits the label while moving away from
  what the OTHER modalities' ensemble q = softmax(beta sum_{k != m} g_k) already predicts, the
  paper's reconcilement term CE(g_m, y) - lambda KL(q || p_m), taken at the true class as the code
  does (the whole KL, maximised, has no lower bound): per sample (1 - lambda q[y]) CE(g_m, y), so
  the samples the others get right weigh less (lambda = w2 / w1 = 0.2, the code's weights 5 and 1);
  E_m and H learn;
- global rectification (``reconboost_rectify_epochs`` epochs): CE(F(x), y) over every encoder, H
  and beta.

Stages take the modalities in order. The code runs 4 + 4 epochs per stage; the default 1 + 1 is
BalanceBenchmark's schedule, which keeps a 12-view dataset's every view learning within 24 epochs
(``reconboost_cycle=batch`` runs each modality's boosting step and a rectification step on every
batch instead). Departures of the code, not reproduced: its loss scale w1 / K (K classes: 1/20 of
ours on 100 classes), its fresh optimizer per phase (one optimizer here), its "consolidation" term
(an MSE between two detached predictions: no gradient), its selection on the test set. The other
modalities' ensemble is evaluated without gradients and in evaluation mode; absent samples leave a
learner's loss, and a sample whose other modalities are all absent is weighted by the uniform q.
A modality's own prediction: g_m. Cost: a boosting epoch costs a forward of every encoder and the
backward of one; a rectification epoch, joint training's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from altmodal.config import option, require
from altmodal.data.batch import Batch
from altmodal.model import evaluating
from altmodal.strategies.base import DataSpec, StepOutput, Strategy
from altmodal.strategies.joint import present_rows


@dataclass(frozen=True)
class ReconBoostOptions:
    reconboost_lambda: float = option(0.2, "lambda of the reconcilement term (code: w2 / w1 = 1 / 5)")
    reconboost_boost_epochs: int = option(1, "boosting epochs of a stage (code: 4)")
    reconboost_rectify_epochs: int = option(1, "rectification epochs of a stage (code: 4)")
    reconboost_cycle: Literal["epoch", "batch"] = option(
        "epoch", "stages of whole epochs (paper, code) or, on every batch, each modality's step and a rectification"
    )
    reconboost_hidden: int = option(256, "hidden width of the shared head (code: 256)")

    def __post_init__(self) -> None:
        require(0 <= self.reconboost_lambda < 1, "reconboost_lambda", self.reconboost_lambda, "in [0, 1)")
        require(self.reconboost_boost_epochs >= 1, "reconboost_boost_epochs", self.reconboost_boost_epochs, ">= 1")
        require(
            self.reconboost_rectify_epochs >= 0, "reconboost_rectify_epochs", self.reconboost_rectify_epochs, ">= 0"
        )
        require(self.reconboost_hidden >= 1, "reconboost_hidden", self.reconboost_hidden, "at least 1")


def boosting_weights(others: Tensor, label: Tensor, lam: float) -> Tensor:
    """(B,) 1 - lambda q[y], q = softmax of the other modalities' ensemble logits (B, C)."""
    return 1 - lam * torch.softmax(others.float(), dim=1).gather(1, label[:, None]).squeeze(1)


class ReconBoost(Strategy):
    name = "reconboost"
    options_class = ReconBoostOptions

    def __init__(self, encoders: Mapping[str, nn.Module], spec: DataSpec, options: ReconBoostOptions, dim: int):
        super().__init__(encoders, spec, options)
        hidden = options.reconboost_hidden
        self.head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, spec.num_classes))
        self.beta = nn.Parameter(torch.ones(()))

    def unimodal_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {m: self.head(f) for m, f in features.items()}

    def fuse(self, features: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        logits = self.unimodal_logits(features)
        return self.beta * sum(v * present[m][:, None] for m, v in logits.items())  # type: ignore[no-any-return]

    def phase(self) -> str | None:
        """The modality whose learner boosts in this epoch, or None for a rectification epoch."""
        opts = self.options
        stage, within = divmod(self.epoch, opts.reconboost_boost_epochs + opts.reconboost_rectify_epochs)
        return self.modalities[stage % len(self.modalities)] if within < opts.reconboost_boost_epochs else None

    def training_step(self, batch: Batch) -> StepOutput:
        if self.options.reconboost_cycle == "batch":
            for m in self.modalities:
                self.boost(batch, m)
            return self.rectify(batch)
        boosting = self.phase()
        return self.rectify(batch) if boosting is None else self.boost(batch, boosting)

    def boost(self, batch: Batch, m: str) -> StepOutput:
        """One boosting step of modality ``m``'s learner (skipped when no sample has it)."""
        if self.global_count(batch, m) == 0:
            return StepOutput(torch.zeros((), device=self.device))
        others = [k for k in self.modalities if k != m]
        with torch.no_grad(), evaluating([self.encoders[k] for k in others]):
            logits = self.unimodal_logits(self.encode(batch, others))
            rest = self.beta * sum((v * batch.present[k][:, None] for k, v in logits.items()), torch.zeros(()))
        z = self.head(self.encode(batch, [m])[m])
        weights = boosting_weights(rest.expand_as(z), batch.label, self.options.reconboost_lambda)
        loss = self.mean_loss(weights * F.cross_entropy(z, batch.label, reduction="none"), batch.present[m])
        self.optimize(loss, [*self.encoders[m].parameters(), *self.head.parameters()])
        return StepOutput(loss.detach(), present_rows({**logits, m: z.detach()}, batch))

    def rectify(self, batch: Batch) -> StepOutput:
        """One step of the whole ensemble on the fused loss."""
        features = self.encode(batch)
        loss = self.cross_entropy(self.fuse(features, batch.present), batch.label)
        self.optimize(loss)
        unimodal = {m: v.detach() for m, v in self.unimodal_logits(features).items()}
        return StepOutput(loss.detach(), present_rows(unimodal, batch))
