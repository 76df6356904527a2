"""``altmodal prepare``: decode a raw media corpus once into a memory-mapped cache (or convert
the real suite's multi-view collection: :mod:`altmodal.data.multiview`).

``prepare DATASET --root RAW --out CACHE`` asks the corpus module (:mod:`altmodal.data.corpora`)
for its plan, then decodes every sample's modalities (filterbanks, frames, token ids) into the
arrays of the cache (format: :mod:`altmodal.data.corpora.cache`), so training never decodes media.

- Resumable: the done mask, the presence mask and the skip records are saved together
  atomically (``progress.npz``, written to a temporary file and renamed) every
  ``checkpoint_every`` samples and on interruption, after the arrays are flushed; running the same
  command again continues with the first sample not done. A cache prepared from other files or
  settings is never mixed in: the fingerprint in ``meta.json`` must match.
- Unusable files are never dropped silently: a missing or corrupt file is logged, recorded in
  ``meta.json`` (sample, modality, file, reason) and counted in the summary, and that modality is
  marked absent for that sample; a sample left with no usable modality is dropped (listed under
  ``dropped``). With ``strict`` the first unusable file stops the run instead (progress is kept).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from altmodal.data.corpora import CORPORA
from altmodal.data.corpora.cache import META, read_meta
from altmodal.data.corpora.common import ModalitySpec, Plan
from altmodal.data.corpora.writer import fingerprint, finish, resume, save_progress, start
from altmodal.data.features import DataError
from altmodal.data.media import MediaError, MissingExtra
from altmodal.data.registry import parse_options

log = logging.getLogger(__name__)

MULTIVIEW = "multiview"
"""``prepare``'s name for converting the real suite's multi-view collection (not a media corpus)."""


@dataclass
class Summary:
    """What a prepare run did."""

    dataset: str
    out: str
    num_samples: int
    splits: dict[str, int]
    skipped: list[dict[str, str]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    done_before: int = 0
    """Samples already done when this run started (resumed), or all of them (already complete)."""
    seconds: float = 0.0


def prepare(
    dataset: str,
    root: str | Path,
    out: str | Path,
    options: Mapping[str, str] | None = None,
    *,
    strict: bool = False,
    progress: bool = False,
    checkpoint_every: int = 64,
) -> Summary:
    """Build (or finish) the cache of ``dataset`` from the raw folder ``root`` in ``out``.

    Raises:
        DataError: an unknown dataset, a bad raw layout or list file, a cache of other settings in
            ``out``, or (with ``strict``) the first unusable media file.
        MissingExtra: a decoder of the ``media`` extra is not installed.
    """
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every={checkpoint_every} must be at least 1")
    if dataset not in CORPORA:
        raise DataError(f"unknown media dataset {dataset!r}; `altmodal prepare` knows {', '.join(CORPORA)}")
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise DataError(f"{root}: no such raw data folder (--root)")
    previous = read_meta(out) if (out / META).is_file() else None
    if previous is None and out.is_dir() and any(out.iterdir()):
        raise DataError(f"{out}: the folder is not empty and holds no cache; choose a new or empty --out")
    if previous is not None and previous["dataset"] != dataset:
        raise DataError(f"{out}: holds a {previous['dataset']!r} cache; choose another --out for {dataset!r}")
    started = time.perf_counter()
    plan = CORPORA[dataset].plan(root, dict(options or {}), out if previous is not None else None)
    _check_plan(plan, root)
    digest = fingerprint(plan)
    if previous is not None and previous.get("fingerprint") != digest:
        raise DataError(
            f"{out}: holds a {dataset} cache prepared from other files or settings "
            f"(then: {json.dumps(previous.get('settings'))}); choose another --out or delete it"
        )
    if previous is not None and previous.get("status") == "complete":
        return _summary_of(previous, out, done_before=int(previous["num_samples"]))
    state = resume(out, plan) if previous is not None else None
    if state is None:
        state = start(out, plan, digest)
    arrays, done, present, skipped = state
    done_before = int(done.sum())
    _decode(plan, arrays, done, present, skipped, out, strict, progress, checkpoint_every)
    meta = finish(out, plan, digest, present, skipped, time.perf_counter() - started)
    return _summary_of(meta, out, done_before=done_before)


def _check_plan(plan: Plan, root: Path) -> None:
    if not plan.items:
        raise DataError(f"{root}: the {plan.dataset} layout yields no samples")
    unknown = sorted({item.label for item in plan.items} - set(plan.classes))
    if unknown:
        raise DataError(f"{root}: label {unknown[0]!r} is not among the {len(plan.classes)} classes")
    keys = [item.key for item in plan.items]
    if len(set(keys)) != len(keys):
        raise DataError(f"{root}: two samples share the name {_first_duplicate(keys)!r}")


def _first_duplicate(keys: list[str]) -> str:
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            return key
        seen.add(key)
    return ""


def _decode(
    plan: Plan,
    arrays: dict[str, np.ndarray],
    done: np.ndarray,
    present: np.ndarray,
    skipped: list[dict[str, str]],
    out: Path,
    strict: bool,
    progress: bool,
    checkpoint_every: int,
) -> None:
    """Decode every sample not done yet; checkpoint regularly and on any exit."""
    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(done), initial=int(done.sum()), disable=not progress, desc=f"prepare {plan.dataset}", unit="sample"
    )
    since = 0
    try:
        for i in np.flatnonzero(~done):
            item = plan.items[i]
            records: list[dict[str, str]] = []
            present[i] = False
            for j, spec in enumerate(plan.modalities):
                source = item.sources.get(spec.name)
                try:
                    if source is None:
                        raise MediaError(item.key, f"the raw layout gives no {spec.name} for this sample")
                    value = _checked(source.read(), spec, source.path)
                except MediaError as err:
                    if strict:
                        raise DataError(
                            f"{err} (sample {item.key!r}, modality {spec.name!r}); --strict stops at the first "
                            "unusable file; progress is saved, rerun without --strict to skip such files"
                        ) from err
                    log.warning("skipping %s of %s: %s", spec.name, item.key, err)
                    records.append({"key": item.key, "modality": spec.name, "file": err.path, "reason": err.reason})
                    continue
                arrays[spec.name][i] = value
                present[i, j] = True
            skipped.extend(records)
            done[i] = True
            bar.update(1)
            since += 1
            if since >= checkpoint_every:
                save_progress(out, arrays, done, present, skipped)
                since = 0
    finally:
        save_progress(out, arrays, done, present, skipped)
        bar.close()


def _checked(value: np.ndarray, spec: ModalitySpec, path: str) -> np.ndarray:
    array = np.asarray(value)
    if tuple(array.shape) != spec.shape:
        raise MediaError(path, f"decoded to shape {tuple(array.shape)}, the cache holds {spec.shape}")
    cast = array.astype(spec.dtype)
    if np.issubdtype(cast.dtype, np.floating) and not np.isfinite(cast).all():
        raise MediaError(path, f"decoded values are not finite in {spec.dtype}")
    return cast


def _summary_of(meta: Mapping[str, Any], out: Path, done_before: int) -> Summary:
    return Summary(
        dataset=meta["dataset"],
        out=str(out),
        num_samples=int(meta["num_samples"]),
        splits=dict(meta["splits"]),
        skipped=list(meta["skipped"]),
        dropped=list(meta["dropped"]),
        notes=list(meta["notes"]),
        done_before=done_before,
        seconds=float(meta.get("seconds", 0.0)),
    )


def format_summary(summary: Summary, shown: int = 10) -> list[str]:
    """The lines ``altmodal prepare`` prints."""
    splits = ", ".join(f"{k} {v}" for k, v in summary.splits.items())
    if summary.done_before == summary.num_samples:
        lines = [f"{summary.out}: the {summary.dataset} cache is complete already ({summary.num_samples} samples)"]
    else:
        resumed = f", resumed after {summary.done_before}" if summary.done_before else ""
        lines = [
            f"prepared {summary.dataset}: {summary.num_samples} samples ({splits}) in {summary.out} "
            f"({summary.seconds:.1f} s{resumed})"
        ]
    if summary.skipped:
        lines.append(
            f"skipped {len(summary.skipped)} unusable file(s); each marks that modality absent for its sample "
            f"(all records in {Path(summary.out) / META}):"
        )
        lines += [f"  {r['key']} {r['modality']}: {r['file']}: {r['reason']}" for r in summary.skipped[:shown]]
        if len(summary.skipped) > shown:
            lines.append(f"  ... and {len(summary.skipped) - shown} more")
    if summary.dropped:
        lines.append(
            f"dropped {len(summary.dropped)} sample(s) with no usable modality left: "
            + ", ".join(summary.dropped[:shown])
            + (" ..." if len(summary.dropped) > shown else "")
        )
    lines += [f"note: {note}" for note in summary.notes]
    return lines


def cmd_prepare(args: argparse.Namespace) -> int:
    """The ``prepare`` command's handler (prints the summary)."""
    if args.dataset == MULTIVIEW:
        return cmd_prepare_multiview(args)
    if args.overwrite:
        raise DataError(f"--overwrite is for {MULTIVIEW}; a media cache resumes: choose another --out to start anew")
    try:
        summary = prepare(
            args.dataset,
            args.root,
            args.out,
            parse_options(args.option),
            strict=args.strict,
            progress=not args.quiet,
            checkpoint_every=args.checkpoint_every,
        )
    except MissingExtra as err:
        raise DataError(str(err)) from err
    except KeyboardInterrupt:
        print("altmodal: interrupted; progress is saved, run the same command to resume")
        return 130
    for line in format_summary(summary):
        print(line)
    return 0


