"""AV-digits: spoken digits (FSDD recordings) paired with handwritten digits (MNIST images).

Both modalities are real; only the pairing is artificial (in the spirit of AV-MNIST). Raw layout
(``--root``, e.g. ``shared/data``)::

    ROOT/fsdd/recordings/<digit>_<speaker>_<index>.wav   3,000 recordings, 8 kHz, 6 speakers x 10 digits x 50
    ROOT/mnist/digits/<digit>.json.gz                    gzip JSON {"data": [...]}: 784 floats in [0, 1]
                                                         per 28x28 image, the images of that digit in a row

Prepared (``altmodal prepare avdigits --root ROOT --out CACHE``): one sample per recording, its
``audio`` a (128, 64) log-mel filterbank (25 ms / 10 ms, the paper's pipeline at this sample
rate: 128 mel bins below 4 kHz would leave 4 filters covering no FFT bin, 64 leave none; 128
frames = 1.28 s hold all but 3 of the 3,000 clips, which last up to 2.28 s), and the whole MNIST
pool cached once as 28 px uint8 images (``image_size`` option; ``pool_visual.npy``,
``pool_label.npy``).

Loaded: the split first -- ``split=customary`` (recording index 0-4 test, 5-49 train; the FSDD
convention) or ``split=speaker`` (``test_speakers`` held out: a count drawn with ``split_seed``
or names, default 2; audio is then the weak modality) -- with a stratified validation share of
the training recordings, or with ``val_speakers`` whole speakers held out for validation too
(model selection then also sees unseen voices). Then the pairing (``pair_seed``): each digit's MNIST images are
shuffled and halved; training and validation recordings draw their images from the first half,
test recordings from the second, without replacement (a half holds 431-563 images, more than the
recordings of one digit in any split), so no image is shared between train, validation and test.
The image transforms are the paper's with milder settings for 28 px digits: RandomResizedCrop
with area share 0.85-1 and no flips (a mirrored digit is not a digit), MNIST's mean and std.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from altmodal.data.corpora.builders import AUDIO_OPTIONS, audio_source, audio_spec, fbank_config, visual_spec
from altmodal.data.corpora.cache import LOAD_OPTIONS, SPEAKER_OPTIONS, open_cache, speaker_split, to_loaded
from altmodal.data.corpora.common import Corpus, Item, Options, Plan
from altmodal.data.features import DataError
from altmodal.data.loaded import DataConfig, Loaded
from altmodal.data.splits import carve_validation

NAME = "avdigits"
RECORDING = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
OPTIONS = {
    "bins": "mel filterbank bins (default 64)",
    "frames": "filterbank frames per recording (default 128)",
    "fbank_backend": AUDIO_OPTIONS["fbank_backend"],
    "image_size": "side of the cached digit images (default 28, MNIST's own)",
}
LOAD = {
    **LOAD_OPTIONS,
    "split": "customary (index 0-4 test) or speaker (held-out speakers)",
    **SPEAKER_OPTIONS,
    "pair_seed": "seed of the audio-image pairing (default 0)",
}


def plan(root: Path, raw: Mapping[str, str], previous: Path | None = None) -> Plan:
    """One item per FSDD recording (audio source) and the MNIST pool as extra arrays."""
    options = Options(f"prepare {NAME}", raw, list(OPTIONS))
    recordings, digits = root / "fsdd" / "recordings", root / "mnist" / "digits"
    for folder in (recordings, digits):
        if not folder.is_dir():
            raise DataError(f"{folder}: no such folder; --root must hold fsdd/recordings and mnist/digits")
    fbank = fbank_config(options, bins=64, frames=128)
    size = options.integer("image_size", 28)
    notes: list[str] = []
    found = []
    for wav in sorted(recordings.glob("*.wav")):
        match = RECORDING.match(wav.name)
        if match is None:
            notes.append(f"{wav}: left out, the name is not <digit>_<speaker>_<index>.wav")
            continue
        found.append((int(match[1]), match[2], int(match[3]), wav))
    if not found:
        raise DataError(f"{recordings}: no <digit>_<speaker>_<index>.wav recordings")
    items = [
        Item(wav.stem, str(digit), "test" if index < 5 else "train", speaker, {"audio": audio_source([wav], fbank)})
        for digit, speaker, index, wav in sorted(found)
    ]
    pool, pool_label = read_mnist(digits, size)
    settings = {"bins": fbank.num_bins, "frames": fbank.frames, "image_size": size, "pool": len(pool_label)}
    return Plan(
        NAME,
        [str(d) for d in range(10)],
        [audio_spec(fbank)],
        items,
        settings,
        notes,
        extra_arrays={"pool_visual": pool, "pool_label": pool_label},
    )


def read_mnist(folder: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1, 1, size, size) uint8 images and (N,) int64 digits of ``<d>.json.gz``, d = 0..9."""
    images, labels = [], []
    for digit in range(10):
        file = folder / f"{digit}.json.gz"
        try:
            with gzip.open(file, "rt", encoding="utf-8") as handle:
                values = np.asarray(json.load(handle)["data"], dtype=np.float32)
        except (OSError, ValueError, KeyError, TypeError, EOFError, zlib.error) as err:  # EOF: truncated
            raise DataError(f"{file}: not a readable gzip JSON file with a 'data' list ({err})") from err
        if values.size == 0 or values.size % 784:
            raise DataError(f"{file}: holds {values.size} values, not a whole number of 28x28 images")
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise DataError(f"{file}: pixel values must be finite and within [0, 1]")
        images.append(values.reshape(-1, 1, 28, 28))
        labels.append(np.full(len(images[-1]), digit, dtype=np.int64))
    pixels = torch.from_numpy(np.concatenate(images))
    if size != 28:
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    uint8 = torch.round(pixels.clamp(0, 1) * 255).to(torch.uint8).numpy()
    return uint8[:, None], np.concatenate(labels)


