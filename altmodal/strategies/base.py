"""The strategy interface: a model (:class:`~altmodal.model.Model`) plus its training step.

A strategy file says only its method. It builds its heads in ``__init__``, answers the model's
questions (``unimodal_logits``, ``fuse``) and implements:

- ``training_step(batch) -> StepOutput``: one optimisation step (or several: MLA steps once per
  modality), each through :meth:`Strategy.optimize`, which hands the loss to the loop for
  backward, the gradient ``edit`` between backward and step, and the optimizer step;
- optionally the hooks: ``training_splits`` (the splits to train on; G-Blending holds part of the
  training split out), ``on_fit_start`` (work that needs the data, e.g. UMT's teachers),
  ``on_epoch_start`` / ``on_epoch_end`` (per-epoch state: OGM's window, QMF's history, D&R's
  diagnosis; numbers put in ``epoch_extras`` join the epoch's history row), ``on_fit_end`` (state
  fitted on the validation split once the best epoch is back: MLA's fusion choice), and
  ``training_extras`` / ``load_training_extras`` for state a checkpoint must carry beyond the
  parameters and buffers.

The loop that calls them is :class:`altmodal.trainer.Trainer`; while it trains a strategy,
``strategy.trainer`` is that loop, and the properties below (``epoch``, ``batch_index``,
``config``, ``optimizer``) read its position and settings.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from altmodal.data.batch import Batch
from altmodal.data.dataset import MultimodalDataset, Splits
from altmodal.model import DataSpec, Model
from altmodal.optim import EpochSchedule, TrainConfig


@dataclass
class StepOutput:
    """What one training step reports (all detached, left on the device: the loop sums them
    there and reads the sums once per epoch).

    Attributes:
        loss: the total loss optimised in the step.
        unimodal: modality -> (logits (n, C), labels (n,)) of that modality's prediction in the
            step, for the per-modality training curves.
        extras: other per-step numbers worth a history column (their epoch mean is logged),
            e.g. OGM-GE's modulation coefficients; tensors or floats.
    """

    loss: Tensor
    unimodal: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    extras: Mapping[str, Tensor | float] = field(default_factory=dict)


class Loop(Protocol):
    """What a strategy may ask of the loop that trains it (:class:`altmodal.trainer.Trainer`;
    the loop imports this module, never the other way round)."""

    config: TrainConfig
    optimizer: torch.optim.Optimizer | None
    scheduler: EpochSchedule | None
    epoch: int
    batch_index: int
    batches_per_epoch: int

    def optimize(
        self,
        loss: Tensor,
        params: Iterable[nn.Parameter] | None = None,
        edit: Callable[[], None] | None = None,
        after: Callable[[], None] | None = None,
    ) -> None: ...

    def step_generator(self, tag: int = 0, host: bool = False) -> torch.Generator: ...

    def spawn(self, config: TrainConfig | None = None) -> Loop:
        """Another loop over the same processes, for a model trained inside this one's training."""
        ...

    def setup(self, strategy: Strategy) -> None: ...

    def fit(self, strategy: Strategy, splits: Splits) -> list[dict[str, float]]: ...

    def train_epoch(self, strategy: Strategy, dataset: MultimodalDataset, epoch: int) -> dict[str, float]: ...


