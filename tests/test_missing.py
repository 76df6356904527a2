"""Missing-modality protocols (independent vs share), their realised shares, and what an absent
modality feeds the model (zero inputs vs zero features)."""

import numpy as np
import pytest
import torch

from altmodal.data.registry import DataConfig, load_splits
from altmodal.data.splits import missing_mask
from altmodal.encoders import EncoderConfig
from altmodal.experiment import resolve
from altmodal.strategies import TrainConfig, build_strategy
from altmodal.trainer import Trainer
from tests.conftest import TINY


def missing_summary(mask, rows):
    """Share of (sample, modality) entries missing, share of samples with one modality."""
    table = np.stack([np.asarray(v)[rows] for v in mask.values()], axis=1)
    return {"realised_share": float(1 - table.mean()), "single_modality_share": float((table.sum(1) == 1).mean())}


def full(n, modalities=("a", "b")):
    return {m: np.ones(n, bool) for m in modalities}


def test_independent_drops_each_entry_at_the_rate_and_restores_one():
    n = 20000
    mask = missing_mask(full(n), np.arange(n), 0.5, seed=0, protocol="independent")
    summary = missing_summary(mask, np.arange(n))
    # P(drop a) = 0.5, restored where both went: 1/4 of samples keep one of two -> 3/8 missing
    assert summary["realised_share"] == pytest.approx(0.375, abs=0.01)
    assert summary["single_modality_share"] == pytest.approx(0.75, abs=0.01)
    assert np.stack(list(mask.values())).any(axis=0).all()


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5])
def test_share_makes_the_rate_the_share_of_missing_entries(rate):
    n = 1000
    rows = np.arange(n)
    mask = missing_mask(full(n, "abc"), rows, rate, seed=1, protocol="share")
    table = np.stack([mask[m] for m in "abc"], axis=1)
    assert 1 - table.mean() == pytest.approx(rate, abs=1 / (3 * n))
    assert table.any(axis=1).all()


def test_share_keeps_exactly_one_modality_once_one_minus_rate_is_at_most_one_over_m():
    n = 500
    summary = missing_summary(missing_mask(full(n), np.arange(n), 0.7, seed=2, protocol="share"), np.arange(n))
    assert summary == {"realised_share": 0.5, "single_modality_share": 1.0}


def test_share_only_touches_the_given_rows_and_never_revives_an_absent_modality():
    n = 400
    present = full(n)
    present["b"][:100] = False
    rows = np.arange(50, 400)
    mask = missing_mask(present, rows, 0.4, seed=3, protocol="share")
    assert not mask["b"][:100].any()
    assert mask["a"][:50].all()
    table = np.stack([mask["a"], mask["b"]], axis=1)[rows]
    assert table.any(axis=1).all() and 1 - table.mean() == pytest.approx(0.4, abs=1e-2)


def test_an_unknown_protocol_is_refused():
    with pytest.raises(ValueError, match="unknown missing protocol 'cpm'; protocols: independent, share"):
        missing_mask(full(4), np.arange(4), 0.5, seed=0, protocol="cpm")


def test_load_splits_applies_the_protocol_to_validation_and_test():
    config = DataConfig(dataset="synthetic", dataset_options=TINY, test_missing_rate=0.5, missing_protocol="share")
    splits = load_splits(config, seed=0)
    for view in (splits.val, splits.test):
        summary = missing_summary(view.present, view.rows)
        assert summary["realised_share"] == pytest.approx(0.5, abs=0.02)
    assert missing_summary(splits.train.present, splits.train.rows)["realised_share"] == 0.0


@pytest.mark.parametrize("absent", ["zero-inputs", "zero-features"])
def test_a_subset_evaluation_equals_the_modality_being_absent(tiny_splits, absent):
    config = resolve({"strategy": "joint"})
    encoder = EncoderConfig(dim=8, hidden=(16,), absent=absent)
    torch.manual_seed(0)
    joint = build_strategy("joint", tiny_splits, encoder, config.options)
    Trainer.attach(joint, TrainConfig())
    test = tiny_splits.test
    outputs = joint.collect(test)
    without = joint.collect(test.with_present({"m0": test.present["m0"], "m1": np.zeros_like(test.present["m1"])}))
    assert torch.allclose(without.fused, outputs.subsets["m0"], atol=1e-5)
    blank = joint.encoders["m1"](torch.zeros(1, 8)) if absent == "zero-inputs" else torch.zeros(1, 8)
    assert torch.allclose(without.features["m1"], blank.expand(len(test), -1), atol=1e-6)
    assert joint.absent == absent


def test_zero_inputs_and_zero_features_give_different_fused_predictions(tiny_splits):
    config = resolve({"strategy": "joint"})
    fused = {}
    for absent in ("zero-inputs", "zero-features"):
        torch.manual_seed(0)
        joint = build_strategy("joint", tiny_splits, EncoderConfig(dim=8, hidden=(16,), absent=absent), config.options)
        Trainer.attach(joint, TrainConfig())
        fused[absent] = joint.collect(tiny_splits.test).subsets["m0"]
    assert not torch.allclose(fused["zero-inputs"], fused["zero-features"])


@pytest.mark.parametrize("absent", ["zero-inputs", "zero-features"])
def test_the_fused_loss_reaches_an_encoder_through_absent_rows_only_with_zero_inputs(tiny_splits, absent):
    config = resolve({"strategy": "joint"})
    torch.manual_seed(0)
    joint = build_strategy("joint", tiny_splits, EncoderConfig(dim=8, hidden=(16,), absent=absent), config.options)
    Trainer.attach(joint, TrainConfig(lr=0.1, momentum=0.0, weight_decay=0.0))
    batch = tiny_splits.train.gather(np.arange(32))
    batch = batch.with_present({"m0": batch.present["m0"], "m1": torch.zeros_like(batch.present["m1"])})
    before = [p.detach().clone() for p in joint.encoders["m1"].parameters()]
    joint.training_step(batch)
    moved = any(not torch.equal(a, p) for a, p in zip(before, joint.encoders["m1"].parameters()))
    assert moved == (absent == "zero-inputs")  # the paper's code: zero-filled inputs pass the encoder


def test_a_run_evaluates_every_subset_of_few_modalities_and_a_bounded_stated_set_of_many():
    from altmodal.metrics import OTHER_SUBSETS, subsets

    assert len(subsets(["a", "b", "c", "d"])) == 15
    views = [f"v{i}" for i in range(12)]
    chosen = subsets(views)
    assert len(chosen) == 1 + 12 + 12 + OTHER_SUBSETS  # all, each leave-one-out, each alone, a sample
    assert len(set(chosen)) == len(chosen) and chosen[0] == tuple(views)
    assert {(m,) for m in views} <= set(chosen) and {tuple(v for v in views if v != m) for m in views} <= set(chosen)
    assert [len(s) for s in chosen] == sorted((len(s) for s in chosen), reverse=True)
    assert subsets(views) == chosen  # the same sample for every run of these modalities