def cmd_prepare_multiview(args: argparse.Namespace) -> int:
    """``prepare multiview``: the collection's ``.mat`` files in --root into --out/multiview/."""
    from altmodal.data.multiview import format_converted, prepare_collection

    given = [flag for flag, value in (("--option", args.option), ("--strict", args.strict)) if value]
    if given:
        raise DataError(f"{given[0]} is for the media datasets; `prepare {MULTIVIEW}` takes --root, --out, --overwrite")
    for line in format_converted(prepare_collection(args.root, args.out, overwrite=args.overwrite), args.out):
        print(line)
    return 0


def add_prepare_command(subparsers: Any) -> None:
    """Add ``prepare`` to the ``altmodal`` command's subparsers."""
    epilog = "\n".join(
        f"{name}:\n" + "\n".join(f"  {key:<14} {text}" for key, text in corpus.prepare_options.items())
        for name, corpus in CORPORA.items()
    )
    parser = subparsers.add_parser(
        "prepare",
        help="decode a raw media dataset once into a cache for training (resumable), or convert the real "
        "suite's multi-view collection",
        description="Decode a raw media dataset (layouts: altmodal.data.corpora.<name>) into CACHE; then train "
        f"with `altmodal train --dataset DATASET --data-dir CACHE`. `prepare {MULTIVIEW} --root MAT_FOLDER --out "
        "DATA_FOLDER` converts the public multi-view collection's .mat files (altmodal.data.multiview) into "
        "DATA_FOLDER/multiview/<name>.npz, the files `altmodal benchmark --suite real` reads from its data folder "
        "(--media-root or ALTMODAL_DATA).",
        epilog="dataset options (--option KEY=VALUE):\n" + epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "dataset", choices=[*CORPORA, MULTIVIEW], help=f"the media dataset, or {MULTIVIEW} (the real suite's files)"
    )
    parser.add_argument(
        "--root",
        required=True,
        help=f"the raw data folder (layout: see the dataset's module; {MULTIVIEW}: the folder of .mat files)",
    )
    parser.add_argument(
        "--out",
        required=True,
        help=f"the cache folder to write (or finish); {MULTIVIEW}: the data folder, written into OUT/multiview/",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help=f"{MULTIVIEW}: replace output files that exist (default: refuse)"
    )
    parser.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="a dataset option (repeat for more)"
    )
    parser.add_argument("--strict", action="store_true", help="stop at the first missing or corrupt file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--checkpoint-every", type=int, default=64, help="save progress every this many samples (default: 64)"
    )
    parser.set_defaults(handler=cmd_prepare)
