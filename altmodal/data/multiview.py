"""The real suite's eleven multi-view datasets, converted from a public collection's MATLAB files.

A public collection of multi-view benchmark data (github.com/ChuanbinZhang/Multi-view-datasets)
ships each dataset as one ``.mat`` file: a cell array ``X`` of views (each N x D) and a label
vector ``y`` (1..K). ``altmodal prepare multiview --root MAT_FOLDER --out DATA_FOLDER`` writes the
suite's format, ``DATA_FOLDER/multiview/<name>.npz``: one float32 (N, D) array per view, named
as in :data:`COLLECTION`, plus ``label`` (int64, 0..K-1, the source's labels minus one, order
kept). Nothing is rescaled, densified beyond what loading needs, or split.

Reading is forgiving where the meaning is plain: a file is found by its name without case and
punctuation (``MNIST-4.mat`` is ``mnist4``); the label vector may be called ``y``, ``Y``, ``gt``,
``gnd`` or ``truth``; a view stored D x N is transposed (the axis of length N is the samples);
a sparse view is made dense; each named view is the first of the file's views with its number of
columns (so an order that differs from the description, or a view stored twice, is no trouble),
and views left over are reported. Anything else stops with one line naming the file and the
problem. An existing output file is replaced only with ``overwrite``.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from altmodal.data.features import DataError
from altmodal.runs import atomic_write

COLLECTION: dict[str, tuple[tuple[str, int], ...]] = {
    "bbcsport": (("view1", 3183), ("view2", 3203)),
    "bbc4view": (("view1", 4659), ("view2", 4633), ("view3", 4665), ("view4", 4684)),
    "3sources": (("bbc", 3560), ("guardian", 3631), ("reuters", 3068)),
    "proteinfold": tuple((f"view{i}", 27) for i in range(1, 13)),
    "cora": (("content", 1433), ("cites", 2708), ("inbound", 2706)),
    "citeseer": (("content", 3703), ("cites", 3312)),
    "movies": (("keywords", 1878), ("actors", 1398)),
    "webkb": (("anchor", 1840), ("content", 3000)),
    "mnist4": (("iso", 30), ("lda", 9), ("npe", 30)),
    "acm": (("view1", 1870), *((f"view{i}", 3025) for i in range(2, 6))),
    "100leaves": (("margin", 64), ("shape", 64), ("texture", 64)),
}
"""Per dataset of the real suite: its views in the suite's order, each with its number of columns."""

SUBFOLDER = "multiview"
"""The data folder's subfolder the suite reads (``multiview/<name>.npz``)."""

LABEL_NAMES = ("y", "Y", "gt", "gnd", "truth")
"""The names a collection's file may give its label vector, tried in this order."""


@dataclass
class Converted:
    """What converting the collection did."""

    written: list[str] = field(default_factory=list)
    """The files written (paths)."""
    absent: list[str] = field(default_factory=list)
    """The datasets whose ``.mat`` file is not in the source folder."""
    notes: list[str] = field(default_factory=list)


def key(name: str) -> str:
    """A file stem or dataset name without case and punctuation: ``MNIST-4`` -> ``mnist4``."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def find_sources(root: Path, names: Sequence[str]) -> dict[str, Path]:
    """The ``.mat`` file of each dataset in ``names`` found in ``root`` (matched by :func:`key`)."""
    found: dict[str, Path] = {}
    wanted = {key(n): n for n in names}
    for path in sorted(root.iterdir()):
        name = wanted.get(key(path.stem))
        if path.suffix.lower() != ".mat" or name is None:
            continue
        if name in found:
            raise DataError(f"{root}: both {found[name].name} and {path.name} could be {name}; keep one")
        found[name] = path
    return found


def read_variable(path: Path, names: Sequence[str]) -> np.ndarray | None:
    """The first variable of ``names`` stored in the MATLAB file ``path``, or None.

    Each name is read on its own: reading stops once it is found, so bytes after the variables
    (some files of the collection end with a few) are never parsed.
    """
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    for name in names:
        try:
            found = loadmat(path, variable_names=[name])
        except NotImplementedError as err:  # scipy says so for v7.3 (HDF5) files
            raise DataError(f"{path}: a MATLAB v7.3 (HDF5) file; save it as v7 (save(FILE, '-v7')) first") from err
        except (ValueError, TypeError, OSError, MatReadError, zlib.error) as err:
            if name == names[-1]:
                raise DataError(f"{path}: not a readable MATLAB file ({err})") from err
            continue
        if name in found:
            return found[name]
    return None


def views_of(cell: np.ndarray, path: Path) -> list[np.ndarray]:
    """The dense views of a cell array ``X`` in its order."""
    if cell.dtype != object:
        raise DataError(f"{path}: X is a {cell.dtype} array of shape {cell.shape}, not a cell array of views")
    views = []
    for i, view in enumerate(cell.ravel()):
        dense = view.toarray() if hasattr(view, "toarray") else np.asarray(view)
        if dense.ndim != 2 or not np.issubdtype(dense.dtype, np.number):
            raise DataError(f"{path}: view {i + 1} of X is a {dense.dtype} array of shape {dense.shape}, not N x D")
        views.append(dense)
    return views


def oriented(view: np.ndarray, n: int, path: Path, index: int) -> np.ndarray:
    """``view`` with samples as rows: the axis of length ``n`` (the number of labels) first."""
    if view.shape[0] == n:
        return view
    if view.shape[1] == n:
        return view.T
    raise DataError(f"{path}: view {index + 1} has shape {view.shape}; neither axis matches the {n} labels")


def labels_of(raw: np.ndarray, path: Path) -> np.ndarray:
    """Labels 0..K-1 (int64) from a label vector of 1..K (or already 0..K-1), order kept."""
    if min(raw.shape, default=0) > 1 or raw.size == 0 or not np.issubdtype(raw.dtype, np.number):
        raise DataError(f"{path}: the labels are a {raw.dtype} array of shape {raw.shape}, not a vector of numbers")
    values = np.asarray(raw, dtype=np.float64).ravel()
    if not np.isfinite(values).all() or (values != np.round(values)).any():
        raise DataError(f"{path}: the labels are not whole numbers")
    labels = values.astype(np.int64)
    labels -= 1 if labels.min() == 1 else 0
    classes = np.unique(labels)
    if classes[0] != 0 or len(classes) != classes[-1] + 1:
        raise DataError(f"{path}: the labels take {len(classes)} values from {raw.min()} to {raw.max()}; expected 1..K")
    return labels


def matched(
    views: Sequence[np.ndarray], spec: Sequence[tuple[str, int]], path: Path
) -> tuple[dict[str, np.ndarray], list[int]]:
    """Each named view of ``spec`` paired with the first unclaimed view of its width; the
    indices of the file's views left over."""
    free = list(range(len(views)))
    named = {}
    for name, width in spec:
        index = next((i for i in free if views[i].shape[1] == width), None)
        if index is None:
            widths = ", ".join(str(v.shape[1]) for v in views)
            raise DataError(f"{path}: no view with {width} columns for {name!r} (the file's views have {widths})")
        free.remove(index)
        named[name] = views[index]
    return named, free


