"""How a model is TRAINED: the one loop every strategy runs in.

A :class:`Trainer` owns what training needs and a trained model does not: the optimizer, the
learning-rate schedule, the gradient scaler, the position in training (epoch, batch) and the
random state. :meth:`Trainer.fit` trains a :class:`~altmodal.strategies.base.Strategy`: epochs of
its ``training_step``, validation after each, the best epoch on the VALIDATION split kept,
early stopping, checkpoints through callbacks, and an exact resume. The strategy calls back into
the loop for its optimizer steps (:meth:`Trainer.optimize`), because MLA steps once per modality
per batch and several methods edit gradients between backward and step.

Imports run one way: this module -> strategies -> model -> pieces. A strategy reaches its loop
through ``strategy.trainer`` (set by :meth:`Trainer.setup`); one that trains other models inside
its own training (UMT's teachers, G-Blending's estimation copies) asks it for another loop
(:meth:`Trainer.spawn`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from altmodal.callbacks import Callback
from altmodal.config import first_line
from altmodal.data.batch import Batch
from altmodal.data.dataset import EpochBatches, MultimodalDataset, Splits
from altmodal.data.pipeline import prefetch
from altmodal.distributed import Dist
from altmodal.encoders import channels_last
from altmodal.metrics import summarize
from altmodal.optim import EpochSchedule, TrainConfig, build_optimizer, build_scheduler, step
from altmodal.strategies.base import StepOutput, Strategy

log = logging.getLogger(__name__)


class Trainer:
    """The loop: ``Trainer(config, dist, callbacks=[...]).fit(strategy, splits)``."""

    def __init__(
        self,
        config: TrainConfig,
        dist: Dist | None = None,
        *,
        callbacks: Sequence[Callback] = (),
        progress: bool = False,
    ):
        self.config = config
        self.dist = dist or Dist()
        self.callbacks = list(callbacks)
        self.progress = progress and self.dist.is_main
        """Show a bar over epochs, and one over batches when an epoch takes more than a few seconds."""
        self.strategy: Strategy | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: EpochSchedule | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self.epoch = 0
        self.batch_index = 0
        """Position of the current batch in the epoch."""
        self.batches_per_epoch = 1
        self.data_seconds = 0.0
        """Seconds the last training epoch waited for its batches."""

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @classmethod
    def attach(cls, strategy: Strategy, config: TrainConfig, dist: Dist | None = None) -> Trainer:
        """A loop set up for ``strategy`` outside :meth:`fit`, to drive it by hand
        (``loop.train_epoch(strategy, ...)``, ``strategy.training_step(batch)``)."""
        loop = cls(config, dist)
        loop.setup(strategy)
        return loop

    def spawn(self, config: TrainConfig | None = None) -> Trainer:
        """Another loop over the same processes (no callbacks, no progress bars), for a model that
        a strategy trains inside its own training."""
        return Trainer(config or self.config, self.dist)

    # ----- set-up -------------------------------------------------------------------------------
    def setup(self, strategy: Strategy) -> None:
        """Place ``strategy`` on the device, share rank 0's parameters, and create the optimizer
        (one, over every parameter), the learning-rate schedule and, for ``precision=16``, the
        gradient scaler; ``strategy.trainer`` is this loop from now on.

        One optimizer serves every strategy: gradients are None outside :meth:`optimize`, and
        torch's SGD, Adam and AdamW skip parameters whose gradient is None, so a step that only
        reaches one encoder (MLA) leaves the others' momentum and weight decay untouched. The
        update runs as multi-tensor kernels (``kernel``): fused on CUDA, where it also takes the
        fp16 scaler's unscaling and inf check without a host sync; foreach on the CPU by default,
        which gives the per-tensor loop's numbers exactly and which :func:`altmodal.optim.step`
        applies for plain SGD without ``optimizer.step()``'s per-call cost (fused SGD rounds in
        one step, so the last bits differ). ResNets use channels-last memory on CUDA.
        """
        config = self.config
        self.strategy = strategy
        strategy.trainer = self
        strategy.place(self.dist, config.eval_batch_size, config.precision)
        if self.device.type == "cuda":
            channels_last(strategy)
        self.dist.broadcast_module(strategy)
        fused = config.kernel == "fused" or (config.kernel == "auto" and self.device.type == "cuda")
        params = (p for p in strategy.parameters() if p.requires_grad)
        self.optimizer = build_optimizer(params, config, {"fused": True} if fused else {"foreach": True})
        self.scheduler = build_scheduler(self.optimizer, config)
        self.scaler = torch.amp.GradScaler(self.device.type) if config.precision == "16" else None

    # ----- what a step asks of the loop -----------------------------------------------------------
    def optimize(
        self,
        loss: Tensor,
        params: Iterable[nn.Parameter] | None = None,
        edit: Callable[[], None] | None = None,
        after: Callable[[], None] | None = None,
    ) -> None:
        """One optimizer step on ``loss``: backward, combine the gradients of ``params``
        (default all; they must include every parameter ``loss`` reaches) over processes, let
        ``edit`` modify them, clip their norm (``grad_clip``), step, let ``after`` modify the
        update (MLA's projection of the head's update), and set the gradients back to None.

        Only ``params`` are touched: a step that trains one encoder and a head neither zeroes
        nor reduces nor clears nor updates the other encoders (:func:`altmodal.optim.step`).
        With a gradient scaler (``precision=16``) the gradients are unscaled before ``edit`` and
        clipping, so both see the true gradients; backward, edit and step run outside autocast,
        in float32.
        """
        assert self.optimizer is not None and self.strategy is not None, "call setup() first"
        touched = list(self.strategy.parameters() if params is None else params)
        amp = self.config.precision != "32"
        with torch.autocast(self.device.type, enabled=False) if amp else contextlib.nullcontext():
            if self.scaler is None:
                loss.backward()
            else:
                self.scaler.scale(loss).backward()
            self.dist.reduce_gradients(touched)
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            if edit is not None:
                edit()
            if self.config.grad_clip > 0:
                nn.utils.clip_grad_norm_([p for p in touched if p.grad is not None], self.config.grad_clip)
            step(self.optimizer, touched, self.scaler)
            if after is not None:
                after()
        for p in touched:
            p.grad = None

    def step_generator(self, tag: int = 0, host: bool = False) -> torch.Generator:
        """A generator seeded by (seed, epoch, batch, tag), on the GPU when training there (on the
        CPU with ``host``): the same on every process and after a resume, for randomness inside a
        step (OGM-GE's noise, ModDrop's masks)."""
        state = np.random.SeedSequence([self.config.seed, self.epoch, self.batch_index, tag]).generate_state(1)[0]
        on_gpu = self.device.type == "cuda" and not host
        generator = torch.Generator(self.device) if on_gpu else torch.Generator()
        return generator.manual_seed(int(state))

    # ----- state beyond parameters ----------------------------------------------------------------
    def training_state(self) -> dict[str, Any]:
        """The model, optimizer, schedule and scaler state, and what the strategy adds."""
        assert self.optimizer is not None and self.scheduler is not None and self.strategy is not None
        state = {
            "model": self.strategy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return {**state, **self.strategy.training_extras()}

    def load_training_state(self, state: Mapping[str, Any]) -> None:
        assert self.optimizer is not None and self.scheduler is not None and self.strategy is not None
        self.strategy.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.strategy.load_training_extras(state)

    # ----- the loop ---------------------------------------------------------------------------
    def fit(
        self, strategy: Strategy, splits: Splits, resume: Mapping[str, Any] | None = None
    ) -> list[dict[str, float]]:
        """Train for ``config.epochs`` epochs, or until ``config.patience`` epochs in a row have
        not improved the best validation fused accuracy; keep the parameters of the epoch with the
        best one (the first such epoch) and return the per-epoch history. The strategy's warm-up
        epochs are neither selected nor counted by early stopping.

        ``resume`` is a state that a callback received at the end of an epoch: training goes on
        from the next epoch and ends as an uninterrupted run would.
        """
        config = self.config
        splits = strategy.training_splits(splits, config)
        self.setup(strategy)
        history: list[dict[str, float]] = []
        best: dict[str, Any] = {"epoch": -1, "score": -1.0, "model": copy.deepcopy(strategy.state_dict())}
        start = 0
        if resume is not None:
            try:
                self.load_training_state(resume["training"])
            except (RuntimeError, KeyError, ValueError) as err:
                raise ValueError(
                    f"the checkpoint does not fit this model ({first_line(err)}); delete it to start afresh"
                ) from err
            history = list(resume["history"])
            best = dict(resume["best"])
            start = int(resume["epoch"]) + 1
            set_rng_state(resume["rng"])
        for callback in self.callbacks:
            callback.on_fit_start(strategy, splits)
        strategy.on_fit_start(splits)
        bar, warmup = _progress(range(start, config.epochs), self.progress, strategy.name), strategy.warmup_epochs()
        for epoch in bar:
            since = max(int(best["epoch"]), warmup - 1)
            if stopped(epoch, since, wait(since, config.patience, config.patience_rule)):
                break
            started = time.perf_counter()
            train_row = self.train_epoch(strategy, splits.train, epoch)
            if not math.isfinite(train_row["train_loss"]):
                raise ValueError(
                    f"training diverged in epoch {epoch + 1}: the loss is {train_row['train_loss']}; try a lower --lr"
                )
            self.dist.average_norm_statistics(strategy)
            val = summarize(strategy.collect(splits.val, all_subsets=False), strategy.num_classes)
            row = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"], **train_row}  # type: ignore[union-attr]
            row.update(_validation_row(val))
            row["seconds"] = time.perf_counter() - started
            history.append(row)
            assert self.scheduler is not None
            self.scheduler.step()
            if epoch >= warmup and row["val_accuracy"] > best["score"]:
                best = {"epoch": epoch, "score": row["val_accuracy"], "model": copy.deepcopy(strategy.state_dict())}
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(val_acc=f"{row['val_accuracy']:.3f}", best=f"{best['score']:.3f}")
            if self.callbacks:
                state = {
                    "epoch": epoch,
                    "training": self.training_state(),
                    "history": history,
                    "best": best,
                    "rng": rng_state(),
                }
                for callback in self.callbacks:
                    callback.on_epoch_end(strategy, state)
        strategy.load_state_dict(best["model"])
        strategy.best_epoch = int(best["epoch"]) + 1
        strategy.on_fit_end(splits)
        strategy.trainer = None  # the trained model keeps no reference to its loop
        return history

    def train_epoch(self, strategy: Strategy, dataset: MultimodalDataset, epoch: int) -> dict[str, float]:
        """One pass over the training split; returns mean losses and per-modality training
        accuracy/loss as a history row fragment.

        Batches are prepared ahead (:func:`altmodal.data.pipeline.prefetch`); the step's
        numbers are summed on the device and read once, at the end of the epoch.
        """
        strategy.train()
        self.epoch = epoch
        cfg = self.config
        batches = EpochBatches(
            dataset,
            cfg.batch_size,
            shuffle=True,
            seed=cfg.seed,
            epoch=epoch,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        self.batches_per_epoch = len(batches)
        strategy.epoch_extras = {}
        strategy.on_epoch_start(epoch)
        n = len(dataset)
        sums = EpochSums(strategy.modalities, self.device)
        self.data_seconds = 0.0
        loader = cfg.loader if cfg.loader != "auto" else ("thread" if self.device.type == "cuda" else "loop")
        stream = prefetch(batches, self.device, loader, ahead=cfg.prefetch, workers=cfg.workers)
        steps = _batch_progress(stream, len(batches), f"epoch {epoch + 1}") if self.progress else stream
        weights = None  # (N,) the samples' loss weights, if the data has them
        if dataset.weights is not None:
            weights = torch.as_tensor(dataset.weights, dtype=torch.float32, device=self.device)
        with contextlib.closing(stream):  # stops the background producer if the step raises
            waiting = time.perf_counter()
            for self.batch_index, batch in enumerate(steps):
                self.data_seconds += time.perf_counter() - waiting
                with strategy.autocast(), strategy.weighing(weights, batch.index):
                    out = strategy.training_step(batch)
                sums.add(out, min(cfg.batch_size, n - self.batch_index * cfg.batch_size))
                waiting = time.perf_counter()
        strategy.on_epoch_end(epoch)
        row = sums.read(self.dist, n)
        row.update(strategy.epoch_extras)
        return row


class EpochSums:
    """Training losses, per-modality losses and accuracies summed over an epoch ON the device
    (no step waits for it); :meth:`read` copies them to the host once."""

    def __init__(self, modalities: list[str], device: torch.device):
        self.modalities = modalities
        zero = torch.zeros((), dtype=torch.float64, device=device)
        self.total = zero.clone()
        self.loss = [zero.clone() for _ in modalities]
        self.correct = [zero.clone() for _ in modalities]
        self.count = [0 for _ in modalities]
        self.extras: dict[str, list[Tensor | float]] = {}

    def add(self, out: StepOutput, samples: int) -> None:
        """Add a step's output; ``out.loss`` is this process's share of the mean loss over
        ``samples`` samples of the global batch."""
        self.total.add_(out.loss.detach().to(torch.float64) * samples)
        for key, value in out.extras.items():
            self.extras.setdefault(key, []).append(value)
        for j, m in enumerate(self.modalities):
            if m in out.unimodal and out.unimodal[m][1].shape[0]:
                logits, label = out.unimodal[m]
                self.loss[j].add_(F.cross_entropy(logits.float(), label, reduction="sum"))
                self.correct[j].add_((logits.argmax(1) == label).sum())
                self.count[j] += label.shape[0]

    def read(self, dist: Dist, samples: int) -> dict[str, float]:
        """The epoch's history row fragment, summed over processes (one read of the device)."""
        count = torch.tensor(self.count, dtype=torch.float64, device=self.total.device)
        sums = dist.sum(torch.cat([self.total[None], torch.stack(self.loss), torch.stack(self.correct), count])).cpu()
        n = len(self.modalities)
        loss, correct, count = sums[1 : 1 + n], sums[1 + n : 1 + 2 * n], sums[1 + 2 * n :]
        row = {"train_loss": float(sums[0]) / max(samples, 1)}
        for j, m in enumerate(self.modalities):
            if count[j] > 0:
                row[f"train_loss_{m}"] = float(loss[j] / count[j])
                row[f"train_accuracy_{m}"] = float(correct[j] / count[j])
        for key, values in self.extras.items():
            device = self.total.device
            read = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in values]).cpu().numpy()
            row[key] = float(np.mean(read))
        return row


