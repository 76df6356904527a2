"""Processes that do not outlive the process that started them.

A process pool's workers wait for work from their parent; when the parent is killed (SIGKILL, out
of memory) they would wait forever, and torchrun would go on running its ranks.
:func:`watch_parent`, a pool's initializer, makes each worker exit as soon as its parent is gone;
``altmodal train --nproc`` runs torchrun through :mod:`altmodal.launch`, which watches the
command, and each rank watches torchrun (:data:`PARENT_ENV`, read by :mod:`altmodal.console`).

Standard library only, and nothing here imports torch: a spawned worker imports this module (to
unpickle its initializer) and the command's main module before anything else, so the watch
starts within a fraction of a second, not after the seconds torch takes to import.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

PARENT_ENV = "ALTMODAL_WATCH_PARENT"
"""The pid a process started with this variable set watches (see :func:`watch_env_parent`)."""


def watch_parent(parent: int, interval: float = 0.5, on_gone: Callable[[], None] | None = None) -> None:
    """In a child process: exit as soon as the process ``parent`` is gone (checked every
    ``interval`` seconds by a daemon thread), instead of waiting for work that will never come.
    ``on_gone`` runs instead of the exit, in that thread, e.g. to stop the process's own children."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        if on_gone is not None:
            on_gone()
        os._exit(1)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def watch_env_parent() -> None:
    """Watch the pid in :data:`PARENT_ENV`, if the process was started with it (a rank of
    torchrun started by :mod:`altmodal.launch`), and clear it so that no grandchild inherits it."""
    value = os.environ.pop(PARENT_ENV, "")
    if value.isdigit():
        watch_parent(int(value))
