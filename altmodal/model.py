"""What a trained model IS: encoders keyed by modality, its heads, its fusion, and prediction.

A :class:`Model` is everything :func:`~altmodal.predictor.load_run`, ``predict`` and the saved
files need, and nothing of how it was trained (the optimizer, the schedule, the loop and its
state live in :mod:`altmodal.trainer`). A strategy (:mod:`altmodal.strategies`) is a model plus
its training step; a cross-fitted run's members are one model too (:mod:`altmodal.bagging`).

A model answers three questions, over modality-keyed dicts:

- ``encode(batch)``: modality -> (B, d) features of every row;
- ``unimodal_logits(features)``: modality -> (B, C), each modality's own prediction inside the model;
- ``fuse(features, present)``: (B, C), the prediction from the modalities present.

:meth:`Model.collect` predicts a whole split with them (gathered over processes): fused,
unimodal and, for each subset of modalities, the fused prediction with only that subset present.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from altmodal.data.batch import Batch, spread_rows
from altmodal.data.dataset import MultimodalDataset, iterate
from altmodal.distributed import Dist
from altmodal.metrics import Outputs, subset_name, subsets

PRECISIONS: dict[str, torch.dtype | None] = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about the data."""

    modalities: tuple[str, ...]
    num_classes: int
    num_samples: int
    """Samples in the whole dataset: the range of ``Batch.index``."""


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The mixed-precision context of ``precision`` ("32", "bf16", "16") on ``device`` (nothing for 32)."""
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


class Model(nn.Module):
    """Encoders keyed by modality (``self.encoders``) and whatever heads a subclass adds."""

    name: ClassVar[str] = ""
    absent: str = "zero-inputs"
    """What an absent modality feeds the model: ``zero-inputs`` (its encoder's output for the
    zero input, the paper's code) or ``zero-features`` (zeros, the encoder skipped)."""

    def __init__(self, encoders: Mapping[str, nn.Module], spec: DataSpec):
        super().__init__()
        self.encoders = nn.ModuleDict(dict(encoders))
        self.spec = spec
        self.dist = Dist()
        """Where the model lives: its device, and the processes that predict with it."""
        self.eval_batch_size = 256
        self.precision = "32"
        self.best_epoch = 0
        """1-based epoch whose parameters the model holds (0: not trained)."""

    @property
    def modalities(self) -> list[str]:
        return list(self.encoders)

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def device(self) -> torch.device:
        return self.dist.device

    def place(self, dist: Dist, eval_batch_size: int = 256, precision: str = "32") -> None:
        """Move the model to ``dist``'s device; predict in batches of ``eval_batch_size`` at ``precision``."""
        self.dist, self.eval_batch_size, self.precision = dist, eval_batch_size, precision
        self.to(dist.device)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return autocast(self.device, self.precision)

    # ----- what the network computes -----------------------------------------------------------
    def encode(self, batch: Batch, only: Sequence[str] | None = None) -> dict[str, Tensor]:
        """modality -> (B, D) features of every row (of the modalities ``only`` names, default all).

        With ``absent == "zero-inputs"`` every row goes through the encoder (absent rows hold zero
        inputs, so their features are the encoder's output for the zero input and a loss on them
        reaches the encoder, as in the paper's code). With ``"zero-features"`` only the present
        rows do, so absent inputs never reach its normalisation statistics nor its gradient, and
        absent rows get zero features.
        """
        return self.encode_with(self.encoders, batch, only)

    def encode_with(
        self, encoders: Mapping[str, nn.Module] | nn.ModuleDict, batch: Batch, only: Sequence[str] | None = None
    ) -> dict[str, Tensor]:
        """:meth:`encode` with other ``encoders`` (modality -> a module with ``out_dim``), such as
        ShaSpec's shared ones: the one place that runs encoders."""
        out: dict[str, Tensor] = {}
        for m in self.modalities if only is None else only:
            x, encoder = batch.inputs[m], encoders[m]
            # rows found on the host: no wait for the device
            index = None if self.absent == "zero-inputs" else batch.index_of(m)
            if index is None:
                out[m] = run_encoder(encoder, x)
            elif len(index):
                out[m] = spread_rows(run_encoder(encoder, x.index_select(0, index)), index, x.shape[0])
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

    def feature_width(self, modality: str) -> int:
        """The width of ``modality``'s features as :meth:`encode` gives them (its encoder's, by default)."""
        return int(self.encoders[modality].out_dim)  # type: ignore[arg-type]

    def unimodal_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """modality -> (B, C) that modality's own logits inside the model."""
        raise NotImplementedError

    def fuse(self, features: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        """(B, C) fused logits from the present modalities' features."""
        raise NotImplementedError

    def summary(self) -> dict[str, Any]:
        """Model-specific results worth recording in metrics.json (e.g. a fitted choice)."""
        return {}

    # ----- prediction ---------------------------------------------------------------------------
    @torch.no_grad()
    def collect(self, dataset: MultimodalDataset, all_subsets: bool = True) -> Outputs:
        """Predict a whole split (gathered over processes): fused, unimodal and, for each subset
        of modalities of :func:`~altmodal.metrics.subsets` (every one with up to four
        modalities), the fused logits with only that subset present."""
        self.eval()
        parts: dict[str, list[Tensor]] = {}

        def keep(key: str, value: Tensor) -> None:
            parts.setdefault(key, []).append(self.dist.gather(value).cpu())

        names = subsets(self.modalities) if all_subsets else []
        for batch in iterate(
            dataset, self.eval_batch_size, shuffle=False, rank=self.dist.rank, world_size=self.dist.world_size
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


def run_encoder(encoder: nn.Module, x: Tensor) -> Tensor:
    """``encoder(x)``; a single row in training mode goes through batch normalisation with its
    running statistics (a batch's statistics need two rows: a sub-batch of one present sample,
    common when most samples lack the modality, would fail)."""
    if not encoder.training or x.shape[0] > 1:
        return encoder(x)  # type: ignore[no-any-return]
    norms = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with evaluating(norms):
        return encoder(x)  # type: ignore[no-any-return]


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
