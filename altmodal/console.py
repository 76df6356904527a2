"""The ``altmodal`` command's entry point, light to import.

A worker that a benchmark spawns first runs the command's main module again (multiprocessing's
spawn does so for a console script); this module imports nothing heavy, so the worker's watch of
its parent (:mod:`altmodal.workers`) starts at once, not after torch has been imported.
"""

from __future__ import annotations


def main() -> int:
    from altmodal.workers import watch_env_parent

    watch_env_parent()  # a rank of `train --nproc` exits with its torchrun
    from altmodal.cli import main as run

    return run()
