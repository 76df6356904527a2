"""Per-sample prediction tables: what ``predictions_test.csv`` and ``altmodal predict`` write.

Pure functions from a split's :class:`~altmodal.metrics.Outputs` to probabilities and rows. A
probability is the softmax of the model's fused (or one modality's) scores; a modality that a
sample lacks gets NaN probabilities and an empty prediction, and a sample with no modality at all
gets them for the fused prediction too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from altmodal.config import ConfigError
from altmodal.files import check_parent, read_bytes
from altmodal.metrics import Outputs


def probabilities(logits: Tensor, rows: Tensor) -> np.ndarray:
    """(N, C) softmax probabilities as float64, NaN in the rows where ``rows`` is False."""
    out = torch.softmax(logits.double(), dim=1).numpy()
    out[~rows.numpy()] = np.nan
    return out


def any_present(outputs: Outputs) -> Tensor:
    """(N,) True where the sample has at least one modality."""
    return torch.stack(list(outputs.present.values())).any(dim=0)


def names_of(probs: np.ndarray, classes: Sequence[str]) -> list[str]:
    """The most probable class name per row ('' for NaN rows)."""
    return ["" if np.isnan(row).any() else classes[int(row.argmax())] for row in probs]


def labels_of(probs: np.ndarray, values: Sequence[object]) -> np.ndarray:
    """The most probable class value per row of (N, C) ``probs``, as an array of the values'
    own kind (int64 for integers, objects for names); a NaN row gets '' among names and None
    among integers (the array is then of dtype object)."""
    known = ~np.isnan(probs).any(axis=1)
    index = np.where(known, np.nan_to_num(probs, nan=-1.0).argmax(axis=1), 0)
    integer = all(isinstance(v, (int, np.integer)) for v in values)
    picked = np.asarray(values, dtype=np.int64 if integer else object)[index]
    if known.all():
        return picked
    out = picked.astype(object)
    out[~known] = None if integer else ""
    return out


def prediction_rows(outputs: Outputs, classes: Sequence[str], labelled: bool = True) -> list[dict[str, object]]:
    """One row per sample: ``index``, ``label`` (class name, if ``labelled``), ``prediction``,
    ``prob_<class>`` for each class, then per modality ``prediction_<m>`` and ``present_<m>``."""
    fused = probabilities(outputs.fused, any_present(outputs))
    unimodal = {m: names_of(probabilities(v, outputs.present[m]), classes) for m, v in outputs.unimodal.items()}
    fused_names = names_of(fused, classes)
    rows: list[dict[str, object]] = []
    for i in range(len(outputs.index)):
        row: dict[str, object] = {"index": int(outputs.index[i])}
        if labelled:
            row["label"] = classes[int(outputs.label[i])]
        row["prediction"] = fused_names[i]
        row.update({f"prob_{c}": _number(fused[i, k]) for k, c in enumerate(classes)})
        for m in outputs.present:
            row[f"prediction_{m}"] = unimodal[m][i] if m in unimodal else ""
            row[f"present_{m}"] = int(outputs.present[m][i])
        rows.append(row)
    return rows


def is_predictions_file(path: Path) -> bool:
    """Whether ``path`` is a regular file whose header is one :func:`prediction_rows` writes
    (index, label, prediction, prob_*, prediction_*, present_*)."""
    try:
        head = read_bytes(path, limit=1 << 16).split(b"\n", 1)[0].decode("utf-8").strip()
    except (OSError, ValueError):
        return False
    columns = head.split(",")
    fixed = ("index", "label", "prediction")
    return (
        columns[0] == "index"
        and "prediction" in columns
        and all(c in fixed or c.startswith(("prob_", "prediction_", "present_")) for c in columns)
    )


def check_output(out: Path, data: str | Path, overwrite: bool) -> None:
    """Raise a ConfigError, before anything is predicted, unless the predictions may be written
    to ``out``: never over the ``data`` they come from, never into a file of the user's (one
    that is not a predictions file) nor through a link, unless ``overwrite`` says so.
    """
    check_parent(out)
    if not os.path.lexists(out):
        return
    if Path(data).exists() and out.exists() and os.path.samefile(out, data):
        raise ConfigError(f"--out {out}: is the --data file; choose another name for the predictions")
    if out.is_symlink():
        if not overwrite:
            raise ConfigError(
                f"--out {out}: is a link; choose another name, or pass --overwrite to replace the link "
                "(its target is kept)"
            )
        return
    if not out.is_file():
        raise ConfigError(f"--out {out}: exists and is not a file")
    if not overwrite and not is_predictions_file(out):
        raise ConfigError(
            f"--out {out}: exists and is not a predictions file of altmodal; choose another name, "
            "or pass --overwrite to replace it"
        )


def _number(value: float) -> object:
    return "" if np.isnan(value) else float(value)
