"""Converting the public multi-view collection's .mat files into the real suite's feature files,
on tiny files written here."""

import numpy as np
import pytest
from scipy.io import savemat

from altmodal.cli import main
from altmodal.data.features import DataError
from altmodal.data.multiview import COLLECTION, convert, key, prepare_collection

RNG = np.random.default_rng(0)


def cell(*views):
    """A MATLAB cell array (V x 1) of the views."""
    out = np.empty((len(views), 1), dtype=object)
    for i, view in enumerate(views):
        out[i, 0] = view
    return out


def write(path, views, labels, label_name="y"):
    savemat(path, {"X": cell(*views), label_name: np.asarray(labels, dtype=np.uint8).reshape(-1, 1)})
    return path


LABELS = [1, 2, 3, 1, 2, 3, 1, 2]  # N = 8, K = 3


def test_views_stored_either_way_round_become_samples_by_features(tmp_path):
    a, b = RNG.random((8, 3)), RNG.integers(0, 4, (5, 8)).astype(np.uint8)  # b is stored D x N
    write(tmp_path / "TINY.mat", [a, b], LABELS)
    done = prepare_collection(tmp_path, tmp_path / "data", collection={"tiny": (("a", 3), ("b", 5))})
    assert done.written == [str(tmp_path / "data" / "multiview" / "tiny.npz")] and done.absent == []
    got = np.load(tmp_path / "data" / "multiview" / "tiny.npz")
    assert sorted(got.files) == ["a", "b", "label"]
    assert got["a"].dtype == np.float32 and got["a"].shape == (8, 3)
    np.testing.assert_allclose(got["a"], a.astype(np.float32))
    np.testing.assert_array_equal(got["b"], b.T.astype(np.float32))
    assert got["label"].dtype == np.int64 and got["label"].tolist() == [v - 1 for v in LABELS]


def test_views_are_matched_by_width_and_a_second_copy_is_reported(tmp_path):
    content, cites = RNG.random((8, 4)), RNG.random((8, 6))
    path = write(tmp_path / "set.mat", [cites, content, content.copy()], LABELS, label_name="gt")
    arrays, notes = convert(path, "set", (("content", 4), ("cites", 6)))
    assert list(arrays) == ["content", "cites", "label"]
    np.testing.assert_allclose(arrays["content"], content.astype(np.float32))
    np.testing.assert_allclose(arrays["cites"], cites.astype(np.float32))
    assert notes == ["set: view 3 of the file (4 columns) left out: a copy of content"]


def test_views_of_one_width_keep_the_file_order(tmp_path):
    views = [RNG.random((8, 2)) for _ in range(3)]
    arrays, notes = convert(write(tmp_path / "s.mat", views, LABELS), "s", (("p", 2), ("q", 2), ("r", 2)))
    for name, view in zip("pqr", views):
        np.testing.assert_allclose(arrays[name], view.astype(np.float32))
    assert notes == []


def test_bytes_after_the_variables_are_never_read(tmp_path):
    path = write(tmp_path / "s.mat", [RNG.random((8, 3))], LABELS)
    with open(path, "ab") as fh:
        fh.write(b"\x10\x32\x5a\x7e" * 40)
    arrays, _ = convert(path, "s", (("a", 3),))
    assert arrays["a"].shape == (8, 3)


