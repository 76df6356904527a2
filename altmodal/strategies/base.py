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
from altmodal.data.batch import Batch
from altmodal.data.dataset import MultimodalDataset, Splits, iterate
from altmodal.distributed import Dist
from altmodal.metrics import Outputs, subset_name, subsets, summarize
from altmodal.optim import build_optimizer, build_scheduler

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
    grad_clip: float = option(0.0, "clip the gradient norm of each optimizer step to this value (0: off)")
    seed: int = option(0, "seed of the split, the initialisation, the batch order and the masks")
    device: str = option("auto", "device: auto, cpu, cuda or cuda:N")
    eval_batch_size: int = option(256, "batch size for evaluation")

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


@dataclass(frozen=True)
class DataSpec:
    """What a strategy needs to know about the data."""

    modalities: tuple[str, ...]
    num_classes: int
    num_samples: int
    """Samples in the whole dataset: the range of ``Batch.index``."""


@dataclass
class StepOutput:
    """What one training step reports (all detached).

    Attributes:
        loss: the total loss optimised in the step.
        unimodal: modality -> (logits (n, C), labels (n,)) of that modality's prediction in the
            step, for the per-modality training curves.
        extras: other per-step numbers worth a history column (their epoch mean is logged),
            e.g. OGM-GE's modulation coefficients.
    """

    loss: Tensor
    unimodal: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    extras: dict[str, float] = field(default_factory=dict)


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
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
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
    def encode(self, batch: Batch) -> dict[str, Tensor]:
        """modality -> (B, D) features of every row.

        With ``absent == "zero-inputs"`` every row goes through the encoder (absent rows hold zero
        inputs). With ``"zero-features"`` only the present rows do, so absent inputs never reach
        its normalisation statistics, and absent rows get zero features.
        """
        out: dict[str, Tensor] = {}
        for m in self.modalities:
            rows, x, encoder = batch.present[m], batch.inputs[m], self.encoders[m]
            if bool(rows.all()) or self.absent == "zero-inputs":
                out[m] = encoder(x)
                continue
            index = rows.nonzero().squeeze(1)
            features = torch.zeros(x.shape[0], int(encoder.out_dim), device=x.device)  # type: ignore[arg-type]
            out[m] = features.index_put((index,), encoder(x[index])) if len(index) else features
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
        """Create the optimizer (one, over every parameter) and the learning-rate schedule.

        One optimizer serves every strategy: :meth:`optimize` sets gradients to None before each
        backward, and torch's SGD, Adam and AdamW skip parameters whose gradient is None, so a step
        that only reaches one encoder (MLA) leaves the others' momentum and weight decay untouched.
        """
        self.config = config
        if dist is not None:
            self.dist = dist
        self.to(self.dist.device)
        self.dist.broadcast_module(self)
        self.optimizer = build_optimizer((p for p in self.parameters() if p.requires_grad), config)
        self.scheduler = build_scheduler(self.optimizer, config)

    def optimize(
        self,
        loss: Tensor,
        params: Iterable[nn.Parameter] | None = None,
        edit: Callable[[], None] | None = None,
    ) -> None:
        """One optimizer step on ``loss``: clear gradients, backward, combine them over
        processes (only ``params``, default all), let ``edit`` modify them, clip their norm
        (``grad_clip``), step."""
        assert self.optimizer is not None, "call configure() first"
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.dist.reduce_gradients(self.parameters() if params is None else params)
        if edit is not None:
            edit()
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_([p for p in self.parameters() if p.grad is not None], self.config.grad_clip)
        self.optimizer.step()

    def step_generator(self, tag: int = 0) -> torch.Generator:
        """A generator seeded by (seed, epoch, batch, tag): the same on every process and after
        a resume, for randomness inside a step (OGM-GE's noise)."""
        state = np.random.SeedSequence([self.config.seed, self.epoch, self.batch_index, tag]).generate_state(1)[0]
        return torch.Generator().manual_seed(int(state))

    def mean_loss(self, per_sample: Tensor, rows: Tensor | None = None) -> Tensor:
        """Sum of ``per_sample`` over ``rows`` divided by the GLOBAL count of those rows, so
        that gradients summed over processes equal the single-process mean."""
        if rows is None:
            rows = torch.ones_like(per_sample, dtype=torch.bool)
        return (per_sample * rows.to(per_sample.dtype)).sum() / self.dist.count(rows).to(per_sample.device)

    def cross_entropy(self, logits: Tensor, label: Tensor, rows: Tensor | None = None) -> Tensor:
        return self.mean_loss(F.cross_entropy(logits, label, reduction="none"), rows)

    # ----- state beyond parameters ----------------------------------------------------------------
    def training_state(self) -> dict[str, Any]:
        assert self.optimizer is not None and self.scheduler is not None
        return {
            "model": self.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_training_state(self, state: Mapping[str, Any]) -> None:
        assert self.optimizer is not None and self.scheduler is not None
        self.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

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
        """Train for ``config.epochs`` epochs; keep the parameters of the epoch with the best
        validation fused accuracy (the first such epoch) and return the per-epoch history.

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
        accuracy/loss as a history row fragment."""
        self.train()
        self.epoch = epoch
        self.batches_per_epoch = -(-len(dataset) // self.config.batch_size)
        self.epoch_extras = {}
        self.on_epoch_start(epoch)
        n, size = len(dataset), self.config.batch_size
        total = 0.0
        sums = torch.zeros(3, len(self.modalities), dtype=torch.float64)  # loss, correct, count
        extras: dict[str, list[float]] = {}
        batches = iterate(
            dataset,
            self.config.batch_size,
            shuffle=True,
            seed=self.config.seed,
            epoch=epoch,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        if self.progress:
            batches = _batch_progress(batches, self.batches_per_epoch, f"epoch {epoch + 1}")
        for self.batch_index, batch in enumerate(batches):
            out = self.training_step(batch.to(self.device))
            # out.loss is this process's share of the global batch's mean loss.
            total += float(out.loss) * min(size, n - self.batch_index * size)
            for key, value in out.extras.items():
                extras.setdefault(key, []).append(value)
            for j, m in enumerate(self.modalities):
                if m in out.unimodal and len(out.unimodal[m][1]):
                    logits, label = out.unimodal[m]
                    sums[0, j] += float(F.cross_entropy(logits, label, reduction="sum"))
                    sums[1, j] += float((logits.argmax(1) == label).sum())
                    sums[2, j] += len(label)
        self.on_epoch_end(epoch)
        total = float(self.dist.sum(torch.tensor(total, dtype=torch.float64)))
        sums = self.dist.sum(sums).cpu()
        row = {"train_loss": total / max(n, 1)}
        for j, m in enumerate(self.modalities):
            if sums[2, j] > 0:
                row[f"train_loss_{m}"] = float(sums[0, j] / sums[2, j])
                row[f"train_accuracy_{m}"] = float(sums[1, j] / sums[2, j])
        row.update({key: float(np.mean(values)) for key, values in extras.items()})
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
            features = self.encode(batch)
            blank = self.absent_features(batch) if names else {}
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
