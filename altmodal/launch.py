"""``python -m altmodal.launch PARENT TORCHRUN-ARGS...``: torchrun that ends with the process PARENT.

``altmodal train --nproc N`` starts torchrun (``torch.distributed.run``) through this module.
Were the command killed, even by SIGKILL, torchrun and its ranks would go on running; here a
thread watches PARENT and, once it is gone, sends torchrun the SIGTERM that makes it stop its
ranks (and exits after a grace period if that did not end it). Each rank also watches torchrun
(``ALTMODAL_WATCH_PARENT``), so none outlives it either.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence

from altmodal.workers import PARENT_ENV, watch_parent

GRACE = 10.0
"""Seconds torchrun has to stop its ranks after the command is gone."""


def _stop() -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # torchrun's handler stops the ranks, then exits
    time.sleep(GRACE)


def main(argv: Sequence[str]) -> None:
    if not argv or not argv[0].isdigit():
        raise SystemExit("usage: python -m altmodal.launch PARENT_PID TORCHRUN-ARGS...")
    watch_parent(int(argv[0]), on_gone=_stop)
    os.environ[PARENT_ENV] = str(os.getpid())  # the ranks watch this process
    sys.argv = ["torchrun", *argv[1:]]
    from torch.distributed.run import main as torchrun

    torchrun()


if __name__ == "__main__":
    main(sys.argv[1:])
