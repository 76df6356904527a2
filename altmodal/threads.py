"""How many torch CPU threads a run uses (``--threads``, the estimator's ``threads``).

The rule for ``auto``, the default: a model whose encoders are all MLPs and which has fewer than
:data:`SMALL_MODEL` parameters runs on ONE thread; any other model (wider MLPs, ResNets, the text
encoder, your own encoders) keeps torch's default (one thread per core, or ``OMP_NUM_THREADS``).
A small MLP's operations take a few microseconds each, less than it costs a second thread to
join in, and a busy machine makes a waiting thread far slower still; large matrix products and
convolutions do split well.

Measured with ``python benchmarks/threads.py`` (seconds per MLA training epoch, medians; two
CPU cores shared with other jobs; the docs' Results page has the table): with the cores nearly
free, small MLPs (mfeat, 90k-370k parameters) took 0.03-0.17 s on one thread and the same or more on two;
MLPs of 1.9M and 3.7M parameters (cora, acm) and a width-16 ResNet18 on 600 images were 1.2-1.5x
faster on two. While other jobs kept the cores busy, two threads made every model 5-40x slower,
so on a shared machine ``--threads 1`` is the safe choice.

A cross-fitted run with classical learners (the default) under ``auto`` on two or more threads
shares its members' jobs with a second process (:func:`side_process`; :mod:`altmodal.members`):
the learners, on one thread, and where the networks' threads fit twice in the cores, members'
networks too, while the run's networks train on one thread fewer than ``auto`` gives them; on two
cores the run then keeps both busy. A number of threads is the whole run's: no second process.

Threads are set for the run (or the prediction) and restored afterwards, so a Python session
keeps its own setting; ``None`` leaves torch's setting alone (what :func:`train_run` does when it
is not asked for threads, so a benchmark's per-worker setting stands).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from concurrent.futures import Executor
from contextlib import contextmanager

import torch
from torch import nn

from altmodal.config import ConfigError
from altmodal.encoders.mlp import MLPEncoder
from altmodal.encoders.numeric import PiecewiseLinearEncoder

THREADS_PER_CORE = 4
"""The most threads per CPU core a run may ask for: more only slows it (and a million would take
the machine's memory)."""


def most_threads() -> int:
    """The largest thread count accepted: :data:`THREADS_PER_CORE` per core of this machine."""
    return THREADS_PER_CORE * (os.cpu_count() or 1)


def thread_problem(value: int) -> str:
    """What is wrong with ``value`` threads ('' when nothing)."""
    if value < 1:
        return "must be 'auto' or a positive integer"
    if value > most_threads():
        cores = os.cpu_count() or 1
        return f"is more than {THREADS_PER_CORE} per CPU core ({cores} here); give at most {most_threads()}"
    return ""


SMALL_MODEL = 1_000_000
"""Parameters below which an all-MLP model trains on one thread."""

Threads = int | str | None
"""A thread count, ``"auto"`` (:func:`auto_threads`) or None (leave torch's setting)."""


def auto_threads(model: nn.Module) -> int | None:
    """1 for a model whose encoders are all MLPs (over the features or their piecewise-linear
    encodings) with fewer than :data:`SMALL_MODEL` parameters
    in all; None (torch's default) for any other."""
    encoders = getattr(model, "encoders", None)
    if not isinstance(encoders, nn.ModuleDict) or not len(encoders):
        return None
    if not all(isinstance(e, (MLPEncoder, PiecewiseLinearEncoder)) for e in encoders.values()):
        return None
    return 1 if sum(p.numel() for p in model.parameters()) < SMALL_MODEL else None


def threads_for(setting: Threads, model: nn.Module) -> int | None:
    """The thread count to set for ``model`` (None: leave torch's setting).

    Raises:
        ConfigError: ``setting`` is neither ``"auto"``, None nor a positive integer.
    """
    if setting is None:
        return None
    if setting == "auto":
        return auto_threads(model)
    if isinstance(setting, bool) or not isinstance(setting, int):
        raise ConfigError(f"threads must be 'auto' or a positive integer (got {setting!r})")
    if thread_problem(setting):
        raise ConfigError(f"threads {thread_problem(setting)} (got {setting!r})")
    return setting


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch CPU threads (None: unchanged), then restore."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def side_process() -> Executor | None:
    """A second process (one worker, kept alive for the next run) for work that needs none of the
    run's models, where torch's thread setting (its default: one per core; a benchmark's job: its
    share of the cores) gives the caller two or more: the caller then keeps one thread fewer. None
    where it gives one. The worker is a fresh interpreter (joblib's loky): it runs no code of the
    caller's script."""
    if torch.get_num_threads() < 2:
        return None
    from joblib.externals.loky import get_reusable_executor

    return get_reusable_executor(max_workers=1)


def parse_threads(text: str) -> int | str:
    """``--threads``: ``auto`` or a positive integer."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if thread_problem(value):
        raise argparse.ArgumentTypeError(f"--threads {thread_problem(value)} (got {text!r})")
    return value


THREADS_HELP = (
    "torch CPU threads: a number, or auto: 1 for a model of MLP encoders under 1M parameters, torch's "
    "default (one per core) for larger ones, ResNets, text and your own encoders (default: auto)"
)
