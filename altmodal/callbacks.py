"""Callbacks for the loop (:class:`~altmodal.trainer.Trainer`): the hooks (:class:`Callback`), a
summary of the run at its start, and a TensorBoard log. The run folder is one too
(:class:`~altmodal.runs.Run`: checkpoints and history).

Pass them as a list (``train_run(..., callbacks=[...])``); write your own by subclassing
:class:`Callback`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from altmodal.config import ConfigError
from altmodal.data.dataset import Splits
from altmodal.strategies import Strategy, TrainConfig


class Callback:
    """Hooks of the loop; subclass and override what you need (the run folder, the TensorBoard
    logger and the command line's summary are callbacks). :class:`Trainer` takes a list."""

    def on_fit_start(self, strategy: Strategy, splits: Splits) -> None:
        """Before the first epoch (also when resuming), with the optimizer configured."""

    def on_epoch_end(self, strategy: Strategy, state: dict[str, Any]) -> None:
        """After each epoch: ``state`` holds ``epoch`` (0-based), ``history`` (rows with 1-based
        ``epoch``), ``best``, ``training`` (model, optimizer and schedule state) and ``rng``."""


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


class Summary(Callback):
    """Hands :func:`fit_summary`'s lines to ``write`` (e.g. ``print``) when training starts."""

    def __init__(self, write: Callable[[str], Any]):
        self.write = write

    def on_fit_start(self, strategy: Strategy, splits: Splits) -> None:
        if strategy.dist.is_main:
            for line in fit_summary(strategy, splits, strategy.config):
                self.write(line)


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
