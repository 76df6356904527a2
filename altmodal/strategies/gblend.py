"""G-Blending: gradient blending (Wang, Tran & Feiszli, "What makes training multi-modal
classification networks hard?", CVPR 2020).

A joint late-fusion model plus one auxiliary linear head per modality (:class:`UnimodalHeads`),
trained on the weighted sum of the M + 1 losses, sum_i w_i L_i (i over the modalities and the
fused head). Each weight is the head's generalisation gain over its squared overfitting increase,
measured on a holdout V:

    O = L^V - L^T,  dG_i = L^V_N - L^V_{N+n},  dO_i = O_{N+n} - O_N,
    w_i = max(dG_i, 0) / max(dO_i, f_i)^2, normalised to sum to 1 (uniform if all are 0),
    f_i = max(k * se(dO_i), eps).

(The clamps are ours; the paper is silent on a head whose overfitting does not increase. A head
whose holdout loss rises gets weight 0. The floor f_i is the resolution of the measurement of
dO_i: its standard error se(dO_i) (:func:`overfit_error`, from the per-sample losses of the same
T' and V samples at both ends; ``gblend_floor_se`` = k standard errors, 1 by default), so that an
overfitting increase the holdout cannot tell from 0 does not count as smaller than that, and the
floor scales with the losses of the run itself. An absolute floor alone (``gblend_eps``, the
earlier rule, kept as the floor's lower bound and as the rule when k = 0) made such a head
swamp the others: on AV-digits split by speaker the audio head fits the holdout, carved from the
training speakers, as well as T (dO = -0.018), and took 0.9989 of the weight against the visual
head's dG / dO^2 = 1.82 / 0.35^2; the visual head then learned nothing (test accuracy 0.119).
The paper's Eq. 6 prints a factor 2 that would make the weights sum to 2; its Algorithm 1 and
published weights sum to 1, as here.)

Estimation from a checkpoint N over n epochs: for each head i a copy of the model, trained n
epochs on T with the loss L_i alone (so only encoder i and head i, or every encoder and the
fused head, learn), gives L^T (on a subset T' of T as large as V) and L^V at both ends. The copies
are trained by the same loop (:meth:`~altmodal.trainer.Trainer.train_epoch`) with a fresh optimizer at the current
learning rate.

Holdout: ``gblend_holdout`` (8%, the paper's Kinetics share) of the TRAINING split, stratified by
class and seeded by the run's seed, is held out as V; the model is trained on the rest, T. The
run's validation split still selects the best epoch and the test split is never read.

Variants: ``online`` (default; the paper's better one) re-estimates at the start of every
super-epoch, the first ``gblend_first`` epochs long and the later ones ``gblend_super_epoch``
(the paper's Kinetics schedule, 10 then 5), each estimation running as many epochs as the
super-epoch it starts; ``offline`` estimates once, from the initialisation over the whole run.
Cost: about (M + 2)x joint training for both. The weights are a buffer (checkpointed; a resumed
run goes on with them) and are logged per epoch (``gblend_w_<modality>``, ``gblend_w_fused``); the
steps use a host copy taken at each epoch's start, so that no step waits for the device.
Absent samples leave a head's loss and the holdout statistics. Every process trains the same
copies on its share of T and measures on gathered predictions, so all hold the same weights.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from altmodal.config import option, require
from altmodal.data.batch import Batch
from altmodal.data.dataset import MultimodalDataset, Splits
from altmodal.data.splits import stratified_split
from altmodal.metrics import Outputs
from altmodal.strategies.base import DataSpec, StepOutput, TrainConfig
from altmodal.strategies.joint import Joint, JointOptions, present_rows
from altmodal.strategies.parts import UnimodalHeads, unimodal_losses


@dataclass(frozen=True)
class GBlendOptions(JointOptions):
    gblend_mode: Literal["online", "offline"] = option(
        "online", "online: re-estimate the weights every super-epoch; offline: once, over the whole run"
    )
    gblend_first: int = option(10, "length of the first super-epoch (online)")
    gblend_super_epoch: int = option(5, "length of the later super-epochs (online)")
    gblend_holdout: float = option(0.08, "share of the training split held out as V to measure overfitting")
    gblend_eps: float = option(1e-3, "absolute floor of the overfitting increase dO in the weights dG / dO^2")
    gblend_floor_se: float = option(
        1.0, "floor of dO in standard errors of its own measurement on the holdout (0: gblend_eps alone)"
    )

    def __post_init__(self) -> None:
        require(self.gblend_first >= 1, "gblend_first", self.gblend_first, "at least 1")
        require(self.gblend_super_epoch >= 1, "gblend_super_epoch", self.gblend_super_epoch, "at least 1")
        require(0 < self.gblend_holdout < 1, "gblend_holdout", self.gblend_holdout, "in (0, 1)")
        require(self.gblend_eps > 0, "gblend_eps", self.gblend_eps, "positive")
        require(self.gblend_floor_se >= 0, "gblend_floor_se", self.gblend_floor_se, "0 or more")


def blend_weights(train: Tensor, val: Tensor, floor: Tensor | float) -> Tensor:
    """(H,) weights from (2, H) losses at the start (row 0) and end (row 1) of an estimation,
    on the training subset and on the holdout: max(dG, 0) / max(dO, floor)^2, normalised;
    ``floor`` is a number or one (H,) value per head."""
    gain = val[0] - val[1]
    overfit = (val[1] - train[1]) - (val[0] - train[0])
    raw = gain.clamp_min(0) / torch.maximum(overfit, torch.as_tensor(floor, dtype=overfit.dtype)) ** 2
    if float(raw.sum()) <= 0:
        return torch.full_like(raw, 1.0 / raw.numel())
    return raw / raw.sum()


def overfit_error(train: Sequence[Tensor], val: Sequence[Tensor]) -> Tensor:
    """(H,) standard error of each head's overfitting increase dO, from its per-sample losses
    at the start and end of an estimation (two (2, n) tensors per head, the same samples in the
    same order at both ends): dO is a difference of paired differences, so its variance is
    var(end - start) / n on the holdout plus the same on the training subset."""
    return torch.stack([paired_variance(t) + paired_variance(v) for t, v in zip(train, val)]).sqrt()


def paired_variance(losses: Tensor) -> Tensor:
    """Variance of the mean of (end - start) over the n samples of a (2, n) tensor (0 when n < 2)."""
    change = losses[1] - losses[0]
    return change.var() / len(change) if len(change) > 1 else change.new_zeros(())


def super_epochs(epochs: int, first: int, every: int, online: bool) -> dict[int, int]:
    """Epoch at which an estimation starts -> its length in epochs."""
    if not online:
        return {0: epochs}
    starts = [0, *range(first, epochs, every)]
    return {s: min(e, epochs) - s for s, e in zip(starts, [*starts[1:], epochs]) if s < epochs}


def head_losses(outputs: Outputs) -> list[Tensor]:
    """M + 1 per-sample cross-entropies: each modality's prediction on the samples that have it
    (in their order), then the fused prediction on every sample."""
    losses = []
    for m, logits in outputs.unimodal.items():
        rows = outputs.present[m]
        losses.append(F.cross_entropy(logits[rows], outputs.label[rows], reduction="none"))
    losses.append(F.cross_entropy(outputs.fused, outputs.label, reduction="none"))
    return losses


def mean_losses(losses: Sequence[Tensor]) -> Tensor:
    """(H,) means of per-sample losses (0 for a head with no sample)."""
    return torch.stack([v.mean() if len(v) else v.new_zeros(()) for v in losses])


@dataclass(frozen=True)
class Holdout:
    """T (what the model trains on), its subset T' and the holdout V (both measured)."""

    train: MultimodalDataset
    train_subset: MultimodalDataset
    val: MultimodalDataset


