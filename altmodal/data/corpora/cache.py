"""The prepared-cache format, its reader, and the load-time splits and transforms.

A cache is a folder written by ``altmodal prepare`` (:mod:`altmodal.prepare`):

- ``meta.json``: ``format``, ``version``, ``dataset``, ``status`` (``in_progress``/``complete``),
  ``fingerprint`` (of the settings and the sample list), ``settings`` (prepare options),
  ``classes``, ``num_samples``, ``modalities`` (name -> file, shape, dtype, kind, media,
  settings), ``splits`` (published split -> count), ``skipped`` (one record per file that could
  not be used: key, modality, file, reason), ``dropped`` (keys of samples left with no
  modality), ``notes``, ``seconds``;
- ``<modality>.npy``: (N, ...) array written with ``np.lib.format.open_memmap`` and read back
  memory-mapped (float16 filterbanks, uint8 frames, int32 token ids);
- ``present.npy``: (N, M) bool, modality j usable for sample i (order of ``meta['modalities']``);
- ``labels.npy`` (N,) int64, ``keys.npy`` (N,) sample names, ``split.npy`` (N,) published
  split, ``group.npy`` (N,) speaker/actor ('' when the corpus has none);
- ``progress.npz``: the done mask and presence so far (what makes ``prepare`` resumable);
- ``tokenizer.json`` (text corpora) and corpus-specific extra arrays (AV-digits' image pool).

Splits at load time: the published lists have only train and test, so a stratified validation
share (``--val-fraction``) is carved from the training rows with the seed ``split_seed`` (a
dataset option, 0 by default, so every run of a benchmark sees the same split); the test rows
are never used for selection. Samples listed in ``dropped`` are left out.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from altmodal.config import first_line
from altmodal.data.corpora.common import Options
from altmodal.data.dataset import MultimodalDataset, Transform
from altmodal.data.features import DataError
from altmodal.data.loaded import DataConfig, Loaded
from altmodal.data.media.image import ImageTransform
from altmodal.data.splits import carve_validation
from altmodal.files import kind_of, read_text

FORMAT = "altmodal-media-cache"
VERSION = 1
META, PRESENT, LABELS, KEYS, SPLIT, GROUP = (
    "meta.json",
    "present.npy",
    "labels.npy",
    "keys.npy",
    "split.npy",
    "group.npy",
)
PROGRESS, TOKENIZER = "progress.npz", "tokenizer.json"

LOAD_OPTIONS = {
    "split_seed": "seed of the validation share (and of held-out speakers), default 0",
    "crop": "output side of the image transforms (default: the cached size)",
    "scale_min": "smallest area share of RandomResizedCrop (default 0.08)",
    "flip": "random horizontal flips in training (default true)",
}


@dataclass(frozen=True)
class Cache:
    """A complete prepared cache, memory-mapped."""

    path: Path
    meta: Mapping[str, Any]
    arrays: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    labels: np.ndarray
    keys: np.ndarray
    split: np.ndarray
    group: np.ndarray

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    def spec(self, modality: str) -> Mapping[str, Any]:
        return self.meta["modalities"][modality]  # type: ignore[no-any-return]

    def extra(self, name: str) -> np.ndarray:
        return load_array(self.path / f"{name}.npy", mmap=True)


def load_array(path: Path, mmap: bool = False) -> np.ndarray:
    """One ``.npy`` array of a cache (memory-mapped with ``mmap``), never pickled objects;
    errors name the file."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: missing from the cache; prepare it again") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({first_line(err)}); prepare the cache again") from err
    if not stat.S_ISREG(mode):
        raise DataError(f"{path}: is a {kind_of(mode)}, not a regular file; prepare the cache again")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)  # type: ignore[no-any-return]
    except ValueError as err:
        if "allow_pickle" in str(err) or "Python objects" in str(err):
            raise DataError(
                f"{path}: holds pickled Python objects, which are never loaded; prepare the cache again"
            ) from err
        raise DataError(f"{path}: not a readable .npy array ({first_line(err)}); prepare the cache again") from err
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable .npy array ({first_line(err)}); prepare the cache again") from err


def read_meta(path: Path) -> dict[str, Any]:
    file = path / META
    try:
        meta = json.loads(read_text(file))
    except (OSError, ValueError) as err:
        raise DataError(f"{file}: not a readable cache description ({first_line(err)})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{file}: not an altmodal media cache (written by `altmodal prepare`)")
    if meta.get("version") != VERSION:
        raise DataError(f"{file}: cache format version {meta.get('version')}, this altmodal reads {VERSION}")
    return meta


