"""Worker processes that do not outlive the process that started them.

A process pool's workers wait for work from their parent; when the parent is killed (SIGKILL, out
of memory) they would wait forever. :func:`watch_parent`, a pool's initializer, makes each worker
exit as soon as its parent is gone. Standard library only, so a worker starts fast.
"""

from __future__ import annotations

import os
import threading
import time


def watch_parent(parent: int, interval: float = 0.5) -> None:
    """In a worker process: exit as soon as the process ``parent`` is gone (checked every
    ``interval`` seconds by a daemon thread), instead of waiting for work that will never come."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()
