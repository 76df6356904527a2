"""The data layer: modality-keyed batches, datasets, feature files, built-in data, splits."""

from altmodal.data.batch import Batch, collate
from altmodal.data.dataset import MultimodalDataset, Splits, iterate
from altmodal.data.features import DataError, read_npz
from altmodal.data.registry import DATASETS, DataConfig, load_splits
from altmodal.data.splits import missing_mask, standardize, stratified_split

__all__ = [
    "DATASETS",
    "Batch",
    "DataConfig",
    "DataError",
    "MultimodalDataset",
    "Splits",
    "collate",
    "iterate",
    "load_splits",
    "missing_mask",
    "read_npz",
    "standardize",
    "stratified_split",
]
