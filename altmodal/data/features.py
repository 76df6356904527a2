"""Feature files: one ``.npz`` with one array per modality.

Format (every array's first axis is the sample axis, N samples):

- ``<modality>``: any number of arrays, one per modality, numeric, shape (N, ...). A modality's
  name holds letters, digits, ``_`` and ``-`` (the models keep a module under it), and is none
  of the names below nor one the models use themselves (``values``, ``training``, ...).
- ``label``: (N,) integers or strings. Integer labels 0..K-1 are kept; any other set of labels is
  mapped to 0..K-1 in sorted order and the class names are kept.
- ``split`` (optional): (N,) strings, each ``train``, ``val`` or ``test``. Without it a stratified
  split is drawn from the seed.
- ``present_<modality>`` (optional): (N,) booleans; False marks the modality absent for that
  sample. The values in an absent row are ignored (they may be NaN) and read as zeros. This is the
  only way a file marks absence: a NaN in a row marked present is an error.
- ``classes`` (optional): (K,) strings, the class names for integer labels 0..K-1 (an error with
  string or negative labels, which name their classes themselves).
"""

from __future__ import annotations

import re
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
from torch import nn

from altmodal.data.dataset import SPLITS, MultimodalDataset

RESERVED = ("label", "split", "classes")
PRESENT_PREFIX = "present_"
MODALITY_NAME = re.compile(r"\w[\w-]*")
"""What a modality's name may hold: letters, digits, ``_`` and ``-`` (a model keeps a module per
modality under its name, and a name may end up in a path)."""
FLOAT32_MAX = float(np.finfo(np.float32).max)


class DataError(ValueError):
    """Bad input data; the message names the file, array, row or value and what to do."""


def read_npz(path: str | Path) -> tuple[MultimodalDataset, np.ndarray | None]:
    """Read and validate a feature file.

    Returns:
        The dataset over all rows, and the per-sample split names (or None if the file has none).

    Raises:
        DataError: the file is missing or unreadable, or an array is malformed; the message names
            the file and the array.
    """
    return arrays_to_dataset(read_arrays(path), source=str(path))


def arrays_to_dataset(raw: dict[str, np.ndarray], source: str) -> tuple[MultimodalDataset, np.ndarray | None]:
    """Validate the arrays of a feature file (see the module docstring) and build a dataset."""
    if "label" not in raw:
        raise DataError(f"{source}: no 'label' array (arrays: {', '.join(sorted(raw)) or 'none'})")
    label = raw["label"]
    if label.ndim != 1:
        raise DataError(f"{source}: 'label' must be 1-D, got shape {label.shape}")
    n = len(label)
    if n == 0:
        raise DataError(f"{source}: 'label' is empty")
    modalities = [k for k in raw if k not in RESERVED and not k.startswith(PRESENT_PREFIX)]
    if not modalities:
        raise DataError(f"{source}: no modality arrays besides {', '.join(sorted(raw))}")
    for m in modalities:
        check_name(m, source)
    for key, array in raw.items():
        if key != "classes" and (array.ndim == 0 or array.shape[0] != n):
            raise DataError(
                f"{source}: array {key!r} has {array.shape[0] if array.ndim else 0} samples "
                f"(shape {array.shape}), 'label' has {n}"
            )
    labels, classes = encode_labels(label, raw.get("classes"), source)
    present: dict[str, np.ndarray] = {}
    arrays: dict[str, np.ndarray] = {}
    for m in modalities:
        arrays[m], present[m] = check_modality(raw, m, source)
    orphan = [k for k in raw if k.startswith(PRESENT_PREFIX) and k[len(PRESENT_PREFIX) :] not in arrays]
    if orphan:
        raise DataError(f"{source}: {orphan[0]!r} names no modality array (modalities: {', '.join(modalities)})")
    split = raw.get("split")
    if split is not None:
        split = split.astype(str)
        bad = np.flatnonzero(~np.isin(split, SPLITS))
        if len(bad):
            raise DataError(
                f"{source}: 'split' row {bad[0]} is {str(split[bad[0]])!r}; "
                f"each entry must be one of {', '.join(SPLITS)}"
            )
    integer = raw.get("classes") is None and label.dtype.kind in "iuf"  # integral floats: checked above
    dataset = MultimodalDataset(
        name=source,
        arrays=arrays,
        present=present,
        labels=labels,
        classes=classes,
        rows=np.arange(n),
        integer_labels=integer,
    )
    return dataset, split


