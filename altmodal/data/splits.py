"""Splits, standardisation and missing-modality masks: small pure functions on arrays."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from altmodal.data.dataset import SPLITS, MultimodalDataset, Splits
from altmodal.data.features import DataError


def stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Per-sample split names ('train'/'val'/'test'), stratified by class and drawn from ``seed``.

    Every class contributes ``round(n_c * fraction)`` samples to val and to test (at least one
    each when the class has three or more samples).
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"split fractions val={val_fraction} test={test_fraction} must be in [0, 1) with a sum below 1"
        )
    rng = np.random.default_rng(seed)
    split = np.full(len(labels), "train", dtype="<U5")
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = _share(len(idx), test_fraction)
        n_val = _share(len(idx), val_fraction)
        split[idx[:n_test]] = "test"
        split[idx[n_test : n_test + n_val]] = "val"
    return split


def carve_validation(split: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A copy of ``split`` in which a stratified ``fraction`` of the ``train`` rows is ``val``
    (for data whose own split has only train and test: the test split never selects a model)."""
    out = split.astype("<U8").copy()
    train = np.flatnonzero(out == "train")
    if fraction > 0 and len(train):
        inner = stratified_split(labels[train], fraction, 0.0, seed)
        out[train[inner == "val"]] = "val"
    return out


def _share(n: int, fraction: float) -> int:
    if fraction == 0:
        return 0
    return max(round(n * fraction), 1 if n >= 3 else 0)


def make_splits(dataset: MultimodalDataset, split: np.ndarray) -> Splits:
    """Views of ``dataset`` for each split name; raises if a split is empty."""
    views = {}
    for name in SPLITS:
        rows = np.flatnonzero(split == name)
        if len(rows) == 0:
            raise DataError(f"{dataset.name}: split {name!r} has no samples; every split needs at least one")
        views[name] = dataset.view(rows)
    return Splits(train=views["train"], val=views["val"], test=views["test"])


Stats = dict[str, dict[str, np.ndarray]]
"""modality -> {"mean": (...), "std": (...)}, each of one sample's shape."""


def standardization_stats(train: MultimodalDataset) -> Stats:
    """Per-feature mean and std of every modality over the PRESENT samples of ``train``;
    features constant on train get std 1 (they are only centred)."""
    stats: Stats = {}
    for m, array in train.arrays.items():
        rows = train.rows[np.asarray(train.present[m])[train.rows]]
        if len(rows) == 0:
            raise DataError(f"{train.name}: modality {m!r} is absent from every training sample")
        sample = np.asarray(array[rows], dtype=np.float64)
        std = sample.std(axis=0)
        std[std < 1e-12] = 1.0
        stats[m] = {"mean": sample.mean(axis=0), "std": std}
    return stats


def apply_standardization(array: np.ndarray, present: np.ndarray, stats: Mapping[str, np.ndarray]) -> np.ndarray:
    """``(array - mean) / std`` as float32, absent rows zero."""
    out = ((np.asarray(array, dtype=np.float64) - stats["mean"]) / stats["std"]).astype(np.float32)
    out[~np.asarray(present, dtype=bool)] = 0
    return out


def standardize(splits: Splits) -> Splits:
    """Standardise every modality per feature with the TRAINING split's statistics, which the
    result keeps in ``Splits.preprocessing`` (a run folder stores them for prediction)."""
    stats = standardization_stats(splits.train)
    arrays = {m: apply_standardization(a, splits.train.present[m], stats[m]) for m, a in splits.train.arrays.items()}
    standardized = splits.map(lambda view: _with_arrays(view, arrays))
    return dataclasses.replace(standardized, preprocessing=stats)


def _with_arrays(view: MultimodalDataset, arrays: Mapping[str, np.ndarray]) -> MultimodalDataset:
    return dataclasses.replace(view, arrays=dict(arrays))


def missing_mask(present: Mapping[str, np.ndarray], rows: np.ndarray, rate: float, seed: int) -> dict[str, np.ndarray]:
    """Drop modalities of the samples in ``rows`` at ``rate``, keeping at least one per sample.

    The paper's protocol: each present modality of each sample is dropped independently with
    probability ``rate``; a sample that would lose all of them keeps one, chosen uniformly among
    those it had. Rows outside ``rows`` keep their masks. Seeded, so train and test masks are
    reproducible.

    Returns:
        modality -> (N,) bool mask, the new presence.
    """
    if not 0 <= rate < 1:
        raise ValueError(f"missing rate {rate} must be in [0, 1)")
    modalities: Sequence[str] = list(present)
    before = np.stack([np.asarray(present[m], dtype=bool) for m in modalities], axis=1)  # (N, M)
    after = before.copy()
    if rate > 0 and len(rows):
        rng = np.random.default_rng([seed, 104729])
        sub = before[rows]
        keep = sub & (rng.random(sub.shape) >= rate)
        lost = np.flatnonzero(~keep.any(axis=1) & sub.any(axis=1))
        for i in lost:  # restore one of the modalities the sample had
            keep[i, rng.choice(np.flatnonzero(sub[i]))] = True
        after[rows] = keep
    return {m: after[:, j] for j, m in enumerate(modalities)}
