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

import contextlib
import dataclasses
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

try:
    from scipy.sparse import issparse
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.utils.class_weight import compute_class_weight
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
except ImportError as err:  # the optional extra
    raise ImportError("altmodal.MultimodalClassifier needs scikit-learn: pip install 'altmodal[sklearn]'") from err

from altmodal.callbacks import Progress
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

log = logging.getLogger(__name__)

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
        seed: the one seed of the validation split, the initialisation and the batch order
            (``random_state`` is its scikit-learn name).
        threads: torch CPU threads: ``"auto"`` (one thread for small MLP models, torch's default
            otherwise; see :mod:`altmodal.threads`) or a number; restored after each call
            (``n_jobs`` is its scikit-learn name).
        random_state: scikit-learn's name of ``seed``: an int, or None (``seed`` decides). Given
            beside a ``seed`` other than 0 that it contradicts, ``fit`` refuses both.
        n_jobs: scikit-learn's name of ``threads``: a number of threads, -1 for every CPU
            (-2 all but one, ...), or None (``threads`` decides). Given beside a ``threads`` other
            than ``"auto"`` that it contradicts, ``fit`` refuses both.
        verbose: 0 quiet; 1 logs the run's progress (member, epoch, validation accuracy, ETA)
            about every 10 seconds; 2 after every epoch. Through the ``altmodal`` logger (to
            stderr at INFO when no logging is configured).
        class_weight: ``"balanced"`` (each class weighs ``n / (classes * its count)``) or a dict
            label -> weight (labels left out weigh 1): each sample's loss term is multiplied by
            its class's weight, in every strategy (see :meth:`fit` for what stays unweighted).
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
        random_state: int | None = None,
        n_jobs: int | None = None,
        verbose: int = 0,
        class_weight: str | Mapping[Any, float] | None = None,
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
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.class_weight = class_weight

    # ----- fit ---------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MultimodalClassifier:
        """Train on ``X`` (see the module docstring) and labels ``y``; returns ``self``.

        ``sample_weight`` ((N,) non-negative numbers) and ``class_weight`` multiply each sample's
        term in every loss a strategy trains on (scaled together to a mean of 1 over the samples
        given, so only their ratios matter), and in the fits of the classical learners a
        cross-fitted run trains beside its networks. Unweighted stay: the validation accuracy that
        selects the epoch (and the boosted and kernel learners' tuning), the choice of the fusion
        rule and the rules fitted on held-out predictions (``stacked``, ``weighted``; to weigh every
        part of the model fix the rule, e.g. ``options={"test_fusion": "entropy"}``), and the
        training curves.

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
        weights = loss_weights(labels, classes, codes, self.class_weight, sample_weight)
        split = validation_split(codes, self.validation_fraction, self._seed())
        loaded = with_test_copy(arrays, split, columns, weights)
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
        named["seed"] = self._seed()
        return {**named, **options}

    def _seed(self) -> int:
        """The run's seed: ``random_state`` when given, else ``seed``."""
        state = self.random_state
        if state is not None and (isinstance(state, bool) or not isinstance(state, (int, np.integer))):
            raise ConfigError(f"random_state must be an int or None (got {state!r}); it seeds torch and numpy alike")
        return int(aliased("random_state", state, "seed", self.seed, 0))

    def _threads(self) -> int | str:
        """The run's torch threads: ``n_jobs`` when given (-1 every CPU), else ``threads``."""
        jobs = self.n_jobs
        if jobs is None:
            return self.threads
        if isinstance(jobs, bool) or not isinstance(jobs, (int, np.integer)) or jobs == 0:
            raise ConfigError(f"n_jobs must be a non-zero int or None (got {jobs!r}); -1 uses every CPU")
        count = int(jobs) if jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + int(jobs))
        return aliased("n_jobs", count, "threads", self.threads, "auto")

    def _train(self, config: Any, out: Path, loaded: Loaded) -> tuple[Predictor, dict[str, Any]]:
        every = 10.0 if self.verbose == 1 else 0.0
        callbacks = [Progress(log.info, config.train.epochs, every)] if self.verbose else []
        with kept_rng_state(), logged(self.verbose):  # training draws from the global generators
            result = train_run(config, out, data=loaded, threads=self._threads(), callbacks=callbacks)
            return load_run(out, device=self.device), dict(result)

    def leaderboard(self) -> Any:
        """A pandas DataFrame of the fusion candidates the fit weighed, best first: ``candidate``,
        ``score`` (its accuracy on the out-of-fold predictions of a cross-fitted run, or on the
        validation split of one model), ``chosen`` (the rule the model predicts with) and, on the
        chosen row, ``estimate``: the honest accuracy of the choice (the winner's own score
        flatters it, having been the best of many on the same samples).

        Raises:
            ValueError: the strategy weighs no candidates (only MLA chooses its fusion).
        """
        check_is_fitted(self, "model_")
        from altmodal.data.table import pandas

        summary = self.metrics_.get("strategy_summary", {})
        if "fusion_scores" not in summary:
            strategy = self.model_.config.get("strategy")
            raise ConfigError(
                f"leaderboard: strategy {strategy!r} weighs no fusion candidates (mla chooses its fusion)"
            )
        scores = summary["fusion_scores"]
        rows = [
            {
                "candidate": name,
                "score": score,
                "chosen": name == summary["fusion"],
                "estimate": summary.get("fusion_estimate", np.nan) if name == summary["fusion"] else np.nan,
            }
            for name, score in scores.items()
        ]
        frame = pandas().DataFrame(rows).sort_values("score", ascending=False, kind="stable")
        return frame.reset_index(drop=True)

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
            named = column_map(self.columns)
            spec = as_column_map(named) if named is not None else None
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
        with torch_threads(threads_for(self._threads(), self.model_.strategy)):
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


