"""Paths a user hands us, read and written without surprises.

A path named as a config file, a run file, a lock or a table may be anything: a FIFO (reading it
waits forever), a device (``/dev/zero`` never ends), a directory, a link. :func:`read_bytes`
reads regular files only, and opening one never blocks. :func:`check_parent` says in one line
when a path to be written lies inside a file, before anything is computed. Standard library
only: the command line's light modules use it.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

KINDS = (
    (stat.S_ISDIR, "directory"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISLNK, "link"),
)


class NotRegularFile(ValueError):
    """A path that is a directory, FIFO, device or socket where a file was expected."""


def kind_of(mode: int) -> str:
    """'directory', 'FIFO', 'character device', ... for a ``st_mode`` ('file' for a regular file)."""
    return next((name for test, name in KINDS if test(mode)), "file")


def read_bytes(path: str | Path, limit: int | None = None) -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit``); links are followed.

    Raises:
        FileNotFoundError: nothing at ``path``.
        NotRegularFile: ``path`` is a directory, FIFO, device or socket (never opened for long:
            opening does not wait for a FIFO's writer).
        OSError: the file cannot be read (permissions, I/O).
    """
    fd = open_regular(path)
    try:
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read() if limit is None else fh.read(limit)
    finally:
        os.close(fd)


def open_regular(path: str | Path) -> int:
    """A blocking read-only descriptor of the regular file ``path`` (the caller closes it); see
    :func:`read_bytes` for what is refused."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegularFile(f"{path}: is a {kind_of(mode)}, not a regular file")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return fd


def read_text(path: str | Path) -> str:
    """The UTF-8 text of the regular file ``path`` (see :func:`read_bytes`).

    Raises:
        ValueError: the file is not UTF-8 text; the message names it and the first bad byte.
    """
    data = read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); is it a binary file?"
        ) from None


def check_parent(path: str | Path) -> None:
    """Raise a ValueError naming the file when an ancestor of ``path`` is a file, so that
    ``path`` can never be created."""
    for parent in Path(path).parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{parent}: is a file, not a folder; {path} cannot be made inside it")
            return


def file_digest(path: str | Path) -> str:
    """The SHA-256 of the regular file ``path``'s bytes (hex), read in blocks (see :func:`read_bytes`
    for what is refused)."""
    digest = hashlib.sha256()
    fd = open_regular(path)
    try:
        while block := os.read(fd, 1 << 20):
            digest.update(block)
    finally:
        os.close(fd)
    return digest.hexdigest()
