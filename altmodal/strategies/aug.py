"""AUG: sustained boosting with adaptive classifier assignment (Jiang, Huang & Yang, "Rethinking
Multimodal Learning from the Perspective of Mitigating Classification Ability Disproportion",
NeurIPS 2025).

Modality o owns a growing list of classifiers (a private Linear(d, h) + ReLU into ONE Linear(h, C)
shared by all); its prediction P_o sums their probabilities p_j = softmax(z_j) (the paper's Eqs.
3-4), read as a distribution: P_{<=t} = sum_{j<=t} p_j / t. Each modality learns from its own loss
(none fused). With t classifiers the newest fits a residual label, the older ones stay good, all
learn together (plain CE(z_1, y) while t = 1; the label clamped at 0):

    L_o = CE(z_t, y - lambda y * P_{<t}) - log P_{<=t}[y] - log P_{<t}[y]

Every ``aug_every`` epochs, if the most confident modality leads the least, s_st - sigma s_w > tau
with s_o the epoch's mean of P_o[y], the least gets one more classifier (the paper's rule for two
modalities; ours for more). At test the present modalities' P_o are averaged.

Defaults: the paper's sigma = 1, tau = 0.01, h = 256, one step on the modalities' summed losses;
lambda = 0.5 (the paper gives a grid; the code's value); every 10 epochs (the paper's, 100-epoch
runs). Departures from the paper: its sums of probabilities enter the losses, the confidence and
the residual as they are, so they grow with the number of classifiers; here they are divided by
it (the prediction, hence argmax and losses' gradients, unchanged), so the confidence of a
modality does not rise by getting a classifier (with a check every epoch the classifiers would
otherwise go to the modalities in turn), and the residual label keeps a true class share of at
least 1 - lambda (the raw sum of three confident classifiers would clamp it to 0). The released
code, as options: a prediction that sums the classifiers' LOGITS, softmax(sum_j z_j), read by the
losses, the confidence, the residual and the test-time average alike (``aug_score=ensemble``), a
step per modality (``aug_step=modality``), a check after the first epoch too
(``aug_check_first``), added classifiers never in its optimizer (``aug_new=frozen``). Not
reproduced: its fusion weights 0.4 / 0.6, its selection on the test set. The classifiers are
allocated up front (``aug_max_heads``); an unused one gets no gradient, hence no optimizer state
and no weight decay; the active counts are a buffer, so runs resume and reload. Cost: UME's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from altmodal.config import option, require
from altmodal.data.batch import Batch
from altmodal.strategies.base import DataSpec, StepOutput, Strategy
from altmodal.strategies.joint import present_rows
from altmodal.strategies.ume import average_present


@dataclass(frozen=True)
class AUGOptions:
    aug_lambda: float = option(0.5, "lambda of the residual label y - lambda y * p_prev")
    aug_every: int = option(10, "epochs between two classifier assignments t_N")
    aug_sigma: float = option(1.0, "sigma of the assignment rule s_strong - sigma s_weak > tau")
    aug_tau: float = option(0.01, "tau of the assignment rule")
    aug_hidden: int = option(256, "width h of a classifier's private layer")
    aug_max_heads: int = option(10, "classifiers a modality may have at most")
    aug_score: Literal["heads", "ensemble"] = option(
        "heads",
        "a modality's prediction (read by its losses, confidence, residual and the test-time average): "
        "the sum of its classifiers' probabilities (paper) or the softmax of their summed logits (code)",
    )
    aug_step: Literal["joint", "modality"] = option("joint", "one optimizer step per batch, or one per modality (code)")
    aug_check_first: bool = option(False, "also assign after the first epoch (code)")
    aug_new: Literal["trained", "frozen"] = option("trained", "added classifiers' private layers train, or not (code)")

    def __post_init__(self) -> None:
        require(0 <= self.aug_lambda <= 1, "aug_lambda", self.aug_lambda, "in [0, 1]")
        for name in ("aug_every", "aug_hidden", "aug_max_heads"):
            require(getattr(self, name) >= 1, name, getattr(self, name), "at least 1")


def log_prediction(logits: list[Tensor], ensemble: bool) -> Tensor:
    """(B, C) log of a modality's prediction from its classifiers' (B, C) ``logits``: their summed
    probabilities over their count, or (``ensemble``, the code's) the softmax of their summed logits."""
    stacked = torch.stack(logits)
    if ensemble:
        return F.log_softmax(stacked.sum(0), dim=1)
    return torch.logsumexp(F.log_softmax(stacked, dim=2), dim=0) - math.log(len(logits))


def residual_target(label: Tensor, previous: Tensor, lam: float) -> Tensor:
    """(B, C) the residual label y - lambda y * previous (previous: (B, C) probabilities), at least 0."""
    onehot = F.one_hot(label, previous.shape[1]).to(previous.dtype)
    return (onehot * (1 - lam * previous)).clamp_min(0)


class AUG(Strategy):
    name = "aug"
    options_class = AUGOptions
    active: Tensor
    scores: Tensor

    def __init__(self, encoders: Mapping[str, nn.Module], spec: DataSpec, options: AUGOptions, dim: int):
        super().__init__(encoders, spec, options)
        h, count = options.aug_hidden, options.aug_max_heads
        self.private = nn.ModuleDict({m: nn.ModuleList(nn.Linear(dim, h) for _ in range(count)) for m in encoders})
        for layer in self.private.modules():  # a classifier starts as the code's: Xavier-normal, bias 0
            if isinstance(layer, nn.Linear):
                nn.init.xavier_normal_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.shared = nn.Linear(h, spec.num_classes)
        self.register_buffer("active", torch.ones(len(self.modalities), dtype=torch.long))
        self.register_buffer("scores", torch.zeros(2, len(self.modalities), dtype=torch.float64), persistent=False)
        self.host_active = self.active.tolist()
        """The active counts as the steps read them (refreshed at each epoch's start and each load)."""
        self.register_load_state_dict_post_hook(
            lambda module, keys: setattr(module, "host_active", module.active.tolist())
        )

    def head_logits(self, modality: str, feature: Tensor) -> list[Tensor]:
        """The (B, C) logits of each of ``modality``'s active classifiers, oldest first."""
        out = []
        layers: list[nn.Linear] = list(self.private[modality])  # type: ignore[call-overload]
        for j, layer in enumerate(layers[: self.host_active[self.modalities.index(modality)]]):
            weight, bias = layer.weight.view_as(layer.weight), layer.bias.view_as(layer.bias)
            if j and self.options.aug_new == "frozen":  # the code's added classifiers never train
                weight, bias = weight.detach(), bias.detach()
            out.append(self.shared(F.relu(F.linear(feature, weight, bias))))
        return out

    def unimodal_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """modality -> (B, C) the log of its prediction."""
        return {m: self.prediction(self.head_logits(m, features[m])) for m in self.modalities}

    def fuse(self, features: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        """The present modalities' predictions averaged (the code's form: their log-probabilities)."""
        log_p = self.unimodal_logits(features)
        if self.options.aug_score == "ensemble":
            return average_present(log_p, present)
        return average_present({m: v.exp() for m, v in log_p.items()}, present).clamp_min(1e-30).log()

    def prediction(self, logits: list[Tensor]) -> Tensor:
        """(B, C) the log of the prediction of the classifiers' ``logits`` (see :func:`log_prediction`)."""
        return log_prediction(logits, self.options.aug_score == "ensemble")

    def training_step(self, batch: Batch) -> StepOutput:
        opts, features, total = self.options, self.encode(batch), None
        report = {}
        for j, m in enumerate(self.modalities):
            rows, z, y = batch.present[m], self.head_logits(m, features[m]), batch.label
            log_p = self.prediction(z)
            loss = self.cross_entropy(log_p, y, rows)
            if len(z) > 1:
                earlier = self.prediction(z[:-1])
                target = residual_target(y, earlier.detach().exp(), opts.aug_lambda)
                residual = -(target * F.log_softmax(z[-1], dim=1)).sum(1)
                loss = loss + self.cross_entropy(earlier, y, rows) + self.mean_loss(residual, rows)
            with torch.no_grad():
                seen = log_p.exp().gather(1, y[:, None]).squeeze(1) * rows
                self.scores[:, j] += torch.stack([seen.sum(), rows.sum().to(seen.dtype)]).double()
            if opts.aug_step == "modality":
                self.optimize(loss, [*self.encoders[m].parameters(), *self.private[m].parameters(),
                                     *self.shared.parameters()])  # fmt: skip
            total = loss if total is None else total + loss
            report[m] = log_p.detach()
        assert total is not None
        if opts.aug_step == "joint":
            self.optimize(total)
        return StepOutput(total.detach(), present_rows(report, batch))

    def on_epoch_start(self, epoch: int) -> None:
        self.scores.zero_()
        self.host_active = self.active.tolist()

    def on_epoch_end(self, epoch: int) -> None:
        """Adaptive classifier assignment: one more classifier for the weakest modality."""
        scores = self.dist.sum(self.scores.clone())
        s = (scores[0] / scores[1].clamp_min(1)).cpu()
        opts = self.options
        self.epoch_extras.update({f"aug_score_{m}": float(s[j]) for j, m in enumerate(self.modalities)})
        due = (epoch + 1) % opts.aug_every == 0 or (opts.aug_check_first and epoch == 0)
        weak, strong = int(s.argmin()), int(s.argmax())
        if due and float(s[strong] - opts.aug_sigma * s[weak]) > opts.aug_tau:
            if int(self.active[weak]) < opts.aug_max_heads:
                self.active[weak] += 1
        self.host_active = self.active.tolist()
        self.epoch_extras.update({f"aug_heads_{m}": float(n) for m, n in zip(self.modalities, self.host_active)})
