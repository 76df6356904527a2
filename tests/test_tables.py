"""CSV and Parquet tables in: modalities by column prefix or by a map, empty cells, clear errors."""

import json

import numpy as np
import pytest

from altmodal import load_run
from altmodal.cli import main
from altmodal.data.features import DataError
from altmodal.data.registry import DataConfig, load
from altmodal.data.table import modality_columns, parse_modality_map, table_arrays

pd = pytest.importorskip("pandas")

FAST = ["--epochs", "2", "--hidden", "16", "--dim", "8", "--lr", "0.05", "--folds", "1", "--quiet"]


def frame(n=120, seed=0):
    """audio__0..2, video__0..1, an id column, integer labels 1/2/3 in column 'y'."""
    rng = np.random.default_rng(seed)
    y = rng.integers(1, 4, n)
    data = {f"audio__{j}": rng.normal(size=n) + y for j in range(3)}
    data.update({f"video__{j}": rng.normal(size=n) + 0.5 * y for j in range(2)})
    return pd.DataFrame({**data, "y": y})


def test_a_csv_trains_by_prefix_and_predicts_integers(tmp_path, capsys):
    table = frame()
    table.loc[[3, 7], ["video__0", "video__1"]] = np.nan  # rows 3 and 7 lack video
    table.to_csv(tmp_path / "t.csv", index=False)
    run = tmp_path / "run"
    argv = ["train", "--dataset", str(tmp_path / "t.csv"), "--label", "y", "--out", str(run), *FAST]
    assert main([*argv, "--epochs", "20", "--lr", "0.05"]) == 0
    capsys.readouterr()
    card = json.loads((run / "model.json").read_text())
    assert card["columns"] == {"audio": ["audio__0", "audio__1", "audio__2"], "video": ["video__0", "video__1"]}
    assert card["label_type"] == "integer" and card["label_column"] == "y"
    loaded = load(DataConfig(dataset=str(tmp_path / "t.csv"), label="y"))
    assert list(np.flatnonzero(~loaded.dataset.present["video"])) == [3, 7]
    new = table.drop(columns=["y"]).assign(comment="extra columns are not read")
    new.to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "p.csv"
    assert main(["predict", "--run", str(run), "--data", str(tmp_path / "new.csv"), "--out", str(out)]) == 0
    assert "accuracy" not in capsys.readouterr().out
    predicted = load_run(run).predict(new)
    assert predicted.dtype == np.int64 and set(predicted) <= {1, 2, 3}
    assert (predicted == table["y"].to_numpy()).mean() > 0.5
    assert main(["predict", "--run", str(run), "--data", str(tmp_path / "t.csv"), "--out", str(out)]) == 0
    assert "correct of 120 samples with a modality" in capsys.readouterr().out


def test_a_parquet_with_a_modality_map(tmp_path):
    pytest.importorskip("pyarrow")
    table = frame().rename(columns={"audio__0": "loud", "audio__1": "pitch", "audio__2": "tempo"})
    table["label"] = np.array(["a", "b", "c"])[table.pop("y") - 1]
    table.to_parquet(tmp_path / "t.parquet")
    run = tmp_path / "run"
    argv = ["train", "--dataset", str(tmp_path / "t.parquet"), "--modality", "sound=loud,pitch,tempo"]
    argv += ["--modality", "image=video__*", "--out", str(run), *FAST]
    assert main(argv) == 0
    card = json.loads((run / "model.json").read_text())
    assert card["columns"] == {"sound": ["loud", "pitch", "tempo"], "image": ["video__0", "video__1"]}
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["columns"] == ["sound=loud,pitch,tempo", "image=video__*"]
    model = load_run(run)
    assert set(model.predict(str(tmp_path / "t.parquet"))) <= {"a", "b", "c"}
    only_sound = table[["loud", "pitch", "tempo"]]  # image's columns all missing: image absent
    np.testing.assert_allclose(
        model.predict_proba(only_sound), model.predict_proba({"sound": only_sound.to_numpy()}), rtol=1e-6
    )


