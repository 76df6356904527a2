"""Reference rows: what a user tries first, scikit-learn on the joined features.

A benchmark row ``sklearn:<kind>`` (``linear``, ``svm``: :mod:`altmodal.learners`; ``boosted``:
scikit-learn's histogram gradient boosting, :func:`hist_boosting`) fits one learner on every
modality's features side by side, on the run's development samples (its training and validation
splits together: the learner tunes itself by inner cross-validation or early stopping on them),
on the same split, standardisation and seed as every strategy's run. It
reports what a strategy's run reports: test accuracy and macro-F1, each modality alone (the same
learner on that modality's features only) and, at each test-time missing rate, accuracy with the
masks :func:`~altmodal.experiment.evaluate_run` draws, with the handling a user would choose:
native missing values for boosted trees, mean imputation (0 after standardisation) for the others.
The run folder holds ``metrics.json`` and ``missing.json`` (no model is saved: the row is a
measurement), so a finished row is skipped on a re-run like any other.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from altmodal.data.registry import load_splits
from altmodal.data.splits import missing_mask, missing_summary
from altmodal.learners import KINDS, fit, joined_inputs, log_proba, rows_of, tree_limits
from altmodal.metrics import macro_f1
from altmodal.runs import Run
from altmodal.settings import RunConfig

PREFIX = "sklearn:"
"""How a reference row is named among the benchmark's strategies (``sklearn:linear``)."""
ROWS = tuple(f"{PREFIX}{k}" for k in KINDS)
WIDEST_BOOSTED = 1000
"""The ``boosted`` row sees at most this many input columns: on wider inputs (thousands of term
counts) the columns whose class means differ most on its own rows (the ANOVA F statistic), which
bounds its cost."""


def reference_kind(label: str) -> str:
    """``linear`` for ``sklearn:linear`` ('' for a strategy); an unknown kind is an error."""
    if not label.startswith(PREFIX):
        return ""
    kind = label[len(PREFIX) :]
    if kind not in KINDS:
        raise ValueError(f"unknown reference row {label!r}; reference rows: {', '.join(ROWS)}")
    return kind


def scores(label: np.ndarray, logits: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy and macro-F1 of (N, C) ``logits`` against (N,) ``label``."""
    import torch

    return {
        "accuracy": float((logits.argmax(axis=1) == label).mean()) if len(label) else float("nan"),
        "macro_f1": macro_f1(torch.from_numpy(logits), torch.from_numpy(label), num_classes),
    }


def run_reference(config: RunConfig, kind: str, path: str | Path, rates: Sequence[float]) -> dict[str, Any]:
    """Fit (or read back) the reference row ``kind`` of ``config``'s data and seed in ``path``;
    ``{"metrics": ..., "missing": rate -> fused metrics}`` as a strategy's benchmark cell."""
    run = Run(Path(path))
    if run.has("metrics.json") and run.has("missing.json"):
        return {"metrics": run.read_json("metrics.json"), "missing": run.read_json("missing.json")}
    seed = config.train.seed
    splits = load_splits(config.data, seed)
    modalities, num_classes = splits.modalities, splits.num_classes
    inputs, present, label = rows_of([splits.train, splits.val])
    test_inputs, test_present, test_label = rows_of([splits.test])
    started = time.perf_counter()
    model = _fit_on(kind, modalities, inputs, present, label, seed)
    seconds = time.perf_counter() - started
    unimodal = {}
    for m in modalities:
        alone = _fit_on(kind, [m], inputs, present, label, seed)
        rows = test_present[m]
        answer = _answer(alone, kind, [m], test_inputs, test_present, num_classes)
        unimodal[m] = scores(test_label[rows], answer[rows], num_classes)
    fused = scores(test_label, _answer(model, kind, modalities, test_inputs, test_present, num_classes), num_classes)
    missing = {}
    for rate in rates:
        rows = splits.test.rows
        masks = missing_mask(splits.test.present, rows, rate, seed + 1, config.data.missing_protocol)
        dropped = {m: np.asarray(masks[m])[rows] & test_present[m] for m in modalities}
        answer = _answer(model, kind, modalities, test_inputs, dropped, num_classes)
        missing[f"{rate:g}"] = {**scores(test_label, answer, num_classes), "missing": missing_summary(masks, rows)}
    metrics = {
        "dataset": config.data.dataset,
        "strategy": f"{PREFIX}{kind}",
        "seed": seed,
        "modalities": modalities,
        "test": {"fused": fused, "unimodal": unimodal},
        "train_seconds": seconds,
    }
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_json("missing.json", missing)
    run.write_json("metrics.json", metrics)
    return {"metrics": metrics, "missing": missing}


def _fit_on(
    kind: str,
    modalities: Sequence[str],
    inputs: Mapping[str, np.ndarray],
    present: Mapping[str, np.ndarray],
    label: np.ndarray,
    seed: int,
) -> Any:
    """``kind`` fitted on the rows that have every one of ``modalities``."""
    rows = np.all([present[m] for m in modalities], axis=0)
    x, label = joined_inputs(inputs, present, modalities, kind)[rows], label[rows]
    if kind != "boosted":
        return fit(kind, x, label, seed)
    columns = screened(x, label) if x.shape[1] > WIDEST_BOOSTED else None
    model = fit(kind, x if columns is None else x[:, columns], label, seed, hist_boosting(label, seed))
    model.columns_ = columns  # read by log_proba
    return model


def hist_boosting(label: np.ndarray, seed: int) -> Any:
    """scikit-learn's histogram gradient boosting, its number of trees chosen by early stopping on
    an inner fifth of the rows when every class has 5 of them (:func:`~altmodal.learners.tree_limits`)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    most, leaf, stops = tree_limits(label)
    return HistGradientBoostingClassifier(
        max_iter=most if stops else min(most, 50),
        early_stopping=stops,
        validation_fraction=0.2,
        n_iter_no_change=10,
        max_leaf_nodes=15,
        min_samples_leaf=leaf,
        l2_regularization=1.0,
        random_state=seed,
    )


def screened(x: np.ndarray, label: np.ndarray) -> np.ndarray:
    """The :data:`WIDEST_BOOSTED` columns of ``x`` with the largest ANOVA F statistic against
    ``label`` (constant columns last), in their order."""
    from sklearn.feature_selection import f_classif

    if len(np.unique(label)) < 2:
        return np.arange(WIDEST_BOOSTED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant columns: their F is NaN, ranked last below
        f = np.nan_to_num(f_classif(np.nan_to_num(x), label)[0], nan=-1.0, posinf=np.finfo(np.float64).max)
    return np.sort(np.argsort(-f, kind="stable")[:WIDEST_BOOSTED])


def _answer(
    model: Any,
    kind: str,
    modalities: Sequence[str],
    inputs: Mapping[str, np.ndarray],
    present: Mapping[str, np.ndarray],
    num_classes: int,
) -> np.ndarray:
    return log_proba(model, joined_inputs(inputs, present, modalities, kind), num_classes)
