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

What is projected (``target``). The paper projects the GRADIENT (Eq. 3), which protects the
head only under plain SGD: with momentum the buffer carries unprojected past gradients into later
steps, and weight decay moves W along every direction, so W h moves by far more than P allows
(measured on mfeat with momentum 0.9: 5x to 43x the change of the projected gradient alone).
``target="update"`` projects the optimizer's whole update of W instead (momentum, weight decay,
Adam's scaling included): W <- W_0 + (W_1 - W_0) P^T, where W_1 is what the optimizer made of
W_0. Then a step changes the head's answer on any feature h by exactly (W_1 - W_0) P h, the
guarantee OWM promises, under every optimizer; with plain SGD it is the paper's step to the bit.

Forgetting (``forget``). P only ever shrinks: every update removes more of the head's room, and
after many steps the projected update keeps a few percent of its size (measured: 0.85 of the
gradient's norm after one epoch, 0.06 after 100), so the shared head nearly stops learning.
``forget="epoch"`` restarts P at I at each epoch's start (the running means are kept, so the
next updates rebuild the protection from the current features); ``forget="decay"`` pulls P back
towards I by a constant factor per update, so a feature's protection halves every
``half_life`` epochs.

OGD-ALL and PCA-OGD (:mod:`altmodal.basis_projection`) are the alternatives a reviewer asked
for: hard projections against stored features of the other modalities instead of OWM's soft one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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


TARGETS = ("gradient", "update")
"""What HGM projects: the head's gradient (the paper) or the optimizer's whole update."""


def survival(P: Tensor, quantity: Tensor) -> Tensor:
    """The share of a (C, d) gradient's or update's norm that its projection keeps: |X P^T| / |X|."""
    return (quantity @ P.T).norm() / quantity.norm().clamp_min(torch.finfo(quantity.dtype).tiny)


