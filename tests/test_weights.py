"""Per-sample loss weights: the one place every strategy's loss takes them, and the loop that
hands each training step its batch's weights."""

import dataclasses

import numpy as np
import pytest
import torch

from altmodal.data.registry import load
from altmodal.encoders import EncoderConfig
from altmodal.experiment import resolve, train_run
from altmodal.strategies import STRATEGIES, Strategy, build_strategy
from tests.conftest import tiny_settings


def test_mean_loss_weighs_each_sample_and_counts_rows(tiny_splits):
    strategy = build_strategy("joint", tiny_splits, EncoderConfig(dim=8, hidden=(16,)), {})
    per_sample = torch.tensor([1.0, 2.0, 3.0, 4.0])
    weights = torch.tensor([0.0, 10.0, 0.5, 1.0, 2.0, 4.0])  # over the dataset's six samples
    index = torch.tensor([5, 1, 2, 0])  # the batch's samples
    rows = torch.tensor([True, True, False, True])
    assert strategy.mean_loss(per_sample).item() == pytest.approx(2.5)  # outside weighing: plain
    with strategy.weighing(weights, index):
        assert strategy.weighs
        assert strategy.mean_loss(per_sample).item() == pytest.approx((4 + 20 + 1.5 + 0) / 4)
        assert strategy.mean_loss(per_sample, rows).item() == pytest.approx((4 + 20 + 0) / 3)
        assert strategy.weighted(torch.tensor([1.0, 1.0]), torch.tensor([1, 4])).tolist() == [10.0, 2.0]
        with pytest.raises(ValueError, match="joint: a loss over 2 rows in a batch of 4 cannot take sample weights"):
            strategy.mean_loss(torch.ones(2))
    assert not strategy.weighs
    with strategy.weighing(None, index):
        assert strategy.mean_loss(per_sample).item() == pytest.approx(2.5)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_trains_on_weighted_data(name, tmp_path, monkeypatch):
    settings = tiny_settings(strategy=name, epochs=1, **({"modalities": ("m0",)} if name == "unimodal" else {}))
    config = resolve(settings)
    loaded = load(config.data)
    weights = np.random.default_rng(0).uniform(0.5, 1.5, len(loaded.dataset.labels))
    loaded = dataclasses.replace(loaded, dataset=dataclasses.replace(loaded.dataset, weights=weights))
    seen = []
    original = Strategy.weighing

    def spy(self, given, index):
        seen.append(given is not None and np.allclose(given[index].cpu().numpy(), weights[index.cpu().numpy()]))
        return original(self, given, index)

    monkeypatch.setattr(Strategy, "weighing", spy)
    train_run(config, tmp_path / "run", data=loaded, threads=1)
    assert seen and all(seen)
