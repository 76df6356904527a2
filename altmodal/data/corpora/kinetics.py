"""Kinetics-Sounds: audio + video of a Kinetics subset of about 31 action classes.

Papers disagree on which classes make up Kinetics-Sounds, so the class list is a file: one
class per line (``--option classes=FILE``, default ``stat_ks.txt`` in the lists folder); rows of
the split lists whose label is not in it are left out (and counted in the summary).

Raw layout (``--root``), as the reference code's preprocessing leaves it::

    ROOT/audio/{train,test}/<clip>.wav                          or ROOT/audio/<clip>.wav
    ROOT/visual/{train,test}_imgs/Image-01-FPS/<clip>/*.jpg     frames extracted at 1 fps, or
    ROOT/visual/{train,test}/<clip>.mp4                          videos (decoded with PyAV), or
    ROOT/video/<clip>.mp4

Split lists (``ROOT`` or ``--option lists=DIR``): ``my_train_ks.txt`` / ``my_test_ks.txt`` with
``<clip>.mp4 <label>`` lines. The pipeline is CREMA-D's: (1024, 128) filterbanks and 3 frames.
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

NAME = "kinetics-sounds"
OPTIONS = {
    **LIST_OPTIONS,
    "classes": "the class-list file, one class per line (default: stat_ks.txt in the lists folder)",
    **AUDIO_OPTIONS,
    **VISUAL_OPTIONS,
}


def plan(root: Path, raw: Mapping[str, str], previous: Path | None = None) -> Plan:
    """The listed clips whose class is in the class-list file, with audio and video sources."""
    options = Options(f"prepare {NAME}", raw, list(OPTIONS))
    lists = list_dir(root, options)
    class_file = Path(options.text("classes", str(lists / "stat_ks.txt")))
    classes = read_classes(class_file)
    notes: list[str] = []
    fbank = fbank_config(options)
    size, count = options.integer("image_size", 224), options.integer("video_frames", 3)
    items = []
    for name, label, split in listed_rows(lists, "ks", classes, notes, subset=True):
        clip = stem(name)
        video = f"{clip}.mp4"
        audio = audio_source([root / "audio" / split / f"{clip}.wav", root / "audio" / f"{clip}.wav"], fbank)
        visual = clip_source(
            [
                (root / "visual" / f"{split}_imgs" / "Image-01-FPS" / clip, "frames"),
                (root / "visual" / split / video, "video"),
                (root / "video" / video, "video"),
            ],
            size,
            count,
        )
        items.append(Item(clip, label, split, "", {"audio": audio, "visual": visual}))
    settings = {"lists": str(lists), "classes": str(class_file), "bins": fbank.num_bins, "frames": fbank.frames}
    settings.update(image_size=size, video_frames=count)
    return Plan(NAME, classes, [audio_spec(fbank), visual_spec(size, count, fps=1.0)], items, settings, notes)


load = listed_loader(NAME)


CORPUS: Corpus = Corpus(
    NAME,
    "Kinetics-Sounds: audio + video (3 frames), classes from a class-list file; prepare it first; "
    "options: " + ", ".join(LOAD_OPTIONS),
    plan,
    load,
    OPTIONS,
    defaults={"dim": 512},
)
