"""What every corpus module shares on the raw side: options, list files, items and their sources.

A corpus module turns a raw folder into a :class:`Plan`: the class names, the modalities (shape,
dtype, encoder kind), and one :class:`Item` per sample with its label, published split, group
(speaker or actor) and one :class:`Source` per modality. ``altmodal prepare`` (:mod:`altmodal.prepare`)
decodes the sources into a cache; the corpus's ``load`` function reads that cache at training
time (:mod:`altmodal.data.corpora.cache`).

The published split lists of the paper's code (``my_train_<x>.txt``, ``my_test_<x>.txt``: one
``<file name> <label>`` per line) and its class lists (``stat_<x>.txt``: one class per line, the
last line without a newline) are read by :func:`read_list` and :func:`read_classes`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from altmodal.data.features import DataError
from altmodal.data.loaded import DataConfig, Loaded
from altmodal.data.media import MediaError


@dataclass(frozen=True)
class Source:
    """How to decode one modality of one sample; ``read`` raises MediaError naming the file."""

    path: str
    """The file or folder the modality comes from (the first candidate when none exists)."""
    read: Callable[[], np.ndarray]


@dataclass(frozen=True)
class Item:
    """One sample of a raw corpus."""

    key: str
    label: str
    split: str = ""
    """The published split (``train``/``test``, or ``val`` where the corpus fixes one)."""
    group: str = ""
    """The speaker or actor, for speaker-disjoint splits."""
    sources: Mapping[str, Source] = field(default_factory=dict)


@dataclass(frozen=True)
class ModalitySpec:
    """One cached modality: per-sample shape and dtype, its encoder kind and how it is transformed.

    Attributes:
        name: the modality's name (``audio``, ``visual``, ``text``).
        shape: the shape of one sample.
        dtype: numpy dtype name of the cache (``float16`` filterbanks, ``uint8`` pixels, ``int32`` ids).
        kind: the encoder kind (see :func:`altmodal.encoders.build_encoder`).
        media: ``audio``, ``image`` or ``text``; decides the load-time transforms.
        settings: JSON-ready details kept in ``meta.json`` (fbank settings, image size, ...).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    kind: str
    media: str
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    """Everything ``prepare`` needs to build a cache of one corpus."""

    dataset: str
    classes: list[str]
    modalities: list[ModalitySpec]
    items: list[Item]
    settings: dict[str, Any]
    """The resolved prepare options (recorded in ``meta.json``)."""
    notes: list[str] = field(default_factory=list)
    """Rows of the raw lists left out before decoding, and why (reported, never silent)."""
    extra_arrays: dict[str, np.ndarray] = field(default_factory=dict)
    """Arrays not indexed by sample, saved as ``<name>.npy`` (e.g. AV-digits' image pool)."""
    tokenizer: Any = None
    """A ``tokenizers.Tokenizer`` to save as ``tokenizer.json`` (text corpora)."""


@dataclass(frozen=True)
class Corpus:
    """A raw dataset ``altmodal prepare`` understands and the loader of its cache."""

    name: str
    description: str
    plan: Callable[[Path, Mapping[str, str], Path | None], Plan]
    """(raw root, prepare options, cache being resumed or None) -> plan."""
    load: Callable[[DataConfig, Mapping[str, str]], Loaded]
    prepare_options: Mapping[str, str] = field(default_factory=dict)
    """Option name -> help, for ``altmodal prepare --option``."""
    defaults: Mapping[str, object] = field(default_factory=dict)