def change_ratios(
    P: Tensor, moved: Tensor, update: Tensor, gradient: Tensor, lr: float, protected: Tensor
) -> dict[str, Tensor]:
    """How well one head step kept the outputs of the ``protected`` features (HGM diagnostics).

    Args:
        P: (d, d) the projector of the step.
        moved: (C, d) the head weight's actual change in the step.
        update: (C, d) the change the optimizer would have made without any projection
            (momentum and weight decay included).
        gradient: (C, d) the head weight's gradient before projection.
        lr: the step's learning rate.
        protected: (k, d) features whose outputs the step should keep (the other modalities'
            running means).

    Returns:
        ``guarantee``: the change of the protected outputs over the change the projected update
        allows, the mean over ``protected`` of |moved h| / |update P h| (1 when the update itself
        is projected); ``leak``: the same change over the one the projected gradient alone
        allows, |moved h| / |lr gradient P h| (1 for plain SGD with the gradient projected).
    """
    kept = protected @ P  # (k, d): the rows (P h)^T, P symmetric
    change = (protected @ moved.T).norm(dim=1)  # (k,)
    tiny = torch.finfo(change.dtype).tiny
    return {
        "guarantee": (change / (kept @ update.T).norm(dim=1).clamp_min(tiny)).mean(),
        "leak": (change / (lr * (kept @ gradient.T)).norm(dim=1).clamp_min(tiny)).mean(),
    }


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
        target: ``gradient`` (the paper) or ``update`` (the optimizer's whole update of W).
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
        target: str = "gradient",
    ):
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"unknown projection target {target!r}; targets: {', '.join(TARGETS)}")
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
        self.target = target
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
    def step(self, weight: Tensor, modality: str, batch_mean: Tensor, alpha: float) -> bool:
        """Update P with this step's feature vector; with ``target="gradient"`` replace
        ``weight.grad`` by its projection (with ``update``, :meth:`project_update` follows the
        optimizer's step).

        Args:
            weight: the head's weight (C, d), its gradient already computed (and averaged over
                processes, so that every process updates P identically).
            modality: the modality of this step.
            batch_mean: (d,) the mean feature of this modality over the step's samples.
            alpha: the update's regulariser for this step.

        Returns:
            Whether this step is projected (False only for a skipped first step).
        """
        h = self.feature(modality, batch_mean.to(self.P.dtype))
        first = self.host_steps == 0
        self.host_steps += 1
        if self.skip_first and first:
            return False
        owm_update(self.P, h, alpha, inplace=True)
        if self.normalize:
            self.P.div_(torch.linalg.matrix_norm(self.P))
        if self.target == "gradient" and weight.grad is not None:
            weight.grad = project(weight.grad, self.P.to(weight.grad.dtype), self.mode)
        return True

    @torch.no_grad()
    def project_update(self, weight: Tensor, before: Tensor) -> None:
        """Replace the optimizer's update of ``weight`` (from ``before``, the weight ahead of the
        step) by its projection: W <- W_0 + project(W - W_0)."""
        delta = weight.sub_(before)  # W now holds the update
        weight.copy_(before.add_(project(delta, self.P.to(delta.dtype), self.mode)))

    @torch.no_grad()
    def reset(self) -> None:
        """P back to I (``forget="epoch"``, at an epoch's start)."""
        self.P.copy_(torch.eye(self.P.shape[0], dtype=self.P.dtype, device=self.P.device))

    @torch.no_grad()
    def relax(self, keep: float) -> None:
        """P <- keep * P + (1 - keep) * I: pull P back towards I (``forget="decay"``)."""
        self.P.mul_(keep).diagonal().add_(1 - keep)

    def alpha_for(self, batch_index: int, batches_per_epoch: int) -> float:
        if self.alpha is None:
            return reference_alpha(batch_index, batches_per_epoch)
        return self.alpha

    # ----- around the optimizer's step of the head ----------------------------------------------
    def before_step(
        self,
        weight: Tensor,
        modality: str,
        batch_mean: Tensor,
        alpha: float,
        optimizer: torch.optim.Optimizer | None,
        stats: bool = False,
    ) -> dict[str, Tensor]:
        """Between backward and the optimizer's step: :meth:`step`, and what :meth:`after_step`
        needs kept: the weight ahead of the step (``target="update"``, or ``stats``) and, for the
        statistics, the raw gradient and SGD's momentum buffer (:func:`held_state`)."""
        kept = held_state(weight, optimizer) if stats else {}
        if self.step(weight, modality, batch_mean, alpha) and (self.target == "update" or stats):
            kept["before"] = weight.detach().clone()
        return kept

    def after_step(
        self,
        weight: Tensor,
        modality: str,
        kept: Mapping[str, Tensor],
        optimizer: torch.optim.Optimizer | None,
        stats: bool = False,
    ) -> dict[str, Tensor]:
        """After the optimizer's step: with ``target="update"`` replace its update of ``weight``
        by the projection (:meth:`project_update`); returns the step's statistics with ``stats``
        (:meth:`statistics`), else nothing."""
        if "before" not in kept:
            return {}
        raw = None
        if self.target == "update":
            raw = weight.detach() - kept["before"]
            self.project_update(weight, kept["before"].clone())  # the clone is consumed
        return self.statistics(modality, weight.detach(), kept, raw, optimizer) if stats else {}

    def statistics(
        self,
        modality: str,
        weight: Tensor,
        kept: Mapping[str, Tensor],
        raw: Tensor | None,
        optimizer: torch.optim.Optimizer | None,
    ) -> dict[str, Tensor]:
        """One head step's HGM statistics: the share of the projected gradient or update that
        survives, and (:func:`change_ratios`, as log10) how far the other modalities' outputs moved.

        Args:
            modality: the modality of the step.
            weight: (C, d) the head's weight after the step.
            kept: what :meth:`before_step` kept.
            raw: (C, d) the optimizer's unprojected update (``target="update"``), or None: then
                plain SGD's, rebuilt from ``kept`` (:func:`sgd_update`; none for other optimizers).
            optimizer: the optimizer of the step (its learning rate, SGD's settings).
        """
        assert optimizer is not None
        group = optimizer.param_groups[0]
        lr = float(group["lr"])
        if raw is None:  # the gradient was projected: the unprojected update of SGD, from its state
            raw = sgd_update(kept, group) if isinstance(optimizer, torch.optim.SGD) else None
        others = [j for j, m in enumerate(self.modalities) if m != modality and self.host_seen[j] > 0]
        P = self.P.to(weight.dtype)
        projected = raw if self.target == "update" else kept["gradient"]
        stats = {"survival": survival(P, projected)} if projected is not None else {}
        if others and raw is not None:
            ratios = change_ratios(P, weight - kept["before"], raw, kept["gradient"], lr, self.means[others])
            stats.update({f"log10_{k}": v.log10() for k, v in ratios.items()})
        return stats


def held_state(weight: Tensor, optimizer: torch.optim.Optimizer | None) -> dict[str, Tensor]:
    """What HGM's statistics keep of the head ahead of its step: the raw gradient and, for SGD,
    the momentum buffer."""
    out = {"gradient": weight.grad.detach().clone()} if weight.grad is not None else {}
    state = optimizer.state.get(weight, {}) if optimizer is not None else {}
    if "momentum_buffer" in state:
        out["buffer"] = state["momentum_buffer"].detach().clone()
    return out


def sgd_update(kept: Mapping[str, Tensor], group: Mapping[str, Any]) -> Tensor:
    """The change plain SGD would make without projection: -lr (mu b + g + wd W)."""
    direction = kept["gradient"] + group["weight_decay"] * kept["before"]
    if "buffer" in kept:
        direction = direction + group["momentum"] * kept["buffer"]
    return -group["lr"] * direction
