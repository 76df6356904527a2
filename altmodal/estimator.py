"""``MultimodalClassifier``: the library as a scikit-learn estimator (extra ``sklearn``).

    from altmodal import MultimodalClassifier

    model = MultimodalClassifier(epochs=50).fit(X, y)
    model.predict(X_new)           # labels of y's own kind (integers stay integers)
    model.predict_proba(X_new)     # (N, C), columns in model.classes_ order
    model.score(X_test, y_test)    # accuracy

``X`` is any of:

- a dict of arrays keyed by modality, each (N, ...), optionally with ``present_<modality>``
  masks (the feature-file layout of :mod:`altmodal.data.features`);
- a pandas DataFrame whose columns are grouped into modalities by their ``MODALITY__`` prefix
  (a frame with no such name is one modality ``x``, as an array is), or by ``columns``
  (modality -> column names or ``PREFIX*``), read by the same table reader as
  ``altmodal train --dataset FILE.csv`` (:mod:`altmodal.data.table`): a row whose columns of a
  modality are all NaN lacks that modality;
- a 2-D array: one modality ``x`` of every column, or the modalities ``columns`` maps to column
  indices (``{"audio": [0, 1, 2], "video": [3, 4]}``), NaN rows marking absence the same way.

``y`` is any array-like of labels (a list, a pandas Series, integers, strings, booleans).

``fit`` trains one run with :func:`altmodal.experiment.train_run` on the data handed over: a
stratified ``validation_fraction`` of the samples selects the best epoch (and MLA's fusion
rule); the rest trains. The run folder's test split repeats the validation samples (the
estimator holds out nothing else: score it on data of your own). The folder is temporary unless
``folder`` names one; :meth:`save` writes the model as a run folder :func:`altmodal.load_run`
and ``altmodal predict --run`` read, and :meth:`from_run` wraps any run folder as a fitted
estimator. A fitted estimator pickles (``joblib.dump``) with its model.

Security: unpickling (``joblib.load``, ``pickle.load``) runs code the file names, so a tampered
pickle runs code: load only pickles you wrote. To share or store a model, :meth:`save` it and read
it back with :meth:`from_run`: a run folder holds safetensors weights and JSON, and reading them
runs no code.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

try:
    from scipy.sparse import issparse
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
except ImportError as err:  # the optional extra
    raise ImportError("altmodal.MultimodalClassifier needs scikit-learn: pip install 'altmodal[sklearn]'") from err

from altmodal.config import ConfigError
from altmodal.data.features import PRESENT_PREFIX, DataError, arrays_to_dataset, check_name
from altmodal.data.registry import Loaded
from altmodal.data.splits import stratified_split
from altmodal.data.table import SEPARATOR, as_column_map, is_frame, presence, table_arrays
from altmodal.data.user import as_array
from altmodal.experiment import check_given, resolve, train_run
from altmodal.predictor import Predictor, load_run
from altmodal.threads import threads_for, torch_threads
from altmodal.trainer import kept_rng_state

NAMED = ("strategy", "epochs", "lr", "batch_size", "seed", "device")
"""Settings the estimator takes as parameters of its own (not through ``options``)."""
NOT_OPTIONS = ("dataset", "data_dir", "label", "columns", "val_fraction", "test_fraction")
"""Settings the data handed to ``fit`` decides."""
INTERNAL = {"fold": "folds"}
"""Settings a run sets for itself (a cross-fitted member's number), with the one meant instead."""


class MultimodalClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A multimodal classifier with the scikit-learn interface (see the module docstring).

    It pickles with ``joblib``, but loading a pickle runs code, a tampered one's too: share a
    fitted model as a run folder (:meth:`save`, then :meth:`from_run`; safetensors and JSON,
    read without running code).

    Args:
        strategy: the training strategy (``mla``, the default, ``joint``, ``ume``, ...).
        epochs: training epochs.
        lr: learning rate (0.01, the command line's default for feature data).
        batch_size: mini-batch size.
        seed: the one seed of the validation split, the initialisation and the batch order.
        threads: torch CPU threads: ``"auto"`` (one thread for small MLP models, torch's default
            otherwise; see :mod:`altmodal.threads`) or a number; restored after each call.
        device: ``auto`` (CUDA if available), ``cpu``, ``cuda`` or ``cuda:N``.
        columns: for a DataFrame or 2-D array X, modality -> its columns (names or ``PREFIX*``
            for frames, indices for arrays); None: by ``MODALITY__`` prefix (frames) or one
            modality ``x`` (arrays).
        validation_fraction: the stratified share of the samples that selects the epoch.
        options: any other setting ``altmodal train`` takes, flags with underscores (e.g.
            ``{"preset": "paper", "dim": 64, "hidden": (128,), "fusion": "film"}``).
        folder: the run folder to train in and keep (default: a temporary one, deleted after
            ``fit``); one that holds a run of other settings or data is refused, never
            overwritten; the same settings and data reuse the finished run there.

    Attributes:
        classes_: the labels of ``y``, sorted, in their own dtype; ``predict_proba``'s columns.
        modalities_: the modalities trained on.
        columns_: for DataFrame or array input, modality -> the columns read.
        n_features_in_: the number of columns of a 2-D array or DataFrame X.
        feature_names_in_: the column names of a DataFrame X.
        metrics_: the run's metrics (what metrics.json holds).
        model_: the trained model (:class:`~altmodal.predictor.Predictor`).
    """

    def __init__(
        self,
        strategy: str = "mla",
        *,
        epochs: int = 100,
        lr: float = 0.01,
        batch_size: int = 64,
        seed: int = 0,
        threads: int | str = "auto",
        device: str = "auto",
        columns: Mapping[str, Any] | None = None,
        validation_fraction: float = 0.15,
        options: Mapping[str, Any] | None = None,
        folder: str | Path | None = None,
    ):
        self.strategy = strategy
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.seed = seed
        self.threads = threads
        self.device = device
        self.columns = columns
        self.validation_fraction = validation_fraction
        self.options = options
        self.folder = folder

    # ----- fit ---------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> MultimodalClassifier:
        """Train on ``X`` (see the module docstring) and labels ``y``; returns ``self``.

        Raises:
            ValueError: bad settings or data (ConfigError / DataError), naming the setting,
                modality, column, row or value.
        """
        config = resolve(self._settings(), "MultimodalClassifier")
        check_given(self.options or {}, config)
        arrays, columns = self._inputs(X, fitting=True)
        n = _samples(arrays)
        if n < 2:
            raise DataError(f"X has {n} samples; fit needs at least 2")
        labels = column_or_1d(np.asarray(y), warn=True)
        if len(labels) != n:
            raise DataError(f"X has {n} samples, y has {len(labels)}")
        check_labels(labels)
        check_classification_targets(labels)
        try:
            classes, codes = np.unique(labels, return_inverse=True)
        except TypeError as err:
            raise DataError(f"y mixes labels that cannot be sorted together ({err})") from err
        if len(classes) < 2:
            raise DataError(f"y has one class ({classes[0]!r}); a classifier needs at least 2 classes")
        arrays["label"] = labels.astype(np.int64) if _integer(classes) else codes.astype(np.int64)
        if not _integer(classes):
            arrays["classes"] = _names(classes)
        split = validation_split(codes, self.validation_fraction, self.seed)
        loaded = with_test_copy(arrays, split, columns)
        if self.folder is not None:
            model, metrics = self._train(config, Path(self.folder), loaded)
        else:
            with tempfile.TemporaryDirectory(prefix="altmodal-") as tmp:
                model, metrics = self._train(config, Path(tmp) / "run", loaded)
        self.classes_ = classes
        self.modalities_ = model.modalities
        self.columns_ = columns
        self.metrics_ = metrics
        model.card["estimator"] = {"columns": columns, "input": self.input_kind_, "classes": _json(classes)}
        self.model_ = model
        return self

    def _settings(self) -> dict[str, Any]:
        if self.options is not None and not isinstance(self.options, Mapping):
            raise ConfigError(f"options must be a dict of settings (got {self.options!r})")
        options = dict(self.options or {})
        for key in options:
            if key in INTERNAL:
                raise ConfigError(f"options: unknown setting {key!r}; did you mean {INTERNAL[key]!r}?")
            if key in NAMED:
                raise ConfigError(f"options: set {key!r} with the parameter {key}=, not through options")
            if key in NOT_OPTIONS:
                raise ConfigError(f"options: {key!r} is decided by the data given to fit")
        named = {name: getattr(self, name) for name in NAMED}
        return {**named, **options}

    def _train(self, config: Any, out: Path, loaded: Loaded) -> tuple[Predictor, dict[str, Any]]:
        with kept_rng_state():  # training and building the model draw from the global generators
            result = train_run(config, out, data=loaded, threads=self.threads)
            return load_run(out, device=self.device), dict(result)

    # ----- inputs ------------------------------------------------------------------------------
    def _inputs(self, X: Any, fitting: bool) -> tuple[dict[str, np.ndarray], dict[str, list[Any]] | None]:
        """``X`` as feature-file arrays (modality -> (N, ...), present_<modality>) and the
        columns each modality was read from (None for a dict)."""
        if isinstance(X, Mapping) and not issparse(X):  # a DOK sparse matrix is a dict too
            if fitting and self.columns is not None:
                raise ConfigError("columns= maps the columns of a DataFrame or 2-D array; X is a dict of modalities")
            if fitting:
                self.input_kind_ = "dict"
            arrays = {str(k): as_array(v) for k, v in X.items()}
            for k in arrays:
                if not k.startswith(PRESENT_PREFIX):
                    check_name(k, "X")  # label, split and classes too: X holds modalities only
            check_lengths(arrays)
            return arrays, None
        if is_frame(X):
            return self._frame(X, fitting)
        return self._array(X, fitting)

    def _frame(self, X: Any, fitting: bool) -> tuple[dict[str, np.ndarray], dict[str, list[Any]]]:
        if fitting:
            spec = as_column_map(column_map(self.columns)) if self.columns is not None else None
            if spec is None and not any(SEPARATOR in str(c) for c in X.columns):
                spec = {"x": [str(c) for c in X.columns]}  # no MODALITY__ names: one modality, as for arrays
            self.input_kind_ = "frame"
            if all(isinstance(c, str) for c in X.columns):
                self.feature_names_in_ = np.asarray(list(X.columns), dtype=object)
            self.n_features_in_ = len(X.columns)
        else:
            if self.input_kind_ == "array":
                return self._array(X, fitting)
            spec = self.columns_
        arrays, columns = table_arrays(X, "X", label=None, spec=spec, split=False)
        return arrays, columns

    def _array(self, X: Any, fitting: bool) -> tuple[dict[str, np.ndarray], dict[str, list[Any]]]:
        if not fitting and self.input_kind_ != "array":
            raise DataError(f"X: a {type(X).__name__}; this model was fitted on a {self.input_kind_}: give one")
        values = validate_data(self, X, reset=fitting, dtype="numeric", ensure_all_finite="allow-nan")
        values = np.asarray(values, dtype=np.float64)
        if fitting:
            self.input_kind_ = "array"
            columns = array_columns(column_map(self.columns), values.shape[1])
        else:
            columns = self.columns_ or {}
        arrays: dict[str, np.ndarray] = {}
        for m, index in columns.items():
            block = values[:, index]
            arrays[m], arrays[PRESENT_PREFIX + m] = block, presence(block, m, index, "X")
        return arrays, columns

    # ----- answers -----------------------------------------------------------------------------
    def predict_proba(self, X: Any) -> np.ndarray:
        """(N, C) probabilities, columns in :attr:`classes_` order.

        Raises:
            DataError: a sample has none of the modalities (it cannot be predicted).
        """
        check_is_fitted(self, "model_")
        arrays, _ = self._inputs(X, fitting=False)
        with torch_threads(threads_for(self.threads, self.model_.strategy)):
            probs = self.model_.predict_proba(arrays)
        unknown = np.flatnonzero(np.isnan(probs).any(axis=1))
        if len(unknown):
            raise DataError(
                f"X: row {int(unknown[0])} has none of the modalities ({', '.join(self.modalities_)}); "
                f"{len(unknown)} rows cannot be predicted"
            )
        return probs

    def predict(self, X: Any) -> np.ndarray:
        """(N,) labels, of the dtype of :attr:`classes_`."""
        check_is_fitted(self, "model_")
        return self.classes_[self.predict_proba(X).argmax(axis=1)]  # type: ignore[no-any-return]

    # ----- run folders -------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fitted model as a run folder (``altmodal.load_run(path)`` reads it, and
        :meth:`from_run` gives the estimator back); refuses a folder that holds files."""
        check_is_fitted(self, "model_")
        return self.model_.save(path)

    @classmethod
    def from_run(cls, path: str | Path, device: str = "auto") -> MultimodalClassifier:
        """A fitted estimator of a run folder (``altmodal train``, :func:`train_run` or
        :meth:`save`); its parameters are the run's settings."""
        model = load_run(path, device=device)
        train = model.config.get("train", {})
        estimator = cls(
            model.config.get("strategy", "mla"),
            epochs=train.get("epochs", 100),
            lr=train.get("lr", 0.01),
            batch_size=train.get("batch_size", 64),
            seed=train.get("seed", 0),
            device=device,
        )
        saved = model.card.get("estimator", {})
        classes = saved.get("classes") or model.class_values
        estimator.classes_ = np.asarray(classes)
        estimator.modalities_ = model.modalities
        estimator.input_kind_ = saved.get("input", "frame" if "columns" in model.card else "dict")
        estimator.columns_ = saved.get("columns", model.card.get("columns"))
        if estimator.input_kind_ == "array":
            estimator.n_features_in_ = 1 + max(i for index in estimator.columns_.values() for i in index)
        estimator.metrics_ = model.metrics
        estimator.model_ = model
        return estimator


def column_map(columns: Any) -> Mapping[str, Any] | None:
    """The ``columns`` parameter, checked to be None or a map of modalities to columns."""
    if columns is not None and not isinstance(columns, Mapping):
        raise ConfigError(f"columns must map each modality to its columns (got {columns!r})")
    return columns


def check_lengths(arrays: Mapping[str, np.ndarray]) -> None:
    """Raise a DataError naming two arrays of a dict X with different numbers of samples."""
    sizes = [(k, len(v) if v.ndim else 0) for k, v in arrays.items()]
    for k, size in sizes[1:]:
        if size != sizes[0][1]:
            first, n = sizes[0]
            raise DataError(f"X: {_what(k)} has {size} samples, {_what(first)} has {n}; give each one all samples")


def _what(key: Any) -> str:
    return f"mask {key!r}" if str(key).startswith(PRESENT_PREFIX) else f"modality {key!r}"


def check_labels(labels: np.ndarray) -> None:
    """Raise a DataError naming the first sample of ``y`` without a label (None or NaN)."""
    if labels.dtype.kind == "f":
        missing = np.flatnonzero(np.isnan(labels)).tolist()
    elif labels.dtype == object:
        missing = [i for i, v in enumerate(labels) if v is None or (isinstance(v, float) and v != v)]
    else:
        return
    if missing:
        row = missing[0]
        raise DataError(f"y: row {row} is {labels[row]} ({len(missing)} rows so); give every sample a label")


def array_columns(columns: Mapping[str, Any] | None, width: int) -> dict[str, list[int]]:
    """modality -> column indices of a 2-D array of ``width`` columns (None: one modality ``x``)."""
    if columns is None:
        return {"x": list(range(width))}
    out: dict[str, list[int]] = {}
    owner: dict[int, str] = {}
    for m, value in columns.items():
        items = [value] if isinstance(value, (int, np.integer)) else list(value)
        if not items:
            raise DataError(f"columns: modality {m!r} names no column")
        for i in items:
            if isinstance(i, str) or not 0 <= int(i) < width:
                raise DataError(f"columns: modality {m!r}: {i!r} is not a column index of X (0..{width - 1})")
            if int(i) in owner:
                raise DataError(f"columns: column {int(i)} is in two modalities, {owner[int(i)]!r} and {m!r}")
            owner[int(i)] = str(m)
        out[str(m)] = [int(i) for i in items]
    return out


def validation_split(codes: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """'train' / 'val' per sample: a stratified ``fraction`` validates (at least one sample)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ConfigError(f"validation_fraction must be a number in (0, 1) (got {fraction!r})")
    if len(codes) < 2:
        raise DataError(f"X has {len(codes)} sample; fit needs at least 2")
    split = stratified_split(codes, fraction, 0.0, seed)
    if not (split == "val").any():  # classes too small to share: one sample of the largest
        largest = np.flatnonzero(codes == np.bincount(codes).argmax())
        split[np.random.default_rng(seed).choice(largest)] = "val"
    return split


def with_test_copy(arrays: dict[str, np.ndarray], split: np.ndarray, columns: Any) -> Loaded:
    """The data with the validation samples repeated as the test split (a run needs one)."""
    val = np.flatnonzero(split == "val")
    rows = np.concatenate([np.arange(len(split)), val])
    kept = {k: (v if k == "classes" else v[rows]) for k, v in arrays.items()}
    dataset, _ = arrays_to_dataset(kept, "X")
    names = {m: [str(c) for c in cs] for m, cs in (columns or {}).items()}
    full = np.concatenate([split, np.full(len(val), "test")])
    return Loaded(dataclasses.replace(dataset, columns=names), full)


def _samples(arrays: Mapping[str, np.ndarray]) -> int:
    given = [v for k, v in arrays.items() if not k.startswith(PRESENT_PREFIX) and k not in ("label", "split")]
    if not given:
        raise DataError("X holds no modality")
    return len(given[0]) if given[0].ndim else 0


def _integer(classes: np.ndarray) -> bool:
    return bool(np.issubdtype(classes.dtype, np.integer))


def _names(classes: np.ndarray) -> np.ndarray:
    """Distinct text names for the classes (their str, else their repr)."""
    names = [str(c) for c in classes]
    if len(set(names)) < len(names):
        names = [repr(c) for c in classes]
    return np.asarray(names)


def _json(classes: np.ndarray) -> list[Any] | None:
    """The classes as JSON values (None when they are not plain numbers, strings or booleans)."""
    values = classes.tolist()
    return values if all(isinstance(v, (bool, int, float, str)) for v in values) else None
