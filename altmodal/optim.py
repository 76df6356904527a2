"""Optimizer and learning-rate schedule from a :class:`~altmodal.strategies.base.TrainConfig`.

One optimizer over every trainable parameter (SGD as in the paper, Adam or AdamW) and one
per-epoch schedule: ``warmup_epochs`` of linear warm-up, then StepLR (the paper's), cosine
annealing to zero at the last epoch, or a constant rate. The schedule is a pure function of the
epoch (:func:`lr_factor`), so a resumed run follows it exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

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


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-epoch schedule following :func:`lr_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(epoch, config))
