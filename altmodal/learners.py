"""Classical learners beside the networks: linear models, boosted trees and kernel machines.

On feature data the strongest single learners are often not networks. A learner here is a
scikit-learn estimator fitted on the rows of one modality or of all of them joined, tuned only on
the rows it is fitted on (inner cross-validation, or the boosting's own early stopping), and it
predicts (N, C) log-probabilities. Three kinds (:data:`KINDS`):

- ``linear``: multinomial logistic regression, its L2 strength chosen on the validation share;
- ``boosted``: gradient-boosted trees (LightGBM, :class:`Trees`), their number chosen by early
  stopping on the validation share; absent inputs are NaN, which the trees route natively;
- ``svm``: an RBF support-vector machine (:class:`Kernel`), C chosen on the validation share,
  whose scores a logistic regression fitted on that share turns into probabilities; on the
  joined features only, and only where its kernel is affordable (:func:`affordable`).

The validation share is a cross-fitted member's own (the rows its networks stop on); a learner
fitted without one (a reference row) tunes on 3 inner folds (the trees: on an inner fifth; the
reference SVM keeps its raw scores, which rank the classes as well).
Inputs are the model's own inputs: standardised features, so the linear and kernel learners fill
an absent modality with 0, the training mean (mean imputation).

They meet the networks in two places only. In a cross-fitted run (:mod:`altmodal.bagging`) each
member's rows train a linear learner per modality and one of each kind on the joined features; their
predictions on the fold the member never saw join the networks' as candidates and as columns of
the stacked fusion. In the benchmark, a learner on the joined features is a reference row
(:mod:`altmodal.reference`). Nothing is pickled: boosted trees are saved as LightGBM's text model,
the others in the skops format (arrays and JSON; the SVM as its support vectors and its
calibration), loaded back only if every type it names is one of :data:`TRUSTED`.
"""

from __future__ import annotations

import itertools
import json
import time
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from altmodal.threads import torch_threads

KINDS = ("linear", "boosted", "svm")
JOINED = "*"
"""The name part of a learner on every modality joined (``*:<kind>``: no modality can be called so)."""
TREES = 1500
"""At most this many trees in a boosted learner (iterations times classes, at least 20 iterations):
its cost and its size on disk stay bounded with many classes."""
KERNEL_BUDGET = 1e9
"""The SVM learner is trained where its rows squared times its input width is at most this (about
half a second per fit on one core): an RBF kernel's cost grows with both, and on a few thousand
rows of thousands of term counts it would dominate the run (citeseer, 2,484 x 7,015: 25 s per
fit, 20 fits per run)."""
CS = (0.1, 1.0, 10.0, 100.0)
"""The SVMs' strengths tried, on the validation share or by inner CV."""
THREADS = 1
"""Threads of a member's learners. Their problems are small: on two threads (two cores, one of
them busy) each linear learner of a 3sources member took 0.7-1.0 s instead of 0.1-0.2 s (a
member's learners 3.6-4.4 s instead of 1.4-1.6 s), and an acm member's 14.0 s instead of 13.2 s."""

SPARSE = 0.25
"""The linear learners fit a sparse matrix where at most this share of the (shifted) inputs is nonzero
(a pass over the rows then costs less than over the dense array) ..."""
SPARSE_CELLS = 5e6
"""... and the inputs have at least this many cells (rows x columns): a dense fit of fewer takes
under half a second on one core."""
TRUSTED = (
    "sklearn.model_selection._split.StratifiedKFold",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
)
"""The types a saved skops learner may name besides those skops trusts by default (scikit-learn's
estimators, numpy arrays): the inner folds, and the trees of the boosted learners that runs saved
before they were LightGBM's (scikit-learn's histogram boosting, still loaded). Any other type
refuses to load."""


def require_sklearn() -> None:
    try:
        import sklearn  # noqa: F401
        import skops  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"classical learners need scikit-learn and skops ({err.name} is missing): pip install scikit-learn skops"
        ) from err


