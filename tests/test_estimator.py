"""MultimodalClassifier: scikit-learn's estimator checks, and the forms of X and y users bring."""

import json
import logging
import pickle
import sys

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
pd = pytest.importorskip("pandas")

from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from altmodal import MultimodalClassifier, load_run  # noqa: E402
from altmodal.config import ConfigError  # noqa: E402
from altmodal.data.features import DataError  # noqa: E402

FAST = {"epochs": 8, "lr": 0.05, "options": {"hidden": (16,), "dim": 8, "folds": 1}}


WEIGHT_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data": "a network trained by mini-batch SGD, whose epoch is chosen on a "
    "validation split drawn from the samples: a weight of 2 is not a sample given twice",
    "check_class_weight_classifiers": "the epoch and the fusion rule are chosen on the unweighted validation "
    "accuracy: two epochs with classes weighed 1000 : 0.0001 do not turn 87% of the answers to the first class",
}


@parametrize_with_checks(
    [MultimodalClassifier(epochs=2, options={"folds": 1})], expected_failed_checks=lambda _: WEIGHT_CHECKS
)
def test_scikit_learn_estimator_checks(estimator, check, caplog):
    # One model: the default's five cross-fitted ones would take five times as long, and their
    # averaged probabilities of reordered samples agree only to float32 rounding (1.2e-7 relative,
    # just above the check's 1e-7; test_the_default_cross_fitted_model_is_order_invariant).
    with caplog.at_level(logging.ERROR):  # a one-modality X warns that MLA is multimodal
        check(estimator)


