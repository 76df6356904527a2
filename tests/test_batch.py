import pytest
import torch

from altmodal.data.batch import Batch, collate, zero_absent


def test_collate_fills_absent_modalities_with_zeros_and_masks_them():
    samples = [
        {"inputs": {"a": torch.ones(3), "b": torch.full((2,), 2.0)}, "label": 1, "index": 10},
        {"inputs": {"a": torch.full((3,), 5.0)}, "label": 0, "index": 11},
        {"inputs": {"a": None, "b": torch.ones(2)}, "label": 2, "index": 12},
    ]
    batch = collate(samples)
    assert batch.modalities == ["a", "b"]
    assert batch.inputs["a"].shape == (3, 3) and batch.inputs["b"].shape == (3, 2)
    assert batch.present["a"].tolist() == [True, True, False]
    assert batch.present["b"].tolist() == [True, False, True]
    assert batch.inputs["b"][1].abs().sum() == 0 and batch.inputs["a"][2].abs().sum() == 0
    assert batch.label.tolist() == [1, 0, 2] and batch.index.tolist() == [10, 11, 12]


def test_collate_names_the_modality_and_sample_with_a_wrong_shape():
    samples = [
        {"inputs": {"a": torch.ones(3)}, "label": 0, "index": 0},
        {"inputs": {"a": torch.ones(4)}, "label": 1, "index": 7},
    ]
    with pytest.raises(ValueError, match=r"modality 'a' of sample 7 has shape \(4,\)"):
        collate(samples)


def test_select_and_with_present():
    batch = collate([{"inputs": {"a": torch.full((2,), float(i))}, "label": i, "index": i} for i in range(4)])
    sub = batch.select(torch.tensor([True, False, True, False]))
    assert sub.index.tolist() == [0, 2] and sub.inputs["a"][:, 0].tolist() == [0.0, 2.0]
    masked = batch.with_present({"a": torch.tensor([True, True, False, True])})
    assert masked.inputs["a"][2].abs().sum() == 0 and masked.inputs["a"][3, 0] == 3.0


def test_zero_absent_keeps_trailing_shape():
    x = torch.ones(2, 3, 4)
    out = zero_absent(x, torch.tensor([False, True]))
    assert out.shape == x.shape and out[0].sum() == 0 and out[1].sum() == 12


def test_batch_to_keeps_dicts():
    batch = Batch(
        {"a": torch.ones(2, 1)}, {"a": torch.ones(2, dtype=torch.bool)}, torch.zeros(2).long(), torch.arange(2)
    )
    moved = batch.to("cpu")
    assert moved.size == 2 and moved.present["a"].dtype == torch.bool
