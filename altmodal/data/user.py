"""Data handed over from Python: arrays, a MultimodalDataset, or a torch Dataset / DataLoader.

:func:`loaded_from` turns each into what a dataset loader returns, so the rest of a run (split,
standardisation, missing masks) is the same as for a feature file:

- a dict of arrays laid out like a feature file (:mod:`altmodal.data.features`): one array per
  modality, ``label``, optionally ``split`` and ``present_<modality>``;
- a :class:`~altmodal.data.dataset.MultimodalDataset` (used as it is), or a
  :class:`~altmodal.data.registry.Loaded` (a dataset with its split);
- a ``torch.utils.data.DataLoader`` yielding :class:`~altmodal.data.batch.Batch` objects (use
  :func:`altmodal.data.collate`) or dicts of batched tensors in the feature-file layout;
- a ``torch.utils.data.Dataset`` of per-sample dicts ``{"inputs": {modality: tensor or None},
  "label": int}`` (the form :func:`altmodal.data.collate` takes).

Loaders and datasets are read once into memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from altmodal.data.batch import Batch, collate
from altmodal.data.dataset import MultimodalDataset
from altmodal.data.features import DataError, arrays_to_dataset
from altmodal.data.registry import Loaded

SOURCE = "data from Python"


def loaded_from(data: Any) -> Loaded:
    """The dataset (and split, if given) of ``data`` in any form the module docstring lists.

    Raises:
        DataError: ``data`` is of another kind, or its arrays are malformed.
    """
    if isinstance(data, Loaded):
        return data
    if isinstance(data, MultimodalDataset):
        return Loaded(data)
    if isinstance(data, Mapping):
        arrays = {str(k): as_array(v) for k, v in data.items()}
        return Loaded(*arrays_to_dataset(arrays, SOURCE))
    if isinstance(data, torch.utils.data.DataLoader):
        return loaded_from(stack(data))
    if isinstance(data, torch.utils.data.Dataset):
        loader = torch.utils.data.DataLoader(data, batch_size=256, collate_fn=collate)  # type: ignore[arg-type]
        return loaded_from(stack(loader))
    raise DataError(
        f"{SOURCE}: got a {type(data).__name__}; give a dict of arrays, a MultimodalDataset, "
        "or a torch Dataset / DataLoader of modality dicts"
    )


def fingerprint(loaded: Loaded) -> str:
    """A short digest of the data: its modalities' names, shapes and types, arrays, masks,
    labels, classes and split (the same bytes under other names or in another shape are other
    data)."""
    dataset = loaded.dataset
    digest = hashlib.sha256()
    layout = {m: [str(a.dtype), list(a.shape)] for m, a in dataset.arrays.items()}
    digest.update(json.dumps({"modalities": layout, "present": list(dataset.present)}).encode())
    parts = [*dataset.arrays.values(), *dataset.present.values(), dataset.labels, dataset.rows]
    for array in [*parts, np.asarray(dataset.classes, dtype=str), np.asarray(loaded.split, dtype=str)]:
        digest.update(np.ascontiguousarray(array).tobytes())
    if dataset.integer_labels:  # what prediction gives back (only added when set: older digests stay)
        digest.update(b"integer labels")
    for m, columns in dataset.columns.items():
        digest.update(f"{m}: {list(columns)}".encode())
    if dataset.weights is not None:  # other weights, another run (only added when set: older digests stay)
        digest.update(np.ascontiguousarray(dataset.weights, dtype=np.float64).tobytes())
    return digest.hexdigest()[:12]


def stack(batches: Iterable[Any]) -> dict[str, np.ndarray]:
    """Concatenate batches (Batch objects or dicts of tensors) into feature-file arrays."""
    parts: dict[str, list[np.ndarray]] = {}
    for b, batch in enumerate(batches):
        if isinstance(batch, Batch):
            batch = {
                **batch.inputs,
                "label": batch.label,
                **{f"present_{m}": p for m, p in batch.present.items()},
            }
        if not isinstance(batch, Mapping):
            raise DataError(f"{SOURCE}: batch {b} is a {type(batch).__name__}, not a Batch or a dict of tensors")
        for key, value in batch.items():
            parts.setdefault(str(key), []).append(
                np.asarray(value.numpy() if isinstance(value, torch.Tensor) else value)
            )
    if not parts:
        raise DataError(f"{SOURCE}: the loader yielded no batches")
    return {k: np.concatenate(v) for k, v in parts.items()}


def as_array(value: Any) -> np.ndarray:
    """A numpy array of a tensor (moved to the CPU) or of anything numpy takes."""
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
