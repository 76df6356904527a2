"""What the image + text corpora (Food-101, MVSA-Single) share: the JSON-lines index and the plan.

The reference code reads both corpora from the JSON-lines files of the MMBT/QMF preprocessing
(``ROOT/{train,dev,test}.jsonl``, one ``{"img": <path under ROOT>, "text": ..., "label": ...}``
per line) and selects samples with the published lists by image file name. When those files are
present they are used; otherwise each corpus module says where its images and texts lie in the
original release. The vocabulary is trained on the texts of the training list only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from altmodal.data.corpora.builders import (
    IMAGE_OPTIONS,
    LIST_OPTIONS,
    TEXT_OPTIONS,
    image_source,
    text_setup,
    text_source,
    text_spec,
    texts_of,
    visual_spec,
)
from altmodal.data.corpora.common import Item, Options, Plan, list_dir, listed_rows, read_classes, stem
from altmodal.data.features import DataError

OPTIONS = {**LIST_OPTIONS, **IMAGE_OPTIONS, **TEXT_OPTIONS}
JSONL_SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Entry:
    """One JSON-lines record: the image path, the text and where the record is (file:line)."""

    image: Path
    text: str
    where: str


def jsonl_index(root: Path) -> dict[str, Entry]:
    """Image file name -> record, over ``ROOT/{train,dev,test}.jsonl`` (empty when absent)."""
    index: dict[str, Entry] = {}
    for split in JSONL_SPLITS:
        file = root / f"{split}.jsonl"
        if not file.is_file():
            continue
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as err:
                raise DataError(f"{file}: line {number}: not a JSON object ({err})") from err
            if not isinstance(record, dict) or not isinstance(record.get("img"), str):
                raise DataError(f"{file}: line {number}: no 'img' entry (a path under {root})")
            text = record.get("text", "")
            index[Path(record["img"]).name] = Entry(root / record["img"], str(text), f"{file}:{number}")
    return index


def plan_image_text(
    name: str,
    code: str,
    root: Path,
    raw: Mapping[str, str],
    previous: Path | None,
    image_places: Callable[[str, str, str], list[Path]],
    text_file: Callable[[str, str], Path],
) -> Plan:
    """The plan of an image + text corpus.

    Args:
        name: the dataset's name.
        code: the suffix of its list files (``my_train_<code>.txt``, ``stat_<code>.txt``).
        root: the raw folder.
        raw: prepare options.
        previous: the cache being resumed (its tokenizer is reused), or None.
        image_places: (file name, label, split) -> where the image may be, besides the index.
        text_file: (file name, label) -> the text file, used when the index has no record.
    """
    options = Options(f"prepare {name}", raw, list(OPTIONS))
    lists = list_dir(root, options)
    classes = read_classes(lists / f"stat_{code}.txt")
    notes: list[str] = []
    index = jsonl_index(root)
    size = options.integer("image_size", 256)
    rows = []
    for file_name, label, split in listed_rows(lists, code, classes, notes):
        entry = index.get(file_name)
        images = ([entry.image] if entry else []) + image_places(file_name, label, split)
        text: str | Path = entry.text if entry else text_file(file_name, label)
        where = entry.where if entry else str(text)
        rows.append((file_name, label, split, images, text, where))
    tokenizer, max_tokens = text_setup(options, lambda: texts_of(r[4] for r in rows if r[2] == "train"), previous)
    items = [
        Item(
            stem(file_name),
            label,
            split,
            "",
            {"visual": image_source(images, size), "text": text_source(text, where, tokenizer, max_tokens)},
        )
        for file_name, label, split, images, text, where in rows
    ]
    settings = {"lists": str(lists), "image_size": size, "max_tokens": max_tokens, "jsonl": bool(index)}
    modalities = [visual_spec(size, 1), text_spec(tokenizer, max_tokens, options)]
    return Plan(name, classes, modalities, items, settings, notes, tokenizer=tokenizer)
