import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from altmodal import load_run
from altmodal.data.registry import DataConfig, load_splits
from altmodal.data.splits import cross_fit_split, stratified_split
from altmodal.experiment import train_run
from altmodal.fusion_choice import Fitted, apply_rule
from altmodal.runs import Run
from tests.conftest import TINY, tiny_config


def test_folds_cut_the_development_samples_into_disjoint_stratified_holdouts():
    labels = np.repeat(np.arange(3), 40)
    split = stratified_split(labels, 0.15, 0.25, seed=0)
    development = np.flatnonzero(split != "test")
    held = []
    for fold in (1, 2, 3, 4):
        names = cross_fit_split(split, labels, 4, fold, 0.15, seed=0)
        assert np.array_equal(names == "test", split == "test")  # the test split never moves
        rows = np.flatnonzero(names == "holdout")
        held.append(rows)
        assert set(np.bincount(labels[rows])) <= {7, 8}  # 90 development samples: 30 per class, 4 folds
        val = np.flatnonzero(names == "val")
        assert len(val) and not set(val) & set(rows)  # the member's validation is outside its holdout
    union = np.concatenate(held)
    assert len(union) == len(set(union)) and set(union) == set(development)


def test_members_share_the_runs_standardisation():
    config = dict(dataset="synthetic", dataset_options=TINY, folds=3)
    whole = load_splits(DataConfig(**config), seed=0)
    member = load_splits(DataConfig(**config, fold=2), seed=0)
    assert whole.holdout is None and member.holdout is not None
    for m, stats in whole.preprocessing.items():
        assert all(np.array_equal(stats[k], member.preprocessing[m][k]) for k in stats)
    assert np.array_equal(whole.test.rows, member.test.rows)
    assert not set(member.holdout.rows) & set(member.train.rows)


@pytest.fixture(scope="module")
def bagged(tmp_path_factory):
    out = tmp_path_factory.mktemp("bag") / "run"
    return out, train_run(tiny_config(folds=3, epochs=3), out)


def test_a_cross_fitted_run_chooses_on_out_of_fold_predictions_and_reloads(bagged):
    out, metrics = bagged
    summary = metrics["strategy_summary"]
    assert summary["held_out"] == "out-of-fold" and len(summary["members"]) == 3
    splits = load_splits(DataConfig(dataset="synthetic", dataset_options=TINY, folds=3), seed=0)
    assert summary["samples"] == len(splits.train) + len(splits.val)  # every development sample, once
    val = metrics["val"]["fused"]
    assert val["accuracy"] == summary["fusion_estimate"]
    assert val["selection_score"] == summary["fusion_scores"][summary["fusion"]]
    assert all((out / "folds" / str(k) / "metrics.json").is_file() for k in (1, 2, 3))
    member = json.loads((out / "folds" / "1" / "metrics.json").read_text())
    assert member["test"]["present"] == {} and set(metrics["test"]["present"]) == {"m0+m1", "m0", "m1"}
    assert len(metrics["best_epoch"]) == 3 and json.loads((out / "model.json").read_text())["folds"] == 3
    saved = load_file(out / "model.safetensors")
    assert "fusion.rule" in saved and any(k.startswith("members.2.encoders.") for k in saved)
    model = load_run(out)
    test = splits.test
    raw = load_splits(DataConfig(dataset="synthetic", dataset_options=TINY, folds=3, standardize=False), seed=0)
    inputs = {m: np.asarray(raw.test.arrays[m])[raw.test.rows] for m in test.modalities}
    labels = np.asarray(test.classes)[test.labels[test.rows]]
    assert model.evaluate(inputs, labels)["fused"]["accuracy"] == pytest.approx(metrics["test"]["fused"]["accuracy"])


