"""Hostile and careless input, round 3: the tables, the estimator, cross-fitted folds and the
strategies' options. Nothing a table holds runs in a spreadsheet, a fit leaves the caller's
state alone, an interrupted or re-fed run never mixes old and new, impossible settings are
refused before training, and every bad input gets one clear line naming what is wrong."""

from __future__ import annotations

import csv
import itertools
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pd = pytest.importorskip("pandas")
pytest.importorskip("sklearn")

from altmodal import MultimodalClassifier  # noqa: E402
from altmodal.cli import main  # noqa: E402
from altmodal.config import ConfigError  # noqa: E402
from altmodal.data.features import DataError  # noqa: E402
from altmodal.runs import Run  # noqa: E402
from tests.test_trust import one_line_error  # noqa: E402

ROWS = 90
SMALL = {"hidden": (8,), "dim": 4}
TRAIN = ["--epochs", "1", "--hidden", "8", "--dim", "4", "--quiet"]
HOSTILE = ['=HYPERLINK("http://x","click")', "+1+cmd|' /C calc'!A0", "@SUM(1)", "-2+3"]


def est(**params: object) -> MultimodalClassifier:
    """The joint strategy for one epoch on a tiny network."""
    options = {**SMALL, **params.pop("options", {})}  # type: ignore[dict-item]
    return MultimodalClassifier("joint", epochs=1, options=options, **params)  # type: ignore[arg-type]


