"""Fusion: late-fusion heads for joint training, and MLA's test-time dynamic fusion.

Late-fusion heads (joint training; OGM-GE uses them too) map modality-keyed features (B, d) to
(B, C) logits and define each modality's own prediction inside the fused model:

- ``concat``: one linear layer over the concatenated features. Modality m's prediction is its
  share of the head, ``W[:, cols_m] f_m + b / M`` (the protocol of OGM-GE's and MLA's code).
- ``sum``: one linear layer per modality, logits summed. Modality m's prediction is
  ``W_m f_m + b_m / M``, its own layer with its own bias over M, as the reference code (OGM-GE's
  sum fusion) computes it; unlike concat's, the shares do not add up to the fused logits.
- ``film``: FiLM (Perez et al., 2018). The reference code has audio produce a scale and shift for
  the visual feature. With M modalities the LAST modality is the one modulated and every other
  modality, in order, applies its own scale and shift: ``h = g_m(f_m) * h + b_m(f_m)``.
- ``gated``: the reference code gates the projected visual feature with a sigmoid of the
  projected audio feature. With M modalities the last modality's projection is gated by every
  other modality in turn: ``h = sigmoid(W_m f_m) * h``.
FiLM and gated heads have no per-modality share; their unimodal prediction is the honest one,
the fused head with every other modality absent (zero features).

Dynamic fusion (MLA, section 3.3 of the paper): every present modality is scored by the shared
head; per sample, weights are the softmax over the present modalities of minus the prediction
entropy, and the fused logits are the weighted sum. :func:`batch_entropy_weights` reproduces the
reference code's variant (one weight per modality per test batch) for parity only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from altmodal.data.batch import zero_absent
from altmodal.metrics import entropy

FUSIONS = ("concat", "sum", "film", "gated")


class FusionHead(nn.Module):
    """A late-fusion head over modality-keyed features."""

    def __init__(self, modalities: Sequence[str]):
        super().__init__()
        self.modalities = list(modalities)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def unimodal(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each modality's prediction: by default the head with only that modality present."""
        return each_alone(self, {m: features[m] for m in self.modalities})