def two_modalities(n=160, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    return {"audio": rng.normal(size=(n, 4)) + y[:, None], "video": rng.normal(size=(n, 3)) + 0.5 * y[:, None]}, y


def as_frame(X):
    return pd.DataFrame({f"{m}__{j}": X[m][:, j] for m in X for j in range(X[m].shape[1])})


def test_a_dict_of_modalities_and_integer_labels(tmp_path):
    X, y = two_modalities()
    labels = np.array([10, 20, 30])[y]
    model = MultimodalClassifier(**FAST).fit(X, labels)
    assert list(model.classes_) == [10, 20, 30] and model.modalities_ == ["audio", "video"]
    predicted = model.predict(X)
    assert predicted.dtype == labels.dtype and model.score(X, labels) == (predicted == labels).mean() > 0.6
    probs = model.predict_proba(X)
    assert probs.shape == (160, 3) and np.allclose(probs.sum(axis=1), 1)
    assert (model.classes_[probs.argmax(axis=1)] == predicted).all()
    assert clone(model).get_params() == model.get_params() and not hasattr(clone(model), "model_")


def test_a_dataframe_by_prefix_and_a_series_of_strings():
    X, y = two_modalities()
    frame = as_frame(X)
    labels = pd.Series(np.array(["cat", "dog", "owl"])[y], name="animal")
    model = MultimodalClassifier(**FAST).fit(frame, labels)
    assert model.columns_ == {"audio": [f"audio__{j}" for j in range(4)], "video": [f"video__{j}" for j in range(3)]}
    assert list(model.feature_names_in_) == list(frame.columns) and model.n_features_in_ == 7
    assert set(model.predict(frame)) <= {"cat", "dog", "owl"} and model.score(frame, labels) > 0.6
    reordered = frame[frame.columns[::-1]]  # columns are read by name
    np.testing.assert_array_equal(model.predict_proba(reordered), model.predict_proba(frame))


def test_a_dataframe_with_a_column_map_and_absent_blocks():
    X, y = two_modalities()
    frame = as_frame(X).rename(columns={"video__0": "v_a", "video__1": "v_b", "video__2": "v_c"})
    frame.loc[:9, ["v_a", "v_b", "v_c"]] = np.nan  # the first ten rows lack video
    model = MultimodalClassifier(columns={"sound": "audio__*", "image": ["v_a", "v_b", "v_c"]}, **FAST)
    model.fit(frame, y)
    assert model.columns_ == {"sound": [f"audio__{j}" for j in range(4)], "image": ["v_a", "v_b", "v_c"]}
    assert model.predict_proba(frame).shape == (160, 3)
    nothing = frame.copy()
    nothing.loc[5, :] = np.nan
    with pytest.raises(DataError, match=r"X: row 5 has none of the modalities \(sound, image\); 1 rows cannot"):
        model.predict(nothing)
    broken = frame.copy()
    broken.loc[20, "v_b"] = np.nan
    with pytest.raises(DataError, match=r"X: row 20, column 'v_b': empty \(NaN\) while other columns"):
        model.predict(broken)


def test_an_array_split_into_modalities_in_a_pipeline():
    X, y = two_modalities()
    flat = np.hstack([X["audio"], X["video"]])
    pipeline = make_pipeline(
        StandardScaler(), MultimodalClassifier(columns={"a": [0, 1, 2, 3], "v": [4, 5, 6]}, **FAST)
    )
    scores = cross_val_score(pipeline, flat, y, cv=2)
    assert scores.shape == (2,) and scores.mean() > 0.5
    with pytest.raises(DataError, match=r"columns: modality 'v': 9 is not a column index of X \(0..6\)"):
        MultimodalClassifier(columns={"a": [0], "v": [9]}, **FAST).fit(flat, y)
    with pytest.raises(DataError, match="columns: column 1 is in two modalities, 'a' and 'v'"):
        MultimodalClassifier(columns={"a": [0, 1], "v": [1, 2]}, **FAST).fit(flat, y)


def test_joblib_pickle_save_and_load_run_agree(tmp_path):
    joblib = pytest.importorskip("joblib")
    X, y = two_modalities()
    model = MultimodalClassifier(**FAST).fit(as_frame(X), y)
    joblib.dump(model, tmp_path / "model.joblib")
    again = joblib.load(tmp_path / "model.joblib")
    np.testing.assert_array_equal(again.predict_proba(as_frame(X)), model.predict_proba(as_frame(X)))
    assert pickle.loads(pickle.dumps(model)).predict(as_frame(X)).dtype == y.dtype
    folder = model.save(tmp_path / "run")
    run = load_run(folder)
    np.testing.assert_allclose(run.predict_proba(as_frame(X)), model.predict_proba(as_frame(X)), rtol=1e-6)
    assert run.predict(X).dtype == np.int64
    back = MultimodalClassifier.from_run(folder)
    np.testing.assert_array_equal(back.predict(as_frame(X)), model.predict(as_frame(X)))
    assert back.get_params()["epochs"] == 8
    with pytest.raises(ConfigError, match="holds files already"):
        model.save(folder)


def test_from_run_wraps_a_command_line_run(tmp_path):
    from altmodal.cli import main

    X, y = two_modalities()
    table = as_frame(X).assign(label=np.array(["no", "yes", "maybe"])[y])
    table.to_csv(tmp_path / "t.csv", index=False)
    argv = ["train", "--dataset", str(tmp_path / "t.csv"), "--out", str(tmp_path / "run"), "--quiet", "--epochs", "2"]
    assert main(argv) == 0
    model = MultimodalClassifier.from_run(tmp_path / "run")
    assert list(model.classes_) == ["maybe", "no", "yes"]
    assert set(model.predict(table.drop(columns="label"))) <= {"maybe", "no", "yes"}


def test_a_given_folder_keeps_the_run_and_is_never_overwritten(tmp_path):
    X, y = two_modalities()
    folder = tmp_path / "keep"
    model = MultimodalClassifier(folder=folder, **FAST).fit(X, y)
    assert json.loads((folder / "metrics.json").read_text())["epochs"] == 8
    stamp = (folder / "metrics.json").stat().st_mtime_ns
    again = clone(model).fit(X, y)  # the same settings and data: the finished run is reused
    assert (folder / "metrics.json").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.predict_proba(X), model.predict_proba(X))
    other, _ = two_modalities(seed=1)
    with pytest.raises(ConfigError, match="holds a run with another config"):
        clone(model).fit(other, y)


def test_options_reach_the_run_and_clash_with_parameters():
    X, y = two_modalities()
    model = MultimodalClassifier("mla", epochs=2, options={"preset": "paper", "dim": 8, "hidden": (16,)}).fit(X, y)
    assert model.metrics_["options"]["test_fusion"] == "entropy"
    assert MultimodalClassifier("joint", epochs=2, threads=1, options={"fusion": "sum"}).fit(X, y).score(X, y) > 0
    with pytest.raises(ConfigError, match="options: set 'epochs' with the parameter epochs="):
        MultimodalClassifier(options={"epochs": 3}).fit(X, y)
    with pytest.raises(ConfigError, match="option 'fusion' belongs to strategy"):
        MultimodalClassifier("ume", epochs=1, options={"fusion": "sum"}).fit(X, y)
    with pytest.raises(ConfigError, match="columns= maps the columns of a DataFrame or 2-D array"):
        MultimodalClassifier(columns={"a": [0]}).fit(X, y)