def two(n: int = ROWS, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    return {"a": rng.normal(size=(n, 4)) + y[:, None], "v": rng.normal(size=(n, 3))}, y


def frame(n: int = ROWS, labels: list[str] | None = None) -> pd.DataFrame:
    X, y = two(n)
    table = pd.DataFrame({f"a__{i}": X["a"][:, i] for i in range(4)} | {f"v__{i}": X["v"][:, i] for i in range(3)})
    names = labels or ["x", "y", "z"]
    return table.assign(label=[names[k % len(names)] for k in y])


# ----- security ----------------------------------------------------------------------------------
def _cells(path: Path) -> list[str]:
    with path.open(newline="") as fh:
        return [cell for row in csv.reader(fh) for cell in row]


def test_case01_formula_labels_are_neutralised_in_prediction_files(tmp_path, capsys):
    data = tmp_path / "t.csv"
    frame(labels=HOSTILE[:3]).to_csv(data, index=False)
    run, out = tmp_path / "run", tmp_path / "p.csv"
    assert main(["train", "--dataset", str(data), "--out", str(run), "--strategy", "joint", *TRAIN]) == 0
    assert main(["predict", "--run", str(run), "--data", str(data), "--out", str(out)]) == 0
    for path in (out, run / "predictions_test.csv"):
        cells = _cells(path)
        assert not [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r")], path
        assert '\'=HYPERLINK("http://x","click")' in cells and "'@SUM(1)" in cells
        assert "prob_'+1+cmd|' /C calc'!A0" not in cells  # a header that starts with prob_ is harmless
    from altmodal.runs import spreadsheet_safe

    assert [spreadsheet_safe(v) for v in ("-2+3", "-1.5", "-1", "=1", "a=b", 3)] == [
        "'-2+3",
        "-1.5",
        "-1",
        "'=1",
        "a=b",
        3,
    ]


def test_case02_the_estimator_warns_that_a_pickle_runs_code():
    doc = MultimodalClassifier.__doc__ or ""
    module = __import__("altmodal.estimator", fromlist=["x"]).__doc__ or ""
    for text in (doc, module):
        assert "runs code" in text and "from_run" in text and "safetensors" in text
    page = (Path(__file__).resolve().parents[1] / "docs").rglob("*.md")
    assert any("runs code" in p.read_text() and "joblib.load" in p.read_text() for p in page)


# ----- silent wrong results ----------------------------------------------------------------------
def test_case03_fit_leaves_the_callers_random_state_alone():
    X, y = two()
    np.random.seed(123)
    torch.manual_seed(123)
    expected = (np.random.rand(), torch.rand(1).item())
    np.random.seed(123)
    torch.manual_seed(123)
    est(seed=0).fit(X, y)
    assert (np.random.rand(), torch.rand(1).item()) == expected


def _features(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    label = np.arange(ROWS) % 3
    np.savez(path, m0=rng.normal(size=(ROWS, 4)) + label[:, None], m1=rng.normal(size=(ROWS, 3)), label=label)
    return path


def _killed_in_member(argv: list[str], member: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``argv`` (a train command) and stop it, as a kill would, at the end of the first epoch
    of cross-fitted member ``member``."""
    original = Run.on_epoch_end

    def killed(self: Run, strategy: object, state: dict) -> None:
        original(self, strategy, state)
        if self.path.parent.name == "folds" and self.path.name == member:
            raise KeyboardInterrupt

    monkeypatch.setattr(Run, "on_epoch_end", killed)
    assert main(argv) == 130
    monkeypatch.setattr(Run, "on_epoch_end", original)


def _strict_json(path: Path) -> dict:
    def refuse(name: str) -> None:
        raise ValueError(f"{path}: {name} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_case04_a_cross_fitted_run_resumed_after_a_kill_writes_the_same_metrics(tmp_path, monkeypatch):
    data = _features(tmp_path / "d.npz")
    argv = ["train", "--dataset", str(data), "--strategy", "mla", "--folds", "3", "--epochs", "2", *TRAIN[2:]]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    _killed_in_member([*argv, "--out", str(tmp_path / "cut")], "2", monkeypatch)
    assert main([*argv, "--out", str(tmp_path / "cut")]) == 0
    whole, cut = _strict_json(tmp_path / "whole" / "metrics.json"), _strict_json(tmp_path / "cut" / "metrics.json")
    timing = ("train_seconds", "seconds_per_epoch", "learner_seconds", "side_wait_seconds", "members_beside")
    for metrics, key in itertools.product((whole, cut), timing):
        metrics.pop(key)
    assert "fusion_scores" in cut["strategy_summary"]["members"][0]
    assert cut == whole


def test_case04_json_files_never_hold_nan(tmp_path):
    from altmodal.runs import write_json

    write_json(tmp_path / "m.json", {"a": float("nan"), "b": [float("inf"), 1.0]})
    assert _strict_json(tmp_path / "m.json") == {"a": None, "b": [None, 1.0]}


def test_case05_a_run_whose_data_file_changed_is_refused(tmp_path, monkeypatch, capsys):
    data = _features(tmp_path / "d.npz")
    argv = [
        "train",
        "--dataset",
        str(data),
        "--strategy",
        "joint",
        "--folds",
        "3",
        *TRAIN,
        "--out",
        str(tmp_path / "r"),
    ]
    _killed_in_member(argv, "2", monkeypatch)
    capsys.readouterr()
    _features(data, seed=1)  # the same shapes, other values
    assert main(argv) == 2
    err = one_line_error(capsys)
    assert str(data) in err and "changed" in err and "--overwrite" in err
    assert main([*argv, "--overwrite"]) == 0


def test_case06_a_csv_column_named_twice_is_refused(tmp_path, capsys):
    path = tmp_path / "t.csv"
    table = frame()
    path.write_text(table.to_csv(index=False).replace("a__1,", "a__0,", 1))
    assert main(["train", "--dataset", str(path), "--out", str(tmp_path / "r"), *TRAIN]) == 2
    assert "column 'a__0' appears twice" in one_line_error(capsys)


def test_case07_incomplete_modality_without_its_protocol_or_of_no_modality_is_refused(tmp_path, capsys):
    data = _features(tmp_path / "d.npz")
    base = ["train", "--dataset", str(data), "--strategy", "moddrop", *TRAIN, "--out", str(tmp_path / "r")]
    assert main([*base, "--incomplete-modality", "nope"]) == 2
    assert "--incomplete-modality" in one_line_error(capsys)
    assert main([*base, "--incomplete-modality", "nope", "--complete-share", "0.5"]) == 2
    err = one_line_error(capsys)
    assert "'nope'" in err and "m0, m1" in err


def test_case08_a_projection_option_with_no_projection_is_refused(tmp_path, capsys):
    data = _features(tmp_path / "d.npz")
    argv = ["train", "--dataset", str(data), "--strategy", "mla", "--folds", "1", *TRAIN, "--out", str(tmp_path / "r")]
    assert main([*argv, "--projection-target", "gradient", "--no-projection"]) == 2
    err = one_line_error(capsys)
    assert "--projection-target" in err and "--no-projection" in err
    with pytest.raises(ConfigError, match="--projection-target gradient has no effect with --no-projection"):
        MultimodalClassifier(epochs=1, options={"projection": False, "projection_target": "gradient"}).fit(*two())


def test_case09_an_unknown_option_name_is_refused_with_a_suggestion():
    with pytest.raises(ConfigError, match="options: unknown setting 'fold'; did you mean 'folds'"):
        est(options={"fold": 1}).fit(*two())
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        est(options={"epoch": 1}).fit(*two())


def test_case10_impossible_fold_counts_are_refused_before_training(tmp_path, capsys):
    data = _features(tmp_path / "d.npz")
    argv = ["train", "--dataset", str(data), "--strategy", "joint", *TRAIN, "--out", str(tmp_path / "r")]
    assert main([*argv, "--folds", "1000"]) == 2
    err = one_line_error(capsys)
    assert "--folds 1000" in err and "at most 66" in err
    assert not [p for p in ("folds", "config.json", "data.json") if (tmp_path / "r" / p).exists()]
    with pytest.raises(ConfigError, match="folds"):
        est(options={"folds": 1000}).fit(*two())


def test_case11_an_absurd_thread_count_is_refused(tmp_path, capsys):
    data = _features(tmp_path / "d.npz")
    with pytest.raises(SystemExit) as stop:
        main(["train", "--dataset", str(data), "--threads", "1000000", *TRAIN, "--out", str(tmp_path / "r")])
    assert stop.value.code == 2 and "--threads is more than 4 per CPU core" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="threads"):
        est(threads=1_000_000).fit(*two())


# ----- one line naming the thing -----------------------------------------------------------------
def test_case12_a_modality_of_another_length_is_named():
    X, y = two()
    with pytest.raises(DataError, match=r"X: modality 'v' has 50 samples, modality 'a' has 90"):
        est().fit({"a": X["a"], "v": X["v"][:50]}, y)


def test_case13_no_samples_is_refused():
    X, y = two()
    with pytest.raises(DataError, match="X has 0 samples"):
        est().fit({m: v[:0] for m, v in X.items()}, y[:0])


def test_case14_a_label_of_none_is_named():
    X, _ = two()
    y = np.array(["p", "q", "r"] * 30, dtype=object)
    y[7] = None
    with pytest.raises(DataError, match="y: row 7 is None"):
        est().fit(X, y)


def test_case15_bad_parameters_set_later_are_named():
    X, y = two()
    with pytest.raises(ConfigError, match=r"options must be a dict of settings \(got 'notadict'\)"):
        est().set_params(options="notadict").fit(X, y)
    with pytest.raises(ConfigError, match=r"columns must map each modality to its columns \(got 5\)"):
        est().set_params(columns=5).fit(frame().drop(columns="label"), y)


@pytest.mark.parametrize("column", ["a.b__0", "../../evil__0"])
def test_case16_a_modality_name_a_model_cannot_hold_is_named(tmp_path, capsys, column):
    path = tmp_path / "t.csv"
    frame().rename(columns={"v__0": column}).to_csv(path, index=False)
    assert main(["train", "--dataset", str(path), "--out", str(tmp_path / "r"), *TRAIN]) == 2
    err = one_line_error(capsys)
    assert repr(column.split("__")[0]) in err and "letters, digits" in err


def test_case17_a_header_only_csv_is_refused(tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text("a__0,v__0,label\n")
    assert main(["train", "--dataset", str(path), "--out", str(tmp_path / "r"), *TRAIN]) == 2
    assert "no rows" in one_line_error(capsys)


def test_note_a_fifo_as_dataset_is_not_a_regular_file(tmp_path, capsys):
    fifo = tmp_path / "x.csv"
    os.mkfifo(fifo)
    assert main(["train", "--dataset", str(fifo), "--out", str(tmp_path / "r"), *TRAIN]) == 2
    assert "is a FIFO, not a regular file" in one_line_error(capsys)


def test_note_one_modality_from_python_gets_python_advice(caplog):
    X, y = two()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MultimodalClassifier("mla", epochs=1, options={**SMALL, "folds": 1}).fit(X["a"], y)
    text = caplog.text
    assert "--strategy" not in text and "altmodal-" not in text
    assert "MultimodalClassifier('unimodal')" in text and "columns=" in text


# ----- cases of this round's own audit -----------------------------------------------------------
@pytest.mark.parametrize("name", ["values", "training", "label", "split"])
def test_own_a_dict_key_that_cannot_name_a_modality_is_refused(name):
    X, y = two()
    with pytest.raises(DataError, match=f"X: '{name}' cannot name a modality"):
        est().fit({name: X["a"], "v": X["v"]}, y)


def test_own_a_feature_file_array_named_like_a_model_attribute_is_refused(tmp_path, capsys):
    X, y = two()
    np.savez(tmp_path / "d.npz", forward=X["a"], v=X["v"], label=y)
    argv = ["train", "--dataset", str(tmp_path / "d.npz"), "--out", str(tmp_path / "r"), *TRAIN]
    assert main(argv) == 2
    assert "'forward' cannot name a modality: the models use that name themselves" in one_line_error(capsys)


def test_own_a_nan_label_is_named():
    X, y = two()
    with pytest.raises(DataError, match="y: row 5 is nan"):
        est().fit(X, np.where(np.arange(ROWS) == 5, np.nan, y))


def test_own_a_validation_fraction_that_is_no_number_is_named():
    with pytest.raises(ConfigError, match=r"validation_fraction must be a number in \(0, 1\) \(got 'x'\)"):
        est(validation_fraction="x").fit(*two())


def test_own_settings_that_are_not_finite_are_refused(tmp_path, capsys):
    with pytest.raises(ConfigError, match="lr = inf is not a finite number"):
        est(lr=float("inf")).fit(*two())
    weights = {"folds": 1, "test_fusion": "fixed", "fusion_weights": (float("inf"), 1.0)}
    with pytest.raises(ConfigError, match=r"fusion_weights = \(inf, 1.0\) is not a finite number"):
        MultimodalClassifier("mla", epochs=1, options={**SMALL, **weights}).fit(*two())
    data = _features(tmp_path / "d.npz")
    assert main(["train", "--dataset", str(data), "--lr", "nan", *TRAIN, "--out", str(tmp_path / "r")]) == 2
    assert "lr = nan is not a finite number" in one_line_error(capsys)


@pytest.mark.parametrize(
    ("strategy", "option", "value"), [("reconboost", "reconboost_hidden", 0), ("midas", "midas_eta", -0.1)]
)
def test_own_strategy_options_out_of_range_are_refused(strategy, option, value):
    with pytest.raises(ConfigError, match=f"--{option.replace('_', '-')} must be"):
        MultimodalClassifier(strategy, epochs=1, options={option: value}).fit(*two())


def test_own_evaluate_refuses_a_run_whose_data_file_changed(tmp_path, capsys):
    data = _features(tmp_path / "d.npz")
    run = tmp_path / "r"
    assert main(["train", "--dataset", str(data), "--strategy", "joint", *TRAIN, "--out", str(run)]) == 0
    assert main(["evaluate", "--run", str(run)]) == 0
    _features(data, seed=1)
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run)]) == 2
    assert "changed since the run" in one_line_error(capsys)


def test_own_evaluate_leaves_the_callers_random_state_alone(tmp_path):
    from altmodal.experiment import evaluate_run

    data = _features(tmp_path / "d.npz")
    assert main(["train", "--dataset", str(data), "--strategy", "joint", *TRAIN, "--out", str(tmp_path / "r")]) == 0
    np.random.seed(7)
    expected = np.random.rand()
    np.random.seed(7)
    evaluate_run(tmp_path / "r")
    assert np.random.rand() == expected


def test_own_a_split_column_in_the_estimators_frame_is_not_dropped_silently():
    _, y = two()
    with pytest.raises(DataError, match="X: column 'split' has no modality prefix"):
        est().fit(frame().drop(columns="label").assign(split="train"), y)


def test_own_a_column_map_entry_of_the_wrong_kind_is_named():
    _, y = two()
    with pytest.raises(DataError, match="columns: modality 'a': 5 is not a column name, a PREFIX"):
        est(columns={"a": 5}).fit(frame().drop(columns="label"), y)
