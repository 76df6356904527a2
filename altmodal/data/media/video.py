"""Video clips to a few cached frames: decode with PyAV at 1 fps, keep 3 frames per clip.

The paper's reference code first extracts one frame per second of each clip (the first frame of
every second) into a folder, then loads 3 of them at positions ``int(n/3) * i``. Here the frames
are picked at ``floor(i * n / count)`` (0, n/3, 2n/3), which equals the reference's choice when
``n`` is a multiple of 3 and still spreads over the clip when ``n < 3`` (the reference then takes
the first frame three times). Clips already extracted to a folder of images (the reference's
``Image-01-FPS/<clip>/`` layout) are read with :func:`folder_frames` by the same rule, in sorted
file-name order. ``pick="middle"`` takes the single middle frame (IEMOCAP's face crops).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from altmodal.data.media import MediaError, require
from altmodal.data.media.image import pil_to_array, read_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
Pick = Literal["spread", "middle"]


def frame_indices(n: int, count: int, pick: Pick = "spread") -> list[int]:
    """Which of ``n`` frames to keep: ``count`` spread at floor(i n / count), or the middle one."""
    if n < 1:
        raise ValueError("no frames to pick from")
    if pick == "middle":
        return [n // 2] * count
    return [(i * n) // count for i in range(count)]


def video_frames(
    path: str | Path, size: int, count: int = 3, fps: float | None = 1.0, channels: int = 3, pick: Pick = "spread"
) -> np.ndarray:
    """(count, channels, size, size) uint8 frames of a video file.

    Args:
        path: the video file (any container and codec FFmpeg decodes).
        size: side of the cached square frames.
        count: frames kept per clip.
        fps: sampling rate before picking (the first frame of every 1/fps seconds); None keeps
            every decoded frame.
        channels: 3 (RGB) or 1 (grey).
        pick: ``spread`` (0, n/3, 2n/3) or ``middle``.

    Raises:
        MediaError: the file is missing, undecodable or has no video frames.
    """
    av = require("av", "decoding video")
    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "no such video file")
    sampled: list[object] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(path, "the file has no video stream")
            stream = container.streams.video[0]
            start: float | None = None
            next_time = 0.0
            for index, frame in enumerate(container.decode(stream)):
                t = frame.time if frame.time is not None else index / float(stream.average_rate or 1)
                start = t if start is None else start
                t -= start
                if fps is None or t >= next_time - 1e-3:
                    sampled.append(frame.to_image())
                    if fps is not None:
                        next_time = (np.floor(t * fps + 1e-3) + 1) / fps
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, RuntimeError) as err:
        raise MediaError(path, f"cannot decode video ({err})") from err
    if not sampled:
        raise MediaError(path, "no decodable video frames")
    return np.stack([pil_to_array(sampled[i], size, channels) for i in frame_indices(len(sampled), count, pick)])


def list_frames(folder: str | Path) -> list[Path]:
    """The image files of a frame folder, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MediaError(folder, "no such frame folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise MediaError(folder, f"the frame folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def folder_frames(
    folder: str | Path, size: int, count: int = 3, channels: int = 3, pick: Pick = "spread"
) -> np.ndarray:
    """(count, channels, size, size) uint8 frames picked from a folder of extracted frames."""
    files = list_frames(folder)
    return stack_images([files[i] for i in frame_indices(len(files), count, pick)], size, channels)


def stack_images(files: Sequence[Path], size: int, channels: int = 3) -> np.ndarray:
    """(len(files), channels, size, size) uint8: each file read by :func:`read_image`."""
    return np.stack([read_image(f, size, channels) for f in files])