def test_the_command_converts_the_collection_by_its_file_names(tmp_path, capsys):
    iso, lda, npe = RNG.random((8, 30)), RNG.random((8, 9)), RNG.random((8, 30))
    write(tmp_path / "MNIST-4.mat", [iso, lda, npe], LABELS)
    assert main(["prepare", "multiview", "--root", str(tmp_path), "--out", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert f"wrote 1 dataset(s) into {tmp_path / 'data' / 'multiview'}" in out
    assert "not in --root (left out): bbcsport, bbc4view, 3sources" in out
    got = np.load(tmp_path / "data" / "multiview" / "mnist4.npz")
    assert [got[v].shape for v in ("iso", "lda", "npe")] == [(8, 30), (8, 9), (8, 30)]
    np.testing.assert_allclose(got["npe"], npe.astype(np.float32))
    assert list(COLLECTION)[:3] == ["bbcsport", "bbc4view", "3sources"] and key("MNIST-4") == "mnist4"


def bad_files(tmp_path):
    """(file, what the error says) for each kind of unusable file."""
    view = RNG.random((8, 3))
    v73 = tmp_path / "v73.mat"
    v73.write_bytes(b"MATLAB 7.3 MAT-file".ljust(116) + b"\0" * 8 + b"\x00\x02IM" + b"\0" * 64)
    text = tmp_path / "text.mat"
    text.write_text("these are not the views you are looking for\n" * 4)
    no_x = tmp_path / "no_x.mat"
    savemat(no_x, {"views": view, "y": np.array(LABELS)})
    not_cell = tmp_path / "not_cell.mat"
    savemat(not_cell, {"X": view, "y": np.array(LABELS)})
    return [
        (v73, "a MATLAB v7.3 (HDF5) file; save it as v7"),
        (text, "not a readable MATLAB file"),
        (no_x, "no variable X"),
        (not_cell, "X is a float64 array of shape (8, 3), not a cell array of views"),
        (write(tmp_path / "no_y.mat", [view], LABELS, label_name="classes"), "no label vector (y, Y, gt, gnd, truth)"),
        (write(tmp_path / "axes.mat", [RNG.random((7, 3))], LABELS), "view 1 has shape (7, 3); neither axis matches"),
        (write(tmp_path / "width.mat", [RNG.random((8, 4))], LABELS), "no view with 3 columns for 'a' (the file's"),
        (write(tmp_path / "gap.mat", [view], [1, 3, 3, 1, 3, 3, 1, 1]), "the labels take 2 values from 1 to 3"),
    ]


def test_an_unusable_file_is_named_with_what_is_wrong(tmp_path):
    for path, says in bad_files(tmp_path):
        with pytest.raises(DataError) as err:
            convert(path, "s", (("a", 3),))
        message = str(err.value)
        assert message.startswith(f"{path}: ") and says in message and "\n" not in message, message


def test_labels_that_are_not_whole_numbers_are_refused(tmp_path):
    path = tmp_path / "half.mat"
    savemat(path, {"X": cell(RNG.random((8, 3))), "y": np.array(LABELS) + 0.5})
    with pytest.raises(DataError, match="the labels are not whole numbers"):
        convert(path, "s", (("a", 3),))


def test_one_bad_file_writes_nothing_and_the_command_says_it_in_one_line(tmp_path, capsys):
    write(tmp_path / "MNIST-4.mat", [RNG.random((8, 30)), RNG.random((8, 9)), RNG.random((8, 30))], LABELS)
    write(tmp_path / "Movies.mat", [RNG.random((8, 1878))], LABELS)  # no actors view
    assert main(["prepare", "multiview", "--root", str(tmp_path), "--out", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'Movies.mat'}: no view with 1398 columns for 'actors'" in err
    assert list((tmp_path / "data" / "multiview").iterdir()) == []


def test_an_existing_output_is_replaced_only_when_asked(tmp_path, capsys):
    write(tmp_path / "webkb.mat", [RNG.random((8, 1840)), RNG.random((8, 3000))], LABELS)
    mine = tmp_path / "data" / "multiview" / "webkb.npz"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"the user's own file")
    args = ["prepare", "multiview", "--root", str(tmp_path), "--out", str(tmp_path / "data")]
    assert main(args) == 2
    assert f"{mine}: exists (1 of the outputs do); pass --overwrite to replace them" in capsys.readouterr().err
    assert mine.read_bytes() == b"the user's own file"
    assert main([*args, "--overwrite"]) == 0
    assert sorted(np.load(mine).files) == ["anchor", "content", "label"]


def test_a_folder_without_the_collection_and_media_flags_are_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("nothing here")
    args = ["prepare", "multiview", "--root", str(tmp_path), "--out", str(tmp_path / "data")]
    assert main(args) == 2
    assert f"{tmp_path}: none of the collection's files is here (e.g. bbcsport.mat)" in capsys.readouterr().err
    assert main([*args, "--strict"]) == 2
    assert "--strict is for the media datasets" in capsys.readouterr().err
    assert main(["prepare", "multiview", "--root", str(tmp_path / "absent"), "--out", str(tmp_path)]) == 2
    assert "no such folder of the collection's .mat files (--root)" in capsys.readouterr().err
