import numpy as np
import pytest

from altmodal.data.features import DataError, read_npz
from altmodal.data.registry import DataConfig, load_splits
from tests.conftest import write_npz


def labels(n=30, k=3):
    return np.arange(n) % k


def test_reads_modalities_labels_split_and_presence(tmp_path):
    n = 30
    split = np.array(["train"] * 18 + ["val"] * 6 + ["test"] * 6)
    present_b = np.ones(n, dtype=bool)
    present_b[[1, 4]] = False
    b = np.ones((n, 2, 3))
    b[1] = np.nan  # absent rows may hold anything
    path = write_npz(
        tmp_path / "f.npz",
        a=np.random.rand(n, 5),
        b=b,
        label=np.array(["cat", "dog", "eel"] * 10),
        split=split,
        present_b=present_b,
    )
    dataset, got_split = read_npz(path)
    assert dataset.modalities == ["a", "b"]
    assert dataset.classes == ["cat", "dog", "eel"] and dataset.labels[:3].tolist() == [0, 1, 2]
    assert dataset.input_shape("b") == (2, 3)
    assert not dataset.present["b"][1] and np.all(dataset.arrays["b"][1] == 0)
    assert (got_split == split).all()


def test_integer_labels_that_are_not_0_to_k_are_remapped(tmp_path):
    path = write_npz(tmp_path / "f.npz", a=np.random.rand(6, 2), label=np.array([3, 7, 3, 7, 9, 9]))
    dataset, split = read_npz(path)
    assert dataset.classes == ["3", "7", "9"] and dataset.labels.tolist() == [0, 1, 0, 1, 2, 2]
    assert split is None


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"a": np.zeros((5, 2)), "label": labels(6)}, r"array 'a' has 5 samples .* 'label' has 6"),
        ({"a": np.zeros((6, 2)), "label": np.zeros(6, int)}, "need at least 2 classes"),
        ({"a": np.zeros((6, 2)), "label": np.array([0.5] * 6)}, r"'label' row 0 is 0.5, not an integer"),
        ({"a": np.zeros((6, 2)), "label": np.array([np.nan] * 6)}, "'label' row 0 is nan"),
        ({"a": np.zeros((6, 2))}, "no 'label' array"),
        ({"label": labels(6)}, "no modality arrays"),
        (
            {"a": np.zeros((6, 2)), "label": labels(6), "split": np.array(["train"] * 5 + ["tset"])},
            r"'split' row 5 is 'tset'",
        ),
        ({"a": np.array(["x"] * 6), "label": labels(6)}, "non-numeric dtype"),
        ({"a": np.zeros((6, 2)), "label": labels(6), "present_c": np.ones(6, bool)}, "'present_c' names no modality"),
    ],
)
def test_bad_files_name_the_array_and_the_problem(tmp_path, arrays, message):
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        read_npz(path)


def test_nan_in_a_present_row_names_array_row_and_feature(tmp_path):
    a = np.zeros((6, 3))
    a[4, 2] = np.inf
    path = write_npz(tmp_path / "bad.npz", a=a, label=labels(6))
    with pytest.raises(DataError, match=r"array 'a': row 4 holds inf at feature 2"):
        read_npz(path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match="no such feature file"):
        read_npz(tmp_path / "none.npz")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match=r"corrupt.npz: not an .npz file"):
        read_npz(corrupt)


def test_an_empty_split_is_an_error(tmp_path):
    split = np.array(["train"] * 5 + ["val"])
    path = write_npz(tmp_path / "f.npz", a=np.random.rand(6, 2), label=labels(6), split=split)
    with pytest.raises(DataError, match="split 'test' has no samples"):
        load_splits(DataConfig(dataset=str(path)), seed=0)


def test_a_split_without_validation_gets_one_carved_from_train(tmp_path):
    split = np.array(["train"] * 24 + ["test"] * 6)
    path = write_npz(tmp_path / "f.npz", a=np.random.rand(30, 2), label=labels(), split=split)
    splits = load_splits(DataConfig(dataset=str(path), val_fraction=0.25), seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (18, 6, 6)
    assert set(splits.val.rows) < set(range(24)) and set(splits.test.rows) == set(range(24, 30))


def test_unknown_modality_lists_the_valid_ones(tmp_path):
    path = write_npz(tmp_path / "f.npz", a=np.random.rand(30, 2), b=np.random.rand(30, 1), label=labels())
    with pytest.raises(DataError, match="unknown modality 'c'; its modalities are a, b"):
        load_splits(DataConfig(dataset=str(path), modalities=("a", "c")), seed=0)


def test_unknown_dataset_lists_the_built_in_ones():
    with pytest.raises(DataError, match="unknown dataset 'nope'; built-in datasets: mfeat, synthetic"):
        load_splits(DataConfig(dataset="nope"), seed=0)


def test_samples_with_no_modality_are_left_out_with_a_warning(tmp_path, caplog):
    n = 30
    present = np.ones(n, dtype=bool)
    present[[3, 7]] = False
    path = write_npz(
        tmp_path / "f.npz",
        a=np.random.rand(n, 2),
        b=np.random.rand(n, 2),
        label=labels(),
        present_a=present,
        present_b=present,
    )
    with caplog.at_level("WARNING"):
        splits = load_splits(DataConfig(dataset=str(path)), seed=0)
    rows = np.concatenate([splits.train.rows, splits.val.rows, splits.test.rows])
    assert 3 not in rows and 7 not in rows and len(rows) == n - 2
    assert "2 samples have none of the modalities a, b (first: row 3)" in caplog.text


def test_complex_and_text_files_are_refused(tmp_path):
    path = write_npz(tmp_path / "c.npz", a=np.ones((6, 2), dtype=complex), label=labels(6))
    with pytest.raises(DataError, match="array 'a' has complex dtype"):
        read_npz(path)
    text = tmp_path / "t.npz"
    text.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"t.npz: not an .npz file \(a zip archive of .npy arrays\)"):
        read_npz(text)


def test_a_truncated_npz_is_reported(tmp_path):
    path = write_npz(tmp_path / "f.npz", a=np.random.rand(30, 2), label=labels())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] + data[-200:])  # damaged members, zip directory intact
    with pytest.raises(DataError, match=r"f.npz: not a readable .npz file"):
        read_npz(path)
