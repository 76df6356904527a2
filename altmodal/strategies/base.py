"""The strategy interface and the one training loop every strategy runs in.

A strategy is an ``nn.Module`` holding one encoder per modality (``self.encoders``, a
ModuleDict) and whatever heads it needs. It answers four questions:

- ``unimodal_logits(features)``: each modality's own prediction inside the model;
- ``fuse(features, present)``: the fused prediction from the modalities present;
- ``training_step(batch)``: one optimisation step (or several: MLA steps once per modality),
  calling :meth:`Strategy.optimize` for each, which owns ``backward`` and ``optimizer.step``;
- optionally ``on_fit_start`` (work before the first epoch that needs the data, e.g. UMT's
  teachers) and ``on_epoch_start`` / ``on_epoch_end`` for per-epoch state (OGM's window, QMF's
  history, D&R's diagnosis); numbers these hooks put in ``epoch_extras`` join the epoch's history
  row; ``on_fit_end`` fits state on the validation split once the best epoch is back (MLA's
  fusion choice), and ``summary`` reports it in metrics.json.

:meth:`Strategy.fit` (the epoch loop: train, validate, keep the best epoch on the VALIDATION
split, checkpoint) and :meth:`Strategy.collect` (predict a whole split) are written once here.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from altmodal.config import first_line, option, require
from altmodal.data.batch import Batch, spread_rows
from altmodal.data.dataset import EpochBatches, MultimodalDataset, Splits, iterate
from altmodal.data.pipeline import prefetch
from altmodal.distributed import Dist
from altmodal.encoders import channels_last
from altmodal.metrics import Outputs, subset_name, subsets, summarize
from altmodal.optim import EpochSchedule, build_optimizer, build_scheduler, step

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; the defaults are the paper's (SGD, lr 1e-3, StepLR 70 x0.1, 100 epochs)."""

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


PRECISIONS: dict[str, torch.dtype | None] = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}
SEED_MAX = 2**32 - 1
"""The largest seed: numpy's generators take seeds of 32 bits."""


@dataclass(frozen=True)
class DataSpec:
    """What a strategy needs to know about the data."""

    modalities: tuple[str, ...]
    num_classes: int
    num_samples: int
    """Samples in the whole dataset: the range of ``Batch.index``."""


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


class Callback:
    """Hooks of the loop; subclass and override what you need (the run folder, the TensorBoard
    logger and the command line's summary are callbacks). ``Strategy.fit`` takes a list."""

    def on_fit_start(self, strategy: Strategy, splits: Splits) -> None:
        """Before the first epoch (also when resuming), with the optimizer configured."""

    def on_epoch_end(self, strategy: Strategy, state: dict[str, Any]) -> None:
        """After each epoch: ``state`` holds ``epoch`` (0-based), ``history`` (rows with 1-based
        ``epoch``), ``best``, ``training`` (model, optimizer and schedule state) and ``rng``."""


