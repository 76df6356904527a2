import numpy as np
import pytest

from altmodal.data.dataset import MultimodalDataset, batch_positions, iterate
from altmodal.data.splits import make_splits, missing_mask, standardize, stratified_split


def test_stratified_split_keeps_class_proportions_and_is_seeded():
    labels = np.repeat(np.arange(4), [100, 60, 40, 20])
    split = stratified_split(labels, 0.15, 0.25, seed=3)
    for c, n in zip(range(4), [100, 60, 40, 20]):
        rows = labels == c
        assert (split[rows] == "test").sum() == round(n * 0.25)
        assert (split[rows] == "val").sum() == round(n * 0.15)
    assert (stratified_split(labels, 0.15, 0.25, seed=3) == split).all()
    assert not (stratified_split(labels, 0.15, 0.25, seed=4) == split).all()


def test_stratified_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="must be in"):
        stratified_split(np.arange(10) % 2, 0.6, 0.5, seed=0)


def _dataset(n=40):
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 3.0, size=(n, 4)).astype(np.float32)
    return MultimodalDataset("toy", {"a": x}, {"a": np.ones(n, bool)}, np.arange(n) % 2, ["0", "1"], np.arange(n))


def test_standardize_uses_training_statistics_only():
    dataset = _dataset()
    split = np.array(["train"] * 20 + ["val"] * 10 + ["test"] * 10)
    splits = standardize(make_splits(dataset, split))
    train = splits.train.arrays["a"][splits.train.rows]
    assert np.allclose(train.mean(axis=0), 0, atol=1e-5) and np.allclose(train.std(axis=0), 1, atol=1e-4)
    # Changing test values does not change how anything is scaled.
    changed = _dataset()
    changed.arrays["a"][30:] += 1000
    splits2 = standardize(make_splits(changed, split))
    assert np.allclose(splits2.train.arrays["a"][:30], splits.train.arrays["a"][:30])


def test_missing_mask_keeps_one_modality_and_only_touches_given_rows():
    n = 2000
    present = {m: np.ones(n, bool) for m in "abc"}
    rows = np.arange(1000)
    mask = missing_mask(present, rows, rate=0.5, seed=1)
    stacked = np.stack([mask[m] for m in "abc"], axis=1)
    assert stacked.any(axis=1).all()
    assert stacked[1000:].all()
    dropped = 1 - stacked[:1000].mean()
    assert 0.4 < dropped < 0.5  # the rate, less the restored modalities
    again = missing_mask(present, rows, rate=0.5, seed=1)
    assert all((again[m] == mask[m]).all() for m in "abc")


def test_missing_mask_never_revives_an_absent_modality():
    present = {"a": np.array([True, False, True]), "b": np.array([False, True, True])}
    mask = missing_mask(present, np.arange(3), rate=0.9, seed=0)
    assert mask["a"].tolist()[:2] == [True, False] and mask["b"].tolist()[:2] == [False, True]
    assert (mask["a"] | mask["b"]).all()


def test_batches_cover_each_sample_once_and_resume_identically():
    batches = batch_positions(10, 3, shuffle=True, seed=1, epoch=2)
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    again = batch_positions(10, 3, shuffle=True, seed=1, epoch=2)
    assert all((a == b).all() for a, b in zip(batches, again))


def test_ranks_split_every_global_batch():
    dataset = _dataset(10)
    one = [b.index.tolist() for b in iterate(dataset, 4, shuffle=True, seed=0, epoch=0)]
    two = [
        [b.index.tolist() for b in iterate(dataset, 4, shuffle=True, seed=0, epoch=0, rank=r, world_size=2)]
        for r in range(2)
    ]
    assert len(two[0]) == len(two[1]) == len(one)
    for whole, r0, r1 in zip(one, *two):
        assert sorted(whole) == sorted(r0 + r1)
