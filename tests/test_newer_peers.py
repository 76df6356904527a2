"""AUG, ReconBoost and MIDAS: their formulas on hand-computed tensors and their mechanisms on a tiny model."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from altmodal.encoders import EncoderConfig
from altmodal.experiment import resolve, train_run
from altmodal.predictor import load_run
from altmodal.strategies import build_strategy
from altmodal.strategies.aug import log_prediction, residual_target
from altmodal.strategies.base import TrainConfig
from altmodal.strategies.midas import partners
from altmodal.strategies.reconboost import boosting_weights
from altmodal.trainer import Trainer
from tests.conftest import tiny_config
from tests.test_peers import frozen_step


def build(name, splits, **options):
    options = resolve({"strategy": name, **options}).options
    strategy = build_strategy(name, splits, EncoderConfig(dim=8, hidden=(16,)), options)
    Trainer.attach(strategy, TrainConfig(batch_size=32))
    return strategy


# ----- AUG --------------------------------------------------------------------------------------


def test_residual_label_by_hand():
    target = residual_target(torch.tensor([1, 0]), torch.tensor([[0.2, 0.8], [0.6, 0.4]]), lam=0.5)
    assert torch.allclose(target, torch.tensor([[0.0, 0.6], [0.7, 0.0]]))
    assert residual_target(torch.tensor([0]), torch.tensor([[3.0, 0.0]]), lam=1.0).sum() == 0  # clamped at 0


def aug_two_classifiers(splits, **options):
    """An AUG model whose modalities have two classifiers each, a batch, its features."""
    aug = build("aug", splits, **options)
    aug.active.fill_(2)
    aug.host_active = [2, 2]
    batch = splits.train.gather(np.arange(32))
    return aug, batch, aug.encode(batch)


def test_aug_loss_with_two_classifiers_by_hand_sums_probabilities(tiny_splits):
    aug, batch, features = aug_two_classifiers(tiny_splits)  # the paper's form
    expected, y = 0.0, batch.label
    for m in aug.modalities:
        z1, z2 = aug.head_logits(m, features[m])
        p1, p2 = torch.softmax(z1, 1), torch.softmax(z2, 1)
        target = F.one_hot(y, 3) * (1 - 0.5 * p1)
        expected += -((p1 + p2) / 2)[torch.arange(32), y].log().mean() - p1[torch.arange(32), y].log().mean()
        expected += -(target * F.log_softmax(z2, 1)).sum(1).mean()
    assert float(frozen_step(aug, batch).loss) == pytest.approx(float(expected.detach()), rel=1e-5)
    with torch.no_grad():
        z = {m: aug.head_logits(m, features[m]) for m in aug.modalities}
        p = {m: (torch.softmax(z[m][0], 1) + torch.softmax(z[m][1], 1)) / 2 for m in aug.modalities}
        fused = aug.fuse(features, batch.present).exp()
        assert torch.allclose(fused, (p["m0"] + p["m1"]) / 2, atol=1e-6)  # both present: the mean


def test_aug_loss_with_two_classifiers_by_hand_sums_logits_in_the_code_form(tiny_splits):
    aug, batch, features = aug_two_classifiers(tiny_splits, aug_score="ensemble")
    expected = 0.0
    for m in aug.modalities:
        z1, z2 = aug.head_logits(m, features[m])
        target = F.one_hot(batch.label, 3) * (1 - 0.5 * torch.softmax(z1, 1))
        expected += F.cross_entropy(z1 + z2, batch.label) + F.cross_entropy(z1, batch.label)
        expected += -(target * F.log_softmax(z2, 1)).sum(1).mean()
    assert float(frozen_step(aug, batch).loss) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_aug_confidence_and_residual_do_not_grow_with_the_classifiers():
    confident = [torch.tensor([[9.0, 0.0, 0.0]])] * 4  # four classifiers, each sure of class 0
    for count in (1, 2, 4):
        p = log_prediction(confident[:count], ensemble=False).exp()
        assert torch.allclose(p.sum(1), torch.ones(1)) and float(p[0, 0]) == pytest.approx(0.9998, abs=1e-4)
    target = residual_target(torch.tensor([0]), log_prediction(confident[:3], ensemble=False).exp(), lam=0.5)
    assert float(target[0, 0]) >= 0.5  # three confident classifiers leave the newest a true-class target


def test_aug_gives_the_weakest_modality_a_classifier_at_each_check(tiny_splits):
    aug = build("aug", tiny_splits, aug_every=2)
    aug.on_epoch_start(0)
    aug.scores.copy_(torch.tensor([[9.0, 4.0], [10.0, 10.0]], dtype=torch.float64))  # s = 0.9 and 0.4
    aug.on_epoch_end(0)  # not due: (0 + 1) % 2 != 0
    assert aug.host_active == [1, 1]
    aug.scores.copy_(torch.tensor([[9.0, 4.0], [10.0, 10.0]], dtype=torch.float64))
    aug.on_epoch_end(1)
    assert aug.host_active == [1, 2] and aug.epoch_extras["aug_heads_m1"] == 2
    aug.scores.copy_(torch.tensor([[5.0, 5.05], [10.0, 10.0]], dtype=torch.float64))  # within tau
    aug.on_epoch_end(3)
    assert aug.host_active == [1, 2]


def test_aug_frozen_classifiers_never_learn_and_counts_reload(tiny_splits, tmp_path):
    aug = build("aug", tiny_splits, aug_new="frozen")
    aug.active.fill_(2)
    aug.host_active = [2, 2]
    frozen_step(aug, tiny_splits.train.gather(np.arange(32)))
    assert aug.private["m0"][1].weight.grad is None and aug.private["m0"][0].weight.grad is not None
    again = build("aug", tiny_splits)
    again.load_state_dict(aug.state_dict())  # the counts steps read follow a load
    assert again.host_active == [2, 2]
    metrics = train_run(tiny_config(strategy="aug", epochs=3, aug_every=1), tmp_path)
    model = load_run(tmp_path)
    assert model.strategy.host_active == model.strategy.active.tolist()
    assert model.strategy.collect(tiny_splits.test).fused.shape == (len(tiny_splits.test), 3)
    assert 0 <= metrics["test"]["fused"]["accuracy"] <= 1


# ----- ReconBoost -------------------------------------------------------------------------------


def test_boosting_weights_by_hand():
    others = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]))
    weights = boosting_weights(others, torch.tensor([0, 1]), lam=0.2)
    assert torch.allclose(weights, torch.tensor([1 - 0.2 * 0.5, 1 - 0.2 * 0.8]))


def test_reconboost_stages_take_the_modalities_in_turn(tiny_splits):
    boost = build("reconboost", tiny_splits, reconboost_boost_epochs=2, reconboost_rectify_epochs=1)
    phases = []
    for epoch in range(7):
        boost.trainer.epoch = epoch
        phases.append(boost.phase())
    assert phases == ["m0", "m0", None, "m1", "m1", None, "m0"]


def test_a_boosting_step_moves_its_learner_and_the_head_only(tiny_splits):
    boost = build("reconboost", tiny_splits)
    batch = tiny_splits.train.gather(np.arange(32))
    before = {k: v.clone() for k, v in boost.state_dict().items()}
    out = boost.boost(batch, "m1")
    changed = {k for k, v in boost.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith(("encoders.m1.", "head.")) for k in changed)
    with torch.no_grad():  # its loss: CE weighted by 1 - lambda q[y], q from m0 alone (in evaluation mode)
        boost.load_state_dict(before)
        boost.eval()
        q = torch.softmax(boost.head(boost.encoders["m0"](batch.inputs["m0"])), 1)[torch.arange(32), batch.label]
        boost.train()
        z = boost.head(boost.encoders["m1"](batch.inputs["m1"]))
        expected = ((1 - 0.2 * q) * F.cross_entropy(z, batch.label, reduction="none")).mean()
    assert float(out.loss) == pytest.approx(float(expected), rel=1e-5)


# ----- MIDAS ------------------------------------------------------------------------------------


def test_partners_have_another_label_and_the_swapped_modality():
    label = torch.tensor([0, 0, 1, 1, 2])
    has = torch.tensor([True, True, False, True, True])
    found = partners(label, has, True, torch.Generator().manual_seed(0))
    for i, j in enumerate(found.tolist()):
        assert j >= 0 and label[j] != label[i] and has[j] and j != i
    alone = partners(torch.tensor([0, 0]), torch.tensor([True, True]), True, torch.Generator())
    assert alone.tolist() == [-1, -1]  # nobody of another label: no misaligned copy


def test_midas_misaligned_loss_by_hand_on_two_samples(tiny_splits):
    midas = build("midas", tiny_splits, midas_warmup=0)
    rows = np.flatnonzero(
        tiny_splits.train.labels[tiny_splits.train.rows] != tiny_splits.train.labels[tiny_splits.train.rows][0]
    )
    batch = tiny_splits.train.gather(np.array([0, rows[0]]))  # two samples of different labels
    features = midas.encode(batch)
    logits = midas.aux(features)
    y = batch.label
    conf = {m: torch.softmax(logits[m], 1)[torch.arange(2), y] for m in midas.modalities}
    extras = {}
    loss = midas.misaligned(batch, features, logits, extras)
    expected = []
    for j, m in enumerate(midas.modalities):
        other = midas.modalities[1 - j]
        swapped = {m: features[m].flip(0), other: features[other]}
        log_p = F.log_softmax(midas.head(swapped), 1)
        c_keep, c_swap = conf[other], conf[m].flip(0)
        share_keep, share_swap = c_keep / (c_keep + c_swap), c_swap / (c_keep + c_swap)
        ce = -(share_keep * log_p[torch.arange(2), y] + share_swap * log_p[torch.arange(2), y.flip(0)])
        hard = 1 + (F.cosine_similarity(features[m].flip(0), features[m], dim=1) + 1) / 2
        expected.append((hard * ce).mean())  # alpha = 1 at the start
    assert float(loss.detach()) == pytest.approx(float(torch.stack(expected).mean().detach()), rel=1e-5)
    assert all(float(extras[f"midas_alpha_{m}"]) >= 1.0 for m in midas.modalities)


def test_midas_warm_up_trains_the_unimodal_heads_alone(tiny_splits):
    midas = build("midas", tiny_splits, midas_warmup=2)
    batch = tiny_splits.train.gather(np.arange(32))
    frozen_step(midas, batch)
    assert all(p.grad is None for p in midas.head.parameters())
    assert all(p.grad is not None for p in midas.aux.parameters())
    midas.trainer.epoch = 2
    frozen_step(midas, batch)
    assert all(p.grad is not None for p in midas.head.parameters())


def test_midas_warm_up_not_shorter_than_the_run_is_dropped_with_a_warning(tiny_splits, caplog):
    midas = build("midas", tiny_splits)  # the default warm-up, 10 epochs
    midas.trainer.config = TrainConfig(batch_size=32, epochs=10)
    with caplog.at_level("WARNING", logger="altmodal.strategies.midas"):
        midas.on_fit_start(tiny_splits)
    assert midas.warmup_epochs() == 0 and "would leave the fusion head untrained" in caplog.text
    frozen_step(midas, tiny_splits.train.gather(np.arange(32)))
    assert all(p.grad is not None for p in midas.head.parameters())  # the fusion head trains from the start
    midas.trainer.config = TrainConfig(batch_size=32, epochs=11)
    assert midas.warmup_epochs() == 10


def test_early_stopping_neither_selects_nor_ends_inside_the_warm_up(tmp_path):
    metrics = train_run(tiny_config(strategy="midas", midas_warmup=4, epochs=8, patience=1), tmp_path)
    assert metrics["best_epoch"] > 4 and metrics["test"]["fused"]["accuracy"] > 0.5


def test_midas_alpha_moves_once_a_step(tiny_splits):
    midas = build("midas", tiny_splits, midas_warmup=0, midas_eta=10.0, midas_alpha="sign")
    moves = []
    for b in range(5):
        before = midas.alpha.clone()
        midas.trainer.batch_index = b
        midas.training_step(tiny_splits.train.gather(np.arange(32 * b, 32 * b + 32)))
        moves += (midas.alpha - before).abs().tolist()
    assert max(moves) == pytest.approx(10.0)  # one step of eta, not one per misaligned copy


def test_midas_alpha_never_falls_below_one(tiny_splits):
    midas = build("midas", tiny_splits, midas_warmup=0, midas_eta=10.0, midas_alpha="sign")
    for b in range(5):
        midas.trainer.batch_index = b
        midas.training_step(tiny_splits.train.gather(np.arange(32 * b, 32 * b + 32)))
        assert bool((midas.alpha >= 1).all()) and not math.isnan(float(midas.alpha.sum()))
