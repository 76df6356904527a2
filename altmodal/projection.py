"""Head gradient modification (HGM): orthogonal weight modification of MLA's shared head.

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
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def owm_update(P: Tensor, h: Tensor, alpha: float, *, inplace: bool = False) -> Tensor:
    """One OWM update of the (d, d) projector ``P`` with the feature vector ``h`` (d,); with
    ``inplace`` P itself is updated (the same numbers, two tensor operations fewer)."""
    k = P @ h  # (d,)
    change = torch.outer(k, k).div_(alpha + h @ k)
    return P.sub_(change) if inplace else P - change


def project(grad: Tensor, P: Tensor, mode: str = "replace") -> Tensor:
    """The head-weight gradient (C, d) projected: ``grad P^T`` or, in ``add`` mode,
    ``grad + grad P^T``."""
    projected = grad @ P.T
    if mode == "replace":
        return projected
    if mode == "add":
        return grad + projected
    raise ValueError(f"unknown projection mode {mode!r}; modes: replace, add")


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
        # The counters live on the host, so that no step reads or writes the device for them;
        # the buffers receive them when a state dict is taken and give them back on loading.
        self.host_seen = [0] * len(self.modalities)
        self.host_steps = 0
        self.register_state_dict_pre_hook(lambda module, prefix, keep_vars: module.store_counters())
        self.register_load_state_dict_post_hook(lambda module, keys: module.refresh_counters())

    def store_counters(self) -> None:
        """Write the host counters into the ``seen`` and ``steps`` buffers."""
        self.seen.copy_(torch.tensor(self.host_seen))
        self.steps.fill_(self.host_steps)

    def refresh_counters(self) -> None:
        """Read the counters from the buffers (after a checkpoint was loaded)."""
        self.host_seen = [int(v) for v in self.seen.tolist()]
        self.host_steps = int(self.steps)

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
        """Update P with this step's feature vector, then project ``weight.grad`` in place.

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
            weight.grad.copy_(project(weight.grad, self.P.to(weight.grad.dtype), self.mode))

    def alpha_for(self, batch_index: int, batches_per_epoch: int) -> float:
        if self.alpha is None:
            return reference_alpha(batch_index, batches_per_epoch)
        return self.alpha
