import json

import pytest
import torch

from altmodal.experiment import train_run
from altmodal.runs import Run
from tests.conftest import tiny_config


def test_best_epoch_is_chosen_on_validation(tmp_path):
    config = tiny_config(epochs=4)
    metrics = train_run(config, tmp_path / "run")
    history = Run(tmp_path / "run").file("history.csv").read_text().splitlines()
    scores = [float(line.split(",")[header_index(history, "val_accuracy")]) for line in history[1:]]
    assert metrics["best_epoch"] == scores.index(max(scores))


def header_index(lines, name):
    return lines[0].split(",").index(name)


def test_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    config = tiny_config(epochs=4)
    whole = train_run(config, tmp_path / "whole")

    original = Run.on_epoch_end

    def interrupt_after_epoch_1(self, strategy, state):
        original(self, strategy, state)
        if state["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Run, "on_epoch_end", interrupt_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        train_run(config, tmp_path / "cut")
    assert (tmp_path / "cut" / "checkpoint.pt").is_file() and not (tmp_path / "cut" / "metrics.json").exists()
    monkeypatch.setattr(Run, "on_epoch_end", original)
    resumed = train_run(config, tmp_path / "cut")
    assert resumed["test"] == whole["test"]
    a = torch.load(tmp_path / "whole" / "model.pt")["model"]
    b = torch.load(tmp_path / "cut" / "model.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert rows["best_epoch"] == whole["best_epoch"]


def test_same_seed_same_numbers(tmp_path):
    config = tiny_config(epochs=2)
    assert train_run(config, tmp_path / "a")["test"] == train_run(config, tmp_path / "b")["test"]
