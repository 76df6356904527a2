"""Image caching and the batch-level RandomResizedCrop / flip / resize / normalisation."""

import numpy as np
import pytest
import torch

from altmodal.data.media import MediaError
from altmodal.data.media.image import IMAGENET_MEAN, IMAGENET_STD, ImageTransform, crop_boxes, read_image
from tests.media_fakes import write_image

pytest.importorskip("PIL")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_read_image_squashes_to_a_square_in_rgb_or_grey(tmp_path):
    path = tmp_path / "a.png"
    write_image(path, (200, 30, 10), size=(40, 20))
    rgb = read_image(path, 16)
    assert rgb.shape == (3, 16, 16) and rgb.dtype == np.uint8
    assert rgb[:, 8, 8].tolist() == [200, 30, 10]
    grey = read_image(path, 8, channels=1)
    assert grey.shape == (1, 8, 8) and abs(int(grey[0, 4, 4]) - round(0.299 * 200 + 0.587 * 30 + 0.114 * 10)) <= 1


def test_corrupt_and_missing_images_name_the_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(MediaError, match=r"bad.jpg: cannot decode image"):
        read_image(bad, 8)
    with pytest.raises(MediaError, match=r"gone.jpg: no such image file"):
        read_image(tmp_path / "gone.jpg", 8)


def test_eval_transform_normalises_and_resizes():
    x = torch.full((2, 3, 3, 8, 8), 255.0)  # (B, T, C, H, W)
    same = ImageTransform(train=False, size=8)(x, gen(0))
    expected = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    assert same.shape == (2, 3, 3, 8, 8)
    assert torch.allclose(same[0, 0, :, 0, 0], torch.tensor(expected))
    small = ImageTransform(train=False, size=4)(x, gen(0))
    assert small.shape == (2, 3, 3, 4, 4) and torch.allclose(small, small[0, 0, :, :1, :1].expand_as(small))
    ramp = torch.arange(64.0).view(1, 1, 8, 8)
    grey = ImageTransform(train=False, size=8, mean=(0.5,), std=(0.25,), input_range=64.0)(ramp, gen(0))
    assert torch.allclose(grey, (ramp / 64.0 - 0.5) / 0.25)


def test_train_transform_is_deterministic_per_generator_and_varies_across_seeds():
    x = torch.rand(6, 2, 3, 12, 12) * 255
    t = ImageTransform(train=True, size=8)
    a, b, c = t(x, gen(1)), t(x, gen(1)), t(x, gen(2))
    assert a.shape == (6, 2, 3, 8, 8)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_full_crop_is_the_image_and_flip_mirrors_it():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    plain = ImageTransform(
        train=True, size=6, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, mean=(0, 0, 0), std=(1, 1, 1)
    )
    assert torch.allclose(plain(x, gen(0)), x / 255, atol=1e-5)
    flipping = ImageTransform(train=True, size=6, scale=(1.0, 1.0), ratio=(1.0, 1.0), mean=(0, 0, 0), std=(1, 1, 1))
    seen = set()
    for seed in range(8):
        out = flipping(x, gen(seed)) * 255
        for i in range(2):
            if torch.allclose(out[i], x[i], atol=1e-3):
                seen.add("same")
            else:
                assert torch.allclose(out[i], x[i].flip(-1), atol=1e-3)
                seen.add("flipped")
    assert seen == {"same", "flipped"}


def test_crop_boxes_follow_the_scale_and_ratio_ranges():
    top, left, h, w = crop_boxes(2000, 40, 30, gen(0), (0.2, 0.6), (0.5, 2.0))
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 40).all() and (left + w <= 30).all()
    share = (h * w).float() / (40 * 30)
    assert share.min() > 0.17 and share.max() < 0.64  # rounding of h and w aside
    aspect = w.float() / h.float()
    assert aspect.min() > 0.45 and aspect.max() < 2.2
    # impossible ratios fall back to the largest centred crop of the nearest ratio
    top, left, h, w = crop_boxes(5, 10, 40, gen(0), (0.99, 1.0), (1.0, 1.0))
    assert h.tolist() == [10] * 5 and w.tolist() == [10] * 5 and left.tolist() == [15] * 5


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="crop scale"):
        ImageTransform(train=True, scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="3 normalisation means for images with 1 channels"):
        ImageTransform(train=False, size=4)(torch.zeros(1, 1, 4, 4), gen(0))
