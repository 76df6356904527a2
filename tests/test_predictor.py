"""A reloaded model's answers: probabilities as one array, labels in their own kind, files with
more modalities than the model, pickling, and saving a model as a run folder."""

import logging
import pickle

import numpy as np
import pytest

from altmodal import load_run
from altmodal.cli import main
from altmodal.config import ConfigError
from altmodal.predictions import labels_of

FAST = ["--epochs", "2", "--hidden", "16", "--dim", "8", "--lr", "0.05", "--folds", "1", "--quiet"]


def three_modality_file(path, n=150, labels=None):
    """Integer labels 3, 5, 7 (not 0..K-1), three modalities; video absent for a third."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    arrays = {
        "audio": rng.normal(size=(n, 5)) + y[:, None],
        "video": rng.normal(size=(n, 4)) + 0.5 * y[:, None],
        "meta": rng.normal(size=(n, 2)),
        "label": np.array([3, 5, 7])[y] if labels is None else np.asarray(labels)[y],
        "present_video": rng.random(n) > 0.33,
    }
    np.savez(path, **arrays)
    return arrays


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained on two of the file's three modalities."""
    root = tmp_path_factory.mktemp("predictor")
    arrays = three_modality_file(root / "data.npz")
    run = root / "run"
    argv = ["train", "--dataset", str(root / "data.npz"), "--modalities", "audio,video", "--out", str(run), *FAST]
    assert main(argv) == 0
    return root, run, arrays


def test_predict_proba_is_one_array_and_the_modalities_are_apart(trained):
    _, run, arrays = trained
    model = load_run(run, device="cpu")
    inputs = {"audio": arrays["audio"], "video": arrays["video"], "present_video": arrays["present_video"]}
    fused = model.predict_proba(inputs)
    assert isinstance(fused, np.ndarray) and fused.shape == (150, 3)
    np.testing.assert_allclose(fused.sum(axis=1), 1.0, rtol=1e-6)
    each = model.modality_proba(inputs)
    assert set(each) == {"audio", "video"} and each["audio"].shape == (150, 3)
    absent = ~arrays["present_video"]
    assert np.isnan(each["video"][absent]).all() and not np.isnan(each["video"][~absent]).any()
    assert model.classes == ["3", "5", "7"]


def test_integer_labels_come_back_as_integers(trained):
    _, run, arrays = trained
    model = load_run(run)
    predicted = model.predict({"audio": arrays["audio"], "video": arrays["video"]})
    assert predicted.dtype == np.int64 and set(predicted) <= {3, 5, 7}
    accuracy = (predicted == arrays["label"]).mean()
    assert accuracy > 0.5  # the comparison with the user's own labels means something
    metrics = model.evaluate({"audio": arrays["audio"], "video": arrays["video"]}, arrays["label"])
    assert metrics["fused"]["accuracy"] == pytest.approx(accuracy)
    assert model.class_values == [3, 5, 7]


def test_string_labels_stay_names_and_unpredictable_samples_are_marked():
    probs = np.array([[0.2, 0.8], [np.nan, np.nan], [0.9, 0.1]])
    assert list(labels_of(probs, ["cat", "dog"])) == ["dog", "", "cat"]
    assert list(labels_of(probs, [4, 9])) == [9, None, 4]
    assert labels_of(probs[[0, 2]], [4, 9]).dtype == np.int64


def test_a_file_with_more_modalities_predicts_with_a_note(trained, caplog):
    root, run, _ = trained
    note = f"{root / 'data.npz'}: ignoring modality 'meta', not among this model's modalities (audio, video)"
    with caplog.at_level(logging.WARNING):
        metrics = load_run(run).evaluate(str(root / "data.npz"))
    assert [r.getMessage() for r in caplog.records] == [note]
    assert 0 <= metrics["fused"]["accuracy"] <= 1
    caplog.clear()
    out = root / "preds.csv"
    argv = ["predict", "--run", str(run), "--data", str(root / "data.npz"), "--present", "audio", "--out", str(out)]
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    assert [r.getMessage() for r in caplog.records] == [note]
    assert out.read_text().splitlines()[0].startswith("index,label,prediction,prob_3,prob_5,prob_7")


def test_a_file_with_none_of_the_models_modalities_is_refused(trained):
    _, run, _ = trained
    with pytest.raises(ValueError, match=r"none of this model's modalities \(audio, video\) is given \(it has meta\)"):
        load_run(run).predict({"meta": np.zeros((3, 2))})


def test_the_accuracy_line_counts_correct_and_scored_samples(trained, capsys):
    root, run, arrays = trained
    assert main(["predict", "--run", str(run), "--data", str(root / "data.npz"), "--out", str(root / "p.csv")]) == 0
    printed = capsys.readouterr().out
    model = load_run(run)
    correct = int((model.predict(str(root / "data.npz")) == arrays["label"]).sum())
    assert f"({correct} correct of 150 samples with a modality)" in printed


def test_a_loaded_model_pickles_and_saves_as_a_run_folder(trained, tmp_path):
    _, run, arrays = trained
    model = load_run(run)
    inputs = {"audio": arrays["audio"], "video": arrays["video"]}
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict_proba(inputs), model.predict_proba(inputs))
    saved = again.save(tmp_path / "copy")
    assert {p.name for p in saved.iterdir()} >= {"config.json", "model.json", "model.safetensors", "metrics.json"}
    reloaded = load_run(saved)
    np.testing.assert_array_equal(reloaded.predict_proba(inputs), model.predict_proba(inputs))
    assert reloaded.predict(inputs).dtype == np.int64
    with pytest.raises(ConfigError, match="holds files already; save into a new or empty folder"):
        model.save(saved)
