"""The one data contract: a batch is a dict of modality tensors plus a presence mask per modality.

Every strategy, metric and loader speaks this form. A sample whose modality ``m`` is absent has
``present[m] == False`` and zeros in ``inputs[m]``; nothing downstream reads those zeros without
looking at the mask first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class Batch:
    """A mini-batch keyed by modality.

    Attributes:
        inputs: modality -> (B, ...) tensor; rows of absent samples are zeros.
        present: modality -> (B,) bool tensor, True where the sample has that modality.
        label: (B,) int64 class indices.
        index: (B,) int64 positions of the samples in their dataset (stable across epochs).
        counts: modality -> number of samples that have it in the GLOBAL batch (the shares of
            all processes together), known on the host; None when only this batch is known.
        host_present: the presence masks on the CPU. :meth:`to` keeps them, so that choosing
            the rows a step uses (and skipping a step without any) never waits for the device.
    """

    inputs: dict[str, Tensor]
    present: dict[str, Tensor]
    label: Tensor
    index: Tensor
    counts: Mapping[str, int] | None = None
    host_present: Mapping[str, Tensor] | None = None

    @property
    def size(self) -> int:
        return int(self.label.shape[0])

    @property
    def modalities(self) -> list[str]:
        return list(self.inputs)

    def to(self, device: torch.device | str) -> Batch:
        """The batch on ``device`` (copies are asynchronous from pinned memory); the host
        presence masks stay on the CPU."""
        device = torch.device(device)
        if self.label.device == device:
            return self if self.host_present is not None else replace(self, host_present=self.host_masks())
        return Batch(
            inputs={m: x.to(device, non_blocking=True) for m, x in self.inputs.items()},
            present={m: p.to(device, non_blocking=True) for m, p in self.present.items()},
            label=self.label.to(device, non_blocking=True),
            index=self.index.to(device, non_blocking=True),
            counts=self.counts,
            host_present=self.host_masks(),
        )

    def pin_memory(self) -> Batch:
        """The batch in page-locked memory, for asynchronous copies to a GPU."""
        return Batch(
            inputs={m: x.pin_memory() for m, x in self.inputs.items()},
            present={m: p.pin_memory() for m, p in self.present.items()},
            label=self.label.pin_memory(),
            index=self.index.pin_memory(),
            counts=self.counts,
            host_present=self.host_masks(),
        )

    def host_masks(self) -> dict[str, Tensor]:
        """modality -> (B,) presence mask on the CPU (read from the device only for a batch that
        was built there)."""
        return {m: self.rows(m) for m in self.present}

    def rows(self, modality: str) -> Tensor:
        """(B,) CPU mask of the samples that have ``modality``."""
        return self.host_present[modality] if self.host_present is not None else self.present[modality].cpu()

    def count(self, modality: str) -> int:
        """Samples with ``modality`` in the global batch if known (``counts``), else in this one."""
        if self.counts is not None:
            return int(self.counts[modality])
        return int(self.rows(modality).sum())

    def index_of(self, modality: str) -> Tensor | None:
        """(n,) indices, on the batch's device, of the samples that have ``modality``; None when
        all have it. Found on the host, so no step waits for the device."""
        found = self._indices(self.rows(modality))
        return None if found is None else found[1]

    def _indices(self, rows: Tensor) -> tuple[Tensor, Tensor] | None:
        """The indices of the True entries of the (B,) mask ``rows``, on the host and on the
        batch's device (copied there, not read back); None when every entry is True."""
        host = rows.cpu()
        if bool(host.all()):
            return None
        index = host.nonzero().squeeze(1)
        return index, to_device(index, self.label.device)

    def select(self, rows: Tensor) -> Batch:
        """The sub-batch of the rows where ``rows`` (a (B,) bool mask, best on the CPU) is True.

        The row indices are found on the host and copied to the batch's device, so selecting
        rows of a batch on a GPU does not wait for it."""
        found = self._indices(rows)
        if found is None:
            return self
        index, picked = found
        return Batch(
            inputs={m: x.index_select(0, picked) for m, x in self.inputs.items()},
            present={m: p.index_select(0, picked) for m, p in self.present.items()},
            label=self.label.index_select(0, picked),
            index=self.index.index_select(0, picked),
            host_present={m: p[index] for m, p in self.host_masks().items()},
        )

    def with_present(self, present: Mapping[str, Tensor]) -> Batch:
        """The same samples with a new presence mask; newly absent inputs are zero-filled."""
        inputs = {m: zero_absent(x, present[m]) for m, x in self.inputs.items()}
        return Batch(inputs=inputs, present=dict(present), label=self.label, index=self.index)


