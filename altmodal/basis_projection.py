"""OGD and PCA-OGD: MLA's head projected against the other modalities' stored feature bases, the
alternatives to OWM (:mod:`altmodal.projection`) a reviewer asked for.

With h~ = [z; 1] and Theta = [W, b] (C x (d+1)), the head's logits are Theta h~, so a step
Theta <- Theta - lr * G changes the logits of a stored feature by -lr * G h~. OGD-ALL (Farajtabar
et al., AISTATS 2020) removes from every row of G the span of the stored h~: G <- G (I - Q Q^T),
with Q an orthonormal basis of that span; on a linear head this keeps the stored features' logits
EXACTLY (not to first order). PCA-OGD (Doan et al., AISTATS 2021) replaces the stored samples by
the top principal directions of a larger pool, UNCENTERED here: centring would drop the mean
feature, which is what drives the logits of non-negative (ReLU) features. For MLA, the step of
modality m is projected against the OTHER modalities' bases only (m must still fit its own
features), and the bases are recomputed from the memories at each refresh (every epoch or every K
head steps), because the encoders drift and stored features go stale.

Projecting the gradient, momentum and weight decay break the guarantee: SGD's momentum buffer
mixes the projected steps of different modalities, and weight decay shrinks Theta along every
direction; it holds exactly only for plain SGD on the head. With ``target="update"`` the
optimizer's whole update of Theta is projected instead, which keeps it under any optimizer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from altmodal.projection import TARGETS, counters_on_host


def augment(features: Tensor) -> Tensor:
    """(n, d) features -> (n, d + 1) rows [z, 1], so that the head's logits are Theta h~."""
    return torch.cat([features, torch.ones_like(features[:, :1])], dim=1)


def span_basis(vectors: Tensor) -> Tensor:
    """(n, D) vectors -> (D, r) an orthonormal basis of their span (r: the numerical rank)."""
    if vectors.shape[0] == 0:
        return vectors.new_zeros(vectors.shape[1], 0)
    U, S, _ = torch.linalg.svd(vectors.T.double(), full_matrices=False)  # (D, n), (n,)
    return U[:, significant(S, vectors.shape)].to(vectors.dtype)


def significant(S: Tensor, shape: Sequence[int]) -> Tensor:
    """Which singular values ``S`` (float64) of a matrix of ``shape`` count towards its numerical
    rank: those above max(S) * max(shape) * eps."""
    return S > S.max() * max(shape) * torch.finfo(torch.float64).eps


def top_directions(pool: Tensor, k: int, energy: float) -> Tensor:
    """(n, D) pool -> (D, r) its top principal directions, uncentered: the fewest (at most ``k``)
    whose squared singular values reach the share ``energy`` of the total."""
    if pool.shape[0] == 0 or k == 0:
        return pool.new_zeros(pool.shape[1], 0)
    U, S, _ = torch.linalg.svd(pool.T.double(), full_matrices=False)
    power = S**2
    share = torch.cumsum(power, 0) / power.sum().clamp_min(torch.finfo(torch.float64).tiny)
    needed = int((share < energy).sum()) + 1
    rank = int(significant(S, pool.shape).sum())
    return U[:, : max(min(needed, k, rank), 0)].to(pool.dtype)


def project_out(grad: Tensor, basis: Tensor) -> Tensor:
    """(C, D) gradient with the span of the orthonormal ``basis`` (D, r) removed from each row:
    G (I - Q Q^T)."""
    return grad - (grad @ basis) @ basis.T


