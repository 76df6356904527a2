import pytest
import torch

from altmodal.encoders import EncoderConfig
from altmodal.experiment import resolve, train_run
from altmodal.fusion import combine, entropy_weights
from altmodal.fusion_choice import ChosenFusion, apply_rule, choose_rule, fit_stacked, stack_inputs
from altmodal.runs import Run
from altmodal.strategies import TrainConfig, build_strategy
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
    fused = apply_rule("stacked", logits, present, choice.stacked)
    assert float((fused.argmax(1) == label).float().mean()) > 0.95


def test_a_rule_that_needs_no_fitting_wins_ties():
    n, c = 60, 3
    label = torch.arange(n) % c
    logits = {"a": confident(label, c), "b": confident(label, c, 2.0)}
    present = {m: torch.ones(n, dtype=torch.bool) for m in logits}
    choice = choose_rule(logits, present, label, c)
    assert choice.scores == {"entropy": 1.0, "mean": 1.0, "stacked": 1.0}
    assert choice.rule == "entropy"


def test_samples_missing_a_modality_are_fused_by_the_entropy_rule():
    torch.manual_seed(1)
    logits = {"a": torch.randn(5, 3), "b": torch.randn(5, 3)}
    present = {
        "a": torch.tensor([1, 1, 0, 1, 1], dtype=torch.bool),
        "b": torch.tensor([1, 0, 1, 1, 1], dtype=torch.bool),
    }
    weight, bias = fit_stacked(stack_inputs(logits), torch.tensor([0, 1, 2, 0, 1]), 3)
    fused = apply_rule("stacked", logits, present, (weight, bias))
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
    assert metrics["strategy_summary"]["fusion"] in ("entropy", "mean", "head", "stacked")
    assert set(metrics["strategy_summary"]["fusion_scores"]) == {"entropy", "mean", "head", "stacked"}
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
        mla.configure(TrainConfig(lr=0.1, batch_size=16, grad_clip=grad_clip))
        if fusion_head:
            initial = mla.state_dict()["fusion_head.fc.weight"].clone()
        mla.train_epoch(tiny_splits.train, 0)
        states[fusion_head] = mla.state_dict()
        assert all(p.grad is None for p in mla.parameters())
    with_head, without = states[True], states[False]
    assert set(with_head) - set(without) == {"fusion_head.fc.weight", "fusion_head.fc.bias"}
    assert all(torch.equal(without[k], with_head[k]) for k in without)
    assert not torch.equal(with_head["fusion_head.fc.weight"], initial)