def to_device(x: Tensor, device: torch.device) -> Tensor:
    """``x`` (made on the CPU) on ``device``; to a GPU through pinned memory, so that the copy
    joins the stream's queue instead of waiting for it."""
    if x.device == device:
        return x
    if device.type == "cuda":
        x = x.pin_memory()
    return x.to(device, non_blocking=True)


def zero_absent(x: Tensor, present: Tensor) -> Tensor:
    """``x`` (B, ...) with the rows of absent samples set to zero."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    return x * present.view(shape).to(x.dtype)


def spread_rows(values: Tensor, index: Tensor | None, size: int) -> Tensor:
    """(size, ...) with ``values`` at the rows ``index`` and zeros elsewhere (``values`` itself when
    ``index`` is None: every row)."""
    if index is None:
        return values
    return values.new_zeros(size, *values.shape[1:]).index_put((index,), values)


def collate(samples: Sequence[Mapping[str, Any]]) -> Batch:
    """Stack per-sample dicts into a :class:`Batch`.

    Each sample is ``{"inputs": {modality: tensor or None}, "label": int, "index": int}``. A
    modality that is missing from a sample's ``inputs`` (or is None there) is absent for that
    sample: it is zero-filled and its ``present`` entry is False. Use this as ``collate_fn`` with
    a ``torch.utils.data.DataLoader`` over your own per-sample dataset. Inputs become float32, as
    in the built-in batches (token ids too; the text encoder casts them back).

    Raises:
        ValueError: on an empty list, a modality absent from every sample, or samples whose
            tensors of one modality differ in shape (the message names the modality and sample).
    """
    if not samples:
        raise ValueError("collate: got no samples")
    modalities: list[str] = []
    for sample in samples:
        for m, x in sample["inputs"].items():
            if x is not None and m not in modalities:
                modalities.append(m)
    inputs: dict[str, Tensor] = {}
    present: dict[str, Tensor] = {}
    for m in modalities:
        template = next(torch.as_tensor(s["inputs"][m]) for s in samples if _has(s, m))
        rows = []
        for i, s in enumerate(samples):
            if not _has(s, m):
                rows.append(torch.zeros_like(template))
                continue
            x = torch.as_tensor(s["inputs"][m])
            if x.shape != template.shape:
                raise ValueError(
                    f"collate: modality {m!r} of sample {s.get('index', i)} has shape "
                    f"{tuple(x.shape)}, other samples have {tuple(template.shape)}"
                )
            rows.append(x)
        inputs[m] = torch.stack(rows).float()  # float32, as the built-in datasets' batches
        present[m] = torch.tensor([_has(s, m) for s in samples], dtype=torch.bool)
    label = torch.tensor([int(s["label"]) for s in samples], dtype=torch.long)
    index = torch.tensor([int(s.get("index", i)) for i, s in enumerate(samples)], dtype=torch.long)
    counts = {m: int(p.sum()) for m, p in present.items()}
    return Batch(inputs=inputs, present=present, label=label, index=index, counts=counts, host_present=present)


def _has(sample: Mapping[str, Any], modality: str) -> bool:
    return sample["inputs"].get(modality) is not None
