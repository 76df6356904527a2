"""IEMOCAP (Busso et al. 2008): audio + face (middle frame) + transcript, 4 emotions.

Raw layout (``--root``), as the reference code's preprocessing leaves it::

    ROOT/Session{1..5}.txt        one utterance per line:
                                  <path>/<utt>.wav [split|sign] <transcript> [split|sign] <Emotion>
    ROOT/subaudio/<utt>.wav       the utterance's audio
    ROOT/faces/<utt>/*.jpg        face crops of the utterance (the middle one in name order is used), or
    ROOT/subvideo/<utt>.mp4       the utterance's video (its middle frame is used)

Classes: ``stat_iemo.txt`` (in ``ROOT`` or ``--option lists=DIR``; Neutral, Angry, Sad, Happy);
lines with other emotions are left out and counted. As in the paper, utterances are split at
random 60/20/20 into train/validation/test (stratified by emotion here, seeded by
``--option split_seed=N``, 0 by default), at prepare time, because the vocabulary is trained on the
training transcripts only. The speaker (session and gender, e.g. ``Ses01F``) is kept as the group.
Missing-modality experiments use the training flags ``--train-missing-rate``/``--test-missing-rate``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from altmodal.data.corpora.builders import (
    AUDIO_OPTIONS,
    LIST_OPTIONS,
    TEXT_OPTIONS,
    audio_source,
    audio_spec,
    clip_source,
    fbank_config,
    text_setup,
    text_source,
    text_spec,
    visual_spec,
)
from altmodal.data.corpora.cache import LOAD_OPTIONS, listed_loader
from altmodal.data.corpora.common import Corpus, Item, Options, Plan, list_dir, read_classes, stem
from altmodal.data.features import DataError
from altmodal.data.splits import stratified_split

NAME = "iemocap"
SEPARATOR = " [split|sign] "
DEFAULT_CLASSES = ["Neutral", "Angry", "Sad", "Happy"]
OPTIONS = {
    **LIST_OPTIONS,
    **AUDIO_OPTIONS,
    "image_size": "side of the cached square face images (default 256)",
    **TEXT_OPTIONS,
    "split_seed": "seed of the random 60/20/20 split (default 0)",
}


def read_sessions(root: Path) -> list[tuple[str, str, str, str]]:
    """``(utterance, transcript, emotion, file:line)`` of every ``Session*.txt`` line."""
    files = sorted(root.glob("Session*.txt"))
    if not files:
        raise DataError(
            f"{root}: no Session*.txt utterance lists (lines '<wav path>{SEPARATOR}<text>{SEPARATOR}<emotion>')"
        )
    rows = []
    for file in files:
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.strip().split(SEPARATOR.strip())
            if len(parts) != 3:
                raise DataError(f"{file}: line {number}: expected '<wav path>{SEPARATOR}<text>{SEPARATOR}<emotion>'")
            path, text, emotion = (p.strip() for p in parts)
            rows.append((stem(path.replace("\\", "/").split("/")[-1]), text, emotion, f"{file}:{number}"))
    return rows


def plan(root: Path, raw: Mapping[str, str], previous: Path | None = None) -> Plan:
    """The utterances with the 4 emotions, split 60/20/20, with audio, face and text sources."""
    options = Options(f"prepare {NAME}", raw, list(OPTIONS))
    lists = list_dir(root, options)
    classes = read_classes(lists / "stat_iemo.txt") if (lists / "stat_iemo.txt").is_file() else DEFAULT_CLASSES
    notes: list[str] = []
    rows = read_sessions(root)
    kept = [r for r in rows if r[2] in classes]
    if len(kept) < len(rows):
        notes.append(f"{root}: {len(rows) - len(kept)} utterances left out, their emotions are not in {classes}")
    seen: set[str] = set()
    for utt, _, _, where in kept:
        if utt in seen:
            raise DataError(f"{where}: utterance {utt!r} is listed twice")
        seen.add(utt)
    labels = np.array([classes.index(r[2]) for r in kept])
    seed = options.integer("split_seed", 0, minimum=0)
    split = stratified_split(labels, 0.2, 0.2, seed) if len(kept) else np.array([])
    fbank = fbank_config(options)
    size = options.integer("image_size", 256)
    tokenizer, max_tokens = text_setup(options, lambda: [r[1] for r, s in zip(kept, split) if s == "train"], previous)
    items = []
    for (utt, text, emotion, where), part in zip(kept, split):
        sources = {
            "audio": audio_source([root / "subaudio" / f"{utt}.wav"], fbank),
            "visual": clip_source(
                [(root / "faces" / utt, "frames"), (root / "subvideo" / f"{utt}.mp4", "video")],
                size,
                1,
                fps=None,
                pick="middle",
            ),
            "text": text_source(text, where, tokenizer, max_tokens),
        }
        items.append(Item(utt, emotion, str(part), utt[:5] + utt[-4:-3], sources))
    modalities = [audio_spec(fbank), visual_spec(size, 1, frame="middle"), text_spec(tokenizer, max_tokens, options)]
    settings = {"lists": str(lists), "bins": fbank.num_bins, "frames": fbank.frames, "image_size": size}
    settings.update(max_tokens=max_tokens, split_seed=seed)
    return Plan(NAME, list(classes), modalities, items, settings, notes, tokenizer=tokenizer)


load = listed_loader(NAME)


CORPUS: Corpus = Corpus(
    NAME,
    "IEMOCAP: audio + face (middle frame) + transcript, 4 emotions, random 60/20/20 split; prepare it first; "
    "options: " + ", ".join(LOAD_OPTIONS),
    plan,
    load,
    OPTIONS,
    defaults={"dim": 512},
)
