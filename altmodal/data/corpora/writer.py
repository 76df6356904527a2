"""Writing a prepared cache (format: :mod:`altmodal.data.corpora.cache`): fresh arrays, resumed
arrays, atomic progress records and the final description.

Atomicity: every small file is written to a temporary name and renamed over the old one
(``os.replace``), and the memory-mapped arrays are flushed before the progress record that
marks their rows done, so an interrupted run never marks an unwritten row as done.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from altmodal.data.corpora.cache import (
    FORMAT,
    GROUP,
    KEYS,
    LABELS,
    META,
    PRESENT,
    PROGRESS,
    SPLIT,
    TOKENIZER,
    VERSION,
)
from altmodal.data.corpora.common import Plan

log = logging.getLogger(__name__)


def fingerprint(plan: Plan) -> str:
    """A digest of what the cache holds: modalities, classes and every sample's key, label, split."""
    described = {
        "dataset": plan.dataset,
        "classes": plan.classes,
        "modalities": [asdict(m) for m in plan.modalities],
        "extra": {k: list(v.shape) for k, v in plan.extra_arrays.items()},
        "items": [[i.key, i.label, i.split, i.group] for i in plan.items],
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]


State = tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[dict[str, str]]]


def start(out: Path, plan: Plan, digest: str) -> State:
    """``meta.json`` (in progress) first, then fresh arrays, per-sample files, extras, tokenizer
    and an empty progress record (a run stopped before that record starts again)."""
    out.mkdir(parents=True, exist_ok=True)
    write_meta(out, describe(plan, digest, "in_progress"))
    (out / PROGRESS).unlink(missing_ok=True)
    n = len(plan.items)
    np.save(out / LABELS, np.array([plan.classes.index(i.label) for i in plan.items], dtype=np.int64))
    np.save(out / KEYS, np.array([i.key for i in plan.items]))
    np.save(out / SPLIT, np.array([i.split for i in plan.items]))
    np.save(out / GROUP, np.array([i.group for i in plan.items]))
    for name, array in plan.extra_arrays.items():
        np.save(out / f"{name}.npy", array)
    if plan.tokenizer is not None:
        plan.tokenizer.save(str(out / TOKENIZER))
    arrays: dict[str, np.ndarray] = {
        m.name: np.lib.format.open_memmap(
            out / f"{m.name}.npy", mode="w+", dtype=np.dtype(m.dtype), shape=(n, *m.shape)
        )
        for m in plan.modalities
    }
    done = np.zeros(n, dtype=bool)
    present = np.zeros((n, len(plan.modalities)), dtype=bool)
    save_progress(out, arrays, done, present, [])
    return arrays, done, present, []


def resume(out: Path, plan: Plan) -> State | None:
    """The arrays and progress of an unfinished cache, or None when they cannot be trusted."""
    try:
        with np.load(out / PROGRESS) as saved:
            done, present = saved["done"].astype(bool), saved["present"].astype(bool)
            skipped = json.loads(str(saved["skipped"]))
        arrays: dict[str, np.ndarray] = {
            m.name: np.load(out / f"{m.name}.npy", mmap_mode="r+") for m in plan.modalities
        }
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        log.warning("%s: the unfinished cache cannot be resumed (%s); starting again", out, err)
        return None
    n = len(plan.items)
    shapes_ok = all(arrays[m.name].shape == (n, *m.shape) for m in plan.modalities)
    if not shapes_ok or done.shape != (n,) or present.shape != (n, len(plan.modalities)):
        log.warning("%s: the unfinished cache has other shapes; starting again", out)
        return None
    log.info("%s: resuming after %d of %d samples", out, int(done.sum()), n)
    return arrays, done, present, list(skipped)


def save_progress(
    out: Path, arrays: dict[str, np.ndarray], done: np.ndarray, present: np.ndarray, skipped: list[dict[str, str]]
) -> None:
    """Flush the arrays, then replace ``progress.npz`` (done mask, presence, skip records) atomically."""
    for array in arrays.values():
        if isinstance(array, np.memmap):
            array.flush()
    tmp = out / (PROGRESS + ".tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, done=done, present=present, skipped=np.array(json.dumps(skipped)))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, out / PROGRESS)


def describe(plan: Plan, digest: str, status: str) -> dict[str, Any]:
    """The ``meta.json`` content of a cache of ``plan`` (no skip records yet)."""
    splits: dict[str, int] = {}
    for item in plan.items:
        splits[item.split or "all"] = splits.get(item.split or "all", 0) + 1
    return {
        "format": FORMAT,
        "version": VERSION,
        "dataset": plan.dataset,
        "status": status,
        "fingerprint": digest,
        "settings": plan.settings,
        "classes": plan.classes,
        "num_samples": len(plan.items),
        "modalities": {m.name: {**asdict(m), "file": f"{m.name}.npy", "shape": list(m.shape)} for m in plan.modalities},
        "splits": splits,
        "extra_arrays": sorted(plan.extra_arrays),
        "notes": plan.notes,
        "skipped": [],
        "dropped": [],
    }


def finish(
    out: Path, plan: Plan, digest: str, present: np.ndarray, skipped: list[dict[str, str]], seconds: float
) -> dict[str, Any]:
    """Write the final presence mask and the complete ``meta.json``; return the latter."""
    tmp = out / (PRESENT + ".tmp.npy")
    np.save(tmp, present)
    os.replace(tmp, out / PRESENT)
    meta = describe(plan, digest, "complete")
    meta["skipped"] = skipped
    meta["dropped"] = [plan.items[i].key for i in np.flatnonzero(~present.any(axis=1))]
    meta["seconds"] = round(seconds, 3)
    write_meta(out, meta)
    return meta


def write_meta(out: Path, meta: Mapping[str, Any]) -> None:
    """Replace ``meta.json`` atomically."""
    tmp = out / (META + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, out / META)
