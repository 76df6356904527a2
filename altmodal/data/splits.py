"""Splits, standardisation and missing-modality masks: small pure functions on arrays."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence

import numpy as np

from altmodal.data.dataset import SPLITS, MultimodalDataset, Splits
from altmodal.data.features import FLOAT32_MAX, DataError, raise_beyond_float32

log = logging.getLogger(__name__)

HUGE = 1e100
"""Features whose largest training magnitude exceeds this are rescaled before standardising."""


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


def fold_of(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """(n,) a stratified fold 0..folds-1 per sample: each class's samples, shuffled by ``seed``,
    dealt round the folds in turn, each class starting where the previous one stopped."""
    rng = np.random.default_rng([seed, 7919])
    out = np.zeros(len(labels), dtype=np.int64)
    start = 0
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        out[idx] = (start + np.arange(len(idx))) % folds
        start += len(idx)
    return out


def cross_fit_split(
    split: np.ndarray, labels: np.ndarray, folds: int, fold: int, val_fraction: float, seed: int
) -> np.ndarray:
    """The split of member ``fold`` (1..folds) of a cross-fitted run: its development samples
    (``train`` and ``val`` of ``split``) cut into stratified folds; fold ``fold`` becomes the
    ``holdout`` the member predicts and never trains on; of the rest, a stratified share
    ``val_fraction`` validates (selects the member's epoch); ``test`` stays."""
    out = split.astype("<U8").copy()
    development = np.flatnonzero(split != "test")
    assigned = fold_of(labels[development], folds, seed)
    out[development] = np.where(assigned == fold - 1, "holdout", "train")
    pool = np.flatnonzero(out == "train")
    inner = stratified_split(
        labels[pool], val_fraction, 0.0, int(np.random.SeedSequence([seed, fold]).generate_state(1)[0])
    )
    out[pool[inner == "val"]] = "val"
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
    held = np.flatnonzero(split == "holdout")
    holdout = dataset.view(held) if len(held) else None
    return Splits(train=views["train"], val=views["val"], test=views["test"], holdout=holdout)


Stats = dict[str, dict[str, np.ndarray]]
"""modality -> {"scale": ..., "mean": ..., "std": ...}, each of one sample's shape."""


def warn_rare_classes(splits: Splits) -> None:
    """Log a warning naming the classes a split lacks: a class without training samples is never
    learned, one without validation samples never counts in model selection, one without test
    samples is never tested (stratified splits put every sample of a class of one or two samples
    in train)."""
    classes = splits.train.classes
    counts = {name: np.bincount(splits[name].labels[splits[name].rows], minlength=len(classes)) for name in SPLITS}
    total = np.sum(list(counts.values()), axis=0)
    for name, what in (("train", "never trained"), ("val", "never validated"), ("test", "never tested")):
        lacking = [
            f"{classes[int(c)]!r} ({total[c]} samples)" for c in np.flatnonzero((counts[name] == 0) & (total > 0))
        ]
        if lacking:
            log.warning(
                "%s: %d classes have no %s sample and are %s: %s",
                splits.train.name,
                len(lacking),
                name,
                what,
                ", ".join(lacking[:5]) + (", ..." if len(lacking) > 5 else ""),
            )


def standardization_stats(train: MultimodalDataset) -> Stats:
    """Per-feature statistics of every modality over the PRESENT samples of ``train``: a feature
    with values beyond ``HUGE`` is first divided by its largest training magnitude (``scale``), so
    that its variance does not overflow float64; features constant on train get std 1 (they are
    only centred)."""
    stats: Stats = {}
    for m, array in train.arrays.items():
        rows = train.rows[np.asarray(train.present[m])[train.rows]]
        if len(rows) == 0:
            raise DataError(f"{train.name}: modality {m!r} is absent from every training sample")
        sample = np.asarray(array[rows], dtype=np.float64)
        scale = np.abs(sample).max(axis=0)
        scale[~(scale > HUGE)] = 1.0  # only features whose squares could overflow are rescaled
        sample = sample / scale
        std = sample.std(axis=0)
        std[std < 1e-12] = 1.0
        stats[m] = {"scale": scale, "mean": sample.mean(axis=0), "std": std}
    return stats


def apply_standardization(
    array: np.ndarray, present: np.ndarray, stats: Mapping[str, np.ndarray], what: str = "data"
) -> np.ndarray:
    """``(array / scale - mean) / std`` as float32, absent rows zero.

    Raises:
        DataError: a present value lies so far beyond the training split's range that it does not
            fit float32 once standardised; the message names ``what``, the row and the value.
    """
    scaled = np.asarray(array, dtype=np.float64) / stats["scale"]
    standardized = (scaled - stats["mean"]) / stats["std"]
    mask = np.asarray(present, dtype=bool)
    flat = standardized.reshape(len(standardized), -1)
    big = np.flatnonzero(mask & ~(np.abs(flat) <= FLOAT32_MAX).all(axis=1))
    if len(big):
        col = int(np.flatnonzero(~(np.abs(flat[big[0]]) <= FLOAT32_MAX))[0])
        raise_beyond_float32(array, int(big[0]), col, what, " once standardised with the training split's statistics")
    out = standardized.astype(np.float32)
    out[~mask] = 0
    return out


def standardize(splits: Splits, rows: np.ndarray | None = None) -> Splits:
    """Standardise every modality per feature with the TRAINING split's statistics (or those of
    the samples ``rows``), which the result keeps in ``Splits.preprocessing`` (a run folder
    stores them for prediction)."""
    stats = standardization_stats(splits.train if rows is None else splits.train.view(rows))
    arrays = {
        m: apply_standardization(a, splits.train.present[m], stats[m], f"{splits.train.name}: array {m!r}")
        for m, a in splits.train.arrays.items()
    }
    standardized = splits.map(lambda view: _with_arrays(view, arrays))
    return dataclasses.replace(standardized, preprocessing=stats)


def _with_arrays(view: MultimodalDataset, arrays: Mapping[str, np.ndarray]) -> MultimodalDataset:
    return dataclasses.replace(view, arrays=dict(arrays))


PROTOCOLS = ("independent", "share")
"""Missing-modality protocols (see :func:`missing_mask`)."""


def missing_mask(
    present: Mapping[str, np.ndarray], rows: np.ndarray, rate: float, seed: int, protocol: str = "independent"
) -> dict[str, np.ndarray]:
    """Drop modalities of the samples in ``rows`` at ``rate``; every sample keeps at least one.

    Two protocols, which the paper's text and its code disagree on:

    - ``independent`` (the paper's text, after GCNet): each present modality of each sample is
      dropped independently with probability ``rate``; a sample that would lose all of them keeps
      one, chosen uniformly among those it had (the text is silent on such samples). The restore
      step makes the realised share of missing entries lower than ``rate`` (with two modalities,
      rate 0.5 leaves 37.5% of entries missing).
    - ``share`` (the paper's code, CPM-Net masks): ``rate`` IS the share of the rows' (sample,
      modality) entries that end up missing. Every sample keeps one present modality, chosen
      uniformly, and the remaining kept entries are drawn uniformly among the other present ones;
      once 1 - rate <= 1/M every sample keeps exactly one (the share is then 1 - 1/M). CPM-Net
      redraws until the share is within 0.005 of the target; here the number of kept entries is
      exact.

    Rows outside ``rows`` keep their masks. Seeded, so train and test masks are reproducible.

    Returns:
        modality -> (N,) bool mask, the new presence.
    """
    if not 0 <= rate < 1:
        raise ValueError(f"missing rate {rate} must be in [0, 1)")
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown missing protocol {protocol!r}; protocols: {', '.join(PROTOCOLS)}")
    modalities: Sequence[str] = list(present)
    before = np.stack([np.asarray(present[m], dtype=bool) for m in modalities], axis=1)  # (N, M)
    after = before.copy()
    if rate > 0 and len(rows):
        rng = np.random.default_rng([seed, 104729])
        draw = _independent if protocol == "independent" else _overall_share
        after[rows] = draw(before[rows], rate, rng)
    return {m: after[:, j] for j, m in enumerate(modalities)}


def _independent(sub: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    keep = sub & (rng.random(sub.shape) >= rate)
    lost = np.flatnonzero(~keep.any(axis=1) & sub.any(axis=1))
    for i in lost:  # restore one of the modalities the sample had
        keep[i, rng.choice(np.flatnonzero(sub[i]))] = True
    return keep


def _overall_share(sub: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    keep = np.zeros_like(sub)
    rows = np.flatnonzero(sub.any(axis=1))
    scores = np.where(sub, rng.random(sub.shape), -1.0)
    keep[rows, scores[rows].argmax(axis=1)] = True  # one present modality per sample, uniformly
    target = round((1 - rate) * sub.size)
    others = np.flatnonzero((sub & ~keep).ravel())
    extra = int(np.clip(target - len(rows), 0, len(others)))
    keep.ravel()[rng.choice(others, size=extra, replace=False)] = True
    return keep


def incomplete_mask(
    present: Mapping[str, np.ndarray], rows: np.ndarray, labels: np.ndarray, share: float, modality: str, seed: int
) -> dict[str, np.ndarray]:
    """SMIL's protocol: of the samples in ``rows``, a ``share`` of each class (at least one per
    class present there) keeps its modalities and every other one loses ``modality``.

    SMIL (Ma et al., AAAI 2021) trains with a few samples that have every modality and many that
    lack one (its avMNIST: 10-20% with audio). Seeded; rows outside ``rows`` keep their masks.

    Raises:
        ValueError: ``modality`` is not one of ``present``.
    """
    if modality not in present:
        raise ValueError(f"--incomplete-modality {modality!r} is not a modality here ({', '.join(present)})")
    rng = np.random.default_rng([seed, 7919])
    complete = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels[rows]):
        members = rng.permutation(rows[labels[rows] == c])
        complete[members[: max(1, round(share * len(members)))]] = True
    out = {m: np.asarray(mask, dtype=bool).copy() for m, mask in present.items()}
    lose = np.zeros(len(labels), dtype=bool)
    lose[rows] = True
    out[modality] &= ~(lose & ~complete)
    return out


def missing_summary(present: Mapping[str, np.ndarray], rows: np.ndarray) -> dict[str, float]:
    """What a mask leaves in ``rows``: the share of (sample, modality) entries missing and the
    share of samples with exactly one modality."""
    table = np.stack([np.asarray(present[m], dtype=bool)[rows] for m in present], axis=1)  # (n, M)
    if table.size == 0:
        return {"realised_share": 0.0, "single_modality_share": 0.0}
    return {
        "realised_share": float(1 - table.mean()),
        "single_modality_share": float((table.sum(axis=1) == 1).mean()),
    }
