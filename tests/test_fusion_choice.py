import pytest
import torch

from altmodal.encoders import EncoderConfig
from altmodal.experiment import resolve, train_run
from altmodal.fusion import combine, entropy_weights
from altmodal.fusion_choice import ChosenFusion, Fitted, apply_rule, choose_rule, fit_stacked, stack_inputs
from altmodal.runs import Run
from altmodal.strategies import TrainConfig, build_strategy
from altmodal.threads import torch_threads
from altmodal.trainer import Trainer
from tests.conftest import tiny_config


def confident(classes: torch.Tensor, num_classes: int, scale: float = 4.0) -> torch.Tensor:
    return scale * torch.nn.functional.one_hot(classes, num_classes).float()


def test_stacked_rule_learns_a_modality_that_names_the_wrong_class_consistently():
    # m0 is right on half the samples and unsure on the rest; m1 always names (y + 1) mod C:
    # entropy and mean fusion trust m1's confident answer; only a fitted rule can undo it.
    torch.manual_seed(0)
    n, c = 200, 4
    label = torch.arange(n) % c
    m0 = torch.where((torch.arange(n) % 2 == 0).unsqueeze(1), confident(label, c), torch.zeros(n, c))
    logits = {"m0": m0, "m1": confident((label + 1) % c, c)}
    present = {m: torch.ones(n, dtype=torch.bool) for m in logits}
    choice = choose_rule(logits, present, label, c, seed=0)
    assert choice.rule == "stacked"
    assert choice.scores["stacked"] > 0.95 > 0.6 > choice.scores["entropy"]
    fused = apply_rule("stacked", logits, present, choice.fitted)
    assert float((fused.argmax(1) == label).float().mean()) > 0.95
    assert 0.9 < choice.estimate <= 1.0  # chosen on folds it is not scored on: still the stacked rule


def test_folds_fitted_at_once_give_the_choice_of_folds_fitted_in_turn():
    torch.manual_seed(1)
    n, c = 120, 3
    label = torch.arange(n) % c
    logits = {m: confident(label, c, 1.0) + 2 * torch.randn(n, c) for m in ("m0", "m1", "m2")}
    present = {m: torch.ones(n, dtype=torch.bool) for m in logits}
    with torch_threads(1):
        alone, together = (choose_rule(logits, present, label, c, seed=3, workers=w) for w in (1, 2))
    assert alone.scores == together.scores and alone.rule == together.rule and alone.estimate == together.estimate
    assert torch.equal(alone.fitted.weights, together.fitted.weights)
    assert all(torch.equal(a, b) for a, b in zip(alone.fitted.stacked, together.fitted.stacked))


def test_a_rule_that_needs_no_fitting_wins_ties():
    n, c = 60, 3
    label = torch.arange(n) % c
    logits = {"a": confident(label, c), "b": confident(label, c, 2.0)}
    present = {m: torch.ones(n, dtype=torch.bool) for m in logits}
    choice = choose_rule(logits, present, label, c)
    assert choice.scores == {r: 1.0 for r in ("entropy", "mean", "stacked", "weighted", "alone:a", "alone:b")}
    assert choice.rule == "entropy"
    assert not choice.fitted.stacked[0].any()  # the stacked rule lost: its weights are not fitted on all
    assert torch.isfinite(choice.fitted.weights).all() and not torch.equal(choice.fitted.weights, torch.ones(2))


def test_the_stacked_rule_is_a_candidate_only_with_as_many_complete_samples_as_its_inputs():
    c = 4  # 2 modalities x 4 classes: 8 inputs
    for rows, stacked in ((8, False), (9, True)):
        label = torch.arange(rows) % c
        logits = {"a": confident(label, c), "b": torch.randn(rows, c)}
        present = {m: torch.ones(rows, dtype=torch.bool) for m in logits}
        present["b"][0] = False  # a sample missing a modality does not count: 7, then 8 complete
        choice = choose_rule(logits, present, label, c)
        assert ("stacked" in choice.scores) is stacked
        assert choice.samples == rows - 1


