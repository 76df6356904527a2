"""The run folder: resolved config, per-epoch history, atomic checkpoints, final metrics.

    DIR/config.json      the resolved configuration (feed it back with --config)
DIR/data.json        the SHA-256 of the data file (a .npz, .csv or .parquet dataset) the run trains on
    DIR/history.csv      one row per epoch: losses and validation metrics, per modality (while
                         training: the epochs of the last checkpoint)
    DIR/checkpoint.pt    the state at the end of a finished epoch, written when a minute has
                         passed since the last one (while training; :func:`checkpoint_seconds`)
    DIR/model.safetensors  the best epoch's parameters (selected on the validation split)
    DIR/model.json       what prediction needs besides them: classes, modalities, input shapes,
                         encoder kinds, preprocessing, best epoch, library and torch versions
    DIR/preprocessing.safetensors  statistics fit on the training split (standardisation)
    DIR/predictions_test.csv       per test sample: label, predictions, probabilities, presence
    DIR/metrics.json     the final metrics; its presence marks the run as finished

JSON files hold no NaN or infinity (not JSON): a value that is not a number is written as null.
CSV files are opened by spreadsheets, which run a cell that starts with ``=``, ``+``, ``-``, ``@``,
a tab or a carriage return as a formula: such a text cell (a class name of the user's labels, a
header) is written with a leading ``'``, as OWASP's advice on CSV injection has it; numbers,
negative ones included, are written as they are.

Weights and statistics are safetensors files: reading them runs no code.

Every file is written to a temporary name in the same folder and renamed into place, so an
interrupted run never leaves a half-written file, and a resumed run starts from the epoch of
its last checkpoint and ends as an uninterrupted run would. Files follow the umask, as files
written with ``open`` do.

Safety: weights and preprocessing are safetensors files (tensors only); ``checkpoint.pt`` (and an
older run's ``model.pt``) hold only tensors, numbers, strings, lists and dicts, and
:meth:`Run.load` reads them with ``torch.load(..., weights_only=True)``, so a file planted in a
run folder can never run code. JSON and CSV files are read only when they are regular files (a
FIFO or a device in their place is an error, never a hang).

A process working in a folder holds ``DIR/.lock``: an open file with an exclusive ``flock`` on
it and the holder's pid inside. A second process is refused; the lock of a process that no
longer exists is taken over, and since the kernel grants the ``flock`` to one process only, two
processes can never both take over one stale lock. (Where a filesystem has no ``flock``, the
pid alone decides.) A lock that is a directory, a link or a FIFO is refused, never followed.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import logging
import math
import os
import pickle
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch

from altmodal.callbacks import Callback
from altmodal.config import ConfigError, first_line
from altmodal.files import check_parent, kind_of, read_bytes, read_text

try:
    import fcntl
except ImportError:  # no flock on this platform: the pid in the lock decides alone
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK = ".lock"
RUN_FILES = (
    "checkpoint.pt",
    "metrics.json",
    "model.pt",
    "model.safetensors",
    "model.json",
    "preprocessing.safetensors",
    "predictions_test.csv",
    "history.csv",
    "data.json",
)
"""The files a run writes besides its config.json (``--overwrite`` removes them, and no others)."""
FOLDS = "folds"
"""The folder of a cross-fitted run's members (``folds/<k>``, each a run folder)."""
RUN_EXTRAS = ("missing.json", "tensorboard", FOLDS)
"""What else a run folder may hold: the benchmark's cache of missing-rate results, TensorBoard logs,
a cross-fitted run's members."""
ADVICE = {
    "checkpoint.pt": "delete it to start the run afresh",
    "model.pt": "the trained model is lost: train the run again (the same command with --overwrite)",
    "model.safetensors": "the trained model is lost: train the run again (the same command with --overwrite)",
    "preprocessing.safetensors": "the run cannot predict: train it again (the same command with --overwrite)",
    "model.json": "the run cannot predict: train it again (the same command with --overwrite)",
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
    """``obj`` as strict JSON (NaN and infinities as null) in ``path``, atomically."""
    text = json.dumps(without_nan(obj), indent=2, sort_keys=False, default=_json_default, allow_nan=False) + "\n"
    atomic_write(path, lambda fh: fh.write(text.encode()))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def without_nan(obj: Any) -> Any:
    """``obj`` with every float that is not finite (NaN, infinities) replaced by None (JSON null)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {k: without_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [without_nan(v) for v in obj]
    return obj


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet takes as the start of a formula in a CSV cell."""


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell that no spreadsheet runs: text that starts like a formula (and is not a number)
    gets a leading ``'``; anything else is returned as it is."""
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS):
        return value
    try:
        float(value)
    except ValueError:
        return "'" + value
    return value


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """``rows`` (dicts; the columns in order of first appearance) as a CSV file, every text cell
    and header :func:`spreadsheet_safe`, atomically."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([spreadsheet_safe(c) for c in columns])
    writer.writerows([spreadsheet_safe(row.get(c, "")) for c in columns] for row in rows)
    atomic_write(path, lambda fh: fh.write(buffer.getvalue().encode()))


def read_csv(path: Path, advice: str = "replace or delete it") -> list[dict[str, float]]:
    """The rows of a CSV file of numbers (a run's history.csv) as dicts; empty cells left out.

    Raises:
        ValueError: the file is not a regular file, not text, or holds a cell that is not a
            number; the message names the file, row and column, and ends with ``advice``.
    """
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot be read ({first_line(err)})") from err
    except ValueError as err:
        raise ValueError(f"{err}; {advice}") from err
    rows = []
    for number, row in enumerate(csv.DictReader(io.StringIO(text)), start=1):
        parsed: dict[str, float] = {}
        for key, value in row.items():
            if value in ("", None):
                continue
            try:
                parsed[str(key)] = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise ValueError(
                    f"{path}: row {number}, column {key!r} holds {value!r}, not a number; {advice}"
                ) from None
        rows.append(parsed)
    return rows


CHECKPOINT_SECONDS = 60.0
"""The loop writes ``checkpoint.pt`` (and ``history.csv`` with it) at the end of an epoch once
this many seconds have passed since its last one (or since training started): an interruption
loses at most about this much training, and a run of small epochs does not spend its time
writing its whole state after each (with wide inputs, a fifth of a cross-fitted run went to it).
The environment variable :data:`CHECKPOINT_ENV` sets another interval; 0: after every epoch."""

CHECKPOINT_ENV = "ALTMODAL_CHECKPOINT_SECONDS"


def checkpoint_seconds() -> float:
    """The interval between checkpoints: ``$ALTMODAL_CHECKPOINT_SECONDS``, else :data:`CHECKPOINT_SECONDS`.

    Raises:
        ConfigError: the variable is not a number of seconds >= 0.
    """
    value = os.environ.get(CHECKPOINT_ENV)
    if value is None:
        return CHECKPOINT_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{CHECKPOINT_ENV}={value!r}: not a number of seconds >= 0 (0: a checkpoint every epoch)")
    return seconds


class Run(Callback):
    """A run folder (see the module docstring); also the loop's end-of-epoch callback."""

    def __init__(self, path: str | Path, *, main: bool = True):
        self.path = Path(path)
        self.main = main
        self.checkpointed = time.monotonic()
        """When the loop started or last wrote checkpoint.pt."""
        self.interval = CHECKPOINT_SECONDS
        """The seconds between checkpoints, read when the loop starts (:func:`checkpoint_seconds`)."""

    def file(self, name: str) -> Path:
        return self.path / name

    def check_folder(self) -> None:
        """Raise a ConfigError when the path exists but is not a folder, or lies inside a file."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"{self.path}: is a file, not a run folder; choose a folder")
        try:
            check_parent(self.path)
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def foreign_files(self) -> list[str]:
        """The folder's entries when it is not a run folder (empty for a run folder, a new or an
        empty one). A run writes its ``config.json`` before any other file, so a folder is a
        run's when its config.json sits next to files a run writes, or alone and holds a run's
        config (a start that stopped before its first epoch). Anything else, such as another
        tool's config.json with its notes, belongs to someone else. A lock and temporary files
        do not count."""
        if not self.path.is_dir():
            return []
        names = entries(self.path)
        others = [n for n in names if n != "config.json"]
        if len(others) < len(names):
            if any(n in RUN_FILES or n in RUN_EXTRAS for n in others):
                return []
            if not others and self._holds_run_config():
                return []
        return names

    def _holds_run_config(self) -> bool:
        """Whether config.json holds what a run writes there (strategy and its sections)."""
        try:
            data = json.loads(read_bytes(self.file("config.json"), limit=1 << 20))
        except (OSError, ValueError):
            return False
        sections = ("data", "encoder", "train")
        return (
            isinstance(data, dict)
            and isinstance(data.get("strategy"), str)
            and all(isinstance(data.get(s), dict) for s in sections)
        )

    @property
    def finished(self) -> bool:
        return self.file("metrics.json").is_file()

    def read_json(self, name: str) -> Any:
        self.check_folder()
        path = self.file(name)
        try:
            text = read_text(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: not found; is {self.path} a run folder?") from None
        except OSError as err:
            raise ValueError(f"{path}: cannot be read ({first_line(err)})") from err
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({first_line(err)})") from err

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
        advice = ADVICE.get(name, "replace or delete it")
        try:
            data = read_bytes(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: not found; is {self.path} a finished run folder? {advice}") from None
        except (OSError, ValueError) as err:
            raise ValueError(f"{first_line(err)}; {advice}") from err
        try:
            tensors = load(data)
        except Exception as err:  # safetensors raises its own error types for a damaged file
            raise ValueError(f"{path}: cannot be read ({first_line(err)}); {advice}") from err
        return {k: v.to(device) for k, v in tensors.items()}

    def has(self, name: str) -> bool:
        return self.file(name).is_file()

    def remove(self, name: str) -> None:
        if self.main and self.has(name):
            self.file(name).unlink()

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``DIR/.lock`` while working in the folder (see the module docstring).

        Raises:
            ConfigError: another living process holds the lock (the message names its pid), or
                the lock is not a regular file.
        """
        if not self.main:
            yield
            return
        self.check_folder()
        self.path.mkdir(parents=True, exist_ok=True)
        path = self.file(LOCK)
        fd = _take_lock(path, self.path)
        try:
            yield
        finally:
            try:
                if _same_file(path, fd):
                    path.unlink()
            finally:
                os.close(fd)

    def on_fit_start(self, strategy: Any, splits: Any) -> None:
        self.interval = checkpoint_seconds()  # (a malformed one is named before the first epoch)
        self.checkpointed = time.monotonic()

    def on_epoch_end(self, strategy: Any, state: dict[str, Any]) -> None:
        if self.main and time.monotonic() - self.checkpointed >= self.interval:
            write_csv(self.file("history.csv"), state["history"])  # the checkpoint's epochs
            self.save("checkpoint.pt", state)
            self.checkpointed = time.monotonic()