def test_the_bag_averages_its_members_and_fuses_by_the_chosen_rule(bagged):
    out, _ = bagged
    bag = load_run(out)
    members = [load_run(out / "folds" / str(k)) for k in (1, 2, 3)]
    raw = load_splits(DataConfig(dataset="synthetic", dataset_options=TINY, folds=3, standardize=False), seed=0)
    inputs = {m: np.asarray(raw.test.arrays[m])[raw.test.rows] for m in raw.test.modalities}
    each = [m.strategy.collect(m.dataset(inputs)[0]) for m in members]
    logp = {m: torch.stack([torch.log_softmax(e.unimodal[m], 1) for e in each]).mean(0) for m in inputs}
    present = each[0].present
    fusion = bag.strategy.fusion
    own = torch.stack([torch.log_softmax(e.fused, 1) for e in each]).mean(0)
    with torch.no_grad():
        heads = [m.strategy.fusion_head(e.features) for m, e in zip(members, each)]
    head = torch.stack([torch.log_softmax(h, 1) for h in heads]).mean(0)
    standardized = members[0].dataset(inputs)[0]
    learners = bag.strategy.learners  # the classical learners: each the mean of its members' answers
    assert learners is not None and len(learners.fitted) == 3
    arrays = {m: np.asarray(standardized.arrays[m])[standardized.rows] for m in inputs}
    answers = learners.log_probs(arrays, {m: p.numpy() for m, p in present.items()})
    experts = {**logp, **answers}
    fitted = Fitted((fusion.weight, fusion.bias), fusion.weights)
    expected = apply_rule(fusion.chosen, experts, {**present, **learners.present(present)}, fitted, head, own)
    assert np.allclose(bag.predict_proba(inputs), expected.softmax(1).numpy(), atol=1e-5)


def test_an_interrupted_cross_fitted_run_resumes_to_the_same_model(tmp_path, monkeypatch, bagged):
    _, whole = bagged
    original = Run.on_epoch_end

    def interrupt(self, strategy, state):  # in the second member's first epoch, once it is saved
        original(self, strategy, state)
        if self.path.parts[-2:] == ("folds", "2") and state["epoch"] == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(Run, "on_epoch_end", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_run(tiny_config(folds=3, epochs=3), tmp_path / "cut")
    assert (tmp_path / "cut" / "folds" / "1" / "metrics.json").is_file()
    assert (tmp_path / "cut" / "folds" / "2" / "checkpoint.pt").is_file()
    monkeypatch.setattr(Run, "on_epoch_end", original)
    resumed = train_run(tiny_config(folds=3, epochs=3), tmp_path / "cut")
    assert resumed["test"] == whole["test"]
    assert resumed["strategy_summary"]["fusion"] == whole["strategy_summary"]["fusion"]


def test_any_strategy_can_be_cross_fitted_and_its_own_fusion_is_a_candidate(tmp_path):
    metrics = train_run(tiny_config(strategy="joint", folds=2, epochs=2), tmp_path / "joint")
    assert "own" in metrics["strategy_summary"]["fusion_scores"]
    model = load_run(tmp_path / "joint")
    assert type(model.strategy).__name__ == "Bag" and len(model.strategy.members) == 2
    assert Run(tmp_path / "joint").file("history.csv").read_text().splitlines()[0].startswith("fold,")


def test_a_member_may_select_its_epoch_on_the_fold_it_predicts():
    config = dict(dataset="synthetic", dataset_options=TINY, folds=3, fold=1)
    inner = load_splits(DataConfig(**config), seed=0)
    held = load_splits(DataConfig(**config, fold_validation="holdout"), seed=0)
    assert np.array_equal(held.val.rows, held.holdout.rows) and np.array_equal(held.holdout.rows, inner.holdout.rows)
    assert set(held.train.rows) == set(inner.train.rows) | set(inner.val.rows)  # the inner share trains instead


def test_a_cross_fitted_run_is_re_evaluated_as_it_was_tested(bagged):
    from altmodal.experiment import evaluate_run

    out, metrics = bagged
    again = evaluate_run(out)
    assert again["test"]["fused"]["accuracy"] == pytest.approx(metrics["test"]["fused"]["accuracy"])
    missing = evaluate_run(out, missing_rate=0.5)
    assert 0 <= missing["test"]["fused"]["accuracy"] <= 1 and missing["missing"]["realised_share"] > 0.2
