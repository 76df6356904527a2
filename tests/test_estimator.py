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


@parametrize_with_checks([MultimodalClassifier(epochs=2, options={"folds": 1})])
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
