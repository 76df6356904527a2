"""From a dataset name (or a feature file) to train/val/test views ready for training."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from altmodal.data.corpora import CORPORA
from altmodal.data.dataset import MultimodalDataset, Splits
from altmodal.data.features import DataError, arrays_to_dataset, check_float32, read_npz
from altmodal.data.loaded import DataConfig, DatasetInfo, Loaded
from altmodal.data.mfeat import load_mfeat
from altmodal.data.splits import (
    carve_validation,
    cross_fit_split,
    incomplete_mask,
    make_splits,
    missing_mask,
    standardize,
    stratified_split,
    warn_rare_classes,
)
from altmodal.data.synthetic import generate, synthetic_config
from altmodal.data.table import is_table, parse_modality_map, read_table, table_arrays

log = logging.getLogger(__name__)


def _load_mfeat(config: DataConfig, options: Mapping[str, str]) -> Loaded:
    _no_options("mfeat", options)
    return Loaded(load_mfeat())


def _load_synthetic(config: DataConfig, options: Mapping[str, str]) -> Loaded:
    return Loaded(generate(synthetic_config(options)))


def _no_options(name: str, options: Mapping[str, str]) -> None:
    if options:
        raise DataError(f"{name}: takes no dataset options (got {', '.join(options)})")


FEATURE_FILE_DEFAULTS: Mapping[str, object] = {"lr": 0.01}
"""Feature files train MLP encoders on standardised vectors: the paper's lr of 1e-3 (chosen for
ResNets trained from scratch) leaves them under-trained in 100 epochs. On the validation splits of
mfeat and synthetic data, lr 3e-3 to 3e-2 score alike and 1e-3 is 0.4-4.4 points lower."""


DATASETS: dict[str, DatasetInfo] = {}


def register(info: DatasetInfo) -> None:
    """Make a dataset loadable by name (used by the built-in corpora)."""
    DATASETS[info.name] = info


register(
    DatasetInfo(
        "mfeat",
        "UCI Multiple Features: 2,000 handwritten digits, 10 classes, 6 views "
        "(fou 76, fac 216, kar 64, pix 240, zer 47, mor 6); shipped with the package",
        _load_mfeat,
        defaults=FEATURE_FILE_DEFAULTS,
        benchmark={"modalities": ("fou", "mor")},
    )
)
register(
    DatasetInfo(
        "synthetic",
        "seeded generator of controlled imbalance (m0, m1, ...); options: modalities, samples, "
        "classes, widths, strengths, shared, private, latent_dim, noise, missing_rate, seed",
        _load_synthetic,
        defaults=FEATURE_FILE_DEFAULTS,
    )
)


for _corpus in CORPORA.values():
    register(
        DatasetInfo(_corpus.name, _corpus.description, _corpus.load, needs_data_dir=True, defaults=_corpus.defaults)
    )


def dataset_defaults(dataset: str) -> Mapping[str, object]:
    """The settings a built-in dataset recommends, or those of feature files."""
    info = DATASETS.get(dataset)
    if info is not None:
        return info.defaults
    return FEATURE_FILE_DEFAULTS if dataset.endswith(".npz") or is_table(dataset) else {}


def parse_options(items: Sequence[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DataError(f"dataset option {item!r} is not of the form key=value")
        options[key.strip()] = value.strip()
    return options


def load(config: DataConfig) -> Loaded:
    """Load the named dataset or feature file, unsplit."""
    options = parse_options(config.dataset_options)
    if config.dataset in DATASETS:
        info = DATASETS[config.dataset]
        if info.needs_data_dir and not config.data_dir:
            raise DataError(
                f"{config.dataset}: needs --data-dir, the folder written by "
                f"`altmodal prepare {config.dataset} --root RAW --out DIR`"
            )
        return info.load(config, options)
    if Path(config.dataset).is_dir():
        raise DataError(
            f"{config.dataset}: is a directory, not a feature file; give a .npz file "
            "(or, for a prepared media cache, the dataset name with --data-dir)"
        )
    if is_table(config.dataset):
        _no_options(config.dataset, options)
        return load_table(config)
    if config.label != DataConfig.label or config.columns:
        raise DataError(f"{config.dataset}: --label and --modality name the columns of a .csv or .parquet table")
    if config.dataset.endswith(".npz") or Path(config.dataset).suffix:
        dataset, split = read_npz(config.dataset)
        _no_options(config.dataset, options)
        return Loaded(dataset, split)
    raise DataError(
        f"unknown dataset {config.dataset!r}; built-in datasets: {', '.join(DATASETS)} "
        "(or give the path of a .npz feature file)"
    )


def load_table(config: DataConfig) -> Loaded:
    """A CSV or Parquet table (:mod:`altmodal.data.table`) as a feature file's dataset."""
    spec = parse_modality_map(config.columns) or None
    arrays, columns = table_arrays(read_table(config.dataset), config.dataset, label=config.label, spec=spec)
    dataset, split = arrays_to_dataset(arrays, config.dataset)
    return Loaded(dataclasses.replace(dataset, columns=columns), split)


