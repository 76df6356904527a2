"""Tiny fabricated media in the raw layouts the corpus modules read (used by the media tests)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CREMA_CLASSES = ["Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad"]


def write_wav(path: Path, seconds: float = 0.5, rate: int = 16000, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    """A tone plus a little noise and a DC offset, as 16-bit PCM; returns the samples written."""
    import soundfile

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(len(t)) + 0.05
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), wave, rate, subtype="PCM_16")
    return wave


def write_image(path: Path, color: Sequence[int] = (200, 30, 30), size: tuple[int, int] = (24, 20)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, tuple(color)).save(path)


def write_video(path: Path, seconds: int = 3, fps: int = 4, size: int = 32, codec: str = "mpeg4") -> list[int]:
    """A clip whose frames are a flat grey that changes every second; returns those grey levels."""
    import av

    levels = [20 + (200 * s) // max(seconds - 1, 1) for s in range(seconds)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for s in range(seconds):
            for _ in range(fps):
                pixels = np.full((size, size, 3), levels[s], dtype=np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return levels


def write_lists(
    folder: Path, code: str, train: Sequence[tuple[str, str]], test: Sequence[tuple[str, str]], classes: Sequence[str]
) -> None:
    """``my_{train,test}_<code>.txt`` and ``stat_<code>.txt`` as published (no final newline)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("test", test)):
        (folder / f"my_{split}_{code}.txt").write_text("".join(f"{name} {label}\n" for name, label in rows))
    (folder / f"stat_{code}.txt").write_text("\n".join(classes))


def fake_cremad(root: Path, actors: Sequence[str] = ("1001", "1002", "1003", "1004")) -> dict[str, list[str]]:
    """A CREMA-D layout: for each actor one clip per emotion; actor 1004 in the test list.

    Audio in ``AudioWAV/``; video as ``VideoFlash/*.flv`` except the first actor's, given as
    extracted frame folders in the reference code's layout. Returns clip names per split.
    """
    codes = {"Anger": "ANG", "Disgust": "DIS", "Fear": "FEA", "Happy": "HAP", "Neutral": "NEU", "Sad": "SAD"}
    rows: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    for a, actor in enumerate(actors):
        split = "test" if actor == actors[-1] else "train"
        for e, (label, code) in enumerate(codes.items()):
            clip = f"{actor}_IEO_{code}_XX"
            write_wav(root / "AudioWAV" / f"{clip}.wav", seconds=0.3, freq=200 + 100 * e, seed=a)
            if a == 0:
                for s in range(3):
                    frames = root / "visual" / f"{split}_imgs" / "Image-01-FPS" / clip
                    write_image(frames / f"{s:05d}.jpg", (30 * e, 50 * s, 100), (20, 16))
            else:
                write_video(root / "VideoFlash" / f"{clip}.flv", seconds=2, fps=3, size=16, codec="flv")
            rows[split].append((f"{clip}.flv", label))
    write_lists(root / "lists", "cre", rows["train"], rows["test"], CREMA_CLASSES)
    return {k: [n[: -len(".flv")] for n, _ in v] for k, v in rows.items()}