def name_problem(m: str) -> str:
    """What keeps ``m`` from naming a modality ('' when nothing)."""
    if not MODALITY_NAME.fullmatch(m):
        return "a modality name may hold only letters, digits, '_' and '-', and not start with '-'"
    if m in RESERVED or m.startswith(PRESENT_PREFIX):
        return f"names {', '.join(RESERVED)} and present_* are reserved"
    if hasattr(nn.ModuleDict(), m):
        return "the models use that name themselves"
    return ""


def check_name(m: str, source: str) -> None:
    """Raise a DataError naming ``m`` when it cannot name a modality (:func:`name_problem`)."""
    if name_problem(m):
        raise DataError(f"{source}: {m!r} cannot name a modality: {name_problem(m)}; rename it")


def check_modality(raw: dict[str, np.ndarray], m: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Modality ``m``'s array (absent rows zeroed) and its (N,) presence mask, validated."""
    array = raw[m]
    if np.issubdtype(array.dtype, np.complexfloating):
        raise DataError(f"{source}: array {m!r} has complex dtype {array.dtype}; store real features")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise DataError(f"{source}: array {m!r} has non-numeric dtype {array.dtype}")
    if array.ndim == 0:
        raise DataError(f"{source}: array {m!r} is a scalar; it needs one row per sample")
    if array.ndim == 1:
        raise DataError(
            f"{source}: array {m!r} is 1-D (shape {array.shape}); a modality holds one feature vector "
            f"per sample: reshape it to ({len(array)}, 1) for a single feature"
        )
    if 0 in array.shape[1:]:
        raise DataError(f"{source}: array {m!r} has no features per sample (shape {array.shape})")
    mask = raw.get(PRESENT_PREFIX + m)
    if mask is None:
        mask = np.ones(len(array), dtype=bool)
    elif mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise DataError(f"{source}: {PRESENT_PREFIX + m!r} must hold booleans (or 0/1)")
        mask = mask.astype(bool)
    if mask.ndim != 1 or len(mask) != len(array):
        raise DataError(f"{source}: {PRESENT_PREFIX + m!r} must be 1-D with {len(array)} entries, got {mask.shape}")
    return check_finite(array, mask, f"{source}: array {m!r}"), mask


def read_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file (no pickled objects); errors name the file."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a feature file (.npz)")
    if path.exists() and not path.is_file():
        raise DataError(f"{path}: is not a regular file, not a feature file (.npz)")
    if not path.is_file():
        raise DataError(f"{path}: no such feature file")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not an .npz file (a zip archive of .npy arrays)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            twice = [key for key, count in Counter(npz.files).items() if count > 1]
            if twice:  # numpy would read the last one and say nothing
                raise DataError(f"{path}: holds two arrays named {twice[0]!r}; save each array once (numpy.savez)")
            raw = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{path}: not a readable .npz file ({err})") from err
    for key, value in raw.items():
        if not isinstance(value, np.ndarray):
            raise DataError(f"{path}: member {key!r} is not a .npy array; save every array with numpy.savez")
    return raw


