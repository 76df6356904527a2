"""The one data contract: a batch is a dict of modality tensors plus a presence mask per modality.

Every strategy, metric and loader speaks this form. A sample whose modality ``m`` is absent has
``present[m] == False`` and zeros in ``inputs[m]``; nothing downstream reads those zeros without
looking at the mask first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    """

    inputs: dict[str, Tensor]
    present: dict[str, Tensor]
    label: Tensor
    index: Tensor

    @property
    def size(self) -> int:
        return int(self.label.shape[0])

    @property
    def modalities(self) -> list[str]:
        return list(self.inputs)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            inputs={m: x.to(device, non_blocking=True) for m, x in self.inputs.items()},
            present={m: p.to(device, non_blocking=True) for m, p in self.present.items()},
            label=self.label.to(device, non_blocking=True),
            index=self.index.to(device, non_blocking=True),
        )

    def select(self, rows: Tensor) -> Batch:
        """The sub-batch of the rows where ``rows`` (a (B,) bool mask) is True."""
        return Batch(
            inputs={m: x[rows] for m, x in self.inputs.items()},
            present={m: p[rows] for m, p in self.present.items()},
            label=self.label[rows],
            index=self.index[rows],
        )

    def with_present(self, present: Mapping[str, Tensor]) -> Batch:
        """The same samples with a new presence mask; newly absent inputs are zero-filled."""
        inputs = {m: zero_absent(x, present[m]) for m, x in self.inputs.items()}
        return Batch(inputs=inputs, present=dict(present), label=self.label, index=self.index)


def zero_absent(x: Tensor, present: Tensor) -> Tensor:
    """``x`` (B, ...) with the rows of absent samples set to zero."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    return x * present.view(shape).to(x.dtype)


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
    return Batch(inputs=inputs, present=present, label=label, index=index)


def _has(sample: Mapping[str, Any], modality: str) -> bool:
    return sample["inputs"].get(modality) is not None
