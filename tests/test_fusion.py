import math

import pytest
import torch

from altmodal.fusion import (
    ConcatHead,
    FiLMHead,
    GatedHead,
    SumHead,
    batch_entropy_weights,
    build_fusion_head,
    combine,
    entropy_weights,
    fixed_weights,
)


def test_entropy_weights_by_hand():
    logits = {"a": torch.tensor([[10.0, 0.0]]), "b": torch.tensor([[0.0, 0.0]])}
    present = {"a": torch.tensor([True]), "b": torch.tensor([True])}
    w = entropy_weights(logits, present)
    p = torch.softmax(torch.tensor([10.0, 0.0]), 0)
    e_a = float(-(p * p.log()).sum())
    e_b = math.log(2)
    expected_a = math.exp(-e_a) / (math.exp(-e_a) + math.exp(-e_b))
    assert float(w["a"][0]) == pytest.approx(expected_a, rel=1e-5)
    assert float(w["a"][0] + w["b"][0]) == pytest.approx(1.0)


def test_absent_modalities_get_zero_weight_and_one_present_modality_decides():
    torch.manual_seed(0)
    logits = {m: torch.randn(4, 3) for m in "abc"}
    present = {
        "a": torch.tensor([True, False, True, False]),
        "b": torch.tensor([True, True, False, False]),
        "c": torch.tensor([False, False, True, True]),
    }
    w = entropy_weights(logits, present)
    for m in "abc":
        assert (w[m][~present[m]] == 0).all()
    sums = sum(w[m] for m in "abc")
    assert torch.allclose(sums, torch.ones(4))
    fused = combine(logits, w)
    assert torch.allclose(fused[3], logits["c"][3])  # only c present
    assert torch.allclose(fused[1], logits["b"][1])


def test_per_sample_weights_do_not_depend_on_the_batch_but_the_reference_variant_does():
    torch.manual_seed(1)
    logits = {"a": torch.randn(8, 4) * 3, "b": torch.randn(8, 4)}
    present = {m: torch.ones(8, dtype=torch.bool) for m in "ab"}
    whole = combine(logits, entropy_weights(logits, present))
    half = {m: v[:3] for m, v in logits.items()}
    part = combine(half, entropy_weights(half, {m: p[:3] for m, p in present.items()}))
    assert torch.allclose(whole[:3], part, atol=1e-6)
    ref_whole = batch_entropy_weights(logits, present)["a"][0]
    ref_part = batch_entropy_weights(half, {m: p[:3] for m, p in present.items()})["a"][0]
    assert not torch.isclose(ref_whole, ref_part)
    assert torch.allclose(batch_entropy_weights(logits, present)["a"], ref_whole.expand(8))


def test_fixed_weights_renormalise_over_present():
    present = {"a": torch.tensor([True, True]), "b": torch.tensor([True, False])}
    w = fixed_weights((0.55, 0.45), ["a", "b"], present)
    assert torch.allclose(w["a"], torch.tensor([0.55, 1.0])) and torch.allclose(w["b"], torch.tensor([0.45, 0.0]))
    with pytest.raises(ValueError, match="3 fusion weights given for 2 modalities"):
        fixed_weights((1, 1, 1), ["a", "b"], present)


def test_probability_space_fusion():
    logits = {"a": torch.tensor([[2.0, 0.0]]), "b": torch.tensor([[0.0, 1.0]])}
    w = {"a": torch.tensor([0.5]), "b": torch.tensor([0.5])}
    fused = combine(logits, w, "probs").exp()
    expected = 0.5 * torch.softmax(logits["a"], 1) + 0.5 * torch.softmax(logits["b"], 1)
    assert torch.allclose(fused, expected)


@pytest.mark.parametrize("modalities", [["a", "b"], ["a", "b", "c"]])
@pytest.mark.parametrize("kind", ["concat", "sum", "film", "gated"])
def test_fusion_heads_shapes(kind, modalities):
    head = build_fusion_head(kind, modalities, 6, 4)
    features = {m: torch.randn(5, 6) for m in modalities}
    assert head(features).shape == (5, 4)
    unimodal = head.unimodal(features)
    assert set(unimodal) == set(modalities) and all(v.shape == (5, 4) for v in unimodal.values())


def test_concat_shares_add_up_to_the_fused_logits():
    head = ConcatHead(["a", "b", "c"], 6, 4)
    features = {m: torch.randn(5, 6) for m in "abc"}
    assert torch.allclose(sum(head.unimodal(features).values()), head(features), atol=1e-5)


def test_sum_share_is_the_modality_layer_with_its_own_bias_over_m():
    head = SumHead(["a", "b", "c"], 6, 4)
    with torch.no_grad():
        for k, m in enumerate("abc"):
            head.fc[m].bias.fill_(float(k + 1))
    f = {m: torch.randn(5, 6) for m in "abc"}
    expected = f["b"] @ head.fc["b"].weight.T + 2.0 / 3
    assert torch.allclose(head.unimodal(f)["b"], expected, atol=1e-6)


def test_concat_share_is_the_modality_columns_plus_bias_over_m():
    head = ConcatHead(["a", "b"], 3, 2)
    f = {"a": torch.randn(1, 3), "b": torch.randn(1, 3)}
    expected = f["b"] @ head.fc.weight[:, 3:].T + head.fc.bias / 2
    assert torch.allclose(head.unimodal(f)["b"], expected)


def test_film_and_gated_with_two_modalities_match_the_reference_form():
    torch.manual_seed(0)
    film = FiLMHead(["a", "v"], 4, 3)
    f = {"a": torch.randn(2, 4), "v": torch.randn(2, 4)}
    scale, shift = film.film["a"](f["a"]).chunk(2, dim=1)
    assert torch.allclose(film(f), film.fc(scale * f["v"] + shift))
    gated = GatedHead(["a", "v"], 4, 3)
    expected = gated.fc(torch.sigmoid(gated.proj["a"](f["a"])) * gated.proj["v"](f["v"]))
    assert torch.allclose(gated(f), expected)
    with pytest.raises(ValueError, match="film fusion needs at least two modalities"):
        FiLMHead(["a"], 4, 3)


def test_auroc_by_hand_with_ties():
    from altmodal.metrics import auroc

    score = torch.tensor([0.9, 0.8, 0.8, 0.1])
    positive = torch.tensor([True, False, True, False])
    # pairs (pos, neg): (0.9,0.8)=1, (0.9,0.1)=1, (0.8,0.8)=0.5, (0.8,0.1)=1 -> 3.5 / 4
    assert auroc(score, positive) == pytest.approx(0.875)