class Strategy(Model):
    """A model and its training step; see the module's docstring."""

    options_class: ClassVar[type | None] = None

    def __init__(self, encoders: Mapping[str, nn.Module], spec: DataSpec, options: Any = None):
        super().__init__(encoders, spec)
        self.options = options
        self.trainer: Loop | None = None
        """The loop training this strategy (None outside training)."""
        self.epoch_extras: dict[str, float] = {}
        """Numbers an epoch hook reports for the current epoch's history row."""
        self._weights: tuple[Tensor, Tensor] | None = None
        """While the loop trains on weighted data: the (N,) weights of the dataset's samples and
        the (B,) positions of the batch's samples (see :meth:`weighing`)."""

    # ----- the method ---------------------------------------------------------------------------
    def training_step(self, batch: Batch) -> StepOutput:
        raise NotImplementedError

    def training_splits(self, splits: Splits, config: TrainConfig) -> Splits:
        """The splits the loop trains and validates on (default: the run's own)."""
        return splits

    def warmup_epochs(self) -> int:
        """Epochs at the start of training whose model is not yet the method's (MIDAS's warm-up):
        the loop neither selects one of them nor lets early stopping count them."""
        return 0

    def on_fit_start(self, splits: Splits) -> None:
        """Called once before the first epoch the loop trains (after a resume has restored the
        state), with the run's splits."""

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each training epoch."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called after each training epoch, before validation."""

    def on_fit_end(self, splits: Splits) -> None:
        """Called once the best epoch's parameters are back, before the final evaluation."""

    def training_extras(self) -> dict[str, Any]:
        """State a checkpoint carries beside the parameters and buffers (entries of its own)."""
        return {}

    def load_training_extras(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`training_extras` saved (``state`` is the whole training state)."""

    # ----- what a step asks of its loop ---------------------------------------------------------
    @property
    def loop(self) -> Loop:
        if self.trainer is None:
            raise RuntimeError(f"{self.name}: not being trained; Trainer(config).setup(strategy) attaches a loop")
        return self.trainer

    @property
    def config(self) -> TrainConfig:
        return self.loop.config

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        return self.loop.optimizer

    @property
    def epoch(self) -> int:
        return self.loop.epoch

    @property
    def batch_index(self) -> int:
        return self.loop.batch_index

    @property
    def batches_per_epoch(self) -> int:
        return self.loop.batches_per_epoch

    def optimize(
        self,
        loss: Tensor,
        params: Iterable[nn.Parameter] | None = None,
        edit: Callable[[], None] | None = None,
        after: Callable[[], None] | None = None,
    ) -> None:
        """One optimizer step on ``loss`` over ``params`` (default all): see :meth:`Trainer.optimize`."""
        self.loop.optimize(loss, params, edit, after)

    def step_generator(self, tag: int = 0, host: bool = False) -> torch.Generator:
        """A generator seeded by (seed, epoch, batch, tag): see :meth:`Trainer.step_generator`."""
        return self.loop.step_generator(tag, host)

    # ----- losses over the global batch -----------------------------------------------------------
    def global_count(self, batch: Batch, modality: str) -> int:
        """Samples with ``modality`` in the global batch, known on the host (from the batch's
        counts, else from its CPU masks, summed over processes only when the batch lacks them)."""
        if batch.counts is not None or not self.dist.active:
            return batch.count(modality)
        return int(self.dist.sum(torch.tensor(batch.count(modality), device=self.device)))

    @contextlib.contextmanager
    def weighing(self, weights: Tensor | None, index: Tensor) -> Iterator[None]:
        """Within it, every loss of :meth:`mean_loss` (and so :meth:`cross_entropy`) weighs each
        sample of the batch whose samples sit at ``index`` by its entry of ``weights`` ((N,) over
        the dataset's samples; None: unweighted). The loop weighs each training step so."""
        self._weights = None if weights is None else (weights, index)
        try:
            yield
        finally:
            self._weights = None

    @property
    def weighs(self) -> bool:
        """Whether the current step weighs its samples (inside :meth:`weighing`, on weighted data)."""
        return self._weights is not None

    def weighted(self, per_sample: Tensor, index: Tensor | None = None) -> Tensor:
        """``per_sample`` times the weights of the samples at ``index`` (default: the batch's),
        inside :meth:`weighing`; ``per_sample`` itself outside it or on unweighted data.

        Raises:
            ValueError: ``per_sample`` has another number of rows than the batch (the step's loss
                is not one per sample of the batch; pass the ``index`` of its rows).
        """
        if self._weights is None:
            return per_sample
        weights, batch_index = self._weights
        index = batch_index if index is None else index
        if per_sample.shape[0] != index.shape[0]:
            raise ValueError(
                f"{self.name}: a loss over {per_sample.shape[0]} rows in a batch of {index.shape[0]} cannot take "
                "sample weights"
            )
        return per_sample * weights[index].to(per_sample.dtype)

    def mean_loss(self, per_sample: Tensor, rows: Tensor | None = None) -> Tensor:
        """Sum of ``per_sample`` over ``rows`` divided by the GLOBAL count of those rows, so
        that gradients summed over processes equal the single-process mean. In one process,
        over all rows (``rows`` None), it is the plain mean: the same numbers, fewer operations.
        Inside :meth:`weighing` each sample's term is weighed first (the count stays a count)."""
        per_sample = self.weighted(per_sample)
        if rows is None and not self.dist.active:
            return per_sample.sum() / max(per_sample.shape[0], 1)
        if rows is None:
            rows = torch.ones_like(per_sample, dtype=torch.bool)
        return (per_sample * rows.to(per_sample.dtype)).sum() / self.dist.count(rows).to(per_sample.device)

    def cross_entropy(self, logits: Tensor, label: Tensor, rows: Tensor | None = None) -> Tensor:
        return self.mean_loss(F.cross_entropy(logits, label, reduction="none"), rows)
