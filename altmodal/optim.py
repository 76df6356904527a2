"""Training settings (:class:`TrainConfig`), and the optimizer and learning-rate schedule they build.

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
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from altmodal.config import option, require

PRECISIONS = ("32", "bf16", "16")
"""Float32, and the two mixed precisions (autocast; 16 adds a gradient scaler)."""


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; the defaults are the paper's (SGD, lr 1e-3, StepLR 70 x0.1, 100 epochs)."""

    epochs: int = option(100, "training epochs")
    batch_size: int = option(64, "global mini-batch size (summed over processes)")
    lr: float = option(1e-3, "learning rate")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(1e-4, "weight decay")
    optimizer: Literal["sgd", "adam", "adamw"] = option(
        "sgd", "optimizer; Adam's per-coordinate scaling undoes MLA's head projection"
    )
    scheduler: Literal["step", "cosine", "none"] = option(
        "step", "learning-rate schedule per epoch: StepLR (--lr-step, --lr-gamma), cosine to zero, or constant"
    )
    lr_step: int = option(70, "decay the learning rate every this many epochs (StepLR)")
    lr_gamma: float = option(0.1, "learning-rate decay factor")
    warmup_epochs: int = option(0, "epochs of linear learning-rate warm-up before the schedule")
    patience: int = option(
        20,
        "early stopping: end training once this many epochs in a row have not improved the best validation "
        "accuracy (0: train every epoch)",
    )
    patience_rule: Literal["fixed", "relative"] = option(
        "fixed",
        "fixed: stop after --patience epochs without improvement; relative: after min(--patience, 8 + half the "
        "best epoch), so a run that peaked early stops sooner",
    )
    grad_clip: float = option(0.0, "clip the gradient norm of each optimizer step to this value (0: off)")
    seed: int = option(0, "seed of the split, the initialisation, the batch order and the masks")
    device: str = option("auto", "device: auto, cpu, cuda or cuda:N")
    eval_batch_size: int = option(256, "batch size for evaluation")
    precision: Literal["32", "bf16", "16"] = option(
        "32", "32: float32; bf16 / 16: mixed precision (autocast; 16 adds a gradient scaler)"
    )
    loader: Literal["auto", "loop", "thread", "workers"] = option(
        "auto",
        "who prepares training batches: the loop itself, a background thread or worker processes; "
        "auto: a thread on CUDA, the loop on a CPU (where a thread competes with the step for the cores)",
    )
    prefetch: int = option(2, "batches a thread or the workers prepare ahead")
    workers: int = option(2, "worker processes of --loader workers")
    kernel: Literal["auto", "fused", "foreach"] = option(
        "auto",
        "optimizer update kernel: fused (one pass; on the CPU it rounds differently from the per-tensor "
        "loop), foreach (the loop's numbers), auto (fused on CUDA, foreach elsewhere)",
    )

    def __post_init__(self) -> None:
        require(self.epochs >= 1, "epochs", self.epochs, "at least 1")
        require(self.batch_size >= 1, "batch_size", self.batch_size, "at least 1")
        require(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, "at least 1")
        require(self.lr > 0, "lr", self.lr, "positive")
        require(0 <= self.momentum < 1, "momentum", self.momentum, "in [0, 1)")
        require(self.weight_decay >= 0, "weight_decay", self.weight_decay, "non-negative")
        require(self.lr_step >= 1, "lr_step", self.lr_step, "at least 1")
        require(0 < self.lr_gamma <= 1, "lr_gamma", self.lr_gamma, "in (0, 1]")
        require(0 <= self.warmup_epochs < self.epochs, "warmup_epochs", self.warmup_epochs, "in [0, --epochs)")
        require(self.grad_clip >= 0, "grad_clip", self.grad_clip, "non-negative")
        require(self.patience >= 0, "patience", self.patience, "non-negative")
        require(self.precision in PRECISIONS, "precision", self.precision, f"one of {', '.join(PRECISIONS)}")
        require(self.prefetch >= 1, "prefetch", self.prefetch, "at least 1")
        require(self.workers >= 1, "workers", self.workers, "at least 1")
        require(0 <= self.seed <= SEED_MAX, "seed", self.seed, f"in [0, {SEED_MAX}]")


SEED_MAX = 2**32 - 1
"""The largest seed: numpy's generators take seeds of 32 bits."""


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
