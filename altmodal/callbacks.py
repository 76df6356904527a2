"""Callbacks for the loop (:class:`~altmodal.trainer.Trainer`): the hooks (:class:`Callback`), a
summary of the run at its start, and a TensorBoard log. The run folder is one too
(:class:`~altmodal.runs.Run`: checkpoints and history).

Pass them as a list (``train_run(..., callbacks=[...])``); write your own by subclassing
:class:`Callback`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from altmodal.config import ConfigError
from altmodal.data.dataset import Splits
from altmodal.strategies import Strategy, TrainConfig


class Callback:
    """Hooks of the loop; subclass and override what you need (the run folder, the TensorBoard
    logger and the command line's summary are callbacks). :class:`Trainer` takes a list."""

    def on_member_start(self, member: int, members: int) -> None:
        """Before each member of a cross-fitted run (``member`` of ``members``, from 1), one that
        had finished too; a single model has no members."""

    def on_fit_start(self, strategy: Strategy, splits: Splits) -> None:
        """Before the first epoch (also when resuming), with the optimizer configured."""

    def on_epoch_end(self, strategy: Strategy, state: dict[str, Any]) -> None:
        """After each epoch: ``state`` holds ``epoch`` (0-based), ``history`` (rows with 1-based
        ``epoch``), ``best``, ``training`` (model, optimizer and schedule state) and ``rng``."""


class Display(Callback):
    """A callback that only shows how training goes (the summary, the progress line). A
    cross-fitted run may train some of its members in a second process when all its callbacks
    are displays: those members are not shown; other callbacks keep every member in the run."""


def fit_summary(strategy: Strategy, splits: Splits, config: TrainConfig) -> list[str]:
    """The resolved essentials of a run, one line each: device, split sizes, modalities with
    their shapes and encoders, strategy and options, optimizer and schedule, parameter count."""
    shapes = ", ".join(
        f"{m} {splits.train.input_shape(m)} -> {type(strategy.encoders[m]).__name__}" for m in strategy.modalities
    )
    options = strategy.options
    shown = ", ".join(f"{k}={v}" for k, v in vars(options).items()) if options is not None else "none"
    schedule = {
        "step": f"step x{config.lr_gamma} every {config.lr_step} epochs",
        "cosine": "cosine to 0",
        "none": "constant",
    }[config.scheduler]
    warmup = f", {config.warmup_epochs} warm-up epochs" if config.warmup_epochs else ""
    clip = f", gradient norm clipped at {config.grad_clip}" if config.grad_clip else ""
    count = sum(p.numel() for p in strategy.parameters() if p.requires_grad)
    return [
        f"device {strategy.device}; samples train {len(splits.train)}, val {len(splits.val)}, test {len(splits.test)}; "
        f"{strategy.num_classes} classes",
        f"modalities: {shapes}",
        f"strategy {strategy.name} ({shown})",
        f"{config.optimizer} lr {config.lr:g}, {schedule}{warmup}{clip}; {config.epochs} epochs of batch "
        f"{config.batch_size}; {count:,} parameters",
    ]


class Summary(Display):
    """Hands :func:`fit_summary`'s lines to ``write`` (e.g. ``print``) when training starts: once
    for a cross-fitted run, with the split sizes of the first member it trains and a line on the
    members."""

    def __init__(self, write: Callable[[str], Any]):
        self.write = write
        self.members = 1
        self.shown = False

    def on_member_start(self, member: int, members: int) -> None:
        self.members = members

    def on_fit_start(self, strategy: Strategy, splits: Splits) -> None:
        if strategy.dist.is_main and not self.shown:
            self.shown = True
            for line in fit_summary(strategy, splits, strategy.config):
                self.write(line)
            if self.members > 1:
                self.write(f"cross-fitted: {self.members} members, each on its own folds (sizes above: one member's)")


class Progress(Display):
    """One line on the whole run after an epoch, e.g. ``member 2/5, epoch 14/100, val accuracy
    0.812, ETA 1m05s`` (no member for a single model), handed to ``write`` at most every
    ``every`` seconds, and after the run's last epoch. The ETA assumes every epoch is trained
    (early stopping ends sooner) at the pace of those trained so far."""

    def __init__(
        self, write: Callable[[str], Any], epochs: int, every: float = 0.0, clock: Callable[[], float] = time.monotonic
    ):
        self.write = write
        self.epochs = epochs
        self.every = every
        self.clock = clock
        self.member, self.members = 1, 1
        self.started: float | None = None
        self.trained = 0
        self.last = -math.inf

    def on_member_start(self, member: int, members: int) -> None:
        self.member, self.members = member, members

    def on_fit_start(self, strategy: Strategy, splits: Splits) -> None:
        if self.started is None:
            self.started = self.clock()

    def on_epoch_end(self, strategy: Strategy, state: dict[str, Any]) -> None:
        if not strategy.dist.is_main or self.started is None:
            return
        self.trained += 1
        epoch = int(state["epoch"]) + 1
        left = (self.members - self.member) * self.epochs + self.epochs - epoch
        now = self.clock()
        if now - self.last < self.every and left > 0:
            return
        self.last = now
        eta = (now - self.started) / self.trained * left
        where = f"member {self.member}/{self.members}, " if self.members > 1 else ""
        accuracy = state["history"][-1].get("val_accuracy", math.nan)
        self.write(f"{where}epoch {epoch}/{self.epochs}, val accuracy {accuracy:.3f}, ETA {duration(eta)}")


def duration(seconds: float) -> str:
    """``seconds`` as ``1h02m``, ``3m05s`` or ``12s``."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class TensorBoardLogger(Callback):
    """Writes each epoch's history row (losses, accuracies per modality, learning rate) as
    TensorBoard scalars under ``log_dir`` (extra ``tensorboard``)."""

    def __init__(self, log_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ConfigError(
                "--log tensorboard needs the tensorboard package: pip install 'altmodal[tensorboard]'"
            ) from err
        self.log_dir = Path(log_dir)
        self.writer_class = SummaryWriter
        self.writer: Any = None

    def on_epoch_end(self, strategy: Strategy, state: dict[str, Any]) -> None:
        if not strategy.dist.is_main:
            return
        if self.writer is None:
            self.writer = self.writer_class(log_dir=str(self.log_dir))
        row = state["history"][-1]
        for key, value in row.items():
            if key != "epoch":
                self.writer.add_scalar(key.replace("_", "/", 1), value, int(row["epoch"]))
        self.writer.flush()
