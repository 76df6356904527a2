"""UPMC Food-101 (Wang et al. 2015): recipe images + the text of their web pages, 101 classes.

Raw layout (``--root``): the JSON-lines files of the MMBT/QMF preprocessing that the reference
code reads, or the original release::

    ROOT/{train,dev,test}.jsonl             {"img": "images/train/<class>/<name>.jpg", "text": ..., "label": ...}
    ROOT/images/{train,test}/<class>/<name>.jpg         original release
    ROOT/texts_txt/<class>/<name>.txt                   page text per image (original release)
    ROOT/visual/{train,test}_imgs/<name>.jpg            the reference code's copy of the images

Split lists (``ROOT`` or ``--option lists=DIR``): ``my_train_food.txt`` / ``my_test_food.txt``
(``<name>.jpg <class>``, 62,970/22,714) and ``stat_food.txt`` (101 classes).

Cached: ``visual`` (1, 3, 256, 256) images and ``text`` (256,) WordPiece ids from a vocabulary
trained on the training texts (or ``--option tokenizer=tokenizer.json``, e.g. BERT's, saved
locally). The paper used pretrained M3AE encoders; here the ResNet18 and the small transformer
train from scratch, or load local weights (``--weights visual=PATH``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from altmodal.data.corpora.cache import LOAD_OPTIONS, listed_loader
from altmodal.data.corpora.common import Corpus, Plan, stem
from altmodal.data.corpora.imagetext import OPTIONS, plan_image_text

NAME = "food101"


def plan(root: Path, raw: Mapping[str, str], previous: Path | None = None) -> Plan:
    """The listed Food-101 images with their page texts."""
    return plan_image_text(
        NAME,
        "food",
        root,
        raw,
        previous,
        lambda name, label, split: [root / "images" / split / label / name, root / "visual" / f"{split}_imgs" / name],
        lambda name, label: root / "texts_txt" / label / f"{stem(name)}.txt",
    )


load = listed_loader(NAME)


CORPUS: Corpus = Corpus(
    NAME,
    "UPMC Food-101: image + recipe text, 101 classes, 62,970/22,714; prepare it first; options: "
    + ", ".join(LOAD_OPTIONS),
    plan,
    load,
    OPTIONS,
)
