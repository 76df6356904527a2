"""AV-digits on a few real FSDD recordings and the real MNIST pool (skipped without shared/data)."""

import numpy as np
import pytest

from altmodal.data.corpora.avdigits import pair_images
from altmodal.data.corpora.cache import SPEAKER_OPTIONS, open_cache, speaker_split
from altmodal.data.corpora.common import Options
from altmodal.data.features import DataError
from altmodal.data.media.audio import FbankConfig, audio_fbank
from altmodal.data.registry import DATASETS, DataConfig, load_splits
from altmodal.prepare import prepare
from tests.media_fakes import SHARED_DATA

pytestmark = pytest.mark.skipif(
    not (SHARED_DATA / "fsdd" / "recordings").is_dir() or not (SHARED_DATA / "mnist" / "digits").is_dir(),
    reason=f"the real data folder {SHARED_DATA} (fsdd/, mnist/) is not available",
)
MNIST_COUNTS = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """80 real recordings (2 speakers x 10 digits x indices 0, 5, 6, 7) and the whole MNIST pool."""
    pytest.importorskip("soundfile")
    root = tmp_path_factory.mktemp("raw")
    (root / "fsdd" / "recordings").mkdir(parents=True)
    (root / "mnist").mkdir()
    (root / "mnist" / "digits").symlink_to(SHARED_DATA / "mnist" / "digits")
    for speaker in ("jackson", "theo"):
        for digit in range(10):
            for index in (0, 5, 6, 7):
                name = f"{digit}_{speaker}_{index}.wav"
                (root / "fsdd" / "recordings" / name).symlink_to(SHARED_DATA / "fsdd" / "recordings" / name)
    (root / "fsdd" / "recordings" / "README.wav").write_bytes(b"")
    out = tmp_path_factory.mktemp("cache")
    summary = prepare("avdigits", root, out)
    return out, summary


def test_prepare_caches_recordings_and_the_image_pool(cache):
    out, summary = cache
    assert summary.num_samples == 80 and summary.splits == {"test": 20, "train": 60} and not summary.skipped
    assert (
        len(summary.notes) == 1
        and "README.wav: left out, the name is not <digit>_<speaker>_<index>.wav" in (summary.notes[0])
    )
    opened = open_cache(out, "avdigits")
    assert opened.arrays["audio"].shape == (80, 128, 64)
    assert np.bincount(np.asarray(opened.extra("pool_label"))).tolist() == MNIST_COUNTS
    assert opened.extra("pool_visual").shape == (10000, 1, 1, 28, 28)
    row = opened.keys.tolist().index("3_theo_6")
    direct = audio_fbank(SHARED_DATA / "fsdd" / "recordings" / "3_theo_6.wav", FbankConfig(num_bins=64, frames=128))
    np.testing.assert_allclose(np.asarray(opened.arrays["audio"][row], dtype=np.float32), direct, atol=2e-2)
    assert opened.labels[row] == 3 and opened.group[row] == "theo" and opened.split[row] == "train"


def test_pairs_match_digits_and_train_and_test_images_are_disjoint(cache):
    out, _ = cache
    opened = open_cache(out, "avdigits")
    splits = load_splits(DataConfig(dataset="avdigits", data_dir=str(out)), 0)
    assert splits.train.kinds == {"audio": "resnet18-audio", "visual": "resnet18-visual"}
    assert (len(splits.train), len(splits.val), len(splits.test)) == (50, 10, 20)
    split = np.full(80, "train", dtype="<U5")
    split[splits.val.rows], split[splits.test.rows] = "val", "test"
    pool_label = np.asarray(opened.extra("pool_label"))
    pair = pair_images(opened.labels, split, pool_label, 0)
    assert (pool_label[pair] == opened.labels).all()
    seen = np.concatenate([pair[splits.train.rows], pair[splits.val.rows]])
    assert len(set(seen)) == len(seen) and not set(seen) & set(pair[splits.test.rows])
    visual = np.asarray(splits.train.arrays["visual"])
    np.testing.assert_array_equal(visual, np.asarray(opened.extra("pool_visual"))[pair])
    again = load_splits(DataConfig(dataset="avdigits", data_dir=str(out)), 5)  # the training seed changes nothing
    np.testing.assert_array_equal(np.asarray(again.train.arrays["visual"]), visual)
    other = load_splits(DataConfig(dataset="avdigits", data_dir=str(out), dataset_options=("pair_seed=1",)), 0)
    assert not np.array_equal(np.asarray(other.train.arrays["visual"]), visual)
    batch = splits.train.gather(np.arange(8))
    assert batch.inputs["visual"].shape == (8, 1, 1, 28, 28) and batch.inputs["audio"].shape == (8, 128, 64)


def test_speaker_split_holds_out_whole_speakers(cache):
    out, _ = cache
    opened = open_cache(out, "avdigits")
    config = DataConfig(dataset="avdigits", data_dir=str(out), dataset_options=("split=speaker", "test_speakers=1"))
    splits = load_splits(config, 0)
    test_speakers = set(opened.group[splits.test.rows])
    assert len(test_speakers) == 1 and len(splits.test) == 40
    assert not test_speakers & set(opened.group[np.concatenate([splits.train.rows, splits.val.rows])])
    named = DataConfig(dataset="avdigits", data_dir=str(out), dataset_options=("split=speaker", "test_speakers=theo"))
    assert set(opened.group[load_splits(named, 0).test.rows]) == {"theo"}


def test_validation_can_hold_out_whole_speakers_too():
    groups = np.repeat(np.array(["ann", "bob", "cat", "dan"]), 10)
    labels = np.tile(np.arange(5), 8)
    options = Options("t", {"test_speakers": "1", "val_speakers": "1"}, list(SPEAKER_OPTIONS))
    split = speaker_split(groups, labels, options, 0, 0.2, "t", "1")
    held = {name: set(groups[split == name]) for name in ("train", "val", "test")}
    assert len(held["val"]) == 1 and len(held["test"]) == 1 and len(held["train"]) == 2
    assert not held["val"] & held["train"] and not held["test"] & (held["train"] | held["val"])
    stratified = speaker_split(
        groups, labels, Options("t", {"test_speakers": "1"}, list(SPEAKER_OPTIONS)), 0, 0.2, "t", "1"
    )
    assert held["test"] == set(groups[stratified == "test"]) and (stratified == "val").sum() == 5  # 1 per class
    bad = Options("t", {"test_speakers": "1", "val_speakers": "3"}, list(SPEAKER_OPTIONS))
    with pytest.raises(DataError, match="val_speakers='3' must be a count or share of the 3 speakers"):
        speaker_split(groups, labels, bad, 0, 0.2, "t", "1")


def test_registered_defaults_are_small_cpu_settings():
    defaults = DATASETS["avdigits"].defaults
    assert defaults["resnet_width"] == 16 and defaults["dim"] == 64 and "lr" in defaults and "epochs" in defaults
