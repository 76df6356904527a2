"""Inputs that used to give silent wrong results or tracebacks: each is now an error or a warning."""

import gzip
import json
import logging
import zipfile

import numpy as np
import pytest

from altmodal.data.corpora.common import ModalitySpec, Plan
from altmodal.data.corpora.writer import resume, start
from altmodal.data.dataset import MultimodalDataset
from altmodal.data.features import DataError, read_npz
from altmodal.data.registry import DataConfig, load_splits
from altmodal.data.splits import make_splits, standardize
from tests.conftest import write_npz


def features_file(tmp_path, n=60, **extra):
    rng = np.random.default_rng(0)
    arrays = {"a": rng.normal(size=(n, 3)), "b": rng.normal(size=(n, 2)), "label": np.arange(n) % 3, **extra}
    return write_npz(tmp_path / "f.npz", **arrays)


# ----- 3. silent wrong results ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "classes, message",
    [
        (np.zeros((120, 4)), "'classes' must be a 1-D array of class names (strings), got float64 of shape (120, 4)"),
        (np.array([["x", "y", "z"]]), "'classes' must be a 1-D array of class names"),
        (np.array([1, 2, 3]), "'classes' must be a 1-D array of class names (strings), got int64"),
    ],
)
def test_a_classes_array_of_the_wrong_kind_is_refused(tmp_path, classes, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_npz(features_file(tmp_path, classes=classes))


def test_a_classes_array_that_would_be_ignored_is_refused(tmp_path):
    names = np.array(["x", "y", "z"])
    with pytest.raises(DataError, match=r"'classes' names integer labels 0\.\.K-1, but the labels are strings"):
        read_npz(features_file(tmp_path, label=np.array(["p", "q", "r"] * 20), classes=names))
    with pytest.raises(DataError, match=r"'classes' names labels 0\.\.K-1, but a label is -1"):
        read_npz(features_file(tmp_path, label=np.arange(60) % 3 - 1, classes=names))
    dataset, _ = read_npz(features_file(tmp_path, classes=names))
    assert list(dataset.classes) == ["x", "y", "z"]


def test_huge_values_are_standardised_not_zeroed(tmp_path):
    rng = np.random.default_rng(1)
    huge = rng.normal(size=(60, 3)) * 1e300
    path = features_file(tmp_path, a=huge)
    splits = load_splits(DataConfig(dataset=str(path)), seed=0)
    train = np.asarray(splits.train.arrays["a"])[splits.train.rows]
    assert np.isfinite(train).all()
    assert train.std(axis=0) == pytest.approx([1, 1, 1], rel=1e-4)
    assert train.mean(axis=0) == pytest.approx([0, 0, 0], abs=1e-5)


def test_classes_missing_from_a_split_are_named_in_a_warning(caplog):
    labels = np.array([0] * 20 + [1] * 20 + [2] * 2 + [3])
    split = np.array(["train"] * 14 + ["val"] * 3 + ["test"] * 3 + ["train"] * 14 + ["val"] * 3 + ["test"] * 3)
    split = np.concatenate([split, ["train", "train", "test"]])
    n = len(labels)
    dataset = MultimodalDataset(
        "d", {"a": np.zeros((n, 2))}, {"a": np.ones(n, bool)}, labels, ["w", "x", "y", "z"], np.arange(n)
    )
    from altmodal.data.splits import warn_rare_classes

    with caplog.at_level(logging.WARNING):
        warn_rare_classes(make_splits(dataset, split))
    assert "1 classes have no train sample and are never trained: 'z' (1 samples)" in caplog.text
    assert "2 classes have no val sample and are never validated: 'y' (2 samples), 'z' (1 samples)" in caplog.text
    assert "1 classes have no test sample and are never tested: 'y' (2 samples)" in caplog.text


def test_a_stratified_split_warns_about_a_class_of_two(tmp_path, caplog):
    label = np.array([0] * 30 + [1] * 28 + [2] * 2)
    with caplog.at_level(logging.WARNING):
        load_splits(DataConfig(dataset=str(features_file(tmp_path, label=label))), seed=0)
    assert "no val sample and are never validated: '2' (2 samples)" in caplog.text


def test_a_truncated_wav_is_recorded_not_half_decoded(tmp_path):
    pytest.importorskip("soundfile")
    from altmodal.data.media import MediaError
    from altmodal.data.media.audio import read_audio
    from tests.media_fakes import write_wav

    whole = tmp_path / "whole.wav"
    write_wav(whole, seconds=0.5, rate=8000)
    data = whole.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    assert len(read_audio(whole)[0]) == 4000
    with pytest.raises(MediaError, match="truncated: the header declares 4000 frames, the file holds"):
        read_audio(cut)


def test_one_modality_with_a_multimodal_strategy_warns(tmp_path, caplog):
    from altmodal.experiment import train_run
    from tests.conftest import tiny_config

    with caplog.at_level(logging.WARNING):
        train_run(tiny_config(strategy="mla", modalities=("m0",), epochs=1), tmp_path / "run")
    assert "mla is a multimodal strategy, trained here on one modality (m0)" in caplog.text


# ----- 4. one clear line instead of a traceback -------------------------------------------------------


def test_a_one_dimensional_modality_array_is_refused(tmp_path):
    for standardize_flag in (True, False):
        with pytest.raises(DataError, match=r"array 'a' is 1-D \(shape \(60,\)\).*reshape it to \(60, 1\)"):
            load_splits(
                DataConfig(dataset=str(features_file(tmp_path, a=np.ones(60))), standardize=standardize_flag), 0
            )


def test_npz_members_that_are_not_npy_arrays_are_named(tmp_path):
    path = tmp_path / "odd.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("label.txt", "0 1 2")
    with pytest.raises(DataError, match=r"member 'label.txt' is not a .npy array"):
        read_npz(path)


def test_a_truncated_mnist_file_is_one_clear_error(tmp_path):
    from altmodal.data.corpora.avdigits import read_mnist

    for digit in range(10):
        payload = gzip.compress(json.dumps({"data": [0.5] * 784}).encode())
        (tmp_path / f"{digit}.json.gz").write_bytes(payload[: len(payload) // 2] if digit == 3 else payload)
    with pytest.raises(DataError, match=r"3.json.gz: not a readable gzip JSON file"):
        read_mnist(tmp_path, 28)


def test_a_corrupt_progress_record_starts_the_cache_again(tmp_path, caplog):
    plan = Plan("toy", ["a", "b"], [ModalitySpec("audio", (2,), "float32", "mlp", "audio")], [], {})
    start(tmp_path, plan, "digest")
    (tmp_path / "progress.npz").write_bytes(b"PK\x03\x04 cut short")
    with caplog.at_level(logging.WARNING):
        assert resume(tmp_path, plan) is None
    assert "cannot be resumed" in caplog.text


def test_standardize_keeps_ordinary_data_unchanged():
    rng = np.random.default_rng(0)
    n = 40
    values = rng.normal(3, 2, size=(n, 2))
    labels = np.arange(n) % 2
    dataset = MultimodalDataset("d", {"a": values}, {"a": np.ones(n, bool)}, labels, ["0", "1"], np.arange(n))
    split = np.array(["train"] * 30 + ["val"] * 5 + ["test"] * 5)
    out = standardize(make_splits(dataset, split))
    train = values[:30]
    expected = (values - train.mean(axis=0)) / train.std(axis=0)
    assert np.asarray(out.train.arrays["a"]) == pytest.approx(expected.astype(np.float32), abs=1e-5)