def learner_names(modalities: Sequence[str], kinds: Sequence[str]) -> list[str]:
    """Every learner a cross-fitted run trains: ``<modality>:linear`` for each modality, then
    ``*:<kind>`` on the joined features (with two or more modalities). Boosted trees and the SVM
    are trained on the joined features only: one per modality would multiply the trees and support
    vectors a run stores and predicts with by the number of modalities."""
    if len(modalities) == 1:
        return [f"{modalities[0]}:{k}" for k in kinds]
    return [f"{m}:linear" for m in modalities if "linear" in kinds] + [f"{JOINED}:{k}" for k in kinds]


def covered(name: str, modalities: Sequence[str]) -> list[str]:
    """The modalities learner ``name`` reads."""
    part = name.rpartition(":")[0]
    return list(modalities) if part == JOINED else [part]


def joined_inputs(
    inputs: Mapping[str, Any], present: Mapping[str, Any], modalities: Sequence[str], kind: str
) -> np.ndarray:
    """(N, D) the modalities' flattened inputs side by side; an absent modality's block is NaN
    for boosted trees (their native missing values) and 0 (the standardised mean) otherwise."""
    blocks = []
    for m in modalities:
        x = np.asarray(inputs[m], dtype=np.float32).reshape(len(present[m]), -1).copy()
        x[~np.asarray(present[m], dtype=bool)] = np.nan if kind == "boosted" else 0.0
        blocks.append(x)
    return np.concatenate(blocks, axis=1)


def affordable(kind: str, rows: int, width: int) -> bool:
    """Whether a learner of ``kind`` on ``rows`` x ``width`` inputs is trained (the SVM: within
    :data:`KERNEL_BUDGET`)."""
    return kind != "svm" or rows * rows * width <= KERNEL_BUDGET


