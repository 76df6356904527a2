"""MMPareto: boosting multimodal learning with innocent unimodal assistance (Wei & Hu, ICML 2024).

Joint late fusion plus one auxiliary linear head per modality (:class:`UnimodalHeads`). Every
encoder k receives two gradients, g_m from the fused loss and g_u from its own unimodal loss.
When they agree (cos >= 0) they are summed; when they conflict they are combined with min-norm
(MGDA) weights, a direction that lowers both losses. The combined direction is then rescaled to
gamma times the norm of the plain sum (gamma = 1.5 > 1 keeps the gradient noise large, which the
paper links to flatter minima):

    alpha_m = clip(<g_u - g_m, g_u> / |g_m - g_u|^2, 0, 1),  alpha_u = 1 - alpha_m     (conflict)
    h' = 2 alpha_m g_m + 2 alpha_u g_u,   h = gamma |g_m + g_u| h' / |h'|

The heads (fused and unimodal) get the plain gradient of L_mm + sum_k L_k. A modality's unimodal
prediction is its auxiliary head. M modalities: each encoder solves its own two-gradient
problem; every g_u comes from one backward pass because L_k reaches only encoder k, so a step
costs two backward passes (the reference code uses four). Absent samples leave a modality's loss
and gradients (:func:`unimodal_losses`); gradients are combined over processes before the cosine,
so every process takes the same step. The choice between the sum and the MGDA weights, and the
rescaling, are tensor arithmetic on the device: a step never waits to read a number back.

Departures from the reference code (each an option): the paper rescales each encoder's whole
gradient (``pareto_rescale=encoder``); the code rescales per parameter tensor and never shrinks,
grad_p = gamma * max(|g_m,p + g_u,p| / |h'_p|, 1) * h'_p (``tensor``); the code clips alpha to
[0.001, 0.999] (``pareto_clip=0.001``) and treats cos = 0 as a conflict (a measure-zero case,
not reproduced).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from altmodal.config import option, require
from altmodal.data.batch import Batch
from altmodal.strategies.base import DataSpec, StepOutput
from altmodal.strategies.joint import Joint, JointOptions, present_rows
from altmodal.strategies.parts import UnimodalHeads, unimodal_losses


@dataclass(frozen=True)
class MMParetoOptions(JointOptions):
    pareto_gamma: float = option(1.5, "magnitude boost gamma of each encoder's combined gradient")
    pareto_rescale: Literal["encoder", "tensor"] = option(
        "encoder", "encoder: rescale each encoder's whole gradient (paper); tensor: per tensor, never shrink (code)"
    )
    pareto_clip: float = option(0.0, "clip the MGDA weight to [c, 1 - c] (the code uses 0.001)")

    def __post_init__(self) -> None:
        require(self.pareto_gamma > 0, "pareto_gamma", self.pareto_gamma, "positive")
        require(0 <= self.pareto_clip < 0.5, "pareto_clip", self.pareto_clip, "in [0, 0.5)")


def conflict(g_m: Tensor, g_u: Tensor) -> Tensor:
    """() bool: whether two flat gradients conflict (cos < 0), left on the device."""
    return g_m @ g_u < 0


def mgda_weights(g_m: Tensor, g_u: Tensor, clip: float = 0.0) -> tuple[Tensor, Tensor]:
    """(alpha_m, alpha_u) for two flat gradients, as float64 scalars on their device (chosen
    there, never read back): 1/2 each when they agree (cos >= 0), else the min-norm point of the
    segment between them, alpha_m clipped to [clip, 1 - clip]."""
    diff = g_m - g_u  # |diff| > 0 where they conflict; elsewhere the quotient (maybe 0/0) is not taken
    min_norm = ((g_u - g_m) @ g_u).double() / (diff @ diff).double()
    alpha = torch.where(conflict(g_m, g_u), min_norm.clamp(clip, 1.0 - clip), 0.5)
    return alpha, 1.0 - alpha


def rescale(
    g_m: Tensor, g_u: Tensor, alphas: tuple[Tensor | float, Tensor | float], gamma: float, never_shrink: bool
) -> Tensor:
    """h = gamma * r * h' with h' = 2 alpha_m g_m + 2 alpha_u g_u and r = |g_m + g_u| / |h'|
    (r floored at 1 with ``never_shrink``, the code's per-tensor rule); zero where h' is zero.
    The factor gamma * r stays a float64 scalar on the device."""
    direction = 2 * alphas[0] * g_m + 2 * alphas[1] * g_u
    norm = direction.norm().double()
    ratio = (g_m + g_u).norm().double() / norm
    if never_shrink:
        ratio = ratio.clamp_min(1.0)
    return torch.where(norm > 0, gamma * ratio, 0.0) * direction


def flatten(grads: Sequence[Tensor | None], params: Sequence[nn.Parameter]) -> Tensor:
    """One vector of the gradients of ``params``, zeros where a parameter has none."""
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


class MMPareto(Joint):
    name = "mmpareto"
    options_class = MMParetoOptions

    def __init__(self, encoders: Mapping[str, nn.Module], spec: DataSpec, options: MMParetoOptions, dim: int):
        super().__init__(encoders, spec, options, dim)
        self.aux = UnimodalHeads(self.modalities, dim, spec.num_classes)

    def unimodal_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return self.aux(features)  # type: ignore[no-any-return]

    def training_step(self, batch: Batch) -> StepOutput:
        features = self.encode(batch)
        fused_loss = self.cross_entropy(self.head(features), batch.label)
        logits = self.aux(features)
        unimodal_loss: Tensor = sum(unimodal_losses(self, logits, batch).values())  # type: ignore[assignment]
        params = {m: [p for p in self.encoders[m].parameters() if p.requires_grad] for m in self.modalities}
        flat = [p for group in params.values() for p in group]
        # Backward pass 1: every encoder's unimodal gradient at once (L_k reaches only encoder k).
        grads = torch.autograd.grad(unimodal_loss, flat, retain_graph=True, allow_unused=True)
        g_u = self.dist.sum(flatten(grads, flat))
        extras: dict[str, Tensor] = {}

        def edit() -> None:  # after backward pass 2 (of the total loss), gradients combined
            offset = 0
            for m, group in params.items():
                size = sum(p.numel() for p in group)
                unimodal = g_u[offset : offset + size]
                offset += size
                if all(p.grad is None for p in group):
                    continue  # no sample of the global batch has m
                total = flatten([p.grad for p in group], group)
                extras[f"pareto_conflict_{m}"] = self._combine(group, total - unimodal, unimodal)

        self.optimize(fused_loss + unimodal_loss, edit=edit)
        detached = {m: v.detach() for m, v in logits.items()}
        return StepOutput((fused_loss + unimodal_loss).detach(), present_rows(detached, batch), extras)

    def _combine(self, group: list[nn.Parameter], g_m: Tensor, g_u: Tensor) -> Tensor:
        """Replace one encoder's gradients by MMPareto's direction; returns () 1.0 if g_m and
        g_u conflict, else 0.0 (on the device)."""
        opts = self.options
        alphas = mgda_weights(g_m, g_u, opts.pareto_clip)
        sizes = [p.numel() for p in group]
        if opts.pareto_rescale == "encoder":
            combined = rescale(g_m, g_u, alphas, opts.pareto_gamma, never_shrink=False)
        else:
            pairs = zip(g_m.split(sizes), g_u.split(sizes))
            combined = torch.cat([rescale(a, b, alphas, opts.pareto_gamma, never_shrink=True) for a, b in pairs])
        for p, piece in zip(group, combined.split(sizes)):
            p.grad = piece.view_as(p).to(p.dtype)
        return conflict(g_m, g_u).double()