def test_samples_missing_a_modality_fall_back_to_the_entropy_rule_for_stacked_fusion():
    torch.manual_seed(1)
    logits = {"a": torch.randn(5, 3), "b": torch.randn(5, 3)}
    present = {
        "a": torch.tensor([1, 1, 0, 1, 1], dtype=torch.bool),
        "b": torch.tensor([1, 0, 1, 1, 1], dtype=torch.bool),
    }
    weight, bias = fit_stacked(stack_inputs(logits), torch.tensor([0, 1, 2, 0, 1]), 3)
    fused = apply_rule("stacked", logits, present, Fitted((weight, bias), torch.ones(2)))
    entropy = combine(logits, entropy_weights(logits, present))
    assert torch.allclose(fused[1:3], entropy[1:3])
    assert torch.allclose(fused[[0, 3, 4]], stack_inputs(logits)[[0, 3, 4]] @ weight + bias)


def test_chosen_fusion_starts_as_the_entropy_rule_and_keeps_its_choice_in_the_state_dict():
    fusion = ChosenFusion(["a", "b"], 3)
    logits = {"a": torch.randn(4, 3), "b": torch.randn(4, 3)}
    present = {m: torch.ones(4, dtype=torch.bool) for m in logits}
    assert torch.allclose(fusion(logits, present), combine(logits, entropy_weights(logits, present)))
    fusion.rule.fill_(1)
    copy = ChosenFusion(["a", "b"], 3)
    copy.load_state_dict(fusion.state_dict())
    assert copy.chosen == "mean"


def test_mla_chooses_its_fusion_on_validation_and_the_paper_preset_does_not(tmp_path):
    metrics = train_run(tiny_config(strategy="mla"), tmp_path / "auto")
    summary = metrics["strategy_summary"]
    rules = {"entropy", "mean", "head", "stacked", "weighted", "alone:m0", "alone:m1"}
    assert summary["fusion"] in rules and set(summary["fusion_scores"]) == rules
    assert 0 <= summary["fusion_estimate"] <= 1
    saved = Run(tmp_path / "auto").load_tensors("model.safetensors")
    assert "chosen_fusion.rule" in saved
    paper = tiny_config(strategy="mla", preset="paper")
    assert paper.options["test_fusion"] == "entropy"
    assert "strategy_summary" not in train_run(paper, tmp_path / "paper")


def test_the_default_run_is_mla_and_feature_files_train_at_lr_0_01(tmp_path):
    config = resolve({"dataset": str(tmp_path / "x.npz")})
    assert config.strategy == "mla" and config.train.lr == 0.01
    assert resolve({"dataset": str(tmp_path / "x.npz"), "lr": 0.002}).train.lr == 0.002


@pytest.mark.parametrize("grad_clip", [0.0, 0.5])
def test_the_fusion_head_never_changes_what_mla_learns(tiny_splits, grad_clip):
    # it shares the last modality's backward pass and optimizer step (its own step when the
    # gradient norm is clipped): the encoders and the shared head end an epoch exactly as without it
    options = resolve({"strategy": "mla", "dataset": "synthetic"}).options
    states, initial = {}, None
    for fusion_head in (True, False):
        torch.manual_seed(0)
        mla = build_strategy(
            "mla", tiny_splits, EncoderConfig(dim=8, hidden=(16,)), {**options, "fusion_head": fusion_head}
        )
        Trainer.attach(mla, TrainConfig(lr=0.1, batch_size=16, grad_clip=grad_clip))
        if fusion_head:
            initial = mla.state_dict()["fusion_head.fc.weight"].clone()
        mla.trainer.train_epoch(mla, tiny_splits.train, 0)
        states[fusion_head] = mla.state_dict()
        assert all(p.grad is None for p in mla.parameters())
    with_head, without = states[True], states[False]
    assert set(with_head) - set(without) == {"fusion_head.fc.weight", "fusion_head.fc.bias"}
    assert all(torch.equal(without[k], with_head[k]) for k in without)
    assert not torch.equal(with_head["fusion_head.fc.weight"], initial)


