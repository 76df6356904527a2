"""Head gradient modification (HGM) of MLA's shared head: OWM (the paper), and OGD / PCA-OGD.

Paper: Zhang et al., CVPR 2024, section 3.2, after OWM (Zeng et al., "Continual learning of
context-dependent processing in neural networks", Nature Machine Intelligence 2019).

The shared head's weight W (C x d) learns from every modality in turn. To keep a modality's step
from overwriting what the head learned from the others, its gradient is projected with a d x d
matrix P (P_0 = I) that is updated, before each head step, with a feature vector h (d):

    k = P h
    P <- P - k k^T / (alpha + h^T k)
    grad_W <- grad_W P^T                (the bias is not projected)

After the update P h ~ 0, so the projected step changes W h (the head's answer on features seen
before) by almost nothing. P is symmetric positive semi-definite throughout and is never reset.

Differences from the reference code, each available as an option (see :class:`HeadProjector`):
its name check never matches the head's parameter, so its projection never runs (we run it);
it uses the current batch's mean feature (``h_source="batch"``; our other choice is a running
mean per modality, a cheap stand-in for the paper's data mean); its alpha follows
``0.1 ** (b / B + 1)`` within each epoch (``alpha_schedule="reference"``); it divides P by its
Frobenius norm after every update (``normalize=True``), which mostly shrinks the head's step by
about 1/sqrt(d); it skips the very first step (``skip_first=True``). A third-party port adds the
projected gradient to the raw one (``mode="add"``).

With Adam, the per-coordinate scaling of the update undoes the projection's direction: use SGD,
the paper's optimizer, when HGM matters.

OGD-ALL and PCA-OGD (:class:`FeatureBasisProjector`, below) are the alternatives a reviewer asked
for: hard projections against stored features of the other modalities instead of OWM's soft one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def owm_update(P: Tensor, h: Tensor, alpha: float, *, inplace: bool = False) -> Tensor:
    """One OWM update of the (d, d) projector ``P`` with the feature vector ``h`` (d,); with
    ``inplace`` P itself is updated (the same numbers, fewer tensor operations)."""
    k = P @ h  # (d,)
    denominator = (h @ k).add_(alpha)
    if inplace:  # P - k k^T / denominator, rounded exactly as below, in one pass over P
        return P.addcdiv_(torch.outer(k, k), denominator, value=-1)
    return P - torch.outer(k, k).div_(denominator)


def project(grad: Tensor, P: Tensor, mode: str = "replace") -> Tensor:
    """The head-weight gradient (C, d) projected: ``grad P^T`` or, in ``add`` mode,
    ``grad + grad P^T``."""
    projected = grad @ P.T
    if mode == "replace":
        return projected
    if mode == "add":
        return grad + projected
    raise ValueError(f"unknown projection mode {mode!r}; modes: replace, add")


def counters_on_host(module: nn.Module, *names: str) -> None:
    """Keep the integer buffers ``names`` of ``module`` on the host as ``host_<name>`` (an int, or
    a list of ints for a vector): a step updates only those, so it never reads or writes the
    device for them; the buffers receive them whenever a state dict is taken and give them back
    when one is loaded (checkpoints, resume)."""
    hooks = _HostCounters(names)
    hooks.read(module)
    module.register_state_dict_pre_hook(hooks.before_state_dict)
    module.register_load_state_dict_post_hook(hooks.after_load)


class _HostCounters:
    """The hooks of :func:`counters_on_host` as methods of a small object, so that a module that
    has them can be pickled (a closure cannot)."""

    def __init__(self, names: Sequence[str]):
        self.names = tuple(names)

    def read(self, owner: nn.Module) -> None:
        for name in self.names:
            setattr(owner, f"host_{name}", getattr(owner, name).tolist())

    def write(self, owner: nn.Module) -> None:
        for name in self.names:
            getattr(owner, name).copy_(torch.as_tensor(getattr(owner, f"host_{name}")))

    def before_state_dict(self, owner: nn.Module, prefix: str, keep_vars: bool) -> None:
        self.write(owner)

    def after_load(self, owner: nn.Module, keys: object) -> None:
        self.read(owner)


def reference_alpha(batch_index: int, batches_per_epoch: int) -> float:
    """The reference code's alpha: 0.1 at the start of each epoch down to ~0.01 at its end."""
    return float(0.1 ** (batch_index / max(batches_per_epoch, 1) + 1))


