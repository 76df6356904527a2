"""CREMA-D (Cao et al. 2014): audio + video of 91 actors speaking with 6 emotions, 7,442 clips.

Raw layout (``--root``), either the original release or the reference code's copy of it::

    ROOT/AudioWAV/<clip>.wav                          original release (16 kHz speech)
    ROOT/VideoFlash/<clip>.flv                        original release (decoded with PyAV)
    ROOT/audio/{train,test}/<clip>.wav                the reference code's copy
    ROOT/visual/{train,test}/<clip>.flv               the reference code's copy
    ROOT/visual/{train,test}_imgs/Image-01-FPS/<clip>/*.jpg   frames already extracted at 1 fps

For each modality the first of these that exists is used (extracted frames before videos).
Split lists (in ``ROOT`` or the folder given by ``--option lists=DIR``, e.g. ``shared/data/mla_splits``):
``my_train_cre.txt`` / ``my_test_cre.txt`` (``<clip>.flv <Emotion>``, 6,698/744) and
``stat_cre.txt`` (Anger, Disgust, Fear, Happy, Neutral, Sad).

Cached: ``audio`` (1024, 128) filterbanks, ``visual`` (3, 3, 224, 224) frames (sizes are prepare
options). The actor id (the first four characters of the clip name) is kept, so training can use
the customary split (``--dataset-option split=list``, the paper's; it mixes actors between train
and test) or a speaker-disjoint one (``split=speaker``; ``test_speakers`` = a count, a share such
as 0.1 -- the default, 9 of 91 actors -- or actor ids separated by commas; ``val_speakers``
holds out actors for validation too).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from altmodal.data.corpora.builders import (
    AUDIO_OPTIONS,
    LIST_OPTIONS,
    VISUAL_OPTIONS,
    audio_source,
    audio_spec,
    clip_source,
    fbank_config,
    visual_spec,
)
from altmodal.data.corpora.cache import LOAD_OPTIONS, listed_loader
from altmodal.data.corpora.common import Corpus, Item, Options, Plan, list_dir, listed_rows, read_classes, stem

NAME = "cremad"
OPTIONS = {**LIST_OPTIONS, **AUDIO_OPTIONS, **VISUAL_OPTIONS}


def plan(root: Path, raw: Mapping[str, str], previous: Path | None = None) -> Plan:
    """The CREMA-D items of the published lists, with their audio and video sources."""
    options = Options(f"prepare {NAME}", raw, list(OPTIONS))
    lists = list_dir(root, options)
    classes = read_classes(lists / "stat_cre.txt")
    notes: list[str] = []
    fbank = fbank_config(options)
    size, count = options.integer("image_size", 224), options.integer("video_frames", 3)
    items = []
    for name, label, split in listed_rows(lists, "cre", classes, notes):
        clip = stem(name)
        video = f"{clip}.flv"
        audio = audio_source([root / "AudioWAV" / f"{clip}.wav", root / "audio" / split / f"{clip}.wav"], fbank)
        visual = clip_source(
            [
                (root / "visual" / f"{split}_imgs" / "Image-01-FPS" / clip, "frames"),
                (root / "VideoFlash" / video, "video"),
                (root / "visual" / split / video, "video"),
            ],
            size,
            count,
        )
        items.append(Item(clip, label, split, clip[:4], {"audio": audio, "visual": visual}))
    settings = {"lists": str(lists), "bins": fbank.num_bins, "frames": fbank.frames, "image_size": size}
    settings["video_frames"] = count
    return Plan(NAME, classes, [audio_spec(fbank), visual_spec(size, count, fps=1.0)], items, settings, notes)


load = listed_loader(NAME, speakers=True)


CORPUS: Corpus = Corpus(
    NAME,
    "CREMA-D: audio + video (3 frames), 6 emotions, 7,442 clips of 91 actors; prepare it first; "
    "options: split=list|speaker, test_speakers, val_speakers, " + ", ".join(LOAD_OPTIONS),
    plan,
    load,
    OPTIONS,
    defaults={"dim": 512},
)