def open_cache(path: str | Path | None, dataset: str) -> Cache:
    """Open the cache that ``altmodal prepare <dataset>`` wrote into ``path``.

    Raises:
        DataError: no cache there, another dataset's, or an unfinished one.
    """
    if path is None:
        raise DataError(f"{dataset}: needs --data-dir, the folder written by `altmodal prepare {dataset}`")
    path = Path(path)
    if not (path / META).is_file():
        raise DataError(f"{path}: no {META}; run `altmodal prepare {dataset} --root RAW --out {path}` first")
    meta = read_meta(path)
    check_meta(meta, path / META)
    if meta["dataset"] != dataset:
        raise DataError(f"{path}: holds a {meta['dataset']!r} cache, not {dataset!r}")
    if meta.get("status") != "complete":
        raise DataError(
            f"{path}: preparation is unfinished; run the same `altmodal prepare {dataset} ...` command to resume"
        )
    arrays: dict[str, np.ndarray] = {}
    n = meta["num_samples"]
    for name, spec in meta["modalities"].items():
        array = load_array(path / spec["file"], mmap=True)
        if tuple(array.shape) != (n, *spec["shape"]):
            raise DataError(f"{path / spec['file']}: shape {array.shape} disagrees with {META}")
        arrays[name] = array
    present_all = load_array(path / PRESENT)
    if present_all.shape != (n, len(meta["modalities"])):
        raise DataError(f"{path / PRESENT}: shape {present_all.shape} disagrees with {META}")
    present = {m: present_all[:, j].astype(bool) for j, m in enumerate(meta["modalities"])}
    rows = {name: load_array(path / name) for name in (LABELS, KEYS, SPLIT, GROUP)}
    for name, array in rows.items():
        if array.shape != (n,):
            raise DataError(f"{path / name}: shape {array.shape} disagrees with {META} ({n} samples)")
    labels = rows[LABELS]
    if not np.issubdtype(labels.dtype, np.integer) or (
        n and not 0 <= labels.min() <= labels.max() < len(meta["classes"])
    ):
        raise DataError(f"{path / LABELS}: does not hold class indices of the {len(meta['classes'])} classes of {META}")
    return Cache(
        path=path,
        meta=meta,
        arrays=arrays,
        present=present,
        labels=labels,
        keys=rows[KEYS],
        split=rows[SPLIT],
        group=rows[GROUP],
    )


def check_meta(meta: Mapping[str, Any], file: Path) -> None:
    """Raise a DataError naming ``file`` and the entry unless a complete cache's meta.json has
    what reading the cache needs."""
    kinds: dict[str, tuple[type, str]] = {
        "dataset": (str, "the corpus name"),
        "classes": (list, "the class names"),
        "num_samples": (int, "the number of samples"),
        "modalities": (dict, "the table of modalities"),
    }
    for key, (kind, what) in kinds.items():
        if key not in meta:
            raise DataError(f"{file}: has no {key!r} ({what}); prepare the cache again")
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            raise DataError(f"{file}: {key!r} is {meta[key]!r}, not {what}; prepare the cache again")
    for name, spec in meta["modalities"].items():
        if (
            not isinstance(spec, dict)
            or not isinstance(spec.get("file"), str)
            or Path(spec["file"]).name != spec["file"]
            or not isinstance(spec.get("shape"), list)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in spec["shape"])
        ):
            raise DataError(
                f"{file}: modality {name!r} has no file name and shape of its array; prepare the cache again"
            )


def held_out_groups(groups: np.ndarray, spec: str, seed: int, where: str, option: str = "test_speakers") -> list[str]:
    """The groups (speakers) to hold out: comma-separated names, else a count or a share
    (``0.1``) of the speakers drawn with ``seed`` (names win: CREMA-D's actor ids are numbers)."""
    names = sorted(set(groups.tolist()) - {""})
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    if wanted and all(w in names for w in wanted) and len(wanted) < len(names):
        return sorted(set(wanted))
    text = spec.strip()
    count = -1
    if text.isdigit():
        count = int(text)
    elif text.startswith("0.") and text[2:].isdigit():
        count = max(1, round(float(text) * len(names)))
    if 0 < count < len(names):
        chosen = np.random.default_rng([seed, 7]).permutation(len(names))[:count]
        return sorted(names[i] for i in chosen)
    raise DataError(
        f"{where}: {option}={spec!r} must be a count or share of the {len(names)} speakers (1 to "
        f"{len(names) - 1}) or name some of them ({', '.join(names[:12])}{', ...' if len(names) > 12 else ''})"
    )


SPEAKER_OPTIONS = {
    "test_speakers": "speakers held out for test by split=speaker: a count, a share (0.1) or names",
    "val_speakers": "with split=speaker, speakers held out for validation too (a count, share or names; "
    "default: a stratified share of the training samples, whose speakers are seen in training)",
}


