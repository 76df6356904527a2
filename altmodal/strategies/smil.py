"""SMIL: multimodal learning with severely missing modality (Ma, Ren, Zhao, Testuggine & Peng, AAAI 2021).

Late fusion (a linear head on the concatenated features) where an absent modality's feature is
RECONSTRUCTED from the present ones: h_m ~= sum_k w_k c_mk / sum_k w_k over modality priors c_mk
(k-means centres of m's features, ``smil_k``; 0: one per class), w = softplus(R_m(hbar)), hbar the
mean present feature. The fused feature u is perturbed, u + softplus(r), r ~ N(mu, sigma^2) with
(mu, log sigma) = P(hbar) (r = mu at test). Bayesian meta-learning (MAML, second order): an inner
step adapts encoders and head on the batch's samples lacking a modality, theta' = theta - lr
grad L(D^m), and the loss optimised is the COMPLETE samples' under theta', through which the
reconstruction and perturbation nets learn. A modality's own prediction: the head with every
other modality reconstructed from it.

Paper vs code (the paper's form is the default): its prior weights are drawn with a learned
variance (here multiplicative noise N(1, s^2), s = softplus(S_m(hbar)), in training), the code's
are deterministic (``smil_weights=softplus``); it perturbs complete samples too, the code only
reconstructed ones (``smil_perturb=missing``); its outer loss uses the complete samples' real
modalities, the code hides one of each, adds 0.01 x the fused feature's squared distance from the
real one and the inner loss (``smil_outer=code``). Its ELBO's KL prior is unstated: no KL term.
Ours: priors refitted each epoch on the current encoders (Lloyd from the last centres, so centre k
keeps its meaning; the code fits them once on pretrained encoders), one inner step of the run's
learning rate, each process adapting on its share of a batch. Cost: about 3x joint training per
step, plus one pass over the training split per epoch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from altmodal.clustering import centres
from altmodal.config import option, require
from altmodal.data.batch import Batch
from altmodal.data.dataset import MultimodalDataset, Splits
from altmodal.strategies.base import DataSpec, StepOutput, Strategy
from altmodal.strategies.joint import present_rows
from altmodal.strategies.parts import mean_present


@dataclass(frozen=True)
class SMILOptions:
    smil_k: int = option(0, "modality priors: k-means centres per modality (0: one per class)")
    smil_weights: Literal["sampled", "softplus"] = option(
        "sampled", "prior weights: sampled with a learned variance in training (paper) or deterministic (code)"
    )
    smil_perturb: Literal["all", "missing", "off"] = option(
        "all", "feature perturbation on every sample (paper), on reconstructed ones only (code), or off"
    )
    smil_outer: Literal["paper", "code"] = option(
        "paper", "outer loss: complete samples with their real modalities (paper) or the code's"
    )
    smil_first_order: bool = option(False, "first-order meta-gradients (cheaper; no second-order terms)")

    def __post_init__(self) -> None:
        require(self.smil_k >= 0, "smil_k", self.smil_k, "non-negative")


class SMIL(Strategy):
    name = "smil"
    options_class = SMILOptions
    priors: Tensor

    def __init__(self, encoders: Mapping[str, nn.Module], spec: DataSpec, options: SMILOptions, dim: int):
        super().__init__(encoders, spec, options)
        k, count = options.smil_k or spec.num_classes, len(self.modalities)
        self.head = nn.Linear(count * dim, spec.num_classes)
        self.weights = nn.ModuleDict({m: nn.Linear(dim, 2 * k) for m in self.modalities})  # R_m and S_m
        self.perturb = nn.Linear(dim, 2 * count * dim)  # (mu, log sigma) of r
        self.register_buffer("priors", torch.zeros(count, k, dim))
        self.prior_data: MultimodalDataset | None = None

    def fused_feature(self, features: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        """(B, M d): absent features reconstructed from the priors, then the perturbation added."""
        hbar, noisy = mean_present(features, present), self.training
        filled, rebuilt = [], torch.zeros_like(hbar[:, 0], dtype=torch.bool)
        for j, m in enumerate(self.modalities):
            location, spread = self.weights[m](hbar).chunk(2, dim=1)
            w = F.softplus(location)
            if noisy and self.options.smil_weights == "sampled":
                w = w * (1 + F.softplus(spread) * torch.randn_like(w)).clamp_min(0)
            guess = (w / w.sum(1, keepdim=True).clamp_min(1e-12)) @ self.priors[j].to(w.dtype)
            filled.append(torch.where(present[m][:, None], features[m], guess))
            rebuilt = rebuilt | ~present[m]
        u = torch.cat(filled, dim=1)
        if self.options.smil_perturb == "off":
            return u
        mu, log_sigma = self.perturb(hbar).chunk(2, dim=1)
        r = mu + log_sigma.clamp(max=5).exp() * torch.randn_like(mu) if noisy else mu
        rows = rebuilt if self.options.smil_perturb == "missing" else torch.ones_like(rebuilt)
        return u + F.softplus(r) * rows[:, None]

    def fuse(self, features: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        return self.head(self.fused_feature(features, present))  # type: ignore[no-any-return]

    def unimodal_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        every = torch.ones(len(next(iter(features.values()))), dtype=torch.bool, device=self.priors.device)
        return {m: self.fuse(features, {k: every if k == m else ~every for k in features}) for m in self.modalities}

    def forward(self, batch: Batch, present: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """(logits, fused feature, features) of ``batch`` with the modalities ``present``."""
        features = self.encode(batch)
        u = self.fused_feature(features, present)
        return self.head(u), u, features

    # ----- the priors -----------------------------------------------------------------------------
    def on_fit_start(self, splits: Splits) -> None:
        self.prior_data = splits.train.with_transforms(splits.val.transforms)

    def on_epoch_start(self, epoch: int) -> None:
        """Refit each modality's priors on its present training samples (in sample order)."""
        if self.prior_data is None:  # driven by hand, outside the loop's fit: the priors stay
            return
        outputs = self.collect(self.prior_data, all_subsets=False)
        order = outputs.index.argsort()
        generator = torch.Generator().manual_seed(self.config.seed + epoch)
        for j, m in enumerate(self.modalities):
            rows = order[outputs.present[m][order]]
            if len(rows) >= self.priors.shape[1]:  # (a modality with fewer samples keeps its priors)
                start = self.priors[j].cpu() if epoch > 0 else None
                fitted = centres(outputs.features[m][rows], self.priors.shape[1], generator, start)
                self.priors[j] = fitted.to(self.priors.dtype)
        self.train()

    # ----- the meta step --------------------------------------------------------------------------
    def training_step(self, batch: Batch) -> StepOutput:
        code = self.options.smil_outer == "code"
        complete = torch.stack([batch.rows(m) for m in self.modalities]).all(0)  # on the host
        inner = batch.select(~complete) if not bool(complete.all()) else None
        outer = batch.select(complete) if bool(complete.any()) else None
        theta = {n: p for n, p in self.named_parameters() if n.startswith(("encoders.", "head."))}
        loss_in, report = self._loss(theta, inner) if inner is not None else (None, {})
        if loss_in is not None and outer is not None:  # the inner step: theta' = theta - lr grad
            rate = self.optimizer.param_groups[0]["lr"]  # type: ignore[union-attr]
            order = not self.options.smil_first_order
            grads = torch.autograd.grad(loss_in, list(theta.values()), create_graph=order, allow_unused=True)
            theta = {n: p if g is None else p - rate * g for (n, p), g in zip(theta.items(), grads)}
            loss, report = self._loss(theta, outer, code)
            loss_in = loss + loss_in if code else loss
        elif outer is not None:
            loss_in, report = self._loss(theta, outer, code)
        assert loss_in is not None
        self.optimize(loss_in)
        return StepOutput(loss_in.detach(), report)

    def _loss(self, theta: Mapping[str, Tensor], batch: Batch, code: bool = False) -> tuple[Tensor, dict]:
        """The cross-entropy of ``batch`` under the encoders and head ``theta``; with ``code``, the
        code's outer loss: one modality of each sample hidden and reconstructed, plus 0.01 x the
        squared distance of the fused feature from the real one."""
        present = dict(batch.present)
        if code:
            lose = torch.randint(len(self.modalities), (batch.size,), device=batch.label.device)
            present = {m: present[m] & (lose != j) for j, m in enumerate(self.modalities)}
        logits, u, features = functional_call(self, dict(theta), (batch, present))
        loss = self.cross_entropy(logits, batch.label)
        if code:
            loss = loss + 0.01 * F.mse_loss(u, self.fused_feature(features, batch.present).detach())
        unimodal = {m: v.detach() for m, v in self.unimodal_logits(features).items()}
        return loss, present_rows(unimodal, batch)
