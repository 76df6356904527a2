"""Optimizer and learning-rate schedule from a :class:`~altmodal.strategies.base.TrainConfig`.

One optimizer over every trainable parameter (SGD as in the paper, Adam or AdamW) and one
per-epoch schedule: ``warmup_epochs`` of linear warm-up, then StepLR (the paper's), cosine
annealing to zero at the last epoch, or a constant rate. The schedule is a pure function of the
epoch (:func:`lr_factor`), so a resumed run follows it exactly.

:func:`step` updates only the parameters of one optimisation step. For plain SGD with foreach
kernels (the CPU default) it runs torch's multi-tensor SGD update itself, the same operations in
the same order, so the numbers are torch's to the last bit; what it leaves out is the per-call
bookkeeping of ``optimizer.step()``, which costs as much as the update on small models and which
MLA pays once per modality per batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from altmodal.strategies.base import TrainConfig


def build_optimizer(
    params: Iterable[nn.Parameter], config: TrainConfig, kernel: Mapping[str, Any] | None = None
) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay), Adam (L2 weight decay) or AdamW (decoupled weight decay);
    ``kernel`` picks torch's implementation (``{"fused": True}`` or ``{"foreach": True}``)."""
    params = list(params)
    extra: dict[str, Any] = dict(kernel or {})
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, **extra
        )
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, **extra)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, **extra)


def lr_factor(epoch: int, config: TrainConfig) -> float:
    """The learning rate of (0-based) ``epoch`` as a multiple of ``config.lr``."""
    warmup = config.warmup_epochs
    if epoch < warmup:
        return (epoch + 1) / (warmup + 1)
    after = epoch - warmup
    if config.scheduler == "step":
        return float(config.lr_gamma ** (after // config.lr_step))
    if config.scheduler == "cosine":
        span = max(config.epochs - warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * after / span))
    return 1.0


class EpochSchedule:
    """Sets the learning rate of (0-based) epoch ``last_epoch`` to ``config.lr * lr_factor``;
    :meth:`step` moves to the next epoch. Its state is the epoch alone."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: TrainConfig):
        self.optimizer, self.config, self.last_epoch = optimizer, config, 0
        self.apply()

    def apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr * lr_factor(self.last_epoch, self.config)

    def step(self) -> None:
        self.last_epoch += 1
        self.apply()

    def state_dict(self) -> dict[str, int]:
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.last_epoch = int(state["last_epoch"])
        self.apply()


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> EpochSchedule:
    """A per-epoch schedule following :func:`lr_factor`."""
    return EpochSchedule(optimizer, config)


def plain_sgd(optimizer: torch.optim.Optimizer) -> bool:
    """SGD with foreach kernels and none of nesterov, dampening, maximize: what :func:`step`
    updates itself."""
    if not isinstance(optimizer, torch.optim.SGD) or len(optimizer.param_groups) != 1:
        return False
    group = optimizer.param_groups[0]
    return bool(
        group["foreach"]
        and not (group["nesterov"] or group["maximize"] or group["differentiable"] or group["fused"])
        and group["dampening"] == 0
    )


@torch.no_grad()
def step(
    optimizer: torch.optim.Optimizer, params: Sequence[nn.Parameter], scaler: torch.amp.GradScaler | None = None
) -> None:
    """Update ``params`` that have a gradient: plain SGD (:func:`plain_sgd`) directly, as
    torch's multi-tensor SGD computes it (weight decay added to the gradient, which is consumed
    here; a new momentum buffer starts as that gradient); with a gradient ``scaler``, by its step
    and update; any other optimizer by its ``step`` (fused SGD after :func:`first_momentum`).
    The momentum buffers live in ``optimizer.state``, so checkpoints are the same either way."""
    if scaler is not None or not plain_sgd(optimizer):
        first_momentum(optimizer, params)
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()
        return
    group = optimizer.param_groups[0]
    stepped: list[Tensor] = [p for p in params if p.grad is not None]
    grads: list[Tensor] = [p.grad for p in stepped]  # type: ignore[misc]
    if group["weight_decay"] != 0:
        torch._foreach_add_(grads, stepped, alpha=group["weight_decay"])
    update = grads
    if group["momentum"] != 0:
        state = optimizer.state
        old = [j for j, p in enumerate(stepped) if "momentum_buffer" in state[p]]
        if old:
            buffers = [state[stepped[j]]["momentum_buffer"] for j in old]
            torch._foreach_mul_(buffers, group["momentum"])
            torch._foreach_add_(buffers, [grads[j] for j in old])
        for p, grad in zip(stepped, grads):
            if "momentum_buffer" not in state[p]:
                state[p]["momentum_buffer"] = grad.detach().clone()
        update = [state[p]["momentum_buffer"] for p in stepped]
    torch._foreach_add_(stepped, update, alpha=-group["lr"])


def first_momentum(optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter]) -> None:
    """Give a zero momentum buffer to each parameter that fused SGD steps for the first time.

    torch's fused SGD starts its buffers only when no parameter of the step has one yet, which
    is never so in MLA's second step (the head has one, the next encoder not). With a zero
    buffer the first update is momentum * 0 + grad = grad, exactly the usual first step.
    Parameters without a gradient get nothing, so they stay free of optimizer state.
    """
    if not isinstance(optimizer, torch.optim.SGD):
        return
    group = optimizer.param_groups[0]
    if not group["fused"] or group["momentum"] == 0:
        return
    state = optimizer.state
    for p in params:
        if p.grad is not None and "momentum_buffer" not in state[p]:
            state[p]["momentum_buffer"] = torch.zeros_like(p)
