import json

import pytest
import torch
from safetensors.torch import load_file

from altmodal.experiment import train_run
from altmodal.runs import Run
from tests.conftest import tiny_config


def test_best_epoch_is_chosen_on_validation(tmp_path):
    config = tiny_config(epochs=4)
    metrics = train_run(config, tmp_path / "run")
    history = Run(tmp_path / "run").file("history.csv").read_text().splitlines()
    scores = [float(line.split(",")[header_index(history, "val_accuracy")]) for line in history[1:]]
    assert metrics["best_epoch"] == scores.index(max(scores)) + 1  # epochs count from 1


def header_index(lines, name):
    return lines[0].split(",").index(name)


def test_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    config = tiny_config(epochs=4)
    whole = train_run(config, tmp_path / "whole")

    original = interrupted(config, tmp_path / "cut", monkeypatch, after_epoch=1)
    assert (tmp_path / "cut" / "checkpoint.pt").is_file() and not (tmp_path / "cut" / "metrics.json").exists()
    monkeypatch.setattr(Run, "on_epoch_end", original)
    resumed = train_run(config, tmp_path / "cut")
    assert resumed["test"] == whole["test"]
    a = load_file(tmp_path / "whole" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert rows["best_epoch"] == whole["best_epoch"]


def interrupted(config, out, monkeypatch, after_epoch):
    """Train ``config`` in ``out`` until a KeyboardInterrupt right after (0-based) epoch
    ``after_epoch`` ends; return the callback it replaced, to put back."""
    original = Run.on_epoch_end

    def interrupt(self, strategy, state):
        original(self, strategy, state)
        if state["epoch"] == after_epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(Run, "on_epoch_end", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_run(config, out)
    return original


def test_same_seed_same_numbers(tmp_path):
    config = tiny_config(epochs=2)
    assert train_run(config, tmp_path / "a")["test"] == train_run(config, tmp_path / "b")["test"]


def test_patience_ends_training_once_the_validation_score_stops_improving(tmp_path):
    metrics = train_run(tiny_config(epochs=40, patience=2), tmp_path / "run")
    history = Run(tmp_path / "run").file("history.csv").read_text().splitlines()
    scores = [float(line.split(",")[header_index(history, "val_accuracy")]) for line in history[1:]]
    best = metrics["best_epoch"]
    assert len(scores) == best + 2 < 40  # two epochs without improvement, then the end
    assert metrics["epochs_run"] == len(scores) and metrics["epochs"] == 40
    assert max(scores[best:]) <= scores[best - 1]


def test_early_stopping_is_a_function_of_the_history():
    from altmodal.trainer import stopped

    assert not stopped(epoch=3, best_epoch=0, patience=3) and stopped(epoch=4, best_epoch=0, patience=3)
    assert not stopped(epoch=99, best_epoch=0, patience=0)  # 0: no early stopping
    assert not stopped(epoch=0, best_epoch=-1, patience=1)


def test_the_relative_patience_rule_waits_less_after_an_early_best_epoch(tmp_path):
    from altmodal import resolve
    from altmodal.trainer import wait

    assert [wait(b, 20, "relative") for b in (0, 1, 9, 23, 40)] == [9, 9, 13, 20, 20]  # 8 + ceil(epoch / 2)
    assert wait(3, 20, "fixed") == 20 and wait(3, 0, "relative") == 0  # 0: no early stopping
    assert resolve({}).train.patience_rule == "relative"  # the default's members
    assert (
        resolve({"strategy": "joint"}).train.patience_rule == "fixed" == resolve({"preset": "fast"}).train.patience_rule
    )
    metrics = train_run(tiny_config(epochs=60, patience=20, patience_rule="relative"), tmp_path / "run")
    best = metrics["best_epoch"]
    assert metrics["epochs_run"] == min(60, best + min(20, 8 + (best + 1) // 2))


def test_a_run_stopped_early_resumes_to_the_same_result(tmp_path, monkeypatch):
    from tests.conftest import train_interrupted

    config = tiny_config(epochs=40, patience=2)
    whole = train_run(config, tmp_path / "whole")
    # cut one epoch after the best one: the resumed run must still stop one epoch later
    resumed = train_interrupted(config, tmp_path / "cut", monkeypatch, after_epoch=whole["best_epoch"])["metrics"]
    assert resumed["test"] == whole["test"] and resumed["best_epoch"] == whole["best_epoch"]


def test_checkpoints_are_written_once_their_interval_has_passed_and_resume_from_there(tmp_path, monkeypatch):
    import altmodal.runs as runs

    config = tiny_config(epochs=5)
    whole = train_run(config, tmp_path / "whole")
    clock = iter(range(0, 10_000, 25))  # each reading of the clock: 25 s later
    monkeypatch.setattr(runs.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.delenv(runs.CHECKPOINT_ENV)  # the interval of a run: a minute
    written = []
    original_save = Run.save
    monkeypatch.setattr(
        Run, "save", lambda self, name, state: (written.append(state["epoch"]), original_save(self, name, state))
    )
    original_end = interrupted(config, tmp_path / "cut", monkeypatch, after_epoch=3)
    assert written == [2]  # (0-based) epoch 2 ends 60 s or more after the start; epoch 3 too soon after it
    assert len((tmp_path / "cut" / "history.csv").read_text().splitlines()) == 1 + 3  # the checkpoint's epochs
    monkeypatch.setattr(Run, "on_epoch_end", original_end)
    resumed = train_run(config, tmp_path / "cut")  # from the end of epoch 3 (0-based 2)
    assert resumed["test"] == whole["test"] and resumed["best_epoch"] == whole["best_epoch"]
    assert not (tmp_path / "cut" / "checkpoint.pt").exists()
    assert len((tmp_path / "cut" / "history.csv").read_text().splitlines()) == 1 + 5  # the finished run's: all


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_a_checkpoint_interval_that_is_no_number_of_seconds_is_named(monkeypatch, value):
    from altmodal.config import ConfigError
    from altmodal.runs import checkpoint_seconds

    monkeypatch.setenv("ALTMODAL_CHECKPOINT_SECONDS", value)
    with pytest.raises(ConfigError, match=f"ALTMODAL_CHECKPOINT_SECONDS='{value}': not a number of seconds"):
        checkpoint_seconds()
    monkeypatch.setenv("ALTMODAL_CHECKPOINT_SECONDS", "2.5")
    assert checkpoint_seconds() == 2.5