def test_weighted_and_alone_rules_use_the_present_modalities():
    torch.manual_seed(2)
    logits = {"a": torch.randn(4, 3), "b": torch.randn(4, 3)}
    present = {"a": torch.tensor([1, 1, 0, 1], dtype=torch.bool), "b": torch.tensor([1, 0, 1, 1], dtype=torch.bool)}
    fitted = Fitted((torch.zeros(6, 3), torch.zeros(3)), torch.tensor([2.0, 0.5]))
    weighted = apply_rule("weighted", logits, present, fitted)
    logp = {m: torch.log_softmax(v, dim=1) for m, v in logits.items()}
    assert torch.allclose(weighted[0], 2 * logp["a"][0] + 0.5 * logp["b"][0])
    assert torch.allclose(weighted[1], 2 * logp["a"][1]) and torch.allclose(weighted[2], 0.5 * logp["b"][2])
    alone = apply_rule("alone:a", logits, present)
    entropy = combine(logits, entropy_weights(logits, present))
    assert torch.allclose(alone[[0, 1, 3]], logits["a"][[0, 1, 3]]) and torch.allclose(alone[2], entropy[2])
    mean = apply_rule("mean", logits, present)  # the present modalities averaged
    assert torch.allclose(mean[1], logits["a"][1]) and torch.allclose(mean[0], (logits["a"][0] + logits["b"][0]) / 2)


def test_a_strong_modality_alone_beats_fusion_with_a_noisy_one():
    torch.manual_seed(3)
    n, c = 300, 5
    label = torch.arange(n) % c
    logits = {"good": confident(label, c, 2.0) + 0.3 * torch.randn(n, c), "noise": 3 * torch.randn(n, c)}
    present = {m: torch.ones(n, dtype=torch.bool) for m in logits}
    choice = choose_rule(logits, present, label, c, rules=["entropy", "mean", "alone:good", "alone:noise"])
    assert choice.rule == "alone:good" and choice.scores["alone:good"] == 1.0 > choice.scores["mean"]


def test_the_weighted_rule_learns_to_discount_a_weak_modality():
    torch.manual_seed(4)
    n, c = 400, 4
    label = torch.arange(n) % c
    weak = torch.where(torch.rand(n, 1) < 0.4, confident(label, c, 3.0), confident((label + 1) % c, c, 3.0))
    logits = {"strong": confident(label, c, 1.0) + 0.5 * torch.randn(n, c), "weak": weak}
    present = {m: torch.ones(n, dtype=torch.bool) for m in logits}
    choice = choose_rule(logits, present, label, c)
    w_strong, w_weak = choice.fitted.weights.tolist()
    assert w_strong > 2 * w_weak
    assert choice.scores["weighted"] > choice.scores["mean"]


def test_the_estimate_and_its_macro_f1_come_from_the_same_nested_predictions():
    # One candidate: the nested choice is that rule on every fold, so the estimate is its
    # accuracy and the macro-F1 its macro-F1 over the complete samples it scored (not the rest).
    from altmodal.metrics import macro_f1

    torch.manual_seed(0)
    n, c = 60, 3
    label = torch.arange(n) % c
    logits = {"m0": torch.randn(n, c) + confident(label, c, 1.0), "m1": torch.randn(n, c)}
    present = {"m0": torch.ones(n, dtype=torch.bool), "m1": torch.arange(n) < 50}
    choice = choose_rule(logits, present, label, c, rules=["mean"], seed=0)
    full = present["m1"]
    mean = apply_rule("mean", {m: v[full] for m, v in logits.items()}, {m: v[full] for m, v in present.items()})
    assert choice.samples == 50
    assert choice.estimate == pytest.approx(float((mean.argmax(1) == label[full]).double().mean()))
    assert choice.estimate_macro_f1 == pytest.approx(macro_f1(mean, label[full], c))


def test_a_runs_held_out_block_reports_the_nested_estimate_over_the_samples_it_covers(tmp_path):
    metrics = train_run(tiny_config(epochs=2, test_missing_rate=0.3), tmp_path / "run")
    summary, val = metrics["strategy_summary"], metrics["val"]
    assert val["fused"]["accuracy"] == summary["fusion_estimate"]
    assert val["fused"]["macro_f1"] == summary["fusion_estimate_macro_f1"]
    from altmodal.data.registry import load_splits

    config = tiny_config(epochs=2, test_missing_rate=0.3)
    splits = load_splits(config.data, config.train.seed)
    rows = splits.val.rows
    complete = int(sum(all(splits.val.present[m][r] for m in splits.modalities) for r in rows))
    assert val["count"] == summary["samples"] == complete < len(rows)
