"""ShaSpec: shared-specific feature modelling (Wang, Chen, Ma, Avery, Hull & Carneiro, "Multi-modal
Learning with Missing Modality via Shared-Specific Feature Modelling", CVPR 2023).

Every modality has a SPECIFIC feature s_m (its own encoder) and a SHARED feature r_m (from an
encoder shared by all modalities), fused residually by one projection shared by all modalities,
f_m = r_m + P([r_m; s_m]); a linear head reads the concatenated f_m. An absent modality's f_m is
the mean of the present modalities' shared features (``shaspec_fill=mean``, the paper; the code
takes the first present one, ``first``). Besides the task's cross-entropy, two losses shape the
features: the shared features of every two modalities a sample has are pulled together (L1,
weight alpha = 0.1, the paper's choice among its alignment losses), and a linear classifier must
tell from a specific feature which modality it came from (cross-entropy, weight beta = 0.02):

    L = CE(head(f_1, ..., f_M), y) + alpha mean_{i<j} |r_i - r_j|_1 + beta CE(D(s_m), m)

A modality's own prediction: the head with every other modality filled from it.

The shared encoder: when every modality's encoder has the same architecture and sizes (equal
input shapes), one copy applied to every modality, as in the code (all MRI sequences share a
shape); otherwise, as the authors advise for inputs of different shapes ("align the dimension
first"), a per-modality copy of the encoder followed by one shared layer, Linear(d, d) + ReLU
(``shaspec_shared``). Copies start from the specific encoders' weights. The shared encoders run
where every encoder runs (:meth:`~altmodal.model.Model.encode_with`): under ``--absent
zero-features`` absent rows never reach them and get zero shared features (the code, as
``zero-inputs``, encodes its zero inputs), and a lone training sample passes batch normalisation
on its running statistics. Departures of the code,
as options: it computes both auxiliary losses on absent (zero-input) modalities too
(``shaspec_aux_absent``) and sums the alignment over the cyclic pairs (i, i+1 mod M)
(``shaspec_pairs=cyclic``); its non-dedicated training drops random modality subsets
(``shaspec_drop``, a per-sample rate as ModDrop's; the paper's avMNIST runs train on the data's
own missingness, the default 0). Cost: two encoder passes per modality, about 2x joint training.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from altmodal.config import option, require
from altmodal.data.batch import Batch
from altmodal.strategies.base import DataSpec, StepOutput, Strategy
from altmodal.strategies.joint import present_rows
from altmodal.strategies.parts import drop_modalities, each_present_alone, mean_present


@dataclass(frozen=True)
class ShaSpecOptions:
    shaspec_alpha: float = option(0.1, "weight alpha of the shared features' alignment (L1)")
    shaspec_beta: float = option(0.02, "weight beta of the specific features' modality classification")
    shaspec_fill: Literal["mean", "first"] = option(
        "mean", "an absent modality's feature: the mean of the present shared features (paper) or the first (code)"
    )
    shaspec_shared: Literal["auto", "encoder", "trunk"] = option(
        "auto",
        "shared encoder: one for all (encoder; needs equal input shapes), per-modality stems + a shared layer "
        "(trunk), or encoder where possible (auto)",
    )
    shaspec_pairs: Literal["all", "cyclic"] = option("all", "alignment pairs: every pair (mean) or cyclic (sum, code)")
    shaspec_aux_absent: bool = option(False, "auxiliary losses on absent (zero-input) modalities too (code)")
    shaspec_drop: float = option(0.0, "drop each modality of a training sample at this rate (code: random subsets)")

    def __post_init__(self) -> None:
        for name in ("shaspec_alpha", "shaspec_beta"):
            require(getattr(self, name) >= 0, name, getattr(self, name), "non-negative")
        require(0 <= self.shaspec_drop < 1, "shaspec_drop", self.shaspec_drop, "in [0, 1)")


def same_architecture(encoders: Mapping[str, nn.Module]) -> bool:
    """Whether every encoder has the same type and the same parameter names and shapes."""
    shapes = [(type(e), [(n, p.shape) for n, p in e.named_parameters()]) for e in encoders.values()]
    return all(shape == shapes[0] for shape in shapes)


class SharedEncoder(nn.Module):
    """A modality's shared encoder as :meth:`Model.encode_with` runs it: ``trunk(stem(x))``
    (built for a call; its parts are ShaSpec's)."""

    def __init__(self, stem: nn.Module, trunk: nn.Module, out_dim: int):
        super().__init__()
        self.stem, self.trunk, self.out_dim = stem, trunk, out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.trunk(self.stem(x))  # type: ignore[no-any-return]


class ShaSpec(Strategy):
    name = "shaspec"
    options_class = ShaSpecOptions

    def __init__(self, encoders: Mapping[str, nn.Module], spec: DataSpec, options: ShaSpecOptions, dim: int):
        super().__init__(encoders, spec, options)
        one = options.shaspec_shared == "encoder" or (options.shaspec_shared == "auto" and same_architecture(encoders))
        if options.shaspec_shared == "encoder" and not same_architecture(encoders):
            raise ValueError("shaspec: --shaspec-shared encoder needs encoders of one architecture (equal inputs)")
        stems = {"all": encoders[self.modalities[0]]} if one else dict(encoders)
        self.stems = nn.ModuleDict({k: copy.deepcopy(e) for k, e in stems.items()})
        self.trunk = nn.Identity() if one else nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
        self.project = nn.Linear(2 * dim, dim)
        self.head = nn.Linear(len(self.modalities) * dim, spec.num_classes)
        self.domain = nn.Linear(dim, len(self.modalities))
        self.dim = dim

    def encode(self, batch: Batch, only: Sequence[str] | None = None) -> dict[str, Tensor]:
        """modality -> (B, 2d): its shared feature r_m, then its specific feature s_m; both
        encoders run where every encoder runs (``absent``, a lone sample's normalisation)."""
        specific = super().encode(batch, only)
        shared = self.encode_with(self.shared_encoders(), batch, only)
        return {m: torch.cat([shared[m], s], dim=1) for m, s in specific.items()}

    def shared_encoders(self) -> dict[str, nn.Module]:
        """modality -> its shared encoder: its stem (or the one for all) and the shared trunk."""
        stems = {m: self.stems["all" if "all" in self.stems else m] for m in self.modalities}
        return {m: SharedEncoder(stem, self.trunk, self.dim).train(self.training) for m, stem in stems.items()}

    def feature_width(self, modality: str) -> int:
        return 2 * self.dim

    def absent_features(self, batch: Batch) -> dict[str, Tensor]:
        """Zeros: :meth:`fuse` fills an absent modality from the present ones, whatever it holds."""
        return {m: torch.zeros(1, 2 * self.dim, device=batch.label.device) for m in self.modalities}

    def fuse(self, features: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        shared = {m: f[:, : self.dim] for m, f in features.items()}
        if self.options.shaspec_fill == "mean":
            fill = mean_present(shared, present)
        else:  # the first present modality's, in modality order
            fill = torch.zeros_like(shared[self.modalities[0]])
            for m in reversed(self.modalities):
                fill = torch.where(present[m][:, None], shared[m], fill)
        fused = [torch.where(present[m][:, None], shared[m] + self.project(features[m]), fill) for m in self.modalities]
        return self.head(torch.cat(fused, dim=1))  # type: ignore[no-any-return]

    def unimodal_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return each_present_alone(self.fuse, features)

    def training_step(self, batch: Batch) -> StepOutput:
        opts = self.options
        if opts.shaspec_drop > 0:
            batch = drop_modalities(batch, opts.shaspec_drop, self.step_generator(host=True))
        features = self.encode(batch)
        loss = self.cross_entropy(self.fuse(features, batch.present), batch.label)
        rows = {m: torch.ones_like(p) if opts.shaspec_aux_absent else p for m, p in batch.present.items()}
        shared = {m: f[:, : self.dim] for m, f in features.items()}
        names = self.modalities
        pairs = list(itertools.combinations(names, 2))
        if opts.shaspec_pairs == "cyclic":
            pairs = [(names[j], names[(j + 1) % len(names)]) for j in range(len(names))]
        align = [self.mean_loss((shared[a] - shared[b]).abs().mean(1), rows[a] & rows[b]) for a, b in pairs]
        alignment = torch.stack([*align, loss.new_zeros(())])
        alignment = alignment.sum() if opts.shaspec_pairs == "cyclic" else alignment.sum() / max(len(align), 1)
        domain = sum(
            self.cross_entropy(self.domain(f[:, self.dim :]), torch.full_like(batch.label, j), rows[m])
            for j, (m, f) in enumerate(features.items())
        ) / len(names)
        loss = loss + opts.shaspec_alpha * alignment + opts.shaspec_beta * domain
        self.optimize(loss)
        unimodal = {m: v.detach() for m, v in self.unimodal_logits(features).items()}
        return StepOutput(loss.detach(), present_rows(unimodal, batch), {"shaspec_alignment": alignment.detach()})
