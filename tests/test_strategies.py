"""One contract over every strategy, and each baseline's mechanism on hand-computed tensors."""

import json
import math

import pytest
import torch

from altmodal.data.registry import DataConfig, load_splits
from altmodal.encoders import EncoderConfig
from altmodal.experiment import resolve, train_run
from altmodal.strategies import STRATEGIES, build_strategy
from altmodal.strategies.base import TrainConfig
from altmodal.strategies.ogm_ge import modulate, ogm_coefficients
from altmodal.strategies.qmf import confidence, normalise_history, ranking_loss, ranking_targets
from altmodal.strategies.ume import average_present
from altmodal.trainer import Trainer
from tests.conftest import TINY, tiny_config

MULTI = [name for name in STRATEGIES if name != "unimodal"]


def strategy_settings(name):
    return {"modalities": ("m0",)} if name == "unimodal" else {}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_trains_one_epoch_and_reports_completely(name, tmp_path):
    config = tiny_config(strategy=name, epochs=1, **strategy_settings(name))
    splits = load_splits(config.data, 0)
    strategy = build_strategy(name, splits, config.encoder, config.options)
    Trainer.attach(strategy, config.train)
    before = [p.detach().clone() for p in strategy.parameters()]
    row = strategy.trainer.train_epoch(strategy, splits.train, 0)
    assert math.isfinite(row["train_loss"])
    assert any(not torch.equal(a, p) for a, p in zip(before, strategy.parameters()))
    outputs = strategy.collect(splits.test)
    n, c = len(splits.test), splits.num_classes
    assert outputs.fused.shape == (n, c)
    assert all(v.shape == (n, c) for v in outputs.unimodal.values())
    assert all(v.shape == (n, strategy.feature_width(m)) for m, v in outputs.features.items())
    assert all(strategy.feature_width(m) == (16 if name == "shaspec" else 8) for m in outputs.features)
    metrics = train_run(config, tmp_path / name)
    modalities = metrics["modalities"]
    assert set(metrics["test"]["unimodal"]) == set(modalities)
    assert len(metrics["test"]["present"]) == 2 ** len(modalities) - 1
    json.dumps(metrics)  # serialisable


@pytest.mark.parametrize("name", MULTI)
def test_three_modalities_work_everywhere(name):
    splits = load_splits(DataConfig(dataset="synthetic", dataset_options=(*TINY, "modalities=3")), seed=0)
    config = resolve({"strategy": name})
    strategy = build_strategy(name, splits, EncoderConfig(dim=8, hidden=(16,)), config.options)
    Trainer.attach(strategy, TrainConfig(batch_size=32))
    row = strategy.trainer.train_epoch(strategy, splits.train, 0)
    assert {f"train_loss_m{i}" for i in range(3)} <= set(row)
    assert strategy.collect(splits.val).fused.shape == (len(splits.val), 3)


@pytest.mark.parametrize("fusion", ["concat", "sum", "film", "gated"])
def test_joint_fusions_train(fusion, tmp_path):
    metrics = train_run(tiny_config(strategy="joint", fusion=fusion, epochs=1), tmp_path / fusion)
    assert metrics["options"]["fusion"] == fusion and 0 <= metrics["test"]["fused"]["accuracy"] <= 1


def test_ogm_coefficients_for_known_scores():
    k = ogm_coefficients(torch.tensor([30.0, 10.0]), alpha=0.3)
    assert k[0] == pytest.approx(1 - math.tanh(0.3 * 3.0)) and k[1] == 1.0
    k = ogm_coefficients(torch.tensor([10.0, 30.0]), alpha=0.3)
    assert k[0] == 1.0 and k[1] == pytest.approx(1 - math.tanh(0.9))
    k3 = ogm_coefficients(torch.tensor([3.0, 2.0, 1.0]), alpha=0.5)
    assert k3[0] == pytest.approx(1 - math.tanh(0.5 * 3.0 / 1.5)) and k3[1] == 1.0 and k3[2] == 1.0


def test_ge_noise_has_the_gradient_std():
    torch.manual_seed(0)
    grad = torch.randn(200, 200) * 3.0
    generator = torch.Generator().manual_seed(1)
    out = modulate(grad, 0.5, noise=True, generator=generator)
    noise = out - 0.5 * grad
    assert float(noise.std()) == pytest.approx(float(grad.std()), rel=0.02)
    assert torch.equal(modulate(grad, 0.5, noise=False, generator=None), 0.5 * grad)