class Options:
    """Typed access to ``key=value`` options, rejecting unknown keys with the list of known ones."""

    def __init__(self, where: str, raw: Mapping[str, str], known: Sequence[str]):
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise DataError(f"{where}: unknown option {unknown[0]!r}; options: {', '.join(sorted(known)) or 'none'}")
        self.where = where
        self.raw = dict(raw)

    def text(self, key: str, default: str) -> str:
        return self.raw.get(key, default)

    def integer(self, key: str, default: int, minimum: int = 1) -> int:
        value = self.raw.get(key)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise DataError(f"{self.where}: option {key}={value!r} is not an integer") from None
        if number < minimum:
            raise DataError(f"{self.where}: option {key}={number} must be at least {minimum}")
        return number

    def number(self, key: str, default: float, low: float = 0.0, high: float = float("inf")) -> float:
        value = self.raw.get(key)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise DataError(f"{self.where}: option {key}={value!r} is not a number") from None
        if not low <= number <= high:
            raise DataError(f"{self.where}: option {key}={number:g} must lie in [{low:g}, {high:g}]")
        return number

    def flag(self, key: str, default: bool) -> bool:
        value = self.raw.get(key)
        if value is None:
            return default
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise DataError(f"{self.where}: option {key}={value!r} is not a boolean (true/false)")

    def choice(self, key: str, default: str, choices: Sequence[str]) -> str:
        value = self.raw.get(key, default)
        if value not in choices:
            raise DataError(f"{self.where}: option {key}={value!r} is not one of {', '.join(choices)}")
        return value


def read_classes(path: Path) -> list[str]:
    """Class names, one per line (blank lines ignored; the last line may lack a newline)."""
    if not path.is_file():
        raise DataError(f"{path}: no such class-list file")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) < 2:
        raise DataError(f"{path}: a class list needs at least 2 classes, found {len(names)}")
    seen: set[str] = set()
    for number, name in enumerate(names, 1):
        if name in seen:
            raise DataError(f"{path}: class {name!r} is listed twice (line {number})")
        seen.add(name)
    return names


def read_list(path: Path) -> list[tuple[str, str, int]]:
    """``(file name, label, line number)`` per non-blank ``<file name> <label>`` line."""
    if not path.is_file():
        raise DataError(f"{path}: no such split-list file")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().rsplit(maxsplit=1)
        if len(parts) != 2:
            raise DataError(f"{path}: line {number}: {line.strip()!r} is not '<file name> <label>'")
        rows.append((parts[0], parts[1], number))
    if not rows:
        raise DataError(f"{path}: the split list is empty")
    return rows


def list_dir(root: Path, options: Options) -> Path:
    """Where the split and class lists are: the ``lists`` option, else the raw root."""
    folder = Path(options.text("lists", str(root)))
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder for the split lists (option lists=DIR)")
    return folder


def listed_rows(
    folder: Path, stem: str, classes: Sequence[str], notes: list[str], *, subset: bool = False
) -> list[tuple[str, str, str]]:
    """``(file name, label, split)`` of ``my_train_<stem>.txt`` and ``my_test_<stem>.txt``.

    A label missing from ``classes`` is an error naming the file and line, unless ``subset``
    (the class list selects a subset of the listed classes, as for Kinetics-Sounds): then such
    rows are left out and counted in ``notes``.
    """
    out: list[tuple[str, str, str]] = []
    seen: dict[str, str] = {}
    known = set(classes)
    for split in ("train", "test"):
        path = folder / f"my_{split}_{stem}.txt"
        outside = 0
        for name, label, number in read_list(path):
            if label not in known:
                if subset:
                    outside += 1
                    continue
                raise DataError(
                    f"{path}: line {number}: label {label!r} is not in the class list ({len(known)} classes)"
                )
            if name in seen:
                raise DataError(f"{path}: line {number}: {name!r} is listed again (first in the {seen[name]} list)")
            seen[name] = split
            out.append((name, label, split))
        if outside:
            notes.append(f"{path}: {outside} rows left out, their labels are not in the class list")
    return out


def first_existing(candidates: Sequence[Path]) -> Path | None:
    for path in candidates:
        if path.exists():
            return path
    return None


def locate(candidates: Sequence[Path], what: str) -> Path:
    """The first existing candidate; MediaError naming all of them otherwise."""
    found = first_existing(candidates)
    if found is None:
        looked = ", ".join(str(p) for p in candidates[1:])
        raise MediaError(candidates[0], f"no {what} here" + (f" (nor at {looked})" if looked else ""))
    return found


def read_text_file(path: Path) -> str:
    """A text file as UTF-8 (Latin-1 when it is not valid UTF-8, as in some tweet dumps)."""
    if not path.is_file():
        raise MediaError(path, "no such text file")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def stem(name: str) -> str:
    """A file name without its directory and last suffix (``a/b/x.flv`` -> ``x``)."""
    return Path(name).stem