def test_missing_extras_are_named(monkeypatch):
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if scikit-learn were not installed
    monkeypatch.delitem(sys.modules, "altmodal.estimator")
    with pytest.raises(ImportError, match=r"pip install 'altmodal\[sklearn\]'"):
        import altmodal.estimator  # noqa: F401
    monkeypatch.setitem(sys.modules, "pandas", None)
    from altmodal.data.table import pandas

    with pytest.raises(DataError, match=r"need pandas: pip install 'altmodal\[tables\]'"):
        pandas()


def test_the_default_cross_fitted_model_is_order_invariant():
    X, y = two_modalities(90)
    model = MultimodalClassifier(epochs=2).fit(X, y)
    assert len(model.model_.strategy.members) == 5
    order = np.random.default_rng(0).permutation(90)
    proba = model.predict_proba(X)
    shuffled = model.predict_proba({m: v[order] for m, v in X.items()})
    assert np.allclose(shuffled, proba[order], rtol=1e-5, atol=1e-7)


def test_random_state_and_n_jobs_are_seed_and_threads_by_scikit_learns_names():
    import os

    assert MultimodalClassifier(random_state=3)._seed() == 3 == MultimodalClassifier(seed=3)._seed()
    assert MultimodalClassifier(random_state=3, seed=3)._seed() == 3 and MultimodalClassifier()._seed() == 0
    with pytest.raises(ConfigError, match="random_state=3 and seed=4 disagree; give one of them"):
        MultimodalClassifier(random_state=3, seed=4)._seed()
    with pytest.raises(ConfigError, match="random_state must be an int or None"):
        MultimodalClassifier(random_state=np.random.RandomState(0))._seed()
    assert MultimodalClassifier(n_jobs=2)._threads() == 2 and MultimodalClassifier(threads=2)._threads() == 2
    assert MultimodalClassifier(n_jobs=-1)._threads() == os.cpu_count()
    assert MultimodalClassifier()._threads() == "auto"
    with pytest.raises(ConfigError, match="n_jobs=2 and threads=3 disagree"):
        MultimodalClassifier(n_jobs=2, threads=3)._threads()
    with pytest.raises(ConfigError, match="n_jobs must be a non-zero int or None"):
        MultimodalClassifier(n_jobs=0)._threads()
    X, y = two_modalities(90)
    model = MultimodalClassifier(random_state=5, n_jobs=1, **FAST).fit(X, y)
    assert model.metrics_["seed"] == 5 and clone(model).get_params()["random_state"] == 5
    same = MultimodalClassifier(seed=5, threads=1, **FAST).fit(X, y)
    np.testing.assert_array_equal(model.predict_proba(X), same.predict_proba(X))


def test_class_weight_and_sample_weight_reach_every_training_step(monkeypatch):
    from altmodal.strategies import Strategy

    X, y = two_modalities(90)
    y[:60] = 0  # class 0 dominates
    given = []
    original = Strategy.weighing

    def spy(self, weights, index):
        given.append(None if weights is None else weights.cpu().numpy())
        return original(self, weights, index)

    monkeypatch.setattr(Strategy, "weighing", spy)
    sample_weight = np.where(np.arange(90) % 2, 1.0, 3.0)
    MultimodalClassifier(class_weight="balanced", **FAST).fit(X, y, sample_weight=sample_weight)
    counts = np.bincount(y)
    expected = sample_weight * (90 / (3 * counts))[y]
    np.testing.assert_allclose(given[0][:90], expected / expected.mean(), rtol=1e-6)
    assert all(np.array_equal(w, given[0]) for w in given)
    given.clear()
    MultimodalClassifier(class_weight={1: 4.0}, **FAST).fit(X, y)
    np.testing.assert_allclose(given[0][:90], np.where(y == 1, 4.0, 1.0) / np.where(y == 1, 4.0, 1.0).mean())


def test_the_classical_learners_of_a_cross_fitted_run_fit_with_the_weights_of_their_rows(monkeypatch):
    from altmodal import learners

    X, y = two_modalities(90)
    y[:60] = 0
    given = []
    original = learners.fit

    def spy(kind, x, label, seed, model=None, held=None, sparse=False, weight=None):
        given.append((label, weight))
        return original(kind, x, label, seed, model, held, sparse, weight)

    monkeypatch.setattr(learners, "fit", spy)
    options = {**FAST["options"], "folds": 2, "learners": ("linear", "boosted")}
    params = {**FAST, "epochs": 1, "options": options, "n_jobs": 1}  # (one thread: the learners fit in this process)
    MultimodalClassifier(class_weight={1: 4.0}, **params).fit(X, y)
    assert len(given) == 2 * 4  # two members x (two modalities' linear, the joined linear and boosted)
    for label, weight in given:  # scaled to a mean of 1 over all samples: the ratio is the class weight's
        assert weight is not None and len(weight) == len(label)
        np.testing.assert_allclose(weight[label == 1] / weight[label != 1].max(), 4.0)