class Strategy(nn.Module):
    """Base class: encoders keyed by modality, the fit/collect loop, optimisation helpers."""

    name: ClassVar[str] = ""
    options_class: ClassVar[type | None] = None
    absent: str = "zero-inputs"
    """What an absent modality feeds the model: ``zero-inputs`` (its encoder's output for the
    zero input, the paper's code) or ``zero-features`` (zeros, the encoder skipped)."""

    def __init__(self, encoders: Mapping[str, nn.Module], spec: DataSpec, options: Any = None):
        super().__init__()
        self.encoders = nn.ModuleDict(dict(encoders))
        self.spec = spec
        self.options = options
        self.dist = Dist()
        self.config = TrainConfig()
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: EpochSchedule | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self.data_seconds = 0.0
        """Seconds the last training epoch waited for its batches."""
        self.epoch = 0
        self.batch_index = 0
        """Position of the current batch in the epoch (set by the loop)."""
        self.batches_per_epoch = 1
        self.best_epoch = 0
        """1-based epoch whose parameters the model holds after :meth:`fit` (0: not trained)."""
        self.progress = False
        self.epoch_extras: dict[str, float] = {}
        """Numbers an epoch hook reports for the current epoch's history row."""

    @property
    def modalities(self) -> list[str]:
        return list(self.encoders)

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def device(self) -> torch.device:
        return self.dist.device

    # ----- the model -------------------------------------------------------------------------
    def encode(self, batch: Batch, only: Sequence[str] | None = None) -> dict[str, Tensor]:
        """modality -> (B, D) features of every row (of the modalities ``only`` names, default all).

        With ``absent == "zero-inputs"`` every row goes through the encoder (absent rows hold zero
        inputs, so their features are the encoder's output for the zero input and a loss on them
        reaches the encoder, as in the paper's code). With ``"zero-features"`` only the present
        rows do, so absent inputs never reach its normalisation statistics nor its gradient, and
        absent rows get zero features.
        """
        out: dict[str, Tensor] = {}
        for m in self.modalities if only is None else only:
            x, encoder = batch.inputs[m], self.encoders[m]
            # rows found on the host: no wait for the device
            index = None if self.absent == "zero-inputs" else batch.index_of(m)
            if index is None:
                out[m] = encoder(x)
            elif len(index):
                out[m] = spread_rows(encoder(x.index_select(0, index)), index, x.shape[0])
            else:
                out[m] = torch.zeros(x.shape[0], int(encoder.out_dim), device=x.device)  # type: ignore[arg-type]
        return out

    def absent_features(self, batch: Batch) -> dict[str, Tensor]:
        """modality -> (1, D) the features an absent sample has (see ``absent``); call in eval mode."""
        out = {}
        for m in self.modalities:
            x = batch.inputs[m]
            if self.absent == "zero-inputs":
                out[m] = self.encoders[m](x.new_zeros((1, *x.shape[1:])))
            else:
                out[m] = torch.zeros(1, int(self.encoders[m].out_dim), device=x.device)  # type: ignore[arg-type]
        return out

    def unimodal_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """modality -> (B, C) that modality's own logits inside the model."""
        raise NotImplementedError

    def fuse(self, features: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        """(B, C) fused logits from the present modalities' features."""
        raise NotImplementedError

    def training_step(self, batch: Batch) -> StepOutput:
        raise NotImplementedError

    def on_fit_start(self, splits: Splits) -> None:
        """Called once by :meth:`fit` before the first epoch it trains (after a resume has
        restored the state), with the run's splits."""

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each training epoch."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called after each training epoch, before validation."""

    def on_fit_end(self, splits: Splits) -> None:
        """Called once the best epoch's parameters are back, before the final evaluation (for
        state fitted on the validation split, such as MLA's fusion choice)."""

    def summary(self) -> dict[str, Any]:
        """Strategy-specific results worth recording in metrics.json (e.g. a fitted choice)."""
        return {}

    # ----- optimisation helpers -----------------------------------------------------------------
    def configure(self, config: TrainConfig, dist: Dist | None = None) -> None:
        """Create the optimizer (one, over every parameter), the learning-rate schedule and,
        for ``precision=16``, the gradient scaler.

        One optimizer serves every strategy: gradients are None outside :meth:`optimize`, and
        torch's SGD, Adam and AdamW skip parameters whose gradient is None, so a step that only
        reaches one encoder (MLA) leaves the others' momentum and weight decay untouched. The
        update runs as multi-tensor kernels (``kernel``): fused on CUDA, where it also takes the
        fp16 scaler's unscaling and inf check without a host sync; foreach on the CPU by default,
        which gives the per-tensor loop's numbers exactly and which :func:`altmodal.optim.step`
        applies for plain SGD without ``optimizer.step()``'s per-call cost (fused SGD rounds in
        one step, so the last bits differ). ResNets use channels-last memory on CUDA.
        """
        self.config = config
        if dist is not None:
            self.dist = dist
        self.to(self.dist.device)
        if self.device.type == "cuda":
            channels_last(self)
        self.dist.broadcast_module(self)
        fused = config.kernel == "fused" or (config.kernel == "auto" and self.device.type == "cuda")
        params = (p for p in self.parameters() if p.requires_grad)
        self.optimizer = build_optimizer(params, config, {"fused": True} if fused else {"foreach": True})
        self.scheduler = build_scheduler(self.optimizer, config)
        self.scaler = torch.amp.GradScaler(self.device.type) if config.precision == "16" else None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The mixed-precision context of ``config.precision`` (nothing for 32)."""
        dtype = PRECISIONS[self.config.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

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
        assert self.optimizer is not None, "call configure() first"
        touched = list(self.parameters() if params is None else params)
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

    def step_generator(self, tag: int = 0) -> torch.Generator:
        """A generator seeded by (seed, epoch, batch, tag), on the GPU when training there: the
        same on every process and after a resume, for randomness inside a step (OGM-GE's noise)."""
        state = np.random.SeedSequence([self.config.seed, self.epoch, self.batch_index, tag]).generate_state(1)[0]
        generator = torch.Generator(self.device) if self.device.type == "cuda" else torch.Generator()
        return generator.manual_seed(int(state))

    def global_count(self, batch: Batch, modality: str) -> int:
        """Samples with ``modality`` in the global batch, known on the host (from the batch's
        counts, else from its CPU masks, summed over processes only when the batch lacks them)."""
        if batch.counts is not None or not self.dist.active:
            return batch.count(modality)
        return int(self.dist.sum(torch.tensor(batch.count(modality), device=self.device)))

    def mean_loss(self, per_sample: Tensor, rows: Tensor | None = None) -> Tensor:
        """Sum of ``per_sample`` over ``rows`` divided by the GLOBAL count of those rows, so
        that gradients summed over processes equal the single-process mean. In one process,
        over all rows (``rows`` None), it is the plain mean: the same numbers, fewer operations."""
        if rows is None and not self.dist.active:
            return per_sample.sum() / max(per_sample.shape[0], 1)
        if rows is None:
            rows = torch.ones_like(per_sample, dtype=torch.bool)
        return (per_sample * rows.to(per_sample.dtype)).sum() / self.dist.count(rows).to(per_sample.device)

    def cross_entropy(self, logits: Tensor, label: Tensor, rows: Tensor | None = None) -> Tensor:
        return self.mean_loss(F.cross_entropy(logits, label, reduction="none"), rows)

    # ----- state beyond parameters ----------------------------------------------------------------
    def training_state(self) -> dict[str, Any]:
        assert self.optimizer is not None and self.scheduler is not None
        state = {
            "model": self.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_training_state(self, state: Mapping[str, Any]) -> None:
        assert self.optimizer is not None and self.scheduler is not None
        self.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])

    # ----- the loop ---------------------------------------------------------------------------
    def fit(
        self,
        splits: Splits,
        config: TrainConfig,
        *,
        dist: Dist | None = None,
        resume: Mapping[str, Any] | None = None,
        callbacks: Sequence[Callback] = (),
        progress: bool = False,
    ) -> list[dict[str, float]]:
        """Train for ``config.epochs`` epochs, or until ``config.patience`` epochs in a row have
        not improved the best validation fused accuracy; keep the parameters of the epoch with the
        best one (the first such epoch) and return the per-epoch history.

        ``resume`` is a state that a callback received at the end of an epoch: training goes on
        from the next epoch and ends as an uninterrupted run would. ``progress`` shows a bar
        over epochs, and one over batches when an epoch takes more than a few seconds.
        """
        self.configure(config, dist)
        self.progress = progress and self.dist.is_main
        history: list[dict[str, float]] = []
        best: dict[str, Any] = {"epoch": -1, "score": -1.0, "model": copy.deepcopy(self.state_dict())}
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
            _set_rng_state(resume["rng"])
        for callback in callbacks:
            callback.on_fit_start(self, splits)
        self.on_fit_start(splits)
        bar = _progress(range(start, config.epochs), progress and self.dist.is_main, f"{self.name}")
        for epoch in bar:
            if stopped(epoch, int(best["epoch"]), config.patience):
                break
            started = time.perf_counter()
            train_row = self.train_epoch(splits.train, epoch)
            if not math.isfinite(train_row["train_loss"]):
                raise ValueError(
                    f"training diverged in epoch {epoch + 1}: the loss is {train_row['train_loss']}; try a lower --lr"
                )
            self.dist.average_norm_statistics(self)
            val = summarize(self.collect(splits.val, all_subsets=False), self.num_classes)
            row = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"], **train_row}  # type: ignore[union-attr]
            row.update(_validation_row(val))
            row["seconds"] = time.perf_counter() - started
            history.append(row)
            assert self.scheduler is not None
            self.scheduler.step()
            if row["val_accuracy"] > best["score"]:
                best = {"epoch": epoch, "score": row["val_accuracy"], "model": copy.deepcopy(self.state_dict())}
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(val_acc=f"{row['val_accuracy']:.3f}", best=f"{best['score']:.3f}")
            if callbacks:
                state = {
                    "epoch": epoch,
                    "training": self.training_state(),
                    "history": history,
                    "best": best,
                    "rng": _rng_state(),
                }
                for callback in callbacks:
                    callback.on_epoch_end(self, state)
        self.load_state_dict(best["model"])
        self.best_epoch = int(best["epoch"]) + 1
        self.on_fit_end(splits)
        return history

    def train_epoch(self, dataset: MultimodalDataset, epoch: int) -> dict[str, float]:
        """One pass over the training split; returns mean losses and per-modality training
        accuracy/loss as a history row fragment.

        Batches are prepared ahead (:func:`altmodal.data.pipeline.prefetch`); the step's
        numbers are summed on the device and read once, at the end of the epoch.
        """
        self.train()
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
        self.epoch_extras = {}
        self.on_epoch_start(epoch)
        n = len(dataset)
        sums = EpochSums(self.modalities, self.device)
        self.data_seconds = 0.0
        loader = cfg.loader if cfg.loader != "auto" else ("thread" if self.device.type == "cuda" else "loop")
        stream = prefetch(batches, self.device, loader, ahead=cfg.prefetch, workers=cfg.workers)
        steps = _batch_progress(stream, len(batches), f"epoch {epoch + 1}") if self.progress else stream
        with contextlib.closing(stream):  # stops the background producer if the step raises
            waiting = time.perf_counter()
            for self.batch_index, batch in enumerate(steps):
                self.data_seconds += time.perf_counter() - waiting
                with self.autocast():
                    out = self.training_step(batch)
                sums.add(out, min(cfg.batch_size, n - self.batch_index * cfg.batch_size))
                waiting = time.perf_counter()
        self.on_epoch_end(epoch)
        row = sums.read(self.dist, n)
        row.update(self.epoch_extras)
        return row

    @torch.no_grad()
    def collect(self, dataset: MultimodalDataset, all_subsets: bool = True) -> Outputs:
        """Predict a whole split (gathered over processes): fused, unimodal and, for every
        non-empty subset of modalities, the fused logits with only that subset present."""
        self.eval()
        parts: dict[str, list[Tensor]] = {}

        def keep(key: str, value: Tensor) -> None:
            parts.setdefault(key, []).append(self.dist.gather(value).cpu())

        names = subsets(self.modalities) if all_subsets else []
        for batch in iterate(
            dataset,
            self.config.eval_batch_size,
            shuffle=False,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        ):
            batch = batch.to(self.device)
            with self.autocast():
                encoded = self.encode(batch)
                blank = self.absent_features(batch) if names else {}
            features = {m: f.float() for m, f in encoded.items()}  # heads score in float32
            blank = {m: f.float() for m, f in blank.items()}
            keep("label", batch.label)
            keep("index", batch.index)
            keep("fused", self.fuse(features, batch.present).float())
            for m, logits in self.unimodal_logits(features).items():
                keep(f"unimodal/{m}", logits.float())
            for m in self.modalities:
                keep(f"present/{m}", batch.present[m])
                keep(f"features/{m}", features[m].float())
            for subset in names:
                present = {m: batch.present[m] & (m in subset) for m in self.modalities}
                masked = {m: torch.where(present[m].unsqueeze(1), features[m], blank[m]) for m in self.modalities}
                keep(f"subset/{subset_name(subset)}", self.fuse(masked, present).float())
        cat = {k: torch.cat(v) for k, v in parts.items()}

        def group(prefix: str) -> dict[str, Tensor]:
            return {k[len(prefix) :]: v for k, v in cat.items() if k.startswith(prefix)}

        return Outputs(
            label=cat["label"],
            index=cat["index"],
            present=group("present/"),
            fused=cat["fused"],
            unimodal=group("unimodal/"),
            features=group("features/"),
            subsets=group("subset/"),
        )


@contextlib.contextmanager
def evaluating(modules: Iterable[nn.Module]) -> Iterator[None]:
    """``modules`` in evaluation mode inside the block, back in their own modes after it."""
    modules = list(modules)
    modes = [[m.training for m in module.modules()] for module in modules]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, flags in zip(modules, modes):
            for m, flag in zip(module.modules(), flags):
                m.training = flag


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


def _rng_state() -> dict[str, Any]:
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


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    saved = state["numpy"]
    keys = np.asarray(saved["keys"], dtype=np.int64).astype(np.uint32)
    np.random.set_state(
        (saved["kind"], keys, int(saved["pos"]), int(saved["has_gauss"]), float(saved["cached_gaussian"]))
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _progress(items: Iterable[int], enabled: bool, desc: str) -> Iterable[int]:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="epoch", leave=False, dynamic_ncols=True)


def _batch_progress(batches: Iterator[Batch], total: int, desc: str) -> Iterator[Batch]:
    """A bar over one epoch's batches that appears only once the epoch has run for 3 s."""
    from tqdm.auto import tqdm

    return iter(tqdm(batches, total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True, delay=3))