def encode_labels(label: np.ndarray, class_names: np.ndarray | None, source: str) -> tuple[np.ndarray, list[str]]:
    """Map labels to 0..K-1; return them with the class names."""
    if class_names is not None:
        if class_names.ndim != 1 or class_names.dtype.kind not in "US":
            raise DataError(
                f"{source}: 'classes' must be a 1-D array of class names (strings), got {class_names.dtype} "
                f"of shape {class_names.shape}"
            )
        if label.dtype.kind in "US":
            raise DataError(
                f"{source}: 'classes' names integer labels 0..K-1, but the labels are strings (they name "
                "their classes themselves); drop 'classes' or store integer labels"
            )
    if np.issubdtype(label.dtype, np.floating):
        if not np.isfinite(label).all():
            row = int(np.flatnonzero(~np.isfinite(label))[0])
            raise DataError(f"{source}: 'label' row {row} is {label[row]}; labels must be integers or strings")
        if not np.all(label == np.round(label)):
            row = int(np.flatnonzero(label != np.round(label))[0])
            raise DataError(f"{source}: 'label' row {row} is {label[row]}, not an integer")
        label = label.astype(np.int64)
    if np.issubdtype(label.dtype, np.integer):
        values = np.unique(label)
        if values[0] < 0 and class_names is not None:
            raise DataError(
                f"{source}: 'classes' names labels 0..K-1, but a label is {values[0]}; "
                "drop 'classes' or store labels from 0"
            )
        if class_names is not None:
            names = [str(c) for c in class_names.astype(str)]
            if values[-1] >= len(names):
                raise DataError(f"{source}: label {values[-1]} is out of range for the {len(names)} names in 'classes'")
            labels, classes = label.astype(np.int64), names
        elif values[0] == 0 and values[-1] == len(values) - 1:
            labels, classes = label.astype(np.int64), [str(v) for v in values]
        else:
            labels, classes = np.searchsorted(values, label).astype(np.int64), [str(v) for v in values]
    elif label.dtype.kind in "US":
        text = label.astype(str)
        values = np.unique(text)
        labels, classes = np.searchsorted(values, text).astype(np.int64), [str(v) for v in values]
    else:
        raise DataError(f"{source}: 'label' has dtype {label.dtype}; labels must be integers or strings")
    if len(np.unique(labels)) < 2:
        raise DataError(f"{source}: every sample has the label {classes[int(labels[0])]!r}; need at least 2 classes")
    return labels, classes


def check_float32(array: np.ndarray, present: np.ndarray, what: str) -> None:
    """Raise unless every value of the present rows of ``array`` fits float32, the type the
    models compute in (a larger value would become inf, and its scores NaN)."""
    if not np.issubdtype(array.dtype, np.floating) or array.dtype.itemsize <= 4:
        return
    flat = array.reshape(len(array), -1)
    big = np.flatnonzero(np.asarray(present, dtype=bool) & (np.abs(flat) > FLOAT32_MAX).any(axis=1))
    if len(big):
        raise_beyond_float32(array, int(big[0]), int(np.flatnonzero(np.abs(flat[big[0]]) > FLOAT32_MAX)[0]), what)


def raise_beyond_float32(array: np.ndarray, row: int, col: int, what: str, after: str = "") -> None:
    """The error for the value at (``row``, feature ``col``) of ``array`` that does not fit float32."""
    value = float(array.reshape(len(array), -1)[row, col])
    raise DataError(
        f"{what}: row {row} holds {value:g} at feature {col}, beyond the float32 range (±{FLOAT32_MAX:.3g}) "
        f"the models compute in{after}; rescale the feature (e.g. its log) or mark the sample absent"
    )


def check_finite(array: np.ndarray, present: np.ndarray, what: str) -> np.ndarray:
    """``array`` with absent rows zeroed; raises on NaN or inf in a present row."""
    if not np.issubdtype(array.dtype, np.floating):
        return array
    flat = array.reshape(len(array), -1)
    bad_rows = np.flatnonzero(present & ~np.isfinite(flat).all(axis=1))
    if len(bad_rows):
        row = int(bad_rows[0])
        col = int(np.flatnonzero(~np.isfinite(flat[row]))[0])
        raise DataError(
            f"{what}: row {row} holds {flat[row, col]} at feature {col} ({len(bad_rows)} rows "
            f"affected); mark absent samples with a 'present_<modality>' array instead"
        )
    if present.all():
        return array
    cleaned = array.copy()
    cleaned[~present] = 0
    return cleaned
