"""Diagnosing & Re-learning (Wei, Li, Hu et al., "Diagnosing and Re-learning for Balanced
Multimodal Learning", ECCV 2024).

Joint late-fusion training (:class:`~altmodal.strategies.joint.Joint`, one fused cross-entropy)
plus a diagnosis every H epochs. For each modality, its encoder's features of the training split
and of the validation split are clustered by k-means (one cluster per class) and the cluster
purity of both is measured; a modality that separates the training samples much better than the
validation samples has over-fitted (learnt "too well"), so its encoder is pulled back towards its
initial weights by an amount that grows with the gap:

    g_m = |P_train - P_val|,   alpha_m = tanh(lambda * g_m),
    theta_m <- (1 - alpha_m) theta_m + alpha_m theta_m^init      (every nn.Parameter of the encoder)

BatchNorm running statistics and the optimizer state (momentum) are kept, as in the official code.
The diagnosis runs before epoch e whenever e > 0 and e % H == 0 (after H, 2H, ... completed
epochs, the paper's "every H epochs"; the official code diagnoses at the end of its 0-based epoch
H, 2H, ..., i.e. after H + 1, 2H + 1, ... completed epochs, one epoch later), at most R times.
Defaults: the paper's H = 20 and lambda = 3 (its CREMA-D setting; KS and UCF-101 use 7,
MOSI 8 with H = 5); the paper names no cap on the diagnoses, the official code stops after
R = 3, our default (0: no cap).

Choices of ours, and where the official code differs:
- validation is the run's own validation split; features of the training split are taken in
  evaluation mode WITHOUT augmentation (the code feeds its training loader, augmented);
- the features are min-max scaled to [-1, 1] per dimension and per split, as in the code; k-means
  is our own seeded k-means++ (:mod:`altmodal.clustering`) with the best of 10 starts, as
  scikit-learn's default (before version 1.4) that the code calls (the paper says random centres);
  one start makes the purity about twice as noisy (standard deviation over 20 seeds 0.022-0.024
  against 0.006-0.011 on mfeat's views; ``benchmarks/purity_noise.py``);
- missing modalities: a modality's purity uses only the samples that have it;
- unimodal accuracy: the model has no unimodal head; we report the head slice of the fused head
  (as for joint training), not the paper's linear probes;
- the initial weights are taken when training starts (after the processes share rank 0's
  parameters), and go into the checkpoint with the number of diagnoses made.
Each process clusters the same gathered features, in sample order; the alphas are averaged over
processes anyway, so every process re-initialises identically (no per-process state).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from altmodal.clustering import cluster_purity
from altmodal.config import option, require
from altmodal.data.dataset import MultimodalDataset, Splits
from altmodal.metrics import Outputs
from altmodal.strategies.base import DataSpec
from altmodal.strategies.joint import Joint, JointOptions


@dataclass(frozen=True)
class RelearnOptions(JointOptions):
    relearn_every: int = option(20, "D&R: diagnose every H epochs (paper: 20; 5 for MOSI)")
    relearn_lambda: float = option(3.0, "D&R: lambda of alpha = tanh(lambda * purity gap) (paper: 3 CREMA-D, 7 KS)")
    relearn_times: int = option(3, "D&R: at most this many diagnoses (official code: 3; 0: no cap)")

    def __post_init__(self) -> None:
        require(self.relearn_every >= 1, "relearn_every", self.relearn_every, "at least 1")
        require(self.relearn_lambda >= 0, "relearn_lambda", self.relearn_lambda, "non-negative")
        require(self.relearn_times >= 0, "relearn_times", self.relearn_times, "non-negative")


def relearn_alpha(purity_train: float, purity_val: float, lam: float) -> float:
    """alpha = tanh(lambda |P_train - P_val|); 0 when either purity is undefined (NaN)."""
    gap = abs(purity_train - purity_val)
    return 0.0 if math.isnan(gap) else math.tanh(lam * gap)


@torch.no_grad()
def soft_reset(module: nn.Module, initial: Mapping[str, Tensor], alpha: float) -> None:
    """theta <- (1 - alpha) theta + alpha theta_init for every parameter of ``module``."""
    for name, p in module.named_parameters():
        p.mul_(1 - alpha).add_(initial[name].to(p.device, p.dtype), alpha=alpha)


def modality_purity(outputs: Outputs, modality: str, k: int, seed: int) -> float:
    """Cluster purity of one modality's features over the samples that have it, taken in sample
    order (so the seeded k-means sees the same rows in the same order with any number of
    processes)."""
    order = outputs.index.argsort()
    rows = order[outputs.present[modality][order]]
    return cluster_purity(outputs.features[modality][rows], outputs.label[rows], k, seed)


class Relearn(Joint):
    name = "relearn"
    options_class = RelearnOptions

    def __init__(self, encoders: Mapping[str, nn.Module], spec: DataSpec, options: RelearnOptions, dim: int):
        super().__init__(encoders, spec, options, dim)
        self.initial: dict[str, dict[str, Tensor]] = {}
        self.diagnoses = 0
        self.diagnosis_data: tuple[MultimodalDataset, MultimodalDataset] | None = None

    def on_fit_start(self, splits: Splits) -> None:
        if not self.initial:  # a fresh start (a resumed run brings its own)
            self.initial = {
                m: {name: p.detach().clone() for name, p in self.encoders[m].named_parameters()}
                for m in self.modalities
            }
        # The training split as evaluation sees it (no augmentation), and the validation split.
        self.diagnosis_data = (splits.train.with_transforms(splits.val.transforms), splits.val)

    def on_epoch_start(self, epoch: int) -> None:
        opts: RelearnOptions = self.options
        due = epoch > 0 and epoch % opts.relearn_every == 0
        if self.diagnosis_data is None or not due or 0 < opts.relearn_times <= self.diagnoses:
            return
        train, val = (self.collect(data, all_subsets=False) for data in self.diagnosis_data)
        for j, m in enumerate(self.modalities):
            seed = int(np.random.SeedSequence([self.config.seed, epoch, j]).generate_state(1)[0])
            p_train = modality_purity(train, m, self.num_classes, seed)
            p_val = modality_purity(val, m, self.num_classes, seed)
            alpha = relearn_alpha(p_train, p_val, opts.relearn_lambda)
            alpha = float(self.dist.sum(torch.tensor(alpha, dtype=torch.float64))) / self.dist.world_size
            soft_reset(self.encoders[m], self.initial[m], alpha)
            self.epoch_extras.update(
                {
                    f"relearn_purity_train_{m}": p_train,
                    f"relearn_purity_val_{m}": p_val,
                    f"relearn_gap_{m}": abs(p_train - p_val),
                    f"relearn_alpha_{m}": alpha,
                }
            )
        self.diagnoses += 1
        self.train()  # collect() left the model in evaluation mode

    def training_extras(self) -> dict[str, Any]:
        return {"relearn": {"initial": self.initial, "diagnoses": self.diagnoses}}

    def load_training_extras(self, state: Mapping[str, Any]) -> None:
        self.initial = state["relearn"]["initial"]
        self.diagnoses = int(state["relearn"]["diagnoses"])