def select_modalities(dataset: MultimodalDataset, wanted: Sequence[str]) -> MultimodalDataset:
    if not wanted:
        return dataset
    unknown = [m for m in wanted if m not in dataset.arrays]
    if unknown:
        raise DataError(
            f"{dataset.name}: unknown modality {unknown[0]!r}; its modalities are {', '.join(dataset.modalities)}"
        )
    if len(set(wanted)) != len(wanted):
        raise DataError(f"{dataset.name}: a modality is named twice in {','.join(wanted)}")
    return dataset.with_modalities(wanted)


def without_empty_samples(splits: Splits) -> Splits:
    """The splits without samples that have none of the modalities (logged once, with a count
    and the first row; an error when nothing is left)."""
    train = splits.train
    stacked = np.stack([np.asarray(train.present[m], dtype=bool) for m in train.modalities])
    empty = np.logical_not(stacked.any(axis=0))
    rows = np.concatenate([splits[s].rows for s in ("train", "val", "test")])
    if not empty[rows].any():
        return splits
    lost = np.sort(rows[empty[rows]])
    log.warning(
        "%s: %d samples have none of the modalities %s (first: row %d); they are left out",
        train.name,
        len(lost),
        ", ".join(train.modalities),
        int(lost[0]),
    )
    kept = splits.map(lambda view: view.view(view.rows[~empty[view.rows]]))
    for name in ("train", "val", "test"):
        if len(kept[name]) == 0:
            raise DataError(f"{train.name}: no sample of split {name!r} has any of the modalities")
    return kept


def load_splits(config: DataConfig, seed: int, loaded: Loaded | None = None) -> Splits:
    """Train/val/test views: modalities selected, split, standardised, missing masks applied.

    The stratified split (for data without one) and the missing masks are drawn from ``seed``.
    ``loaded`` is data already in memory (e.g. handed over from Python); by default
    ``config.dataset`` is loaded.
    """
    loaded = load(config) if loaded is None else loaded
    dataset = select_modalities(loaded.dataset, config.modalities)
    split = loaded.split
    if split is None:
        split = stratified_split(dataset.labels, config.val_fraction, config.test_fraction, seed)
    elif not (split == "val").any():
        split = carve_validation(split, dataset.labels, config.val_fraction, seed)
        log.info("%s: no 'val' samples; a stratified share of the training samples validates", dataset.name)
    present = dict(dataset.present)
    protocol = config.missing_protocol
    if config.train_missing_rate > 0:
        present = missing_mask(present, np.flatnonzero(split == "train"), config.train_missing_rate, seed, protocol)
    if config.complete_share < 1:
        modality = config.incomplete_modality or dataset.modalities[-1]
        rows = np.flatnonzero(split != "test")
        present = incomplete_mask(present, rows, dataset.labels, config.complete_share, modality, seed)
    if config.test_missing_rate > 0:
        rows = np.concatenate([np.flatnonzero(split == "val"), np.flatnonzero(split == "test")])
        present = missing_mask(present, rows, config.test_missing_rate, seed + 1, protocol)
    development = np.flatnonzero(split != "test")  # what a cross-fitted run's members share
    if config.fold > 0:
        inner = config.val_fraction if config.fold_validation == "inner" else 0.0
        split = cross_fit_split(split, dataset.labels, config.folds, config.fold, inner, seed)
        if config.fold_validation == "holdout":  # the fold a member predicts also selects its epoch
            split = np.where(split == "holdout", "val", split)
    splits = make_splits(dataset, split)
    if config.fold > 0 and config.fold_validation == "holdout":
        splits = dataclasses.replace(splits, holdout=splits.val)
    warn_rare_classes(splits)
    if loaded.features and config.standardize:
        # a cross-fitted run and its members standardise alike: on all of the development samples
        splits = standardize(splits, development if config.folds > 1 else None)
    else:
        for m, array in dataset.arrays.items():
            check_float32(array, dataset.present[m], f"{dataset.name}: array {m!r}")
    splits = without_empty_samples(splits.map(lambda view: view.with_present(present)))
    return splits.map_named(
        lambda name, view: view.with_transforms(loaded.train_transforms if name == "train" else loaded.eval_transforms)
    )