def test_runs_of_npz_files_keep_their_config_and_digest(tmp_path):
    from altmodal.experiment import resolve

    config = resolve({"dataset": "x.npz"})
    assert "label" not in config.to_dict()["data"] and "columns" not in config.to_dict()["data"]
    assert resolve({"dataset": "x.csv", "label": "y"}).to_dict()["data"]["label"] == "y"


def test_a_split_column_is_the_split(tmp_path):
    table = frame(60)
    table["split"] = ["train"] * 40 + ["val"] * 10 + ["test"] * 10
    arrays, _ = table_arrays(table, "t", label="y")
    assert list(arrays["split"][:2]) == ["train", "train"] and "split" not in arrays.get("audio", {})


@pytest.mark.parametrize(
    "change, argv, message",
    [
        (
            lambda t: t.assign(audio__1=["x", *["1"] * 119]),
            [],
            "column 'audio__1' (modality 'audio') is not numeric: row 0 holds 'x'",
        ),
        (lambda t: t, ["--label", "target"], "no label column 'target' (columns: y, audio__0"),
        (lambda t: t.assign(age=1.0), [], "column 'age' has no modality prefix (MODALITY__FEATURE)"),
        (
            lambda t: t,
            ["--modality", "a=audio__0,audio__1", "--modality", "b=audio__1"],
            "column 'audio__1' is in two modalities, 'a' and 'b'",
        ),
        (lambda t: t, ["--modality", "a=sound*"], "modality 'a': no column starts with 'sound' ('sound*')"),
        (lambda t: t, ["--modality", "a=audio__0,volume"], "modality 'a': no column 'volume' (columns:"),
        (lambda t: t, ["--modality", "a=y"], "column 'y' is the label column; no modality may take it"),
        (lambda t: t, ["--modality", "a"], "--modality 'a': write NAME=COL1,COL2 or NAME=PREFIX*"),
        (
            lambda t: t.assign(audio__2=[np.nan, 1.0, np.nan, *[1.0] * 117]),
            [],
            "row 0, column 'audio__2': empty (NaN) while other columns of modality 'audio' are not (2 rows so)",
        ),
        (lambda t: t.assign(video__0=[1.0, np.inf, *[1.0] * 118]), [], "row 1, column 'video__0' holds inf"),
        (lambda t: t.assign(y=[np.nan, *[1.0] * 119]), [], "label column 'y' is empty in row 0"),
    ],
)
def test_bad_tables_exit_2_with_one_line_naming_the_column(tmp_path, capsys, change, argv, message):
    change(frame()).to_csv(tmp_path / "t.csv", index=False)
    base = ["train", "--dataset", str(tmp_path / "t.csv"), "--out", str(tmp_path / "r")]
    if "--label" not in argv:
        base += ["--label", "y"]
    assert main([*base, *argv, *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert "t.csv" in err or message.startswith("--modality")  # the file, or the flag at fault
    assert not (tmp_path / "r" / "config.json").exists()


def test_label_and_modality_flags_belong_to_tables(tmp_path, capsys):
    np.savez(tmp_path / "f.npz", a=np.zeros((30, 2)), label=np.arange(30) % 2)
    assert main(["train", "--dataset", str(tmp_path / "f.npz"), "--label", "y", *FAST]) == 2
    assert "--label and --modality name the columns of a .csv or .parquet table" in capsys.readouterr().err


def test_unreadable_and_missing_tables_are_named(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"bad.parquet: not a readable PARQUET table"):
        load(DataConfig(dataset=str(tmp_path / "bad.parquet")))
    with pytest.raises(DataError, match=r"nope.csv: no such table"):
        load(DataConfig(dataset=str(tmp_path / "nope.csv")))


def test_column_maps_from_python_and_duplicate_names():
    assert parse_modality_map(["a=x,y", "b=z*"]) == {"a": ["x", "y"], "b": ["z*"]}
    with pytest.raises(DataError, match="modality 'a' is named twice"):
        parse_modality_map(["a=x", "a=y"])
    with pytest.raises(DataError, match="column 'x' appears twice"):
        modality_columns(["x", "x"], {"a": ["x"]}, "t")
    with pytest.raises(DataError, match="'label' cannot name a modality"):
        modality_columns(["x"], {"label": ["x"]}, "t")