class FeatureBasisProjector(nn.Module):
    """OGD-ALL or PCA-OGD for a head shared by several modalities.

    Per modality, a FIFO memory of the augmented features h~ of its steps (OGD: the stored samples;
    PCA-OGD: the pool); per modality, the orthonormal basis of the OTHER modalities' spans, padded
    with zero columns to (d+1, d+1) and recomputed by :meth:`refresh`. Everything is in buffers,
    so it travels with ``state_dict`` (checkpoints, resume). The counts of stored features and of
    steps are kept on the host (:func:`counters_on_host`), so a step reads nothing back from the
    device; only a refresh does (at each epoch's start, or every ``refresh_every`` head steps).

    Args:
        head: the shared linear head; its weight AND bias gradients are projected.
        modalities: the modalities that step the head.
        method: ``ogd`` (span of the stored features) or ``pca-ogd`` (top uncentered directions).
        memory: features kept per modality (OGD's n_mem, or PCA-OGD's pool n_pca).
        k: PCA-OGD's largest number of directions per modality.
        energy: PCA-OGD's share of the pool's energy its directions must reach.
        refresh_every: recompute the bases every this many head steps; 0: at each epoch's start.
        target: ``gradient`` (project the head's gradients) or ``update`` (the optimizer's update).
    """

    memory: Tensor
    stored: Tensor
    others: Tensor
    steps: Tensor
    host_stored: list[int]
    host_steps: int

    def __init__(
        self,
        head: nn.Linear,
        modalities: Sequence[str],
        *,
        method: str = "ogd",
        memory: int = 64,
        k: int = 64,
        energy: float = 0.99,
        refresh_every: int = 0,
        target: str = "gradient",
    ):
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"unknown projection target {target!r}; targets: {', '.join(TARGETS)}")
        if method not in ("ogd", "pca-ogd"):
            raise ValueError(f"unknown projection method {method!r}; methods: ogd, pca-ogd")
        weight = head.weight
        size = weight.shape[1] + 1
        self.modalities = list(modalities)
        self.method = method
        self.k = k
        self.energy = energy
        self.refresh_every = refresh_every
        self.target = target
        count, dtype, device = len(self.modalities), weight.dtype, weight.device
        self.register_buffer("memory", torch.zeros(count, memory, size, dtype=dtype, device=device))
        self.register_buffer("stored", torch.zeros(count, dtype=torch.long, device=device))
        self.register_buffer("others", torch.zeros(count, size, size, dtype=dtype, device=device))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long, device=weight.device))
        counters_on_host(self, "stored", "steps")

    def stored_features(self, modality: str) -> Tensor:
        """(n, d+1) the augmented features in the modality's memory (in no particular order)."""
        j = self.modalities.index(modality)
        return self.memory[j, : min(self.host_stored[j], self.memory.shape[1])]

    def basis(self, modality: str) -> Tensor:
        """(d+1, r) the modality's own basis from its memory."""
        rows = self.stored_features(modality)
        return span_basis(rows) if self.method == "ogd" else top_directions(rows, self.k, self.energy)

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute, for every modality, the basis of the other modalities' spans."""
        bases = [self.basis(m) for m in self.modalities]
        self.others.zero_()
        for j in range(len(self.modalities)):
            rest = [bases[i] for i in range(len(bases)) if i != j]
            if rest:
                joint = span_basis(torch.cat(rest, dim=1).T)
                self.others[j, :, : joint.shape[1]] = joint

    def on_epoch_start(self) -> None:
        if self.refresh_every == 0:
            self.refresh()

    @torch.no_grad()
    def push(self, modality: str, features: Tensor) -> None:
        """Append the (n, d) features of a step to the modality's memory (the oldest drop out)."""
        j, capacity = self.modalities.index(modality), self.memory.shape[1]
        rows = augment(features.to(self.memory.dtype))[-capacity:]
        if capacity == 0 or len(rows) == 0:
            return
        slots = (self.host_stored[j] + torch.arange(len(rows), device=self.memory.device)) % capacity
        self.memory[j, slots] = rows
        self.host_stored[j] += len(rows)

    @torch.no_grad()
    def step(self, head: nn.Linear, modality: str, features: Tensor) -> bool:
        """With ``target="gradient"``, project the head's gradients (already combined over
        processes) against the other modalities' bases; then store this step's (n, d) features
        (the same on every process). Returns True (every step is projected)."""
        if self.refresh_every > 0 and self.host_steps % self.refresh_every == 0:
            self.refresh()
        self.host_steps += 1
        basis = self.others[self.modalities.index(modality)]
        weight, bias = head.weight, head.bias
        if self.target == "gradient" and weight.grad is not None and bias is not None and bias.grad is not None:
            grad = torch.cat([weight.grad, bias.grad[:, None]], dim=1)
            grad = project_out(grad, basis.to(grad.dtype))
            weight.grad.copy_(grad[:, :-1])
            bias.grad.copy_(grad[:, -1])
        self.push(modality, features)
        return True

    def before_step(self, head: nn.Linear, modality: str, features: Tensor) -> dict[str, Tensor]:
        """Between backward and the optimizer's step: :meth:`step`, and, with ``target="update"``,
        [W, b] ahead of the step kept for :meth:`after_step`."""
        if self.step(head, modality, features) and self.target == "update":
            assert head.bias is not None
            return {"before": torch.cat([head.weight, head.bias[:, None]], dim=1).detach().clone()}
        return {}

    def after_step(self, head: nn.Linear, modality: str, kept: Mapping[str, Tensor]) -> None:
        """After the optimizer's step: its update projected, where :meth:`before_step` kept the head."""
        if "before" in kept:
            self.project_update(head, modality, kept["before"])

    @torch.no_grad()
    def project_update(self, head: nn.Linear, modality: str, before: Tensor) -> None:
        """Replace the optimizer's update of [W, b] (from ``before``, (C, d+1) ahead of the step)
        by its projection against the other modalities' bases."""
        assert head.bias is not None
        basis = self.others[self.modalities.index(modality)]
        after = torch.cat([head.weight, head.bias[:, None]], dim=1)
        moved = before + project_out(after - before, basis.to(after.dtype))
        head.weight.copy_(moved[:, :-1])
        head.bias.copy_(moved[:, -1])
