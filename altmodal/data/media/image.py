"""Images to cached uint8 pixels, and the paper's image transforms as batch-level torch ops.

Caching: :func:`read_image` decodes a file with Pillow and resizes it to a square of the cached
size (the paper's test transform, ``Resize((224, 224))``, also squashes to a square), returning
(C, S, S) uint8, so training never decodes images.

Transforms (applied per batch by :meth:`MultimodalDataset.gather`, seeded by its generator):

- training: RandomResizedCrop (torchvision's sampling rule: area share in ``scale``, aspect ratio
  log-uniform in ``ratio``, ten tries, then a centre crop) to ``size`` with bilinear sampling,
  and a horizontal flip with probability 1/2; both are done by one ``grid_sample`` per batch;
- evaluation: a resize to ``size`` (identity when the cache already has that size);
- both: pixels divided by 255 and normalised per channel (ImageNet mean and std by default).

Differences from the reference code, which transforms each PIL image of the original file: the
crop is taken from the cached square rather than the original aspect ratio, and the bilinear
crop-resize does not antialias when it shrinks a large crop (the cache is usually near the output
size, so this rarely matters). Each image (each frame of a clip, too) draws its own crop and flip,
as the reference's per-frame transform does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from altmodal.data.batch import to_device
from altmodal.data.media import MediaError, require

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def read_image(path: str | Path, size: int, channels: int = 3) -> np.ndarray:
    """(channels, size, size) uint8 pixels of an image file (RGB for 3 channels, grey for 1).

    Raises:
        MediaError: the file is missing or not a decodable image.
    """
    image_module = require("PIL.Image", "reading images")
    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "no such image file")
    try:
        with image_module.open(path) as image:
            image.load()
            return pil_to_array(image, size, channels)
    except (OSError, ValueError, SyntaxError, image_module.DecompressionBombError) as err:
        raise MediaError(path, f"cannot decode image ({err})") from err


def pil_to_array(image: Any, size: int, channels: int = 3) -> np.ndarray:
    """(channels, size, size) uint8 array of a PIL image, squashed to a square by bilinear resize."""
    image_module = require("PIL.Image", "reading images")
    if channels not in (1, 3):
        raise ValueError(f"images have 1 or 3 channels, not {channels}")
    image = image.convert("RGB" if channels == 3 else "L")
    if image.size != (size, size):
        image = image.resize((size, size), image_module.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else np.ascontiguousarray(array.transpose(2, 0, 1))


@dataclass(frozen=True)
class ImageTransform:
    """A batch transform over (B, ..., C, H, W) pixels in [0, ``input_range``].

    Attributes:
        train: RandomResizedCrop + flip (True) or resize (False).
        size: output side length.
        scale: range of the crop's share of the image area (training).
        ratio: range of the crop's aspect ratio (training).
        flip: flip horizontally with probability 1/2 (training).
        mean: per-channel mean after scaling to [0, 1].
        std: per-channel standard deviation after scaling to [0, 1].
        input_range: the value of a white pixel in the input (255 for cached uint8).
    """

    train: bool
    size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    input_range: float = 255.0

    def __post_init__(self) -> None:
        if not (0 < self.scale[0] <= self.scale[1] <= 1):
            raise ValueError(f"crop scale {self.scale} must satisfy 0 < min <= max <= 1")
        if not (0 < self.ratio[0] <= self.ratio[1]):
            raise ValueError(f"crop ratio {self.ratio} must satisfy 0 < min <= max")
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean {self.mean} and std {self.std} differ in length")

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        lead, (c, h, w) = x.shape[:-3], x.shape[-3:]
        images = x.reshape(-1, c, h, w).float()
        if self.train:
            images = random_resized_crop(images, self.size, generator, self.scale, self.ratio, self.flip)
        else:
            images = resize(images, self.size)
        images = normalize(images, self.mean, self.std, self.input_range)
        return images.reshape(*lead, c, self.size, self.size)


def crop_boxes(
    n: int, height: int, width: int, generator: torch.Generator, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(top, left, crop height, crop width), each (n,) int64, by torchvision's RandomResizedCrop rule."""
    tries = 10
    area = height * width * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, tries, generator=generator))
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, tries, generator=generator))
    w = torch.round(torch.sqrt(area * aspect)).long()
    h = torch.round(torch.sqrt(area / aspect)).long()
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = valid.long().argmax(dim=1)  # the first valid try
    rows = torch.arange(n)
    w, h = w[rows, first], h[rows, first]
    # fallback (no valid try): the largest centre crop within the ratio range
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(height * ratio[1]), height
    else:
        fw, fh = width, height
    ok = valid.any(dim=1)
    w = torch.where(ok, w, torch.full_like(w, fw))
    h = torch.where(ok, h, torch.full_like(h, fh))
    top = torch.floor(torch.rand(n, generator=generator) * (height - h + 1)).long()
    left = torch.floor(torch.rand(n, generator=generator) * (width - w + 1)).long()
    top = torch.where(ok, top, (height - h) // 2)
    left = torch.where(ok, left, (width - w) // 2)
    return top, left, h, w


def random_resized_crop(
    images: Tensor,
    size: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
) -> Tensor:
    """(N, C, H, W) -> (N, C, size, size): a random crop of each image, resized bilinearly and
    flipped horizontally with probability 1/2 (if ``flip``), in one ``grid_sample``."""
    n, _, height, width = images.shape
    top, left, h, w = crop_boxes(n, height, width, generator, scale, ratio)
    sign = torch.ones(n)
    if flip:
        sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    # output coordinates in [-1, 1] map onto the crop's edges (align_corners=False convention)
    theta[:, 0, 0] = sign * w / width
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    # the draws are made on the CPU (the generator's device); the resampling runs where the images are
    theta = to_device(theta.to(images.dtype), images.device)
    grid = F.affine_grid(theta, [n, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def resize(images: Tensor, size: int) -> Tensor:
    """(N, C, H, W) -> (N, C, size, size), bilinear with antialiasing; identity at that size."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def normalize(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...], input_range: float = 255.0) -> Tensor:
    """(N, C, H, W) pixels in [0, input_range] -> (x / input_range - mean) / std per channel."""
    channels = images.shape[1]
    if len(mean) != channels:
        raise ValueError(f"{len(mean)} normalisation means for images with {channels} channels")
    m = to_device(torch.tensor(mean, dtype=images.dtype).view(1, -1, 1, 1), images.device)
    s = to_device(torch.tensor(std, dtype=images.dtype).view(1, -1, 1, 1), images.device)
    return (images / input_range - m) / s
