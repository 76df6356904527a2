"""Modality specs and sources shared by the corpus modules: audio clips, video frames, images, texts.

Each ``*_spec`` function reads its prepare options (with the paper's defaults) and describes the
cached array; each ``*_source`` function returns a :class:`~altmodal.data.corpora.common.Source`
that decodes one sample when ``prepare`` asks for it (so a missing or corrupt file is reported
for that sample only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np

from altmodal.data.corpora.common import ModalitySpec, Options, Source, locate, read_text_file
from altmodal.data.media import MediaError
from altmodal.data.media.audio import FbankConfig, audio_fbank
from altmodal.data.media.image import IMAGENET_MEAN, IMAGENET_STD, read_image
from altmodal.data.media.video import Pick, folder_frames, video_frames

LIST_OPTIONS = {"lists": "folder of my_train_<x>.txt, my_test_<x>.txt and stat_<x>.txt (default: the raw root)"}
AUDIO_OPTIONS = {
    "bins": "mel filterbank bins (default 128, the paper's)",
    "frames": "filterbank frames kept per clip, padded or cut (default 1024)",
    "fbank_backend": "auto, kaldi-native-fbank or torch (default auto)",
}
VISUAL_OPTIONS = {
    "image_size": "side of the cached square images (default 224; the transforms crop or resize from it)",
    "video_frames": "frames kept per clip (default 3)",
}
IMAGE_OPTIONS = {"image_size": "side of the cached square images (default 256)"}
TEXT_OPTIONS = {
    "max_tokens": "token ids per text, cut or padded with 0 (default 256)",
    "vocab_size": "largest WordPiece vocabulary trained on the training texts (default 30522)",
    "min_frequency": "least count of a WordPiece merge (default 2)",
    "tokenizer": "a local tokenizer.json to use instead of training one (id 0 must be padding)",
}

FrameSource = tuple[Path, Literal["frames", "video"]]


def fbank_config(options: Options, bins: int = 128, frames: int = 1024) -> FbankConfig:
    backend = options.choice("fbank_backend", "auto", ("auto", "kaldi-native-fbank", "torch"))
    return FbankConfig(
        num_bins=options.integer("bins", bins),
        frames=options.integer("frames", frames),
        backend=backend,  # type: ignore[arg-type]
    )


def audio_spec(config: FbankConfig) -> ModalitySpec:
    """(frames, bins) float16 log-mel filterbanks for a ResNet18 audio encoder."""
    return ModalitySpec(
        "audio", (config.frames, config.num_bins), "float16", "resnet18-audio", "audio", {"fbank": asdict(config)}
    )


def audio_source(candidates: Sequence[Path], config: FbankConfig) -> Source:
    def read() -> np.ndarray:
        return audio_fbank(locate(candidates, "audio file"), config)

    return Source(str(candidates[0]), read)


def visual_spec(
    size: int,
    count: int,
    channels: int = 3,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    **settings: Any,
) -> ModalitySpec:
    """(count, channels, size, size) uint8 frames for a ResNet18 visual encoder."""
    return ModalitySpec(
        "visual",
        (count, channels, size, size),
        "uint8",
        "resnet18-visual",
        "image",
        {"size": size, "channels": channels, "mean": list(mean), "std": list(std), **settings},
    )


def clip_source(
    candidates: Sequence[FrameSource], size: int, count: int, fps: float | None = 1.0, pick: Pick = "spread"
) -> Source:
    """Frames of a clip from the first existing candidate: a folder of extracted frames or a video."""

    def read() -> np.ndarray:
        path = locate([p for p, _ in candidates], "video or frame folder")
        kind = dict((str(p), k) for p, k in candidates)[str(path)]
        if kind == "frames":
            return folder_frames(path, size, count, pick=pick)
        return video_frames(path, size, count, fps=fps, pick=pick)

    return Source(str(candidates[0][0]), read)


def image_source(candidates: Sequence[Path], size: int) -> Source:
    """One image as a (1, 3, size, size) clip of one frame."""

    def read() -> np.ndarray:
        return read_image(locate(candidates, "image file"), size)[None]

    return Source(str(candidates[0]), read)


def text_setup(options: Options, training_texts: Callable[[], Iterable[str]], previous: Path | None) -> tuple[Any, int]:
    """The tokenizer (a user's file, the one of the cache being resumed, or one trained on the
    training texts) and the token count per text."""
    from altmodal.data.media.text import load_tokenizer, train_wordpiece

    max_tokens = options.integer("max_tokens", 256)
    if "tokenizer" in options.raw:
        return load_tokenizer(options.raw["tokenizer"]), max_tokens
    if previous is not None and (previous / "tokenizer.json").is_file():
        return load_tokenizer(previous / "tokenizer.json"), max_tokens
    texts = [t for t in training_texts() if t.strip()]
    if not texts:
        raise MediaError(options.where, "no readable training texts to train a tokenizer on")
    tokenizer = train_wordpiece(
        texts, vocab_size=options.integer("vocab_size", 30522, 10), min_frequency=options.integer("min_frequency", 2)
    )
    return tokenizer, max_tokens


def text_spec(tokenizer: Any, max_tokens: int, options: Options) -> ModalitySpec:
    """(max_tokens,) int32 token ids for the text encoder (kind ``text:<vocab size>``)."""
    from altmodal.data.media.text import vocab_size

    size = vocab_size(tokenizer)
    origin = options.raw.get("tokenizer", "trained on the training texts")
    return ModalitySpec(
        "text", (max_tokens,), "int32", f"text:{size}", "text", {"vocab_size": size, "tokenizer": origin}
    )


def text_source(text: str | Path, where: str, tokenizer: Any, max_tokens: int) -> Source:
    """Token ids of an inline text (``where`` names its file and line) or of a text file."""
    from altmodal.data.media.text import encode

    def read() -> np.ndarray:
        content = read_text_file(text) if isinstance(text, Path) else text
        if not content.strip():
            raise MediaError(where, "empty text")
        return encode(tokenizer, [content], max_tokens)[0]

    return Source(where, read)


def texts_of(refs: Iterable[str | Path]) -> list[str]:
    """The readable texts among inline texts and text files (unreadable ones are reported later,
    when their samples are decoded)."""
    out = []
    for ref in refs:
        try:
            out.append(read_text_file(ref) if isinstance(ref, Path) else ref)
        except MediaError:
            continue
    return out