EARLY_WAIT = 8
"""The relative patience rule's wait after a best epoch at the very start (see :func:`wait`)."""


def wait(best_epoch: int, patience: int, rule: str) -> int:
    """The epochs without improvement that end training after the (0-based) ``best_epoch``:
    ``patience`` (rule ``fixed``), or ``min(patience, EARLY_WAIT + ceil(best epoch / 2))`` (rule
    ``relative``, the best epoch counted from 1). In the validation histories of the real suite's
    cross-fitted members, those whose best epoch came early almost never improved after a wait of
    that length, while those still improving late (proteinfold, 100leaves) keep the whole wait."""
    if rule == "fixed" or patience == 0:
        return patience
    return min(patience, EARLY_WAIT + (best_epoch + 2) // 2)


def stopped(epoch: int, best_epoch: int, patience: int) -> bool:
    """Whether early stopping ends training before (0-based) ``epoch``: ``patience`` epochs have
    passed since the best one (a function of the history alone, so a resumed run stops where an
    uninterrupted one does)."""
    return patience > 0 and epoch - 1 - best_epoch >= patience


def _validation_row(val: Mapping[str, Any]) -> dict[str, float]:
    row = {"val_accuracy": val["fused"]["accuracy"], "val_macro_f1": val["fused"]["macro_f1"]}
    for m, block in val["unimodal"].items():
        row[f"val_accuracy_{m}"] = block["accuracy"]
    return row


def rng_state() -> dict[str, Any]:
    """Every random generator's state as tensors, numbers and strings (safe to load)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    numpy_state = {
        "kind": str(kind),
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": numpy_state}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    saved = state["numpy"]
    keys = np.asarray(saved["keys"], dtype=np.int64).astype(np.uint32)
    np.random.set_state(
        (saved["kind"], keys, int(saved["pos"]), int(saved["has_gauss"]), float(saved["cached_gaussian"]))
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def kept_rng_state() -> Iterator[None]:
    """Run the block, then put every global random generator back as it was: a run seeds them
    for itself, and the caller's own sequence goes on as if the run had not happened."""
    before = rng_state()
    try:
        yield
    finally:
        set_rng_state(before)


def _progress(items: Iterable[int], enabled: bool, desc: str) -> Iterable[int]:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="epoch", leave=False, dynamic_ncols=True)


def _batch_progress(batches: Iterator[Batch], total: int, desc: str) -> Iterator[Batch]:
    """A bar over one epoch's batches that appears only once the epoch has run for 3 s."""
    from tqdm.auto import tqdm

    return iter(tqdm(batches, total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True, delay=3))