def carve_holdout(train: MultimodalDataset, share: float, seed: int, transforms: Any) -> Holdout:
    """Split ``train`` by class into T and V (``share``); T' = |V| random rows of T. The measured
    sets take ``transforms`` (the evaluation ones)."""
    inner = stratified_split(train.labels[train.rows], share, 0.0, seed)
    held = train.rows[inner == "val"]
    if len(held) == 0 or len(held) == len(train):
        raise ValueError(
            f"gblend: a holdout of {share:g} of {len(train)} training samples is empty or everything; "
            "change --gblend-holdout"
        )
    rest = train.rows[inner != "val"]
    subset = np.sort(np.random.default_rng([seed, 29]).permutation(rest)[: len(held)])
    return Holdout(
        train.view(rest),
        train.view(subset).with_transforms(transforms),
        train.view(held).with_transforms(transforms),
    )


class GBlend(Joint):
    name = "gblend"
    options_class = GBlendOptions
    blend: Tensor

    def __init__(self, encoders: Mapping[str, nn.Module], spec: DataSpec, options: GBlendOptions, dim: int):
        super().__init__(encoders, spec, options, dim)
        self.dim = dim
        self.aux = UnimodalHeads(self.modalities, dim, spec.num_classes)
        count = len(self.modalities) + 1
        self.register_buffer("blend", torch.full((count,), 1.0 / count))
        self.host_blend: list[float] = self.blend.tolist()
        """The ``blend`` weights as the steps use them, copied to the host at each epoch's start."""
        self.holdout: Holdout | None = None  # set while fitting; estimation copies have none

    def unimodal_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return self.aux(features)  # type: ignore[no-any-return]

    def training_splits(self, splits: Splits, config: TrainConfig) -> Splits:
        """The loop trains on T = the training split minus the holdout V."""
        self.holdout = carve_holdout(splits.train, self.options.gblend_holdout, config.seed, splits.val.transforms)
        return dataclasses.replace(splits, train=self.holdout.train)

    def on_fit_end(self, splits: Splits) -> None:
        self.holdout = None

    def training_step(self, batch: Batch) -> StepOutput:
        features = self.encode(batch)
        logits = self.aux(features)
        losses = [*unimodal_losses(self, logits, batch).values(), self.cross_entropy(self.head(features), batch.label)]
        weights = self.host_blend
        loss: Tensor = sum(w * value for w, value in zip(weights, losses) if w > 0)  # type: ignore[assignment]
        self.optimize(loss)
        names = [*self.modalities, "fused"]
        extras = {f"gblend_w_{n}": w for n, w in zip(names, weights)}
        return StepOutput(loss.detach(), present_rows({m: v.detach() for m, v in logits.items()}, batch), extras)

    def on_epoch_start(self, epoch: int) -> None:
        if self.holdout is not None:
            opts = self.options
            plan = super_epochs(
                self.config.epochs, opts.gblend_first, opts.gblend_super_epoch, opts.gblend_mode == "online"
            )
            if epoch in plan:
                self.blend.copy_(self.estimate(self.holdout, plan[epoch]))
                self.train()
        self.host_blend = self.blend.tolist()  # the epoch's one read of the weights

    def estimate(self, holdout: Holdout, epochs: int) -> Tensor:
        """G-Blending weights from the current parameters over ``epochs`` epochs of training."""
        start = self._measure(holdout)  # T', V -> H per-sample losses each
        end: tuple[list[Tensor], list[Tensor]] = ([], [])
        for i in range(len(self.blend)):
            net = GBlend(copy.deepcopy(dict(self.encoders)), self.spec, self.options, self.dim)
            net.load_state_dict(self.state_dict())
            net.blend.copy_(F.one_hot(torch.tensor(i), len(self.blend)).float())
            loop = self.loop.spawn()
            loop.setup(net)
            for j in range(epochs):  # at the learning rate of the main run's schedule in those epochs
                loop.scheduler.load_state_dict({"last_epoch": self.epoch + j})  # type: ignore[union-attr]
                loop.train_epoch(net, holdout.train, self.epoch + j)
                self.dist.average_norm_statistics(net)
            measured = net._measure(holdout)
            end[0].append(measured[0][i])
            end[1].append(measured[1][i])
        train, val = ([torch.stack([a, b]) for a, b in zip(s, e)] for s, e in zip(start, end))
        floor = (self.options.gblend_floor_se * overfit_error(train, val)).clamp_min(self.options.gblend_eps)
        means = [torch.stack([mean_losses(s), mean_losses(e)]) for s, e in zip(start, end)]
        return blend_weights(means[0], means[1], floor)

    def _measure(self, holdout: Holdout) -> tuple[list[Tensor], list[Tensor]]:
        """Per-sample losses of every head on T' and on V."""
        subset, val = (head_losses(self.collect(d, all_subsets=False)) for d in (holdout.train_subset, holdout.val))
        return subset, val
