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
complete epoch. Files follow the umask, as files written with ``open`` do.

Safety: weights and preprocessing are safetensors files (tensors only); ``checkpoint.pt`` (and an
older run's ``model.pt``) hold only tensors, numbers, strings, lists and dicts, and
:meth:`Run.load` reads them with ``torch.load(..., weights_only=True)``, so a file planted in a
run folder can never run code. A process working in a folder holds ``DIR/.lock`` (its pid);
a second process is refused, and the lock of a process that no longer exists is taken over.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch

from altmodal.config import ConfigError, first_line
from altmodal.strategies.base import Callback

log = logging.getLogger(__name__)

LOCK = ".lock"
ADVICE = {
    "checkpoint.pt": "delete it to start the run afresh",
    "model.pt": "the trained model is lost: train the run again (the same command with --overwrite)",
    "model.safetensors": "the trained model is lost: train the run again (the same command with --overwrite)",
    "preprocessing.safetensors": "the run cannot predict: train it again (the same command with --overwrite)",
}


def file_mode() -> int:
    """The mode ``open`` gives a new file under the current umask (0o666 minus the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, file_mode())  # mkstemp creates 0600; follow the umask instead
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

    def check_folder(self) -> None:
        """Raise a ConfigError when the path exists but is not a folder."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"{self.path}: is a file, not a run folder; choose a folder")

    def foreign_files(self) -> list[str]:
        """The folder's files when it is not a run folder (empty for a run folder, a new or an
        empty one). A run writes its ``config.json`` before any other file, so a folder without
        one that holds anything besides a lock or temporary files belongs to someone else."""
        if not self.path.is_dir() or self.has("config.json"):
            return []
        return sorted(p.name for p in self.path.iterdir() if p.name != LOCK and not _temporary(p.name))

    @property
    def finished(self) -> bool:
        return self.file("metrics.json").is_file()

    def read_json(self, name: str) -> Any:
        self.check_folder()
        path = self.file(name)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: not found; is {self.path} a run folder?") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not valid JSON ({first_line(err)})") from err
        except OSError as err:
            raise ValueError(f"{path}: cannot be read ({first_line(err)})") from err

    def read_object(self, name: str) -> dict[str, Any]:
        """A JSON file that must hold an object (config.json, metrics.json)."""
        data = self.read_json(name)
        if not isinstance(data, dict):
            raise ValueError(f"{self.file(name)}: holds {type(data).__name__}, not a JSON object of a run")
        return data

    def write_json(self, name: str, obj: Any) -> None:
        if self.main:
            write_json(self.file(name), obj)

    def save(self, name: str, obj: Any) -> None:
        if self.main:
            atomic_write(self.file(name), lambda fh: torch.save(obj, fh))

    def load(self, name: str, map_location: str | torch.device = "cpu") -> Any:
        """Read a ``.pt`` file of the run safely: tensors, numbers, strings, lists and dicts only
        (``weights_only=True``); anything else, code included, is refused and never run."""
        path = self.file(name)
        advice = ADVICE.get(name, "replace or delete it")
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: not found") from None
        except pickle.UnpicklingError as err:
            refused = [line for line in str(err).splitlines() if "Unsupported global:" in line]
            if refused:
                what = refused[0].split("Unsupported global:", 1)[1].split(" was not")[0].strip()
                raise ValueError(
                    f"{path}: holds objects other than tensors, numbers, strings, lists and dicts "
                    f"({what}); refused and not run; {advice}"
                ) from err
            raise ValueError(f"{path}: cannot be read (not a saved torch file); {advice}") from err
        except Exception as err:  # torch.load raises many types (zip, EOF, runtime) for a bad file
            raise ValueError(f"{path}: cannot be read ({first_line(err)}); {advice}") from err

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
            advice = ADVICE.get(name, "replace or delete it")
            raise ValueError(f"{path}: cannot be read ({first_line(err)}); {advice}") from err
        return {k: v.to(device) for k, v in tensors.items()}

    def has(self, name: str) -> bool:
        return self.file(name).is_file()

    def remove(self, name: str) -> None:
        if self.main and self.has(name):
            self.file(name).unlink()

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``DIR/.lock`` (this process's pid) while working in the folder.

        Raises:
            ConfigError: another living process holds the lock; the message names its pid.
        """
        if not self.main:
            yield
            return
        self.check_folder()
        self.path.mkdir(parents=True, exist_ok=True)
        path = self.file(LOCK)
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, file_mode())
            except FileExistsError:
                holder = _lock_holder(path)
                if holder is not None and _alive(holder):
                    raise ConfigError(
                        f"{self.path} is in use by process {holder} ({path}); wait for it to finish, "
                        "or delete the lock if that process is not altmodal"
                    ) from None
                log.warning("%s: taking over the lock of process %s, which no longer runs", self.path, holder)
                path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()}\n")
            break
        else:
            raise ConfigError(f"{path}: cannot take the lock; another process keeps taking it")
        try:
            yield
        finally:
            if _lock_holder(path) == os.getpid():
                path.unlink(missing_ok=True)

    def on_epoch_end(self, strategy: Any, state: dict[str, Any]) -> None:
        if self.main:
            write_csv(self.file("history.csv"), state["history"])
            self.save("checkpoint.pt", state)


def _temporary(name: str) -> bool:
    """A temporary file of :func:`atomic_write` (``.NAME.XXXX.tmp``)."""
    return name.startswith(".") and name.endswith(".tmp")


def _lock_holder(path: Path) -> int | None:
    """The pid written in a lock file (None when unreadable)."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """Whether a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user
    return True