def speaker_split(
    groups: np.ndarray,
    labels: np.ndarray,
    options: Options,
    seed: int,
    val_fraction: float,
    where: str,
    default_test: str,
) -> np.ndarray:
    """Per-sample split names with whole speakers held out for test and, when ``val_speakers`` is
    given, other whole speakers for validation (else a stratified share of the training samples)."""
    test = held_out_groups(groups, options.text("test_speakers", default_test), seed, where)
    split = np.where(np.isin(groups, test), "test", "train").astype("<U8")
    val_spec = options.text("val_speakers", "")
    if not val_spec:
        return carve_validation(split, labels, val_fraction, seed)
    remaining = np.where(split == "train", groups, "")
    val = held_out_groups(remaining, val_spec, seed + 1, where, "val_speakers")
    split[np.isin(groups, val) & (split == "train")] = "val"
    return split


def image_transforms(
    specs: Mapping[str, Mapping[str, Any]], options: Options, scale_min: float = 0.08, flip: bool = True
) -> tuple[dict[str, Transform], dict[str, Transform]]:
    """Train and eval transforms for the ``image`` modalities (crop, flip and scale from options)."""
    train: dict[str, Transform] = {}
    evaluate: dict[str, Transform] = {}
    for name, spec in specs.items():
        if spec["media"] != "image":
            continue
        settings = spec["settings"]
        size = options.integer("crop", int(settings["size"]))
        mean, std = tuple(settings["mean"]), tuple(settings["std"])
        train[name] = ImageTransform(
            train=True,
            size=size,
            scale=(options.number("scale_min", scale_min, 1e-3, 1.0), 1.0),
            flip=options.flag("flip", flip),
            mean=mean,
            std=std,
        )
        evaluate[name] = ImageTransform(train=False, size=size, mean=mean, std=std)
    return train, evaluate


def to_loaded(
    name: str,
    cache: Cache,
    split: np.ndarray,
    options: Options,
    *,
    arrays: Mapping[str, np.ndarray] | None = None,
    present: Mapping[str, np.ndarray] | None = None,
    specs: Mapping[str, Mapping[str, Any]] | None = None,
    scale_min: float = 0.08,
    flip: bool = True,
) -> Loaded:
    """The dataset over all cached samples with ``split`` (dropped samples excluded), the
    encoder kinds of the cache and the image transforms."""
    specs = dict(specs if specs is not None else cache.meta["modalities"])
    arrays = dict(arrays if arrays is not None else cache.arrays)
    present = dict(present if present is not None else cache.present)
    split = np.where(np.stack([present[m] for m in arrays], axis=1).any(axis=1), split, "dropped")
    train, evaluate = image_transforms(specs, options, scale_min, flip)
    dataset = MultimodalDataset(
        name=name,
        arrays=arrays,
        present=present,
        labels=cache.labels.astype(np.int64),
        classes=cache.classes,
        rows=np.arange(len(cache.labels)),
        kinds={m: str(specs[m]["kind"]) for m in arrays},
    )
    return Loaded(dataset, split, features=False, train_transforms=train, eval_transforms=evaluate)


def load_listed(
    name: str,
    data_dir: str | None,
    raw_options: Mapping[str, str],
    val_fraction: float,
    *,
    speakers: bool = False,
    extra: Sequence[str] = (),
) -> tuple[Cache, np.ndarray, Options]:
    """Open ``name``'s cache and build the split from its published lists (``split=list``) or,
    when ``speakers``, optionally by held-out speakers (``split=speaker``, ``test_speakers``).

    Returns:
        The cache, the per-sample split names and the parsed options.
    """
    known = [*LOAD_OPTIONS, *extra] + (["split", *SPEAKER_OPTIONS] if speakers else [])
    options = Options(name, raw_options, known)
    seed = options.integer("split_seed", 0, minimum=0)
    cache = open_cache(data_dir, name)
    split = cache.split
    if speakers and options.choice("split", "list", ("list", "speaker")) == "speaker":
        split = speaker_split(cache.group, cache.labels, options, seed, val_fraction, name, "0.1")
    if "val" not in set(split.tolist()):
        split = carve_validation(split, cache.labels, val_fraction, seed)
    return cache, split, options


def listed_loader(name: str, *, speakers: bool = False) -> Callable[[DataConfig, Mapping[str, str]], Loaded]:
    """The ``load`` function of a corpus whose cache keeps its published split (plus a validation
    share carved from train; with ``speakers``, optionally a speaker-disjoint split)."""

    def load(config: DataConfig, options: Mapping[str, str]) -> Loaded:
        cache, split, parsed = load_listed(name, config.data_dir, options, config.val_fraction, speakers=speakers)
        return to_loaded(name, cache, split, parsed)

    load.__doc__ = f"The prepared {name} cache in ``config.data_dir`` with its split."
    return load