class HeadProjector(nn.Module):
    """The state of HGM for one head: P, a running mean feature per modality, a step count.

    All of it is in buffers, so it travels with ``state_dict`` (checkpoints, resume) and with
    ``.to(device)``. P takes its size from the head's input width and its device and dtype from
    the head's weight.

    Args:
        head: the shared linear head whose weight gradient is projected.
        modalities: the modalities that step the head (one running mean each).
        h_source: ``running`` (exponential moving average of each modality's batch means) or
            ``batch`` (the current batch's mean, as in the reference code).
        momentum: the running mean's decay per step of that modality.
        alpha: the regulariser of the update (a constant), or ``None`` for the reference schedule.
        normalize: divide P by its Frobenius norm after every update (reference code).
        mode: ``replace`` (OWM) or ``add`` (the third-party port).
        skip_first: leave the very first step unprojected (reference code).
    """

    P: Tensor
    means: Tensor
    seen: Tensor
    steps: Tensor
    host_seen: list[int]
    host_steps: int

    def __init__(
        self,
        head: nn.Linear,
        modalities: Sequence[str],
        *,
        h_source: str = "running",
        momentum: float = 0.9,
        alpha: float | None = 0.1,
        normalize: bool = False,
        mode: str = "replace",
        skip_first: bool = False,
    ):
        super().__init__()
        if h_source not in ("running", "batch"):
            raise ValueError(f"unknown h source {h_source!r}; sources: running, batch")
        if mode not in ("replace", "add"):
            raise ValueError(f"unknown projection mode {mode!r}; modes: replace, add")
        weight = head.weight
        dim = weight.shape[1]
        self.modalities = list(modalities)
        self.position = {m: j for j, m in enumerate(self.modalities)}
        self.h_source = h_source
        self.momentum = momentum
        self.alpha = alpha
        self.normalize = normalize
        self.mode = mode
        self.skip_first = skip_first
        self.register_buffer("P", torch.eye(dim, dtype=weight.dtype, device=weight.device))
        self.register_buffer("means", torch.zeros(len(self.modalities), dim, dtype=weight.dtype, device=weight.device))
        self.register_buffer("seen", torch.zeros(len(self.modalities), dtype=torch.long, device=weight.device))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long, device=weight.device))
        counters_on_host(self, "seen", "steps")

    def feature(self, modality: str, batch_mean: Tensor) -> Tensor:
        """The vector h for this step: the batch mean, or the updated running mean (which
        starts at the first batch mean; decided on the device, without reading it back)."""
        if self.h_source == "batch":
            return batch_mean
        j = self.position[modality]
        mean = self.means[j]
        if self.host_seen[j] == 0:
            mean.copy_(batch_mean)
        else:  # momentum * mean + (1 - momentum) * batch_mean, in place
            mean.mul_(self.momentum).add_((1 - self.momentum) * batch_mean)
        self.host_seen[j] += 1
        return mean

    @torch.no_grad()
    def step(self, weight: nn.Parameter, modality: str, batch_mean: Tensor, alpha: float) -> None:
        """Update P with this step's feature vector, then replace ``weight.grad`` by its projection.

        Args:
            weight: the head's weight (C, d), its gradient already computed (and averaged over
                processes, so that every process updates P identically).
            modality: the modality of this step.
            batch_mean: (d,) the mean feature of this modality over the step's samples.
            alpha: the update's regulariser for this step.
        """
        h = self.feature(modality, batch_mean.to(self.P.dtype))
        first = self.host_steps == 0
        self.host_steps += 1
        if self.skip_first and first:
            return
        owm_update(self.P, h, alpha, inplace=True)
        if self.normalize:
            self.P.div_(torch.linalg.matrix_norm(self.P))
        if weight.grad is not None:
            weight.grad = project(weight.grad, self.P.to(weight.grad.dtype), self.mode)

    def alpha_for(self, batch_index: int, batches_per_epoch: int) -> float:
        if self.alpha is None:
            return reference_alpha(batch_index, batches_per_epoch)
        return self.alpha


# ----- OGD and PCA-OGD: project against the other modalities' stored feature bases -------------
#
# With h~ = [z; 1] and Theta = [W, b] (C x (d+1)), the head's logits are Theta h~, so a step
# Theta <- Theta - lr * G changes the logits of a stored feature by -lr * G h~. OGD-ALL (Farajtabar
# et al., AISTATS 2020) removes from every row of G the span of the stored h~: G <- G (I - Q Q^T),
# with Q an orthonormal basis of that span; on a linear head this keeps the stored features' logits
# EXACTLY (not to first order). PCA-OGD (Doan et al., AISTATS 2021) replaces the stored samples by
# the top principal directions of a larger pool, UNCENTERED here: centring would drop the mean
# feature, which is what drives the logits of non-negative (ReLU) features. For MLA, the step of
# modality m is projected against the OTHER modalities' bases only (m must still fit its own
# features), and the bases are recomputed from the memories at each refresh (every epoch or every K
# head steps), because the encoders drift and stored features go stale.
#
# Momentum and weight decay break the guarantee: SGD's momentum buffer mixes the projected steps of
# different modalities, and weight decay shrinks Theta along every direction. The guarantee holds
# exactly for plain SGD on the head (momentum 0, weight decay 0); MLA's defaults (momentum 0.9,
# weight decay 1e-4) keep it approximately.


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
    ):
        super().__init__()
        if method not in ("ogd", "pca-ogd"):
            raise ValueError(f"unknown projection method {method!r}; methods: ogd, pca-ogd")
        weight = head.weight
        size = weight.shape[1] + 1
        self.modalities = list(modalities)
        self.method = method
        self.k = k
        self.energy = energy
        self.refresh_every = refresh_every
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
    def step(self, head: nn.Linear, modality: str, features: Tensor) -> None:
        """Project the head's gradients (already combined over processes) against the other
        modalities' bases, then store this step's (n, d) features (the same on every process)."""
        if self.refresh_every > 0 and self.host_steps % self.refresh_every == 0:
            self.refresh()
        self.host_steps += 1
        basis = self.others[self.modalities.index(modality)]
        if head.weight.grad is not None and head.bias is not None and head.bias.grad is not None:
            grad = torch.cat([head.weight.grad, head.bias.grad[:, None]], dim=1)
            grad = project_out(grad, basis.to(grad.dtype))
            head.weight.grad.copy_(grad[:, :-1])
            head.bias.grad.copy_(grad[:, -1])
        self.push(modality, features)