HISTORY_EXTRAS = {
    "ogm_ge": ["ogm_coeff_m0", "ogm_coeff_m1"],
    "mmpareto": ["pareto_conflict_m0", "pareto_conflict_m1"],
    "gblend": ["gblend_w_m0", "gblend_w_m1", "gblend_w_fused"],
    "inforeg": ["inforeg_trace_m0", "inforeg_trace_m1", "inforeg_penalised_m0", "inforeg_penalised_m1"],
}


@pytest.mark.parametrize("name", list(HISTORY_EXTRAS))
def test_per_epoch_state_is_recorded_in_history(name, tmp_path):
    train_run(tiny_config(strategy=name, epochs=1), tmp_path / name)
    header = (tmp_path / name / "history.csv").read_text().splitlines()[0].split(",")
    assert set(HISTORY_EXTRAS[name]) <= set(header)


def test_qmf_confidence_and_ranking_targets_from_a_known_history():
    logits = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    assert torch.allclose(confidence(logits, 10.0), torch.logsumexp(logits, 1) / 10)
    history = torch.tensor([4.0, 2.0, 0.0, 9.0], dtype=torch.float64)
    seen = torch.tensor([True, True, True, False])
    norm = normalise_history(history, seen)
    assert torch.allclose(norm, torch.tensor([1.0, 0.5, 0.0, 0.0], dtype=torch.float64))
    target, margin = ranking_targets(norm, torch.tensor([0, 1, 2]))
    assert target.tolist() == [1.0, 1.0, -1.0]
    assert torch.allclose(margin, torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64))
    # Sample 0 has the higher loss: its confidence must sit 0.5 below sample 1's.
    conf = torch.tensor([0.9, 0.2, 0.5])
    loss = ranking_loss(conf, target.float(), margin.float())
    # Sample 2 (lowest loss) must sit 1.0 above sample 0: 0.5 vs 0.9 violates by 1.4.
    assert loss.tolist() == pytest.approx([0.9 - 0.2 + 0.5, 0.2 - 0.5 + 0.5, 0.9 - 0.5 + 1.0])
    # The released code's tolerance form: a violation within the history gap is not penalised.
    tolerant = ranking_loss(conf, target.float(), margin.float(), "tolerance")
    assert tolerant.tolist() == pytest.approx([0.9 - 0.2 - 0.5, 0.0, 0.0])


def test_qmf_history_accumulates_per_sample_losses(tiny_splits):
    config = resolve({"strategy": "qmf"})
    qmf = build_strategy("qmf", tiny_splits, EncoderConfig(dim=8, hidden=(16,)), config.options)
    Trainer.attach(qmf, TrainConfig(batch_size=32))
    batch = tiny_splits.train.gather(torch.arange(8).numpy())
    qmf.training_step(batch)
    assert qmf.seen[:, batch.index].all() and (qmf.history[:, batch.index] > 0).all()
    assert int(qmf.seen.sum()) == 16


def test_ume_averages_the_present_modalities():
    logits = {"a": torch.tensor([[2.0, 0.0], [2.0, 0.0]]), "b": torch.tensor([[0.0, 4.0], [0.0, 4.0]])}
    present = {"a": torch.tensor([True, True]), "b": torch.tensor([True, False])}
    assert torch.allclose(average_present(logits, present), torch.tensor([[1.0, 2.0], [2.0, 0.0]]))


def test_unimodal_needs_exactly_one_modality(tiny_splits):
    with pytest.raises(ValueError, match="strategy unimodal trains one modality; got 2"):
        build_strategy("unimodal", tiny_splits, EncoderConfig(dim=8), {})


@pytest.mark.parametrize("absent, rows", [("zero-features", 5), ("zero-inputs", 10)])
def test_absent_rows_reach_an_encoder_only_as_zero_inputs(tiny_splits, absent, rows):
    config = resolve({"strategy": "joint"})
    joint = build_strategy("joint", tiny_splits, EncoderConfig(dim=8, hidden=(16,), absent=absent), config.options)
    Trainer.attach(joint, TrainConfig(batch_size=32))
    seen = []
    joint.encoders["m1"].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[0]))
    batch = tiny_splits.train.gather(torch.arange(10).numpy())
    present = dict(batch.present)
    present["m1"] = torch.tensor([True, False] * 5)
    features = joint.encode(batch.with_present(present))
    assert seen == [rows] and features["m1"].shape == (10, 8)
    assert features["m1"][0::2].abs().sum() > 0
    if absent == "zero-features":
        assert (features["m1"][1::2] == 0).all()
