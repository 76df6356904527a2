"""OGM-GE: on-the-fly gradient modulation with generalisation enhancement (Peng et al., CVPR 2022).

Joint late-fusion training (any fusion head) in which, on every batch, each modality's share of
the fused prediction is scored, s_m = mean over the batch's samples that have m of
softmax(o_m)[y], and the encoder of a dominant modality has its gradient scaled down by
k_m = 1 - tanh(alpha * rho_m). For two modalities rho = s_a / s_v as in the paper; for M
modalities rho_m = s_m / mean_{k != m} s_k, and every modality with rho_m > 1 is modulated (for
two this is the paper's rule). GE then adds Gaussian noise with the gradient's own standard
deviation (of the unscaled gradient, as the reference code computes it). Modulation is active for
epochs ogm_start..ogm_end inclusive (0-50 in MLA's runs, alpha 0.3).

Which parameters: the reference code touches only 4-D gradients (convolution kernels) of the
encoders; the generalisation here touches every weight of an encoder with two or more dimensions
(linear and convolution weights; biases and norms are left alone), so MLP encoders are modulated
too. Noise is drawn from a generator seeded by (seed, epoch, batch), identical on every process.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from altmodal.config import option, require
from altmodal.data.batch import Batch
from altmodal.strategies.joint import Joint, JointOptions
from altmodal.strategies.parts import true_class_scores


@dataclass(frozen=True)
class OGMOptions(JointOptions):
    ogm_alpha: float = option(0.3, "OGM modulation strength alpha")
    ogm_start: int = option(0, "first epoch of modulation")
    ogm_end: int = option(50, "last epoch of modulation (inclusive)")
    ogm_noise: bool = option(True, "GE: add Gaussian noise with the gradient's std (off: plain OGM)")

    def __post_init__(self) -> None:
        require(self.ogm_alpha >= 0, "ogm_alpha", self.ogm_alpha, "non-negative")
        require(
            0 <= self.ogm_start <= self.ogm_end, "ogm_end", self.ogm_end, f"at least --ogm-start ({self.ogm_start})"
        )


def ogm_coefficients(scores: Tensor, alpha: float) -> Tensor:
    """(M,) per-modality scores -> (M,) gradient coefficients: 1 - tanh(alpha * rho_m) where
    rho_m = s_m / mean of the other scores exceeds 1, else 1."""
    m = scores.numel()
    if m < 2:
        return torch.ones_like(scores)
    others = (scores.sum() - scores) / (m - 1)
    ratio = scores / others.clamp_min(1e-12)
    return torch.where(ratio > 1, 1 - torch.tanh(alpha * ratio), torch.ones_like(ratio))


def modulate(grad: Tensor, coefficient: Tensor | float, noise: bool, generator: torch.Generator | None) -> Tensor:
    """``grad * k`` plus, with GE, N(0, std(grad)) noise (std of the unscaled gradient), drawn
    on the gradient's device (``generator`` lives there); nothing is read back to the host."""
    out = grad * coefficient
    if noise and grad.numel() > 1:
        std = grad.std().to(torch.float64) + 1e-8
        out = out + torch.randn(grad.shape, generator=generator, dtype=grad.dtype, device=grad.device) * std
    return out


class OGMGE(Joint):
    name = "ogm_ge"
    options_class = OGMOptions

    def gradient_edit(
        self, unimodal: Mapping[str, Tensor], batch: Batch
    ) -> tuple[Callable[[], None] | None, dict[str, Tensor]]:
        opts = self.options
        if not opts.ogm_start <= self.epoch <= opts.ogm_end:
            return None, {}
        scores = true_class_scores(self, unimodal, batch).nan_to_num(0.0)
        coefficients = ogm_coefficients(scores, opts.ogm_alpha)  # (M,), left on the device
        generator = self.step_generator()

        def edit() -> None:
            for j, m in enumerate(self.modalities):
                for p in self.encoders[m].parameters():
                    if p.grad is not None and p.grad.dim() >= 2:
                        p.grad = modulate(p.grad, coefficients[j], opts.ogm_noise, generator)

        return edit, {f"ogm_coeff_{m}": coefficients[j] for j, m in enumerate(self.modalities)}