def entries(folder: Path) -> list[str]:
    """The names in ``folder`` but a lock and temporary files, sorted."""
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK and not _temporary(p.name))


def _temporary(name: str) -> bool:
    """A temporary file of :func:`atomic_write` (``.NAME.XXXX.tmp``)."""
    return name.startswith(".") and name.endswith(".tmp")


def _take_lock(path: Path, folder: Path) -> int:
    """Open, flock and fill in the lock file ``path``; return its descriptor (kept open while held)."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    for _ in range(5):
        try:
            fd = os.open(path, flags, file_mode())
        except OSError as err:
            raise ConfigError(f"{path}: {_not_a_lock(path, err)}; remove it, or choose another folder") from None
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise ConfigError(f"{path}: is a {kind_of(mode)}, not a lock file; remove it, or choose another folder")
        if not _flock(fd):
            holder = _pid(_read_lock(fd))
            os.close(fd)
            raise ConfigError(
                f"{folder} is in use by process {holder if holder is not None else '(unknown)'} ({path}); "
                "wait for it to finish"
            )
        if not _same_file(path, fd):  # removed or replaced before the flock: try the new one
            os.close(fd)
            continue
        text = _read_lock(fd)
        holder = _pid(text)
        if holder is not None and holder != os.getpid():
            if _alive(holder):  # e.g. an older altmodal, which held no flock
                os.close(fd)
                raise ConfigError(
                    f"{folder} is in use by process {holder} ({path}); wait for it to finish, "
                    "or delete the lock if that process is not altmodal"
                )
            log.warning("%s: taking over the lock of process %s, which no longer runs", folder, holder)
        elif holder is None and text.strip():
            log.warning("%s: taking over the lock %s, which names no process (%r)", folder, path, text)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd
    raise ConfigError(f"{path}: cannot take the lock; other processes keep replacing it")


def _not_a_lock(path: Path, err: OSError) -> str:
    if isinstance(err, IsADirectoryError):
        return "is a directory, not a lock file"
    if err.errno == errno.ELOOP or path.is_symlink():
        return "is a link, not a lock file"
    return f"cannot be opened as a lock ({err.strerror or first_line(err)})"


def _flock(fd: int) -> bool:
    """Take an exclusive flock on ``fd`` without waiting; False when another process holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a filesystem without flock: the pid decides alone
        return True
    return True


def _same_file(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        there = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    here = os.fstat(fd)
    return (there.st_dev, there.st_ino) == (here.st_dev, here.st_ino)


def _read_lock(fd: int) -> str:
    return os.pread(fd, 64, 0).decode("utf-8", errors="replace")


def _pid(text: str) -> int | None:
    """The pid written in a lock file (None when it names none)."""
    try:
        pid = int(text.strip())
    except ValueError:
        return None
    return pid if pid > 0 else None


def _alive(pid: int) -> bool:
    """Whether a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user
    return True
