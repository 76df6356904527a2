"""MIDAS: misalignment-based data augmentation (Hwang, Choi & Whang, "MIDAS: Misalignment-based Data
Augmentation Strategy for Imbalanced Multimodal Learning", NeurIPS 2025).

Joint late fusion (the fusion head G) plus one auxiliary linear head U_m per modality. After
``midas_warmup`` epochs of unimodal losses alone, every batch also builds MISALIGNED samples at
the feature level: for each modality m, sample i keeps its other modalities and takes m's feature
from a partner j with another label. Its soft label weighs the two labels by each source's
unimodal confidence in its own class, c_k = softmax(U_k(f_k))[y_source(k)], normalised over the
sample's modalities, and scales the weak modality's weight by alpha; the loss is weighted by how
similar the swapped-in feature is to the one it replaced (hard samples count up to twice):

    L = CE(G(f), y) + sum_m CE(U_m(f_m), y) + lambda mean_i w_i sum_k a_k c~_k CE(G(f~_i), y_source(k))
    w_i = 1 + (cos(f_m[i], f_m[j]) + 1) / 2,   a_k = alpha for the weak modality (argmin mean c~), else 1

After each step alpha moves once (as in the paper and the code), by eta (mean c~_weak - mean of
the fused prediction's share on the weak source's label; with M copies, the mean of their gaps,
as the code averages its two copies' ratios), never below 1. A modality's own prediction: U_m.

Defaults: the paper's lambda = 1, eta = 0.05, partners of another label; a warm-up of 10 epochs
(the code's; the paper gives none). The fusion head does not train in the warm-up, so a run not
longer than it trains without one (the paper's way), with a warning, and the loop neither selects a
warm-up epoch nor lets early stopping count one (the code trains a fixed number of epochs).
M modalities: one misaligned copy per modality (m swapped),
as the code's two copies for two modalities (the paper's appendix permutes all modalities at
once). Departures of the code, as options: partners from a plain shuffle of the batch
(``midas_partner=shuffle``), alpha moved by the sign of a comparison of ratios of means
(``midas_alpha=sign``). Not reproduced: its mean (not sum) of the unimodal losses in the warm-up,
its learning-rate schedule paused during the warm-up, its random 70/10/20 re-split per seed. Each
process pairs within its own share of a batch (the weak modality and alpha's step come from the
whole batch, so alpha is the same everywhere); partners come from a generator seeded by (seed,
epoch, batch). Cost: about 1.1x joint training (M + 1 passes of the fusion head).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from altmodal.config import option, require
from altmodal.data.batch import Batch
from altmodal.data.dataset import Splits
from altmodal.strategies.base import DataSpec, StepOutput
from altmodal.strategies.joint import Joint, JointOptions, present_rows
from altmodal.strategies.parts import UnimodalHeads, unimodal_losses

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MIDASOptions(JointOptions):
    midas_lambda: float = option(1.0, "weight lambda of the misaligned samples' loss")
    midas_eta: float = option(0.05, "step eta of the weak modality's weight alpha")
    midas_warmup: int = option(10, "epochs of unimodal losses alone before misalignment (code: 10)")
    midas_partner: Literal["other-label", "shuffle"] = option(
        "other-label", "partners: another label (paper) or a plain shuffle of the batch (code)"
    )
    midas_alpha: Literal["difference", "sign"] = option(
        "difference", "alpha's step: eta times the confidence gap (paper) or eta times its sign (code)"
    )

    def __post_init__(self) -> None:
        require(self.midas_lambda >= 0, "midas_lambda", self.midas_lambda, "non-negative")
        require(self.midas_warmup >= 0, "midas_warmup", self.midas_warmup, "non-negative")
        require(self.midas_eta >= 0, "midas_eta", self.midas_eta, "non-negative (a step towards the weak modality)")


def partners(label: Tensor, has: Tensor, other_label: bool, generator: torch.Generator) -> Tensor:
    """(B,) for each sample a random partner among the samples that ``has`` the swapped modality
    (and, with ``other_label``, another label); -1 where there is none."""
    n = len(label)
    scores = torch.rand(n, n, generator=generator, device=generator.device).to(label.device)
    valid = has[None, :] & ~torch.eye(n, dtype=torch.bool, device=label.device)
    if other_label:
        valid &= label[:, None] != label[None, :]
    best = scores.masked_fill(~valid, -1.0).argmax(dim=1)
    return torch.where(valid.any(dim=1), best, -1)


class MIDAS(Joint):
    name = "midas"
    options_class = MIDASOptions
    alpha: Tensor

    def __init__(self, encoders: Mapping[str, nn.Module], spec: DataSpec, options: MIDASOptions, dim: int):
        super().__init__(encoders, spec, options, dim)
        self.aux = UnimodalHeads(self.modalities, dim, spec.num_classes)
        self.register_buffer("alpha", torch.ones(len(self.modalities)))

    def unimodal_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return self.aux(features)  # type: ignore[no-any-return]

    def warmup_epochs(self) -> int:
        """The warm-up's epochs: the option's, or none where the run is not longer (the paper has none)."""
        warmup = self.options.midas_warmup
        return warmup if warmup < self.config.epochs else 0

    def on_fit_start(self, splits: Splits) -> None:
        if self.options.midas_warmup and not self.warmup_epochs():
            log.warning(
                "midas: the warm-up (%d epochs) is not shorter than the run (%d epochs) and would leave the "
                "fusion head untrained; training without one, as the paper does",
                self.options.midas_warmup,
                self.config.epochs,
            )

    def training_step(self, batch: Batch) -> StepOutput:
        opts, y = self.options, batch.label
        features = self.encode(batch)
        logits = self.aux(features)
        loss: Tensor = sum(unimodal_losses(self, logits, batch).values())  # type: ignore[assignment]
        extras: dict[str, Tensor] = {}
        if self.epoch >= self.warmup_epochs():  # (the warm-up trains the unimodal heads alone)
            misaligned = self.misaligned(batch, features, logits, extras)
            loss = loss + self.cross_entropy(self.head(features), y) + opts.midas_lambda * misaligned
        self.optimize(loss)
        detached = {m: v.detach() for m, v in logits.items()}
        return StepOutput(loss.detach(), present_rows(detached, batch), extras)

    def misaligned(self, batch: Batch, features: dict[str, Tensor], logits: dict[str, Tensor], extras: dict) -> Tensor:
        """The misaligned samples' loss (one copy per swapped modality); updates alpha's pending step."""
        opts, y, names = self.options, batch.label, self.modalities
        conf = torch.stack([torch.softmax(logits[m].detach(), 1).gather(1, y[:, None]).squeeze(1) for m in names], 1)
        present = torch.stack([batch.present[m] for m in names], dim=1)  # (B, M)
        generator = self.step_generator(tag=1)
        total, votes, gaps = [], torch.zeros_like(self.alpha), torch.zeros_like(self.alpha)
        for j, m in enumerate(names):
            partner = partners(y, batch.present[m], opts.midas_partner == "other-label", generator)
            rows = (partner >= 0) & (present.sum(1) - present[:, j].long() > 0)  # a partner, and a modality kept
            source = torch.where(rows, partner, torch.arange(len(y), device=y.device))
            mixed = {k: features[k][source] if k == m else features[k] for k in names}
            label = torch.stack([y[source] if k == m else y for k in names], dim=1)  # (B, M) each source's label
            share = torch.where(torch.arange(len(names), device=y.device) == j, conf[source, j : j + 1], conf)
            kept = present.clone()
            kept[:, j] = True
            share = share * kept
            share = share / share.sum(1, keepdim=True).clamp_min(1e-12)  # c~ over the sample's modalities
            weakest = self.dist.sum((share * rows[:, None]).sum(0)).argmin()  # least confident over the batch
            weak = torch.arange(len(names), device=y.device) == weakest  # (M,), found on the device
            log_p = F.log_softmax(self.head(mixed), dim=1)
            weights = share * torch.where(weak, self.alpha, torch.ones_like(self.alpha))
            per_sample = -(weights * log_p.gather(1, label)).sum(1)
            hard = 1 + (F.cosine_similarity(features[m][source].detach(), features[m].detach(), dim=1) + 1) / 2
            total.append(self.mean_loss(hard * per_sample, rows))
            with torch.no_grad():  # the fused prediction's share on the weak source's label
                p = log_p.exp().gather(1, label)
                model = (p * weak).sum(1) / p.sum(1).clamp_min(1e-12)
                sums = self.dist.sum(torch.stack([(((share * weak).sum(1) - model) * rows).sum(), rows.sum()]))
                votes += weak
                gaps += weak * sums[0] / sums[1].clamp_min(1)
        gap = gaps / votes.clamp_min(1)  # once a step, after its losses: the copies' mean gap (the code's)
        step = gap.sign() if opts.midas_alpha == "sign" else gap
        self.alpha.copy_(torch.where(votes > 0, self.alpha + opts.midas_eta * step, self.alpha).clamp_min(1.0))
        extras.update({f"midas_alpha_{m}": self.alpha[j].clone() for j, m in enumerate(names)})
        return torch.stack(total).mean()