def leftover_note(
    name: str, views: Sequence[np.ndarray], left: Sequence[int], kept: Mapping[str, np.ndarray]
) -> list[str]:
    """One note per view of the file not written, saying whether it copies a written one."""
    notes = []
    for i in left:
        copy = next((k for k, v in kept.items() if v.shape == views[i].shape and np.array_equal(v, views[i])), None)
        what = f"a copy of {copy}" if copy else "not a view of the suite"
        notes.append(f"{name}: view {i + 1} of the file ({views[i].shape[1]} columns) left out: {what}")
    return notes


def convert(path: Path, name: str, spec: Sequence[tuple[str, int]]) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays of the suite's file for dataset ``name`` from its ``.mat`` file, and notes."""
    cell = read_variable(path, ["X"])
    if cell is None:
        raise DataError(f"{path}: no variable X (the cell array of views)")
    raw = read_variable(path, LABEL_NAMES)
    if raw is None:
        raise DataError(f"{path}: no label vector ({', '.join(LABEL_NAMES)})")
    labels = labels_of(raw, path)
    views = [oriented(v, len(labels), path, i) for i, v in enumerate(views_of(cell, path))]
    named, left = matched(views, spec, path)
    arrays = {view: array.astype(np.float32) for view, array in named.items()}
    for view, array in arrays.items():
        if not np.isfinite(array).all():
            raise DataError(f"{path}: view {view!r} holds NaN or infinite values (in float32)")
    return {**arrays, "label": labels}, leftover_note(name, views, left, named)


def prepare_collection(
    root: str | Path,
    out: str | Path,
    *,
    overwrite: bool = False,
    collection: Mapping[str, Sequence[tuple[str, int]]] = COLLECTION,
) -> Converted:
    """Convert every dataset of ``collection`` whose ``.mat`` file is in ``root`` into
    ``out/multiview/<name>.npz``.

    Raises:
        DataError: ``root`` is not a folder or holds none of the files, a file is unusable (the
            message names it), or an output file exists and ``overwrite`` is not set (checked
            before anything is written).
    """
    root, folder = Path(root), Path(out) / SUBFOLDER
    if not root.is_dir():
        raise DataError(f"{root}: no such folder of the collection's .mat files (--root)")
    sources = find_sources(root, list(collection))
    if not sources:
        raise DataError(f"{root}: none of the collection's files is here (e.g. {next(iter(collection))}.mat)")
    targets = {name: folder / f"{name}.npz" for name in sources}
    taken = [t for t in targets.values() if t.exists()]
    if taken and not overwrite:
        raise DataError(f"{taken[0]}: exists ({len(taken)} of the outputs do); pass --overwrite to replace them")
    done = Converted(absent=[n for n in collection if n not in sources])
    staged = {name: target.with_name(f".{target.name}.partial") for name, target in targets.items()}
    try:  # every file is converted before any output is replaced: one bad file writes nothing
        for name, path in sources.items():
            arrays, notes = convert(path, name, collection[name])
            save_npz(staged[name], arrays)
            done.notes += notes
        for name, target in targets.items():
            staged[name].replace(target)
            done.written.append(str(target))
    finally:
        for partial in staged.values():
            partial.unlink(missing_ok=True)
    return done


def save_npz(path: Path, arrays: Mapping[str, Any]) -> None:
    """``arrays`` in the compressed NumPy file ``path``, written atomically."""
    atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays))


def format_converted(done: Converted, out: str | Path) -> list[str]:
    """The lines ``altmodal prepare multiview`` prints."""
    lines = [f"wrote {len(done.written)} dataset(s) into {Path(out) / SUBFOLDER}"]
    if done.absent:
        lines.append(f"not in --root (left out): {', '.join(done.absent)}")
    lines += [f"note: {note}" for note in done.notes]
    return lines
