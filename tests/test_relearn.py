"""Diagnosing & Re-learning: k-means purity, alpha and the soft re-initialisation."""

import math

import pytest
import torch

from altmodal.clustering import cluster_purity, kmeans, purity, scale_to_unit
from altmodal.encoders import EncoderConfig
from altmodal.experiment import resolve, train_run
from altmodal.metrics import Outputs
from altmodal.runs import Run, read_csv
from altmodal.strategies import build_strategy
from altmodal.strategies.base import TrainConfig
from altmodal.strategies.relearn import modality_purity, relearn_alpha, soft_reset
from altmodal.trainer import Trainer
from tests.conftest import tiny_config, train_interrupted


def test_purity_of_a_known_clustering():
    assign = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    labels = torch.tensor([0, 0, 1, 1, 1, 1, 2, 0])
    # cluster 0: two of class 0; cluster 1: three of class 1; cluster 2: one each -> 1.
    assert purity(assign, labels) == pytest.approx((2 + 3 + 1) / 8)
    assert math.isnan(purity(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)))


def test_alpha_from_the_purity_gap():
    assert relearn_alpha(0.9, 0.65, 3.0) == pytest.approx(math.tanh(3 * 0.25))
    assert relearn_alpha(0.5, 0.75, 3.0) == pytest.approx(math.tanh(0.75))
    assert relearn_alpha(0.7, 0.7, 3.0) == 0.0 and relearn_alpha(float("nan"), 0.7, 3.0) == 0.0


def test_seeded_kmeans_finds_separated_clusters():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = torch.arange(3).repeat_interleave(20)
    x = centres[labels] + 0.5 * torch.randn(60, 2, generator=generator)
    assign = kmeans(x, 3, torch.Generator().manual_seed(1))
    assert purity(assign, labels) == 1.0 and len(set(assign.tolist())) == 3
    assert torch.equal(assign, kmeans(x, 3, torch.Generator().manual_seed(1)))  # seeded
    # Features that ignore the class: purity near chance (1/3 for three balanced classes).
    noise = torch.randn(60, 2, generator=generator)
    assert cluster_purity(noise, labels, 3, seed=0) < 0.6
    assert torch.equal(
        scale_to_unit(torch.tensor([[0.0, 5.0], [2.0, 5.0], [1.0, 5.0]])),
        torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]),
    )


def test_soft_reset_moves_alpha_of_the_way_back():
    layer = torch.nn.Linear(2, 1)
    initial = {k: torch.zeros_like(v) for k, v in layer.state_dict().items()}
    with torch.no_grad():
        layer.weight.fill_(2.0)
        layer.bias.fill_(-4.0)
    soft_reset(layer, initial, 0.25)
    assert torch.equal(layer.weight, torch.full((1, 2), 1.5)) and torch.equal(layer.bias, torch.tensor([-3.0]))


def test_diagnosis_reinitialises_each_encoder_by_its_alpha(tiny_splits):
    config = resolve({"strategy": "relearn", "relearn_every": 1})
    strategy = build_strategy("relearn", tiny_splits, EncoderConfig(dim=8, hidden=(16,)), config.options)
    Trainer.attach(strategy, TrainConfig(batch_size=32, lr=0.1))
    initial = {m: [p.detach().clone() for p in strategy.encoders[m].parameters()] for m in strategy.modalities}
    strategy.on_fit_start(tiny_splits)  # as the loop does: the initial weights are taken here
    strategy.trainer.train_epoch(strategy, tiny_splits.train, 0)
    trained = {m: [p.detach().clone() for p in strategy.encoders[m].parameters()] for m in strategy.modalities}
    strategy.epoch_extras = {}
    strategy.on_epoch_start(1)
    extras = strategy.epoch_extras
    for m in strategy.modalities:
        alpha = extras[f"relearn_alpha_{m}"]
        gap = abs(extras[f"relearn_purity_train_{m}"] - extras[f"relearn_purity_val_{m}"])
        assert alpha == pytest.approx(math.tanh(3 * gap)) and 0 < alpha < 1
        for p, before, start in zip(strategy.encoders[m].parameters(), trained[m], initial[m]):
            assert torch.allclose(p, (1 - alpha) * before + alpha * start, atol=1e-6)
    assert strategy.diagnoses == 1 and strategy.training


def test_diagnoses_stop_after_the_cap_and_resume_exactly(tmp_path, monkeypatch):
    config = tiny_config(strategy="relearn", relearn_every=1, relearn_times=2, epochs=4)
    whole = train_run(config, tmp_path / "whole")
    rows = read_csv(Run(tmp_path / "whole").file("history.csv"))
    assert ["relearn_alpha_m0" in row for row in rows] == [False, True, True, False]
    run = train_interrupted(config, tmp_path / "cut", monkeypatch, after_epoch=1)
    assert run["cut"]["training"]["relearn"]["diagnoses"] == 1
    resumed = run["metrics"]
    assert resumed["test"] == whole["test"]
    assert read_csv(Run(tmp_path / "cut").file("history.csv"))[2]["relearn_alpha_m1"] == rows[2]["relearn_alpha_m1"]


def test_purity_uses_present_samples_only_in_sample_order():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(2).repeat(10)  # 20 samples, 2 classes
    features = torch.stack([labels.float() * 5, torch.zeros(20)], dim=1) + 0.1 * torch.randn(20, 2, generator=generator)
    present = torch.arange(20) % 4 != 0
    features[~present] = 0.0  # absent samples: zero features, which would form clusters of their own
    order = torch.randperm(20, generator=generator)  # as if gathered from several processes
    outputs = Outputs(
        label=labels[order],
        index=order,
        present={"a": present[order]},
        fused=torch.zeros(20, 2),
        unimodal={},
        features={"a": features[order]},
        subsets={},
    )
    expected = cluster_purity(features[present], labels[present], 2, seed=3)
    assert modality_purity(outputs, "a", 2, seed=3) == expected == 1.0


def test_the_best_of_several_starts_has_the_least_inertia():
    from altmodal.clustering import kmeans, kmeans_plus_plus, lloyd

    generator = torch.Generator().manual_seed(3)
    x = torch.cat([torch.randn(30, 2, generator=generator) + shift for shift in (0, 4, 8, 12)]).double()

    def inertia(assign):
        return float(sum(((x[assign == c] - x[assign == c].mean(0)) ** 2).sum() for c in assign.unique()))

    best = inertia(kmeans(x, 4, torch.Generator().manual_seed(0), starts=10))
    again = torch.Generator().manual_seed(0)
    singles = [lloyd(x, kmeans_plus_plus(x, 4, again))[1] for _ in range(10)]
    assert best == pytest.approx(min(singles)) and best <= max(singles)
    import inspect

    from altmodal.clustering import cluster_purity  # what D&R calls, without naming starts

    assert inspect.signature(cluster_purity).parameters["starts"].default == 10


def test_diagnoses_follow_h_completed_epochs(tmp_path):
    train_run(tiny_config(strategy="relearn", relearn_every=3, relearn_times=0, epochs=7), tmp_path / "run")
    rows = read_csv(Run(tmp_path / "run").file("history.csv"))
    # before 0-based epochs 3 and 6, i.e. after 3 and 6 completed epochs (the code: after 4 and 7)
    assert [int(row["epoch"]) for row in rows if "relearn_alpha_m0" in row] == [4, 7]
