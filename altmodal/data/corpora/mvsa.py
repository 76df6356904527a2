"""MVSA-Single (Niu et al. 2016): tweets (image + text) labelled positive, neutral or negative.

Raw layout (``--root``): the JSON-lines files the reference code reads, or the original release::

    ROOT/{train,dev,test}.jsonl        {"img": "data/<id>.jpg", "text": ..., "label": ...}
    ROOT/data/<id>.jpg                 original release: the tweet's image
    ROOT/data/<id>.txt                 original release: the tweet's text (UTF-8 or Latin-1)
    ROOT/visual/{train,test}_imgs/<id>.jpg     the reference code's copy of the images

Split lists (``ROOT`` or ``--option lists=DIR``): ``my_train_mvsa.txt`` / ``my_test_mvsa.txt``
(``<id>.jpg <label>``, 1,555/519) and ``stat_mvsa.txt`` (positive, neutral, negative).
Cached as Food-101: (1, 3, 256, 256) images and (256,) token ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from altmodal.data.corpora.cache import LOAD_OPTIONS, listed_loader
from altmodal.data.corpora.common import Corpus, Plan, stem
from altmodal.data.corpora.imagetext import OPTIONS, plan_image_text

NAME = "mvsa"


def plan(root: Path, raw: Mapping[str, str], previous: Path | None = None) -> Plan:
    """The listed MVSA-Single tweets: image and text."""
    return plan_image_text(
        NAME,
        "mvsa",
        root,
        raw,
        previous,
        lambda name, label, split: [root / "data" / name, root / "visual" / f"{split}_imgs" / name],
        lambda name, label: root / "data" / f"{stem(name)}.txt",
    )


load = listed_loader(NAME)


CORPUS: Corpus = Corpus(
    NAME,
    "MVSA-Single: tweet image + text, 3 sentiments, 1,555/519; prepare it first; options: " + ", ".join(LOAD_OPTIONS),
    plan,
    load,
    OPTIONS,
)