def each_alone(head: Callable[[Mapping[str, Tensor]], Tensor], features: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """modality -> the logits ``head`` gives with every OTHER modality's features zeroed."""
    out = {}
    for m in features:
        out[m] = head({k: f if k == m else torch.zeros_like(f) for k, f in features.items()})
    return out


class ConcatHead(FusionHead):
    def __init__(self, modalities: Sequence[str], dim: int, num_classes: int):
        super().__init__(modalities)
        self.dim = dim
        self.fc = nn.Linear(dim * len(self.modalities), num_classes)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        return self.fc(torch.cat([features[m] for m in self.modalities], dim=1))  # type: ignore[no-any-return]

    def unimodal(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        share = self.fc.bias / len(self.modalities)
        out = {}
        for j, m in enumerate(self.modalities):
            weight = self.fc.weight[:, j * self.dim : (j + 1) * self.dim]  # (C, d)
            out[m] = features[m] @ weight.T + share
        return out


class SumHead(FusionHead):
    def __init__(self, modalities: Sequence[str], dim: int, num_classes: int):
        super().__init__(modalities)
        self.fc = nn.ModuleDict({m: nn.Linear(dim, num_classes) for m in self.modalities})

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        return torch.stack([self.fc[m](features[m]) for m in self.modalities]).sum(dim=0)

    def unimodal(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        layers: dict[str, nn.Linear] = {m: self.fc[m] for m in self.modalities}  # type: ignore[misc]
        return {m: features[m] @ layers[m].weight.T + layers[m].bias / len(self.modalities) for m in self.modalities}


class FiLMHead(FusionHead):
    def __init__(self, modalities: Sequence[str], dim: int, num_classes: int):
        super().__init__(modalities)
        if len(self.modalities) < 2:
            raise ValueError("film fusion needs at least two modalities")
        self.film = nn.ModuleDict({m: nn.Linear(dim, 2 * dim) for m in self.modalities[:-1]})
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        h = features[self.modalities[-1]]
        for m in self.modalities[:-1]:
            scale, shift = self.film[m](features[m]).chunk(2, dim=1)
            h = scale * h + shift
        return self.fc(h)  # type: ignore[no-any-return]


class GatedHead(FusionHead):
    def __init__(self, modalities: Sequence[str], dim: int, num_classes: int):
        super().__init__(modalities)
        if len(self.modalities) < 2:
            raise ValueError("gated fusion needs at least two modalities")
        self.proj = nn.ModuleDict({m: nn.Linear(dim, dim) for m in self.modalities})
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        h = self.proj[self.modalities[-1]](features[self.modalities[-1]])
        for m in self.modalities[:-1]:
            h = torch.sigmoid(self.proj[m](features[m])) * h
        return self.fc(h)  # type: ignore[no-any-return]


def build_fusion_head(kind: str, modalities: Sequence[str], dim: int, num_classes: int) -> FusionHead:
    heads = {"concat": ConcatHead, "sum": SumHead, "film": FiLMHead, "gated": GatedHead}
    if kind not in heads:
        raise ValueError(f"unknown fusion {kind!r}; fusions: {', '.join(FUSIONS)}")
    return heads[kind](modalities, dim, num_classes)


# ----- test-time fusion of per-modality predictions ----------------------------------------------


def entropy_weights(logits: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Per-sample dynamic-fusion weights: softmax over the PRESENT modalities of -entropy.

    Args:
        logits: modality -> (B, C) logits.
        present: modality -> (B,) bool.
    Returns:
        modality -> (B,) weights; absent modalities get 0, each row sums to 1 over the present
        ones (a row with no modality present gets all zeros).
    """
    names = list(logits)
    neg_entropy = torch.stack([-entropy(logits[m]) for m in names], dim=1)  # (B, M)
    mask = torch.stack([present[m] for m in names], dim=1)
    weights = torch.softmax(neg_entropy.masked_fill(~mask, float("-inf")), dim=1)
    weights = torch.nan_to_num(weights, nan=0.0)  # rows with nothing present
    return {m: weights[:, j] for j, m in enumerate(names)}


def fixed_weights(weights: Sequence[float], names: Sequence[str], present: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Fixed per-modality weights, renormalised per sample over the present modalities."""
    if len(weights) != len(names):
        raise ValueError(f"{len(weights)} fusion weights given for {len(names)} modalities ({', '.join(names)})")
    table = torch.stack([present[m].to(torch.float32) * float(w) for m, w in zip(names, weights)], dim=1)  # (B, M)
    total = table.sum(dim=1, keepdim=True)
    table = torch.where(total > 0, table / total.clamp_min(1e-12), table)
    return {m: table[:, j] for j, m in enumerate(names)}


def batch_entropy_weights(logits: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The reference code's variant, for parity: softmax over the BATCH axis, entropy summed over
    the whole batch, one weight per modality per test batch (broadcast to every sample). Results
    depend on batch size and composition. Absent samples are left out of the sums."""
    names = list(logits)
    totals = []
    for m in names:
        rows = present[m]
        if not rows.any():
            totals.append(torch.tensor(float("inf"), device=logits[m].device))
            continue
        logp = torch.log_softmax(logits[m][rows].float(), dim=0)
        totals.append(-(logp.exp() * logp).sum())
    weights = torch.softmax(-torch.stack(totals), dim=0)
    batch = next(iter(logits.values())).shape[0]
    mask = {m: present[m].to(torch.float32) for m in names}
    per_sample = {m: weights[j].expand(batch) * mask[m] for j, m in enumerate(names)}
    total = torch.stack(list(per_sample.values()), dim=1).sum(dim=1).clamp_min(1e-12)
    return {m: w / total for m, w in per_sample.items()}


def combine(logits: Mapping[str, Tensor], weights: Mapping[str, Tensor], space: str = "logits") -> Tensor:
    """sum_m w_m * o_m ((B,) weights, (B, C) logits); in ``probs`` space the weighted sum of
    softmax probabilities is returned as log-probabilities (so argmax and softmax still apply)."""
    names = list(logits)
    if space == "logits":
        return sum(weights[m].unsqueeze(1) * zero_absent(logits[m], weights[m] > 0) for m in names)  # type: ignore[return-value]
    if space == "probs":
        probs = sum(weights[m].unsqueeze(1) * torch.softmax(logits[m].float(), dim=1) for m in names)
        return torch.log(probs.clamp_min(1e-12))  # type: ignore[union-attr]
    raise ValueError(f"unknown fusion space {space!r}; spaces: logits, probs")