def pair_images(labels: np.ndarray, split: np.ndarray, pool_label: np.ndarray, seed: int) -> np.ndarray:
    """(N,) pool index per sample: train/val recordings draw from one half of their digit's
    images, test recordings from the other, without replacement while a half lasts (cycling
    through a reshuffled half beyond that)."""
    rng = np.random.default_rng([seed, 31])
    pair = np.zeros(len(labels), dtype=np.int64)
    for digit in np.unique(labels):
        pool = rng.permutation(np.flatnonzero(pool_label == digit))
        halves = {"train": pool[: len(pool) // 2], "test": pool[len(pool) // 2 :]}
        for half, names in (("train", ("train", "val")), ("test", ("test",))):
            rows = np.flatnonzero((labels == digit) & np.isin(split, names))
            if len(rows) and not len(halves[half]):
                raise DataError(f"{NAME}: no MNIST images of digit {digit} for the {half} half")
            pair[rows] = np.resize(rng.permutation(halves[half]), len(rows))
    return pair


def load(config: DataConfig, options: Mapping[str, str]) -> Loaded:
    """Audio from the cache, images paired at load time (see the module docstring)."""
    parsed = Options(NAME, options, list(LOAD))
    seed = parsed.integer("split_seed", 0, minimum=0)
    cache = open_cache(config.data_dir, NAME)
    if parsed.choice("split", "customary", ("customary", "speaker")) == "speaker":
        split = speaker_split(cache.group, cache.labels, parsed, seed, config.val_fraction, NAME, "2")
    else:
        split = carve_validation(cache.split, cache.labels, config.val_fraction, seed)
    pool_label = np.asarray(cache.extra("pool_label"))
    pool = cache.extra("pool_visual")
    pair = pair_images(cache.labels, split, pool_label, parsed.integer("pair_seed", 0, minimum=0))
    order = np.argsort(pair, kind="stable")
    visual = np.empty((len(pair), *pool.shape[1:]), dtype=np.uint8)
    visual[order] = pool[pair[order]]
    size = int(pool.shape[-1])
    specs = {
        "audio": cache.spec("audio"),
        "visual": asdict(visual_spec(size, 1, channels=1, mean=(MNIST_MEAN,), std=(MNIST_STD,))),
    }
    arrays = {"audio": cache.arrays["audio"], "visual": visual}
    present = {"audio": cache.present["audio"], "visual": np.ones(len(pair), dtype=bool)}
    return to_loaded(
        NAME, cache, split, parsed, arrays=arrays, present=present, specs=specs, scale_min=0.85, flip=False
    )


CORPUS: Corpus = Corpus(
    NAME,
    "AV-digits: FSDD speech (3,000 recordings, 6 speakers) paired with MNIST images of the same digit, "
    "10 classes; prepare it first (--root shared/data); options: " + ", ".join(LOAD),
    plan,
    load,
    OPTIONS,
    defaults={"dim": 64, "resnet_width": 16, "lr": 0.05, "epochs": 10, "lr_step": 7},
)
