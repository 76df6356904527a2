"""InfoReg: regulating information acquisition in the prime learning window (Huang, Wei, Yang &
Hu, "Adaptive Unimodal Regulation for Balanced Multimodal Information Acquisition", CVPR 2025).

Joint late fusion. A modality's information acquisition is tracked by the trace of its encoder's
gradient Fisher, Tr_m^t = mean over the epoch's batches of |grad_{w_m} L|^2. While that trace
still grows fast (the prime learning window) the modality that is ahead is slowed down by a
proximal pull towards its previous-epoch weights. Epochs 0 and 1 are plain training; from epoch
t = 2 on:

    rho_m   = (Tr_m^{t-1} - Tr_m^{t-2}) / Tr_m^{t-1}           (window open while rho_m > K)
    s_m     = batch mean of softmax(u_m)[y]                      (u_m: m's own logits)
    Delta_m = mean over m' with s_m' < s_m of (s_m - s_m')       (0 for the weakest)
    grad_{w_m} += exp(beta tanh Delta_m) (w_m - w_m^{t-1})       (if rho_m > K and Delta_m > 0)

Sign fix: the paper's Eq. 8 defines s as the cross-entropy, yet its text needs a larger s to mean
"better" (Delta is 0 for the weakest); s is the true-class probability here, which is what the
code effectively computes. Unimodal prediction: the head's slice for concat (W_m z_m + b/M, as
the code), the head with the other modalities zeroed for other fusions, or the auxiliary head.

Options and departures: ``inforeg_unimodal_loss=slice`` adds each modality's head-slice
cross-entropy to the loss, the code's default and the paper's InfoReg* (Table 3); ``heads``
adds auxiliary unimodal heads (:class:`UnimodalHeads`) instead. The code compares 10-epoch
moving averages of the trace (``inforeg_average=10``; its history starts as zeros, as here, so
the window is open early), which steadies a noisy trace; in that mode regulation starts in epoch 0
against the initial weights, as in the code (the paper's form starts in epoch 2, when two traces
exist). Not reproduced from the code: its window
test on the audio trace alone for both modalities (threshold 0.05), and its asymmetric
coefficients 0.95 exp(tanh(S_a - S_v)) / 0.1 exp(tanh(S_v - S_a)) on batch SUMS of
probabilities, both specific to two modalities. The trace is that of the loss's gradient, before
the penalty is added (the code includes it).

M modalities and missing ones: the equations are general; s_m and the trace use the samples
that have m, and a modality no sample of the global batch has is neither compared nor
penalised. Gradients are combined over processes before the trace and the penalty, so every
process holds the same state. The window (rho) is read once per epoch; a modality inside its
window is pulled with a coefficient computed on the device, 0 when no other modality scores below
it, so a step never reads a number back. The last w + 1 epoch traces, the running trace of the current
epoch and the snapshot w^{t-1} (one copy of the encoders' weights) are buffers, so a resumed
run continues exactly; per epoch the history logs ``inforeg_trace_<m>``, ``inforeg_rho_<m>`` and
``inforeg_penalised_<m>`` (share of steps with the penalty on).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from altmodal.config import option, require
from altmodal.data.batch import Batch
from altmodal.strategies.base import DataSpec, StepOutput
from altmodal.strategies.joint import Joint, JointOptions, present_rows
from altmodal.strategies.parts import UnimodalHeads, true_class_scores, unimodal_losses


@dataclass(frozen=True)
class InfoRegOptions(JointOptions):
    inforeg_beta: float = option(0.9, "beta of the penalty coefficient exp(beta * tanh(Delta))")
    inforeg_k: float = option(0.04, "threshold K: the window is open while the trace's relative growth exceeds it")
    inforeg_average: int = option(
        1, "epochs averaged on each side of the trace growth rho (paper: 1, consecutive epochs; code: 10)"
    )
    inforeg_unimodal_loss: Literal["none", "slice", "heads"] = option(
        "none",
        "none: the fused loss alone (paper); slice: plus each modality's head-slice loss (code, InfoReg*); "
        "heads: plus losses of auxiliary unimodal heads",
    )

    def __post_init__(self) -> None:
        require(self.inforeg_beta >= 0, "inforeg_beta", self.inforeg_beta, "non-negative")
        require(self.inforeg_average >= 1, "inforeg_average", self.inforeg_average, "at least 1")


def score_gaps(scores: Tensor) -> Tensor:
    """(M,) Delta_m = mean over the modalities scoring below m of (s_m - s_m'); 0 where none
    does. NaN scores (absent modalities) are left out and get 0."""
    valid = ~scores.isnan()
    diff = scores[:, None] - scores[None, :]  # (M, M): s_m - s_m'
    below = (diff > 0) & valid[:, None] & valid[None, :]
    return torch.where(below, diff, torch.zeros_like(diff)).sum(1) / below.sum(1).clamp_min(1)


def penalty_coefficients(gaps: Tensor, beta: float) -> Tensor:
    """(M,) the coefficient of each modality's pull: exp(beta * tanh(Delta_m)) where Delta_m > 0,
    else 0 (the weakest modality is not pulled)."""
    return torch.where(gaps > 0, torch.exp(beta * torch.tanh(gaps)), 0.0)


def trace_growth(history: Tensor) -> Tensor:
    """(M,) rho from the last w + 1 epoch traces (w + 1, M), oldest first: the mean of the last w
    minus the mean of the w before, over the mean of the last w (0 where that is 0). With w = 1
    this is (Tr^{t-1} - Tr^{t-2}) / Tr^{t-1}."""
    recent, before = history[1:].mean(0), history[:-1].mean(0)
    return torch.where(recent > 0, (recent - before) / recent.clamp_min(1e-30), torch.zeros_like(recent))


class InfoReg(Joint):
    name = "inforeg"
    options_class = InfoRegOptions
    traces: Tensor
    running: Tensor
    snapshot: Tensor

    def __init__(self, encoders: Mapping[str, nn.Module], spec: DataSpec, options: InfoRegOptions, dim: int):
        super().__init__(encoders, spec, options, dim)
        self.aux = (
            UnimodalHeads(self.modalities, dim, spec.num_classes) if options.inforeg_unimodal_loss == "heads" else None
        )
        count = len(self.modalities)
        # The last w + 1 epoch traces, oldest first (zeros before the first epochs, as the code).
        self.register_buffer("traces", torch.zeros(options.inforeg_average + 1, count, dtype=torch.float64))
        self.register_buffer("running", torch.zeros(2, count, dtype=torch.float64))  # this epoch: sum, batches
        size = sum(p.numel() for p in self.encoders.parameters())
        self.register_buffer("snapshot", torch.zeros(size))
        self.rho = torch.zeros(count, dtype=torch.float64)

    def unimodal_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return self.aux(features) if self.aux is not None else self.head.unimodal(features)  # type: ignore[no-any-return]

    @property
    def first_regulated(self) -> int:
        """The first epoch that may be regulated: 2 as in the paper (two traces are needed), 0 with
        the code's moving averages, whose zero-filled history opens the window at once (the code
        sets rho = 1 in epoch 0, and its epoch-1 growth over the zeros is 1 too)."""
        return 2 if self.options.inforeg_average == 1 else 0

    def on_epoch_start(self, epoch: int) -> None:
        if epoch >= self.first_regulated:
            growth = trace_growth(self.traces) if epoch > 0 else torch.ones(len(self.modalities), dtype=torch.float64)
            self.rho = growth.cpu()
            self.snapshot.copy_(torch.cat([p.detach().reshape(-1) for p in self.encoders.parameters()]))

    def on_epoch_end(self, epoch: int) -> None:
        latest = self.running[0] / self.running[1].clamp_min(1)
        self.traces.copy_(torch.cat([self.traces[1:], latest[None]]))
        self.running.zero_()

    def training_step(self, batch: Batch) -> StepOutput:
        opts = self.options
        features = self.encode(batch)
        loss = self.cross_entropy(self.head(features), batch.label)
        logits = self.unimodal_logits(features)
        if opts.inforeg_unimodal_loss != "none":
            loss = loss + sum(unimodal_losses(self, logits, batch).values())
        # The window is known on the host (rho is read once per epoch); the gaps stay on the device.
        regulated = self.epoch >= self.first_regulated
        window = (self.rho > opts.inforeg_k).tolist() if regulated else [False] * len(self.modalities)
        coefficients = penalty_coefficients(score_gaps(true_class_scores(self, logits, batch)), opts.inforeg_beta)
        extras: dict[str, Tensor | float] = {}

        def edit() -> None:
            snapshots = self._snapshots()
            for j, m in enumerate(self.modalities):
                group, snaps = list(self.encoders[m].parameters()), snapshots[m]
                if all(p.grad is None for p in group):
                    continue  # no sample of the global batch has m
                pairs = [(p, snap) for p, snap in zip(group, snaps) if p.grad is not None]
                grads = [p.grad for p, _ in pairs if p.grad is not None]
                trace = torch.stack(torch._foreach_norm(grads)).double().square().sum()
                self.running[0, j] += trace
                self.running[1, j] += 1
                extras[f"inforeg_trace_{m}"] = trace
                extras[f"inforeg_penalised_{m}"] = (coefficients[j] > 0).double() if window[j] else 0.0
                if regulated:
                    extras[f"inforeg_rho_{m}"] = float(self.rho[j])
                if window[j]:  # grad += a_m (w_m - w_m^{t-1}), a_m = 0 for the weakest modality
                    pull = torch._foreach_sub([p.detach() for p, _ in pairs], [snap for _, snap in pairs])
                    torch._foreach_addcmul_(grads, pull, [coefficients[j]] * len(grads))

        self.optimize(loss, edit=edit)
        return StepOutput(loss.detach(), present_rows({m: v.detach() for m, v in logits.items()}, batch), extras)

    def _snapshots(self) -> dict[str, list[Tensor]]:
        """modality -> views of the snapshot w^{t-1}, one per encoder parameter."""
        pieces = iter(self.snapshot.split([p.numel() for p in self.encoders.parameters()]))
        return {m: [next(pieces).view_as(p) for p in self.encoders[m].parameters()] for m in self.modalities}
