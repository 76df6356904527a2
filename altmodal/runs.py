"""The run folder: resolved config, per-epoch history, atomic checkpoints, final metrics.

    DIR/config.json      the resolved configuration (feed it back with --config)
    DIR/history.csv      one row per epoch: losses and validation metrics, per modality
    DIR/checkpoint.pt    the state at the end of the last finished epoch (while training)
    DIR/model.safetensors  the best epoch's parameters (selected on the validation split)
    DIR/model.json       what prediction needs besides them: classes, modalities, input shapes,
                         encoder kinds, preprocessing, best epoch, library and torch versions
    DIR/preprocessing.safetensors  statistics fit on the training split (standardisation)
    DIR/predictions_test.csv       per test sample: label, predictions, probabilities, presence
    DIR/metrics.json     the final metrics; its presence marks the run as finished

Weights and statistics are safetensors files: reading them runs no code.

Every file is written to a temporary name in the same folder and renamed into place, so an
interrupted run never leaves a half-written file, and a resumed run starts from the last
complete epoch.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import torch

from altmodal.config import first_line
from altmodal.strategies.base import Callback


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    atomic_write(path, lambda fh: fh.write(text.encode()))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda fh: fh.write(buffer.getvalue().encode()))


def read_csv(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


class Run(Callback):
    """A run folder (see the module docstring); also the loop's end-of-epoch callback."""

    def __init__(self, path: str | Path, *, main: bool = True):
        self.path = Path(path)
        self.main = main

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def finished(self) -> bool:
        return self.file("metrics.json").is_file()

    def read_json(self, name: str) -> Any:
        path = self.file(name)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: not found; is {self.path} a run folder?") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err

    def write_json(self, name: str, obj: Any) -> None:
        if self.main:
            write_json(self.file(name), obj)

    def save(self, name: str, obj: Any) -> None:
        if self.main:
            atomic_write(self.file(name), lambda fh: torch.save(obj, fh))

    def load(self, name: str, map_location: str | torch.device = "cpu") -> Any:
        path = self.file(name)
        try:
            return torch.load(path, map_location=map_location, weights_only=False)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: not found") from None
        except Exception as err:  # torch.load raises many types (unpickling, zip, EOF) for a bad file
            raise ValueError(f"{path}: cannot be read ({first_line(err)}); delete it to start afresh") from err

    def save_tensors(self, name: str, tensors: Mapping[str, torch.Tensor]) -> None:
        """Write tensors as a safetensors file (shared storage is copied apart)."""
        if self.main:
            from safetensors.torch import save

            data = save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()})
            atomic_write(self.file(name), lambda fh: fh.write(data))

    def load_tensors(self, name: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """Read a safetensors file onto ``device``; a missing or damaged file is a clear error."""
        from safetensors.torch import load

        path = self.file(name)
        try:
            tensors = load(path.read_bytes())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: not found; is {self.path} a finished run folder?") from None
        except Exception as err:  # safetensors raises its own error types for a damaged file
            raise ValueError(f"{path}: cannot be read ({first_line(err)})") from err
        return {k: v.to(device) for k, v in tensors.items()}

    def has(self, name: str) -> bool:
        return self.file(name).is_file()

    def remove(self, name: str) -> None:
        if self.main and self.has(name):
            self.file(name).unlink()

    def on_epoch_end(self, strategy: Any, state: dict[str, Any]) -> None:
        if self.main:
            write_csv(self.file("history.csv"), state["history"])
            self.save("checkpoint.pt", state)
