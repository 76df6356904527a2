import numpy as np
import pytest

from altmodal.data.features import DataError
from altmodal.data.mfeat import CONTENT_SHA256, WIDTHS, content_digest, load_mfeat
from altmodal.data.registry import DataConfig, load_splits
from altmodal.data.synthetic import SyntheticConfig, generate, synthetic_config


def test_mfeat_shapes_classes_and_checksum():
    dataset = load_mfeat()
    assert len(dataset) == 2000 and dataset.classes == [str(d) for d in range(10)]
    assert {m: dataset.input_shape(m)[0] for m in dataset.modalities} == WIDTHS
    assert np.bincount(dataset.labels).tolist() == [200] * 10
    arrays = {m: np.asarray(a) for m, a in dataset.arrays.items()}
    arrays["label"] = dataset.labels.astype(np.uint8)
    assert content_digest(arrays) == CONTENT_SHA256


def test_mfeat_splits_are_standardised_and_views_selected():
    splits = load_splits(DataConfig(dataset="mfeat", modalities=("mor", "fou")), seed=0)
    assert splits.modalities == ["mor", "fou"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1200, 300, 500)
    train = splits.train.arrays["fou"][splits.train.rows]
    assert abs(float(train.mean())) < 1e-4


def test_synthetic_is_deterministic_and_imbalanced():
    config = SyntheticConfig(samples=600, strengths=(2.0, 0.2), shared=1.0)
    a, b = generate(config), generate(config)
    assert all(np.array_equal(a.arrays[m], b.arrays[m]) for m in a.modalities)

    # Class separation (between-class over within-class variance) follows the strengths.
    def separation(x, y):
        means = np.stack([x[y == c].mean(0) for c in np.unique(y)])
        return means.var(0).sum() / np.mean([x[y == c].var(0).sum() for c in np.unique(y)])

    assert separation(a.arrays["m0"], a.labels) > 10 * separation(a.arrays["m1"], a.labels)


def test_synthetic_private_signal_and_missing_rate():
    config = SyntheticConfig(samples=900, modalities=3, shared=0.0, missing_rate=0.5)
    data = generate(config)
    stacked = np.stack([data.present[m] for m in data.modalities], 1)
    assert stacked.any(1).all() and not stacked.all()


def test_synthetic_options_are_checked():
    assert synthetic_config({"strengths": "1,0.5", "modalities": "2"}).strengths == (1.0, 0.5)
    with pytest.raises(DataError, match="unknown option 'strenght'"):
        synthetic_config({"strenght": "1"})
    with pytest.raises(DataError, match="not a valid int"):
        synthetic_config({"samples": "many"})
    with pytest.raises(DataError, match="strengths has 3 values for 2 modalities"):
        generate(synthetic_config({"strengths": "1,2,3"}))
