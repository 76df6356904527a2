"""SMIL: multimodal learning with severely missing modality (Ma, Ren, Zhao, Testuggine & Peng, AAAI 2021).

Late fusion (a linear head on the concatenated features) where an absent modality's feature is
RECONSTRUCTED from the present ones: h_m ~= sum_k w_k c_mk / sum_k w_k over modality priors c_mk
(k-means centres of m's features, ``smil_k``; 0: one per class), w = softplus(R_m(hbar)), hbar the
mean present feature. The fused feature u is perturbed, u + softplus(r), r ~ N(mu, sigma^2),
(mu, log sigma) = P(hbar) (r = mu at test), kept near N(0, 1) by the ELBO's KL term. Bayesian
meta-learning (MAML, second order): an inner step adapts encoders and head on the batch's
samples lacking a modality (D^m), theta' = theta - a grad L(D^m), and the loss optimised is that of
a batch of COMPLETE samples (D^f, drawn beside the loop's, as large) under theta', through which
the reconstruction and perturbation nets learn. A modality's own prediction: the head with every
other modality reconstructed from it.

As the paper writes it, the complete samples' outer loss never reconstructs a feature, so the
reconstruction network is reached only through the second-order term of the one small inner step:
its gradient is about 1e-4 of the head's (3 draws on tiny data: 0.5e-4 to 1.8e-4; the code's form
0.1 to 0.2), and it barely learns. A run of the paper's form says so in one warning line;
first-order meta-gradients (``smil_first_order``) or no inner step (``smil_inner_lr=0``), which
would cut that term and leave the network untrained, are refused with the paper's outer loss and
allowed with the code's, which reconstructs.

Paper vs code (the paper's form is the default): its prior weights are drawn with a learned
variance (here multiplicative noise N(1, s^2), s = softplus(S_m(hbar)), in training), the code's
are deterministic (``smil_weights=softplus``); it perturbs complete samples too, the code only
reconstructed ones (``smil_perturb=missing``); its outer loss uses the complete samples' real
modalities, the code hides one of each, adds 0.01 x the fused feature's squared distance from the
real one and the inner loss, and has no KL term (``smil_outer=code``, ``smil_kl=0``; the paper's
prior is unstated: N(0, 1) per dimension here, sigma kept in [1/e, e]). Ours: the priors are
refitted each epoch (Lloyd from the last centres, so centre k keeps its meaning; the code fits
them once on pretrained encoders); each process adapts on its share of a batch. Cost: about 4x
joint training per step (two batches, a second-order inner step), plus a pass per epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from altmodal.clustering import centres
from altmodal.config import ConfigError, option, require
from altmodal.data.batch import Batch
from altmodal.data.dataset import MultimodalDataset, Splits
from altmodal.strategies.base import DataSpec, StepOutput, Strategy
from altmodal.strategies.joint import present_rows
from altmodal.strategies.parts import draw, each_present_alone, mean_present, step_features

log = logging.getLogger(__name__)
PAPER_FORM_WARNING = (
    "smil: in the paper's form the reconstruction network learns only through the inner step's "
    "second-order term (its gradient is about 1e-4 of the head's) and barely learns; "
    "--smil-outer code trains it directly"
)


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
    smil_inner_lr: float = option(1e-3, "step size of the inner (meta-train) step (code: 1e-3, as its outer one)")
    smil_kl: float = option(1.0, "weight of the perturbation's KL divergence to N(0, 1), the ELBO's term (code: 0)")
    smil_first_order: bool = option(False, "first-order meta-gradients (cheaper; no second-order terms)")

    def __post_init__(self) -> None:
        require(self.smil_k >= 0, "smil_k", self.smil_k, "non-negative")
        for name in ("smil_inner_lr", "smil_kl"):
            require(getattr(self, name) >= 0, name, getattr(self, name), "non-negative")
        if self.smil_outer == "paper" and (self.smil_first_order or self.smil_inner_lr == 0):
            cut = "--smil-first-order" if self.smil_first_order else "--smil-inner-lr 0"
            raise ConfigError(
                f"{cut} with --smil-outer paper would leave the reconstruction network untrained "
                "(in the paper's form it learns only through the inner step's second-order term); "
                f"use --smil-outer code or drop {cut}"
            )


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
        self.complete_data: MultimodalDataset | None = None

    def fused_feature(self, features: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(B, M d): absent features reconstructed from the priors, the perturbation added; and (B,)
        the perturbation's KL divergence to N(0, 1)."""
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
        u, rows = (
            torch.cat(filled, dim=1),
            rebuilt if self.options.smil_perturb == "missing" else hbar[:, 0] == hbar[:, 0],
        )
        if self.options.smil_perturb == "off":
            return u, torch.zeros_like(hbar[:, 0])
        mu, log_sigma = self.perturb(hbar).chunk(2, dim=1)
        log_sigma = torch.tanh(log_sigma)  # sigma in [1/e, e], bounded with its gradient kept
        r = mu + log_sigma.exp() * torch.randn_like(mu) if noisy else mu
        kl = (0.5 * (mu.square() + (2 * log_sigma).exp() - 1) - log_sigma).mean(1)  # per dimension
        return u + F.softplus(r) * rows[:, None], kl * rows

    def fuse(self, features: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        return self.head(self.fused_feature(features, present)[0])  # type: ignore[no-any-return]

    def unimodal_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return each_present_alone(self.fuse, features)

    def forward(self, batch: Batch, present: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, dict]:
        """(logits, fused feature, KL, features) of ``batch`` with the modalities ``present``."""
        features = self.encode(batch)
        u, kl = self.fused_feature(features, present)
        return self.head(u), u, kl, features

    # ----- the priors and the complete samples ----------------------------------------------------
    def on_fit_start(self, splits: Splits) -> None:
        if self.options.smil_outer == "paper":
            log.warning(PAPER_FORM_WARNING)
        train = splits.train
        complete = np.logical_and.reduce([np.asarray(train.present[m])[train.rows] for m in self.modalities])
        self.complete_data = train.view(train.rows[complete])
        self.prior_data = train.with_transforms(splits.val.transforms)

    def on_epoch_start(self, epoch: int) -> None:
        """Refit each modality's priors on the features of its present training samples."""
        if self.prior_data is None:  # driven by hand, outside the loop's fit: the priors stay
            return
        features = step_features(self, self.prior_data, self.config.batch_size)
        generator, k = torch.Generator().manual_seed(self.config.seed + epoch), self.priors.shape[1]
        for j, m in enumerate(self.modalities):
            if len(features[m]) >= k:  # (a modality with fewer samples keeps its priors)
                start = self.priors[j].cpu() if epoch > 0 else None
                self.priors[j] = centres(features[m], k, generator, start).to(self.priors.dtype)

    # ----- the meta step --------------------------------------------------------------------------
    def training_step(self, batch: Batch) -> StepOutput:
        code, names = self.options.smil_outer == "code", self.modalities
        theta = {n: p for n, p in self.named_parameters() if n.startswith(("encoders.", "head."))}
        full, outer = torch.stack([batch.present[m] for m in names]).all(0), None
        if self.complete_data is not None and not bool(torch.stack([batch.rows(m) for m in names]).all()):
            seed = [self.config.seed, self.epoch, self.batch_index]
            outer = draw(self.complete_data, self.config.batch_size, seed, self)
        if outer is None:  # nothing to adapt on, or nothing complete: one plain step
            loss, report = self._loss(theta, batch, None, code)
        else:  # theta' = theta - a grad L(D^m), judged on D^f
            inner, _ = self._loss(theta, batch, ~full)
            order = not self.options.smil_first_order
            grads = torch.autograd.grad(  # (the code's outer loss adds the inner one: its graph is kept)
                inner, list(theta.values()), create_graph=order, retain_graph=order or code, allow_unused=True
            )
            rate = self.options.smil_inner_lr
            adapted = {n: p if g is None else p - rate * g for (n, p), g in zip(theta.items(), grads)}
            loss, report = self._loss(adapted, outer, None, code)
            loss = loss + inner if code else loss
        self.optimize(loss)
        return StepOutput(loss.detach(), report)

    def _loss(
        self, theta: Mapping[str, Tensor], batch: Batch, rows: Tensor | None, code: bool = False
    ) -> tuple[Tensor, dict]:
        """The loss of the samples ``rows`` under the encoders and head ``theta`` (the whole batch
        goes through the encoders, as normalisation needs); with ``code``, the code's outer loss:
        one modality of each sample hidden and reconstructed, plus 0.01 x the squared distance of
        the fused feature from the real one."""
        present = dict(batch.present)
        if code:
            lose = torch.randint(len(self.modalities), (batch.size,), device=batch.label.device)
            present = {m: present[m] & (lose != j) for j, m in enumerate(self.modalities)}
        logits, u, kl, features = functional_call(self, dict(theta), (batch, present))
        loss = self.cross_entropy(logits, batch.label, rows) + self.options.smil_kl * self.mean_loss(kl, rows)
        if code:
            real = self.fused_feature(features, batch.present)[0].detach()
            loss = loss + 0.01 * self.mean_loss((u - real).square().mean(1), rows)
        unimodal = {m: v.detach() for m, v in self.unimodal_logits(features).items()}
        return loss, present_rows(unimodal, batch)
