"""What a dataset loader takes (:class:`DataConfig`) and gives (:class:`Loaded`), and how a
dataset is described by name (:class:`DatasetInfo`); :mod:`altmodal.data.registry` holds the names."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from altmodal.config import option, require
from altmodal.data.dataset import MultimodalDataset, Transform


@dataclass(frozen=True)
class DataConfig:
    """Which data, which modalities, how it is split and which modalities go missing."""

    dataset: str = option(
        "mfeat", "a built-in dataset name (see `altmodal datasets`), a .npz feature file or a .csv / .parquet table"
    )
    data_dir: str | None = option(None, "folder of a prepared media dataset (`altmodal prepare`)")
    modalities: tuple[str, ...] = option((), "modalities to use, comma-separated (default: all)")
    dataset_options: tuple[str, ...] = option(
        (),
        "a dataset parameter as key=value (repeat the flag for more)",
        flag="--dataset-option",
        repeat=True,
        metavar="KEY=VALUE",
    )
    folds: int = option(
        1,
        "cross-fitting: K models, each trained on all but one of K folds of the training and validation samples; "
        "their predictions on the fold each never saw choose the test-time fusion, and their average predicts "
        "(K times the training cost of one run; 1: one model, its validation split choosing)",
    )
    fold: int = option(0, "the member of a cross-fitted run this run trains (1..folds; 0: the whole run)", cli=False)
    fold_validation: Literal["inner", "holdout"] = option(
        "inner",
        "what selects a cross-fitted member's epoch: a validation share of its training folds (no choice ever "
        "sees the out-of-fold predictions' samples), or the fold it predicts (more training data, but the fusion "
        "is then scored on the samples that chose the epoch)",
    )
    learners: tuple[str, ...] = option(
        ("linear", "boosted", "svm"),
        "classical learners a cross-fitted run of feature data trains beside its networks, on each member's rows: "
        "a linear one per modality and one of each kind on the joined features, their out-of-fold predictions "
        "candidates of the fusion (linear: logistic regression, boosted: gradient-boosted trees, svm: an RBF "
        "support-vector machine, where its kernel is affordable; none: networks only)",
    )
    val_fraction: float = option(0.15, "validation share of each class when the data has no split")
    test_fraction: float = option(0.25, "test share of each class when the data has no split")
    standardize: bool = option(True, "standardise feature data with training-split statistics")
    train_missing_rate: float = option(0.0, "drop modalities of training samples at this rate (>=1 kept)")
    test_missing_rate: float = option(0.0, "drop modalities of val/test samples at this rate (>=1 kept)")
    label: str = option("label", "the label column of a .csv / .parquet table")
    columns: tuple[str, ...] = option(
        (),
        "one modality of a .csv / .parquet table as NAME=COL1,COL2 or NAME=PREFIX* (repeat the flag for more) "
        "(default: columns grouped by their MODALITY__ prefix)",
        flag="--modality",
        repeat=True,
        metavar="NAME=COLUMNS",
    )
    complete_share: float = option(
        1.0,
        "SMIL's protocol: this share of each class of the training and validation samples keeps every modality; "
        "the others lose --incomplete-modality (1: off)",
    )
    incomplete_modality: str = option(
        "",
        "the modality that the samples outside --complete-share lack; empty: the last modality",
        needs=(
            "complete_share",
            lambda share: share < 1,
            "while --complete-share is 1 (SMIL's protocol off); set --complete-share below 1, or drop it",
        ),
    )
    missing_protocol: Literal["independent", "share"] = option(
        "independent",
        "what a missing rate means: independent (each modality of each sample dropped with probability "
        "rate, one restored where a sample lost all: the paper's text) or share (rate = the share of "
        "entries missing, every sample keeps one: the paper's code)",
    )

    def __post_init__(self) -> None:
        for name in ("val_fraction", "test_fraction", "train_missing_rate", "test_missing_rate"):
            value = getattr(self, name)
            require(0 <= value < 1, name, value, "in [0, 1)")
        require(0 < self.complete_share <= 1, "complete_share", self.complete_share, "in (0, 1]")
        require(self.folds >= 1, "folds", self.folds, "at least 1")
        known = ("linear", "boosted", "svm", "none")
        require(all(k in known for k in self.learners), "learners", self.learners, f"among {', '.join(known)}")
        require(0 <= self.fold <= self.folds and (self.fold == 0 or self.folds > 1), "fold", self.fold, "in 0..folds")


@dataclass(frozen=True)
class Loaded:
    """What a dataset loader returns before splitting."""

    dataset: MultimodalDataset
    split: np.ndarray | None = None
    """Per-sample split names, or None for a stratified split from the seed."""
    features: bool = True
    """Flat feature vectors (standardised per split) rather than media tensors."""
    train_transforms: Mapping[str, Transform] = field(default_factory=dict)
    eval_transforms: Mapping[str, Transform] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    load: Callable[[DataConfig, Mapping[str, str]], Loaded]
    needs_data_dir: bool = False
    defaults: Mapping[str, object] = field(default_factory=dict)
    """Settings this dataset trains well with (e.g. a learning rate); flags and files win."""
    benchmark: Mapping[str, object] = field(default_factory=dict)
    """Settings of ``altmodal benchmark`` on this dataset (views, epochs), chosen to finish in
    minutes on two CPU cores; flags and files win."""