def with_test_copy(
    arrays: dict[str, np.ndarray], split: np.ndarray, columns: Any, weights: np.ndarray | None = None
) -> Loaded:
    """The data with the validation samples repeated as the test split (a run needs one), and
    the samples' loss ``weights``."""
    val = np.flatnonzero(split == "val")
    rows = np.concatenate([np.arange(len(split)), val])
    kept = {k: (v if k == "classes" else v[rows]) for k, v in arrays.items()}
    dataset, _ = arrays_to_dataset(kept, "X")
    names = {m: [str(c) for c in cs] for m, cs in (columns or {}).items()}
    full = np.concatenate([split, np.full(len(val), "test")])
    kept_weights = None if weights is None else weights[rows]
    return Loaded(dataclasses.replace(dataset, columns=names, weights=kept_weights), full)


def loss_weights(
    labels: np.ndarray, classes: np.ndarray, codes: np.ndarray, class_weight: Any, sample_weight: Any
) -> np.ndarray | None:
    """(N,) each sample's loss weight, ``sample_weight`` times its class's ``class_weight``,
    scaled to mean 1; None when neither is given."""
    if class_weight is None and sample_weight is None:
        return None
    weights = np.ones(len(codes))
    if sample_weight is not None:
        try:
            given = np.asarray(sample_weight, dtype=np.float64) if not issparse(sample_weight) else None
        except (TypeError, ValueError) as err:
            raise DataError(f"sample_weight: not numbers ({err})") from err
        if given is None or given.shape != (len(codes),):
            shape = getattr(given if given is not None else sample_weight, "shape", None)
            raise DataError(f"sample_weight: give one number per sample ({len(codes)}; got shape {shape})")
        bad = np.flatnonzero(~np.isfinite(given) | (given < 0))
        if len(bad):
            raise DataError(f"sample_weight: row {int(bad[0])} is {given[bad[0]]}; weights are finite and >= 0")
        weights = given
    if class_weight is not None:
        if isinstance(class_weight, Mapping):
            known = classes.tolist()
            unknown = [k for k in class_weight if k not in set(known)]
            if unknown:
                raise DataError(f"class_weight: {unknown[0]!r} is not a label of y ({', '.join(map(repr, known))})")
        elif class_weight != "balanced":
            raise ConfigError(f"class_weight must be 'balanced', a dict label -> weight or None (got {class_weight!r})")
        weights = weights * compute_class_weight(class_weight, classes=classes, y=labels)[codes]
    if not weights.sum() > 0:
        raise DataError("sample_weight: every weight is zero; give some sample a positive weight")
    return weights / weights.mean()


def aliased(name: str, value: Any, old: str, old_value: Any, old_default: Any) -> Any:
    """A parameter known by its scikit-learn ``name`` and an ``old`` one: ``value`` when given (not
    None), else ``old_value``; both given and different is refused."""
    if value is None:
        return old_value
    if old_value != old_default and old_value != value:
        raise ConfigError(f"{name}={value!r} and {old}={old_value!r} disagree; give one of them")
    return value


@contextlib.contextmanager
def logged(verbose: int) -> Iterator[None]:
    """With ``verbose``, the ``altmodal`` logger's INFO lines reach stderr when no logging is
    configured (as scikit-learn's verbose estimators print)."""
    logger = logging.getLogger("altmodal")
    if not verbose or logger.hasHandlers():
        yield
        return
    handler, level = logging.StreamHandler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


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