def test_a_class_weighed_zero_is_never_predicted_where_the_whole_model_is_weighted():
    X, y = two_modalities()
    for strategy, fusion in (("joint", {}), ("mla", {"test_fusion": "entropy"})):  # mla: no rule fitted unweighted
        params = {**FAST, "options": {**FAST["options"], **fusion}}
        model = MultimodalClassifier(strategy, class_weight={2: 0.0}, **params).fit(X, y)
        unweighted = MultimodalClassifier(strategy, **params).fit(X, y)
        assert not (model.predict(X) == 2).any() and (unweighted.predict(X) == 2).any()


def test_bad_weights_are_refused_in_one_line():
    X, y = two_modalities(90)
    cases = [
        ({}, {"sample_weight": np.ones(3)}, r"sample_weight: give one number per sample \(90; got shape \(3,\)\)"),
        ({}, {"sample_weight": -np.ones(90)}, r"sample_weight: row 0 is -1.0; weights are finite and >= 0"),
        ({}, {"sample_weight": ["heavy"] * 90}, "sample_weight: not numbers"),
        ({}, {"sample_weight": [[1.0]] * 90}, r"sample_weight: give one number per sample \(90; got shape \(90, 1\)\)"),
        ({}, {"sample_weight": np.zeros(90)}, "sample_weight: every weight is zero"),
        ({"class_weight": {7: 2.0}}, {}, r"class_weight: 7 is not a label of y \(0, 1, 2\)"),
        ({"class_weight": "even"}, {}, "class_weight must be 'balanced', a dict label -> weight or None"),
    ]
    for params, fit, message in cases:
        with pytest.raises(ValueError, match=message):
            MultimodalClassifier(**{**FAST, **params}).fit(X, y, **fit)


def test_verbose_logs_one_progress_line_per_epoch_and_the_leaderboard(caplog):
    X, y = two_modalities(90)
    options = {"hidden": (16,), "dim": 8, "folds": 2, "learners": ("none",)}
    with caplog.at_level(logging.INFO, logger="altmodal"):
        model = MultimodalClassifier(epochs=2, verbose=2, options=options).fit(X, y)
    lines = [r.getMessage() for r in caplog.records if r.name == "altmodal.estimator"]
    assert [line.split(", val")[0] for line in lines] == [
        "member 1/2, epoch 1/2",
        "member 1/2, epoch 2/2",
        "member 2/2, epoch 1/2",
        "member 2/2, epoch 2/2",
    ]
    assert all(" ETA " in line for line in lines) and lines[-1].endswith("ETA 0s")
    board = model.leaderboard()
    summary = model.metrics_["strategy_summary"]
    assert list(board.columns) == ["candidate", "score", "chosen", "estimate"]
    assert set(board["candidate"]) == set(summary["fusion_scores"]) and board["score"].is_monotonic_decreasing
    chosen = board[board["chosen"]]
    assert list(chosen["candidate"]) == [summary["fusion"]]
    assert chosen["estimate"].item() == summary["fusion_estimate"] and board["estimate"].isna().sum() == len(board) - 1
    joint = MultimodalClassifier("joint", epochs=1, options={"hidden": (16,), "dim": 8}).fit(X, y)
    with pytest.raises(ConfigError, match="leaderboard: strategy 'joint' weighs no fusion candidates"):
        joint.leaderboard()


def test_verbose_reaches_stderr_where_no_logging_is_configured(monkeypatch, capsys):
    from altmodal.estimator import logged

    logger = logging.getLogger("altmodal")
    monkeypatch.setattr(logging.Logger, "hasHandlers", lambda self: False)  # as in a fresh interpreter
    before = list(logger.handlers)
    with logged(1):
        logging.getLogger("altmodal.estimator").info("member 1/5, epoch 1/100")
    with logged(0):
        logging.getLogger("altmodal.estimator").info("quiet")
    err = capsys.readouterr().err
    assert "member 1/5, epoch 1/100" in err and "quiet" not in err and logger.handlers == before
