"""Modality-keyed datasets held as arrays, their splits, and the batch iterator.

A :class:`MultimodalDataset` is a set of arrays (one per modality, first axis = samples, any
trailing shape; numpy arrays or memory maps) with a presence mask per modality, integer labels
and the class names. A split is a view: the same arrays with a subset of row indices, so the
train, validation and test views of one dataset share memory and keep the original sample
indices (``Batch.index``), which per-sample state such as QMF's loss history relies on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from altmodal.data.batch import Batch, to_device, zero_absent

# A batch-level transform: (B, ...) float tensor and a seeded generator -> (B, ...) tensor.
Transform = Callable[[Tensor, torch.Generator], Tensor]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class MultimodalDataset:
    """Arrays keyed by modality, restricted to the rows in ``rows``.

    Attributes:
        name: the dataset's name, used in messages.
        arrays: modality -> (N, ...) array over ALL samples of the dataset.
        present: modality -> (N,) bool array.
        labels: (N,) int64 class indices.
        classes: class names; ``labels`` index into it.
        rows: the sample indices this view covers (sorted, into the N samples).
        transforms: modality -> batch transform applied when batches are drawn (augmentation,
            normalisation); modalities without one are passed through as float32.
        kinds: modality -> the encoder kind suited to it.
    """

    name: str
    arrays: Mapping[str, np.ndarray]
    present: Mapping[str, np.ndarray]
    labels: np.ndarray
    classes: Sequence[str]
    rows: np.ndarray
    transforms: Mapping[str, Transform] = field(default_factory=dict)
    kinds: Mapping[str, str] = field(default_factory=dict)
    """modality -> encoder kind (see :func:`altmodal.encoders.build_encoder`); default ``mlp``."""
    integer_labels: bool = False
    """The labels were given as integers (``classes`` holds them as text): predictions give
    integers back."""
    columns: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """modality -> the table columns (CSV, Parquet, DataFrame) its features came from, in order;
    empty for other data."""
    weights: np.ndarray | None = None
    """(N,) float per-sample loss weights over ALL samples (the estimator's ``sample_weight`` and
    ``class_weight``); None: every sample weighs 1."""

    @property
    def modalities(self) -> list[str]:
        return list(self.arrays)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.rows)

    def input_shape(self, modality: str) -> tuple[int, ...]:
        """The shape of one sample of ``modality`` (trailing axes of its array)."""
        return tuple(self.arrays[modality].shape[1:])

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """modality -> :meth:`input_shape`, in modality order."""
        return {m: self.input_shape(m) for m in self.modalities}

    def view(self, rows: np.ndarray) -> MultimodalDataset:
        """The same arrays restricted to ``rows`` (dataset-level sample indices)."""
        return dataclasses.replace(self, rows=np.asarray(rows, dtype=np.int64))

    def with_modalities(self, modalities: Sequence[str]) -> MultimodalDataset:
        """Keep only ``modalities``, in that order."""
        return dataclasses.replace(
            self,
            arrays={m: self.arrays[m] for m in modalities},
            present={m: self.present[m] for m in modalities},
            transforms={m: t for m, t in self.transforms.items() if m in modalities},
            kinds={m: k for m, k in self.kinds.items() if m in modalities},
            columns={m: c for m, c in self.columns.items() if m in modalities},
        )

    def with_present(self, present: Mapping[str, np.ndarray]) -> MultimodalDataset:
        """Replace the presence masks (N,) per modality, e.g. with a missing-modality mask."""
        return dataclasses.replace(self, present={m: present[m] for m in self.arrays})

    def with_transforms(self, transforms: Mapping[str, Transform]) -> MultimodalDataset:
        return dataclasses.replace(self, transforms=dict(transforms))

    def gather(
        self, positions: np.ndarray, generator: torch.Generator | None = None, device: torch.device | None = None
    ) -> Batch:
        """The batch of the view's samples at ``positions`` (indices into ``rows``).

        The arrays are read on the CPU; with a CUDA ``device`` they travel there through pinned
        memory (as stored: uint8 pixels move as bytes) and the transforms run on that device,
        drawing their random numbers from ``generator`` on the CPU, so a seed gives the same
        draws on every device.
        """
        idx = self.rows[positions]
        order = np.argsort(idx, kind="stable")  # memory maps read faster in ascending order
        sorted_idx = idx[order]
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        device = device if device is not None else torch.device("cpu")
        host = {m: torch.from_numpy(np.asarray(self.present[m])[idx].astype(bool)) for m in self.arrays}
        inputs: dict[str, Tensor] = {}
        present: dict[str, Tensor] = {}
        for m, array in self.arrays.items():
            x = to_device(torch.from_numpy(np.asarray(array[sorted_idx])[inverse]), device).float()
            if m in self.transforms:
                x = self.transforms[m](x, gen)
            present[m] = to_device(host[m], device)
            inputs[m] = zero_absent(x, present[m])
        return Batch(
            inputs=inputs,
            present=present,
            label=to_device(torch.from_numpy(self.labels[idx].astype(np.int64)), device),
            index=to_device(torch.from_numpy(idx), device),
            host_present=host,
        )


@dataclass(frozen=True)
class Splits:
    """The train, validation and test views of one dataset."""

    train: MultimodalDataset
    val: MultimodalDataset
    test: MultimodalDataset
    preprocessing: Mapping[str, Mapping[str, np.ndarray]] = field(default_factory=dict)
    """Statistics fit on the training split and applied to every split (modality -> name ->
    array; e.g. standardisation's ``mean`` and ``std``); empty when nothing was fit."""
    holdout: MultimodalDataset | None = None
    """A member of a cross-fitted run: the fold it never trains on and predicts (else None)."""

    def __getitem__(self, name: str) -> MultimodalDataset:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; the splits are {', '.join(SPLITS)}")
        return getattr(self, name)  # type: ignore[no-any-return]

    @property
    def modalities(self) -> list[str]:
        return self.train.modalities

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    def map(self, fn: Callable[[MultimodalDataset], MultimodalDataset]) -> Splits:
        return self.map_named(lambda _, view: fn(view))

    def map_named(self, fn: Callable[[str, MultimodalDataset], MultimodalDataset]) -> Splits:
        """The splits with ``fn(name, view)`` applied to each view (the holdout's name: holdout)."""
        return Splits(
            train=fn("train", self.train),
            val=fn("val", self.val),
            test=fn("test", self.test),
            preprocessing=self.preprocessing,
            holdout=None if self.holdout is None else fn("holdout", self.holdout),
        )


def batch_positions(n: int, batch_size: int, *, shuffle: bool, seed: int, epoch: int) -> list[np.ndarray]:
    """Positions 0..n-1 cut into batches; shuffled by (seed, epoch) alone, so a resumed epoch
    sees exactly the batches the interrupted one saw."""
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(n)
    else:
        order = np.arange(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


class EpochBatches(torch.utils.data.Dataset[Batch]):
    """The batches of one pass over a dataset, each built on demand and by its number alone.

    Batch ``b`` holds the positions of the b-th slice of the (seed, epoch) order (this rank's
    share of them), augments with a generator seeded by (seed, epoch, b, rank) and knows how
    many samples of the whole global batch have each modality. Nothing depends on which batches
    were built before, or where: a background thread or worker processes give the same batches.
    """

    def __init__(
        self,
        dataset: MultimodalDataset,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | None = None,
    ):
        self.dataset = dataset
        self.batches = batch_positions(len(dataset), batch_size, shuffle=shuffle, seed=seed, epoch=epoch)
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size
        self.device = device

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int) -> Batch:
        positions = self.batches[b]
        state = np.random.SeedSequence([self.seed, self.epoch, b, self.rank]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(state))
        batch = self.dataset.gather(positions[self.rank :: self.world_size], generator, self.device)
        rows = self.dataset.rows[positions]
        counts = {m: int(np.count_nonzero(np.asarray(p)[rows])) for m, p in self.dataset.present.items()}
        return dataclasses.replace(batch, counts=counts)


def iterate(dataset: MultimodalDataset, batch_size: int, **options: Any) -> Iterator[Batch]:
    """Batches of ``dataset`` on the CPU, built one by one (``options``: those of
    :class:`EpochBatches`); with ``world_size`` > 1 each rank gets its share of every global
    batch (rows ``rank::world_size``), so all ranks run the same number of steps."""
    batches = EpochBatches(dataset, batch_size, **options)
    for b in range(len(batches)):
        yield batches[b]