def tree_limits(label: np.ndarray) -> tuple[int, int, bool]:
    """What bounds a boosted learner on rows of ``label``: its most iterations (a tree per class
    and iteration: :data:`TREES` in all, 20 to 300 iterations), its fewest samples per leaf, and
    whether every class has the 5 samples an early-stopping share needs."""
    counts = np.bincount(label)[np.unique(label)]
    most = int(np.clip(TREES // max(len(counts), 1), 20, 300))
    return most, max(2, min(20, len(label) // 50)), bool(counts.min() >= 5)


def _share(held: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The rows fitted on and the rows ``held`` to tune on, or None when ``held`` leaves either empty."""
    if held is None or not held.any() or held.all():
        return None
    return np.flatnonzero(~held), np.flatnonzero(held)


def _inner_folds(label: np.ndarray, seed: int) -> Any:
    from sklearn.model_selection import StratifiedKFold

    smallest = int(np.bincount(label)[np.unique(label)].min())
    return StratifiedKFold(max(2, min(3, smallest)), shuffle=True, random_state=seed) if smallest >= 2 else None


def estimator(kind: str, label: np.ndarray, seed: int, held: np.ndarray | None = None) -> Any:
    """An unfitted estimator of ``kind``, its tuning inside: on the rows ``held`` ((N,) bool, a
    validation share of the rows it is fitted on) where given, else by inner CV (or, for trees, on
    an inner fifth)."""
    require_sklearn()
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    share = _share(held)
    folds = _inner_folds(label, seed) if share is None else [share]  # fitted on the rest, scored on the share
    if kind == "linear":
        if folds is None:
            return LogisticRegression(C=1.0, max_iter=300)
        return LogisticRegressionCV(
            Cs=[1e-2, 1e-1, 1.0, 10.0], cv=folds, max_iter=100, tol=1e-3, scoring="neg_log_loss"
        )  # (L-BFGS stopped early: the last digits of a weight change no prediction)
    if kind == "boosted":
        return Trees(seed, held)
    if kind == "svm":
        if share is not None:
            return Kernel(held)
        svm = SVC(kernel="rbf", gamma="scale")
        return svm if folds is None else GridSearchCV(svm, {"C": list(CS)}, cv=folds)
    raise ValueError(f"unknown learner {kind!r}; learners: {', '.join(KINDS)}")


def fit(
    kind: str,
    x: np.ndarray,
    label: np.ndarray,
    seed: int,
    model: Any = None,
    held: np.ndarray | None = None,
    sparse: bool = False,
    weight: np.ndarray | None = None,
) -> Any:
    """``kind`` (or the unfitted ``model``) fitted on (N, D) ``x`` and (N,) ``label`` on the run's
    thread count, quietly (convergence warnings of a tuning grid's extreme strengths say nothing
    about the chosen one); with ``sparse``, a linear model on a sparse form of ``x`` where that
    pays (:func:`sparse_shift`); with ``weight`` ((N,) per-sample loss weights), every fit weighs
    its rows by them."""
    from threadpoolctl import threadpool_limits

    model = estimator(kind, label, seed, held) if model is None else model
    shift = sparse_shift(x) if sparse and kind == "linear" else None
    weighed = {} if weight is None else {"sample_weight": np.asarray(weight, dtype=np.float64)}
    with warnings.catch_warnings(), threadpool_limits(torch.get_num_threads()):
        warnings.simplefilter("ignore")
        if shift is None:
            model.fit(x, label, **weighed)
        else:  # the same problem on sparse rows: the shift moves into the (unpenalised) intercept
            from scipy.sparse import csr_matrix

            model.fit(csr_matrix(x - shift), label, **weighed)
            model.intercept_ = model.intercept_ - model.coef_ @ shift
    return model


def sparse_shift(x: np.ndarray) -> np.ndarray | None:
    """(D,) each column's median, where ``x`` has :data:`SPARSE_CELLS` and less its medians is at most
    :data:`SPARSE` nonzero (standardised counts, whose median is the standardised zero), else None.
    A linear model fitted on ``x - shift`` with a free intercept fits the same linear function of ``x``
    (its intercept less ``coef @ shift``), and a sparse matrix makes each pass over the rows cost its
    nonzeros only."""
    if x.ndim != 2 or x.size < SPARSE_CELLS:
        return None
    shift = np.median(x, axis=0)
    return shift if np.count_nonzero(x != shift) <= SPARSE * x.size else None


class Trees:
    """Gradient-boosted trees (LightGBM; softmax over the classes seen, leaves of 15, 63 bins,
    L2 1): at most :data:`TREES` trees, their number chosen by early stopping on the rows ``held``
    where given, else on a stratified fifth of the rows when every class has 5 of them (else 50
    iterations at most). NaN is a missing value, routed natively. Kept as LightGBM's text model:
    :meth:`text` and :meth:`from_text` save and load it."""

    def __init__(self, seed: int = 0, held: np.ndarray | None = None):
        self.seed = seed
        self.held = held

    def fit(self, x: np.ndarray, label: np.ndarray, sample_weight: np.ndarray | None = None) -> Trees:
        """Fit on the rows of ``x``, each weighing ``sample_weight`` in the trees' loss (the early
        stopping's log-loss on the held rows stays unweighted)."""
        import lightgbm
        from sklearn.model_selection import train_test_split

        self.classes_ = np.unique(label)
        y = np.searchsorted(self.classes_, label)
        most, leaf, can_stop = tree_limits(label)
        params = {
            "objective": "multiclass",
            "num_class": len(self.classes_),
            "num_leaves": 15,
            "max_bin": 63,  # (255 fitted 1.5-2.5x slower on dense views, at the same held-out log-loss)
            "learning_rate": 0.1,
            "min_data_in_leaf": leaf,
            "lambda_l2": 1.0,
            "num_threads": torch.get_num_threads(),
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "verbose": -1,
        }
        share = _share(self.held)
        if share is None and can_stop:  # a stopping share with every class in it
            share = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=self.seed)
        if share is not None:
            fits, stops = share
            weight = None if sample_weight is None else sample_weight[fits]
            rows = lightgbm.Dataset(x[fits], y[fits], weight=weight, params=params)
            scored = lightgbm.Dataset(x[stops], y[stops], reference=rows)
            stop = lightgbm.early_stopping(10, verbose=False)
            self.booster_ = lightgbm.train(params, rows, most, valid_sets=[scored], callbacks=[stop])
        else:
            rows = lightgbm.Dataset(x, y, weight=sample_weight, params=params)
            self.booster_ = lightgbm.train(params, rows, min(most, 50))
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        best = self.booster_.best_iteration
        return np.asarray(self.booster_.predict(x, num_iteration=best if best > 0 else None))

    def text(self) -> bytes:
        """The classes and LightGBM's text model of the trees kept (up to the best iteration)."""
        return json.dumps({"classes": self.classes_.tolist(), "trees": self.booster_.model_to_string()}).encode()

    @classmethod
    def from_text(cls, data: bytes, source: str) -> Trees:
        """What :meth:`text` wrote; anything else is a ValueError naming ``source``."""
        import lightgbm

        try:
            saved = json.loads(data)
            trees = cls()
            trees.classes_ = np.asarray(saved["classes"], dtype=np.int64)
            trees.booster_ = lightgbm.Booster(model_str=saved["trees"])
        except (ValueError, KeyError, TypeError, lightgbm.basic.LightGBMError) as err:
            raise ValueError(f"{source}: the saved trees cannot be read ({type(err).__name__}: {err})") from err
        if trees.booster_.num_model_per_iteration() != len(trees.classes_):
            raise ValueError(f"{source}: the saved trees do not answer for their {len(trees.classes_)} classes")
        return trees


class Kernel:
    """An RBF support-vector machine with probabilities: one SVM per strength of :data:`CS`
    (``gamma="scale"``) fitted on the rows not ``held``, the one most accurate on the rows held
    kept, and its one-vs-rest scores on those rows fitted to the labels by a multinomial logistic
    regression (Platt's scaling, for every class at once), which turns any row's scores into
    probabilities. It needs rows on both sides of ``held`` (:func:`estimator` gives it a validation
    share; without one, the SVM is scikit-learn's, tuned by inner CV)."""

    def __init__(self, held: np.ndarray | None = None):
        self.held = held

    def fit(self, x: np.ndarray, label: np.ndarray, sample_weight: np.ndarray | None = None) -> Kernel:
        """Fit on the rows of ``x``, each weighing ``sample_weight`` in the SVMs' and the
        calibration's loss (the choice of C by accuracy on the held rows stays unweighted)."""
        from sklearn.svm import SVC

        share = _share(self.held)
        if share is None:
            raise ValueError("the SVM learner tunes on held rows: give it a validation share of some of its rows")
        fits, tunes = share
        weight = np.ones(len(label)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        fits = fits[weight[fits] > 0]  # (libsvm drops rows weighing 0, and a class with them that scikit-learn counts)
        best = -1.0
        for c in CS:
            svm = SVC(C=c, kernel="rbf", gamma="scale").fit(x[fits], label[fits], sample_weight=weight[fits])
            hit = float((svm.predict(x[tunes]) == label[tunes]).mean())
            if hit > best:  # (a tie keeps the smaller C)
                best, self.svm = hit, svm
        self.calibration = _calibrated(self.svm, x[tunes], label[tunes], weight[tunes])
        self.classes_ = self.calibration.classes_
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.calibration.predict_proba(_scores(self.svm, x)))

    def parts(self) -> dict[str, Any]:
        """The SVM and its calibration, as saved."""
        return {"svm": self.svm, "calibration": self.calibration}

    @classmethod
    def from_parts(cls, parts: Mapping[str, Any], source: str) -> Kernel:
        """What :meth:`parts` gave; anything else is a ValueError naming ``source``."""
        if not isinstance(parts, Mapping) or sorted(parts) != ["calibration", "svm"]:
            raise ValueError(f"{source}: not an SVM and its calibration")
        kernel = cls()
        kernel.svm, kernel.calibration = parts["svm"], parts["calibration"]
        kernel.classes_ = kernel.calibration.classes_
        return kernel


def _scores(svm: Any, x: np.ndarray) -> np.ndarray:
    """(N, classes) an SVM's one-vs-rest scores (two classes: the one score, negated for the first)."""
    scores = svm.decision_function(x)
    return np.stack([-scores, scores], axis=1) / 2 if scores.ndim == 1 else scores


def _calibrated(svm: Any, x: np.ndarray, label: np.ndarray, weight: np.ndarray) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=300).fit(_scores(svm, x), label, sample_weight=weight)


def log_proba(model: Any, x: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, C) log-probabilities of a fitted learner over all C classes (a class it never saw
    gets a tiny probability). An SVM's one-vs-rest scores stand in for log-probabilities."""
    classes = np.asarray(model.classes_, dtype=np.int64)
    columns = getattr(model, "columns_", None)
    x = x if columns is None else x[:, columns]
    out = np.full((len(x), num_classes), -20.0, dtype=np.float32)
    if len(x) == 0:
        return out
    if hasattr(model, "predict_proba") and not _is_svm(model):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proba = np.clip(model.predict_proba(x), 1e-9, 1.0)
        out[:, classes] = np.log(proba / proba.sum(axis=1, keepdims=True))
        return out
    out[:, classes] = _scores(model, x)
    return out


def _is_svm(model: Any) -> bool:
    inner = getattr(model, "estimator", model)
    return type(inner).__name__ == "SVC"


def dumps(models: Any) -> bytes:
    """Fitted linear or kernel learners (any nesting of lists and dicts) in the skops format,
    deflated at zlib's fastest level: a 3sources member's learners in 0.19 s instead of 0.48 s at
    the default level, for 5.40 MB instead of 5.04 (the arrays are floats, which deflate little)."""
    require_sklearn()
    import skops.io as sio

    return sio.dumps(models, compression=zipfile.ZIP_DEFLATED, compresslevel=1)  # type: ignore[no-any-return]


def loads(data: bytes, source: str) -> Any:
    """What :func:`dumps` wrote. Refused, with a message naming ``source``, when the data names
    a type outside :data:`TRUSTED`: nothing of it is built, no code of it runs."""
    require_sklearn()
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as err:  # a damaged or foreign file: skops raises what its parser meets
        raise ValueError(f"{source}: the saved learners cannot be read ({type(err).__name__}: {err})") from err
    refused = [t for t in untrusted if t not in TRUSTED]
    if refused:
        raise ValueError(f"{source}: the saved learners name a type that is not allowed ({refused[0]}); not loaded")
    return sio.loads(data, trusted=list(untrusted))


class Learners(nn.Module):
    """The learners of a cross-fitted run: for each member, one fitted learner per name of
    :func:`learner_names`, saved inside the model's state (``learners._extra_state``: the skops
    bytes as a uint8 tensor).

    Args:
        names: the learners, ``<modality>:<kind>`` or ``*:<kind>``.
        modalities: the model's modalities, in order.
        num_classes: C.
    """

    def __init__(self, names: Sequence[str], modalities: Sequence[str], num_classes: int):
        super().__init__()
        self.names = list(names)
        self.modalities = list(modalities)
        self.num_classes = num_classes
        self.fitted: list[dict[str, Any]] = []
        """Per member: name -> fitted estimator."""
        self.saved: dict[int, dict[str, bytes]] = {}
        """Member index -> name -> its learners' saved bytes, where made already (beside the fit)."""

    def fit_member(
        self,
        inputs: Mapping[str, Any],
        present: Mapping[str, Any],
        label: np.ndarray,
        seed: int,
        held: np.ndarray | None = None,
        weights: np.ndarray | None = None,
        take: Callable[[int], bool] | None = None,
        backwards: bool = False,
    ) -> None:
        """Fit the learners on one member's rows (a learner only on the rows that have each
        modality it reads; a linear one on a sparse form of wide sparse inputs), tuned on the rows
        ``held`` (its validation share) where given, each row weighing ``weights`` (the run's
        per-sample loss weights) where given, and keep them as the next member's: every learner,
        or (``take``) those whose position in ``names`` ``take`` accepts, asked just before each
        fit, in the order of ``names`` or ``backwards``. A learner's fit depends on its position,
        not on which others are fitted, nor in what order."""
        label = np.asarray(label, dtype=np.int64)
        held = None if held is None else np.asarray(held, dtype=bool)
        weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        fitted = {}
        positions = range(len(self.names))
        for i in reversed(positions) if backwards else positions:
            if take is not None and not take(i):
                continue
            name, kind = self.names[i], self.names[i].rpartition(":")[2]
            rows = np.all([np.asarray(present[m], dtype=bool) for m in covered(name, self.modalities)], axis=0)
            share = None if held is None else held[rows]
            weight = None if weights is None else weights[rows]
            x, y = self.inputs_of(inputs, present, [name])[name][rows], label[rows]
            fitted[name] = fit(kind, x, y, seed + 7919 * i, held=share, sparse=True, weight=weight)
        self.fitted.append({n: fitted[n] for n in self.names if n in fitted})

    def inputs_of(
        self, inputs: Mapping[str, Any], present: Mapping[str, Any], names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """name -> (N, D) what each learner (of ``names``, default all) reads (:func:`joined_inputs`
        of its modalities)."""
        host = {m: _host(inputs[m]) for m in self.modalities}
        masks = {m: _host(present[m]) for m in self.modalities}
        return {
            n: joined_inputs(host, masks, covered(n, self.modalities), n.rpartition(":")[2])
            for n in (self.names if names is None else names)
        }

    def log_probs(self, inputs: Mapping[str, Any], present: Mapping[str, Any]) -> dict[str, Tensor]:
        """name -> (N, C) the mean over members of their learners' log-probabilities."""
        reads = self.inputs_of(inputs, present)  # once for all members
        parts = [self._answers(member, reads) for member in self.fitted]
        return {n: torch.stack([p[n] for p in parts]).mean(dim=0) for n in self.names}

    def _answers(self, member: Mapping[str, Any], reads: Mapping[str, np.ndarray]) -> dict[str, Tensor]:
        return {n: torch.from_numpy(log_proba(model, reads[n], self.num_classes)) for n, model in member.items()}

    def present(self, present: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """name -> (N,) whether the learner has every modality it reads."""
        return {n: torch.stack([present[m] for m in covered(n, self.modalities)]).all(dim=0) for n in self.names}

    def get_extra_state(self) -> Tensor:
        made = [self.saved.get(k, {}) for k in range(len(self.fitted))]
        blobs = [made[k].get(n) or _saved(member[n]) for k, member in enumerate(self.fitted) for n in self.names]
        return torch.frombuffer(bytearray(pack(blobs)), dtype=torch.uint8)

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, Tensor) or state.dtype != torch.uint8 or state.dim() != 1:
            raise ValueError("the saved learners are not a byte tensor; the model file is damaged")
        blobs = unpack(state.cpu().numpy().tobytes(), "the model's learners")
        if not self.names or len(blobs) % len(self.names):
            raise ValueError(f"the saved learners are not one of each of {', '.join(self.names)} per member")
        fitted = [_loaded(blob, self.names[i % len(self.names)]) for i, blob in enumerate(blobs)]
        step = len(self.names)
        self.fitted = [dict(zip(self.names, fitted[k : k + step])) for k in range(0, len(fitted), step)]
        self.saved = {k // step: dict(zip(self.names, blobs[k : k + step])) for k in range(0, len(blobs), step)}


def fit_elsewhere(
    learners: Learners,
    rows: tuple[Mapping[str, Any], Mapping[str, Any], np.ndarray],
    seed: int,
    held: np.ndarray | None,
    weights: np.ndarray | None,
    asked: tuple[Mapping[str, Any], Mapping[str, Any]],
    take: Callable[[int], bool] | None = None,
    backwards: bool = False,
) -> tuple[dict[str, Any], dict[str, bytes], dict[str, np.ndarray], float]:
    """One member's learners (those ``take`` accepts, see :meth:`Learners.fit_member`), fitted as
    :meth:`Learners.fit_member` fits them (on ``rows``: the member's inputs, presence and labels)
    by a copy of ``learners`` on :data:`THREADS` thread, their saved bytes (as the model file holds
    them), their log-probabilities on ``asked`` (the inputs and presence of the member's held-out
    fold) and the seconds all that took: a task that needs no network, for a second process while
    the networks train."""
    started = time.perf_counter()
    own = Learners(learners.names, learners.modalities, learners.num_classes)
    with torch_threads(THREADS):
        own.fit_member(*rows, seed, held, weights, take, backwards)
        fitted = own.fitted[0]
        answer = {n: v.numpy() for n, v in own._answers(fitted, own.inputs_of(*asked, names=list(fitted))).items()}
        saved = {n: _saved(m) for n, m in fitted.items()}
    return fitted, saved, answer, time.perf_counter() - started


def _saved(model: Any) -> bytes:
    if isinstance(model, Trees):
        return model.text()
    return dumps(model.parts() if isinstance(model, Kernel) else model)


def _loaded(data: bytes, name: str) -> Any:
    source = f"the model's learner {name}"
    if name.endswith(":boosted") and not data.startswith(b"PK"):  # (a skops file is a zip)
        return Trees.from_text(data, source)
    model = loads(data, source)
    return Kernel.from_parts(model, source) if isinstance(model, Mapping) else model


def pack(blobs: Sequence[bytes]) -> bytes:
    """Byte strings one after the other, behind a JSON list of their lengths (8 bytes give the
    list's own length)."""
    header = json.dumps([len(b) for b in blobs]).encode()
    return len(header).to_bytes(8, "little") + header + b"".join(blobs)


def unpack(data: bytes, source: str) -> list[bytes]:
    """What :func:`pack` joined; anything else is a ValueError naming ``source``."""
    size = int.from_bytes(data[:8], "little")
    try:
        lengths = json.loads(data[8 : 8 + size])
    except ValueError:
        lengths = None
    if not isinstance(lengths, list) or not all(isinstance(n, int) and n >= 0 for n in lengths):
        raise ValueError(f"{source}: not a packed list of saved learners; the model file is damaged")
    if 8 + size + sum(lengths) != len(data):
        raise ValueError(f"{source}: the packed learners do not add up to the file's length; the model file is damaged")
    ends = np.cumsum([8 + size, *lengths])
    return [data[int(a) : int(b)] for a, b in itertools.pairwise(ends)]


def rows_of(datasets: Sequence[Any]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """The inputs, presence masks and labels of the rows of these datasets
    (:class:`~altmodal.data.dataset.MultimodalDataset` views), one after the other."""
    rows = [d.rows for d in datasets]
    first = datasets[0]
    inputs = {m: np.concatenate([np.asarray(d.arrays[m][r]) for d, r in zip(datasets, rows)]) for m in first.modalities}
    present = {
        m: np.concatenate([np.asarray(d.present[m])[r] for d, r in zip(datasets, rows)]) for m in first.modalities
    }
    return inputs, present, np.concatenate([d.labels[r] for d, r in zip(datasets, rows)])


def weights_of(datasets: Sequence[Any]) -> np.ndarray | None:
    """The per-sample loss weights of the rows of these dataset views, one after the other (as
    :func:`rows_of`), or None where the data are unweighted."""
    if all(d.weights is None for d in datasets):
        return None
    return np.concatenate([np.ones(len(d.rows)) if d.weights is None else d.weights[d.rows] for d in datasets])


def _host(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


__all__ = [
    "KINDS",
    "Kernel",
    "Learners",
    "Trees",
    "affordable",
    "dumps",
    "fit",
    "fit_elsewhere",
    "joined_inputs",
    "learner_names",
    "loads",
    "log_proba",
]
