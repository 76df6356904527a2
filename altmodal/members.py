"""The jobs of a cross-fitted run's members, shared with a second process.

Each member of a cross-fitted run has two jobs that need nothing of each other: training its
networks and fitting its classical learners. Where a second process is at hand
(:func:`~altmodal.threads.side_process`), the run trains the networks from the first member on
and then fits the learners still left from the last member back, while the second process
alternates: a member's networks from the last member back, a member's learners from the first
member on. A job (a member's networks, or one of its learners) goes to whichever process claims
it first (a file created exclusively in a folder the run removes when it ends), so neither idles
while the other has work queued, and the last jobs end close together: at the end the run waits
for one member's networks or one learner at most, not for a member's whole set of learners.
Both load a member's data alike and train on the same number of threads: a member's numbers do
not depend on which process trained it, nor a learner's on which process fitted it. Without a
second process the run does every job itself.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import numpy as np

from altmodal.callbacks import Callback
from altmodal.data.dataset import Splits
from altmodal.data.registry import load_splits
from altmodal.learners import Learners, fit_elsewhere, rows_of, weights_of
from altmodal.metrics import Outputs
from altmodal.model import Model
from altmodal.settings import RunConfig
from altmodal.strategies import Strategy
from altmodal.threads import threads_for, torch_threads

Trainer = Callable[[RunConfig, Path, Splits, int, Callback], Model]
"""How a member is trained in its folder (:func:`altmodal.experiment.train_member`): its config,
folder, splits, threads and a callback that stops it; the trained model."""

Answer = tuple[dict[str, Any], dict[str, bytes], dict[str, np.ndarray], float]
"""What :func:`~altmodal.learners.fit_elsewhere` returns for a member."""


def claim(claims: str, job: str) -> bool:
    """Take ``job`` (True) unless another process took it first or the run ended (its claims are
    gone)."""
    try:
        os.close(os.open(os.path.join(claims, job), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except (FileExistsError, FileNotFoundError):
        return False
    return True


def member_seed(config: RunConfig) -> int:
    """The seed of the initialisation: the run's, mixed with the fold for a cross-fitted run's
    member (members start apart; the splits and masks follow the run's seed alone)."""
    if config.data.fold == 0:
        return config.train.seed
    return int(np.random.SeedSequence([config.train.seed, config.data.fold]).generate_state(1)[0])


def member_splits(member: RunConfig, loaded: Any) -> Splits:
    return load_splits(member.data, member.train.seed, loaded)


def held_out(strategy: Model, splits: Splits, threads: Any) -> tuple[Outputs, np.ndarray]:
    """A trained member's outputs on its held-out fold, and the fold's rows in their order."""
    holdout = splits.holdout
    assert holdout is not None
    with torch_threads(threads_for(threads, strategy)):
        outputs = strategy.collect(holdout, all_subsets=False)
    return outputs, np.searchsorted(holdout.rows, outputs.index.numpy())


def learner_task(member: RunConfig, splits: Splits) -> tuple[Any, ...]:
    """What a member's learners fit on and answer (:func:`~altmodal.learners.fit_elsewhere`): its
    rows (training, then validation) with their presence and labels, its seed, the validation
    share, the rows' weights, and its held-out fold's inputs and presence."""
    assert splits.holdout is not None
    rows = [splits.train, splits.val]
    share = np.repeat([False, True], [len(splits.train), len(splits.val)])
    inputs, present, _ = rows_of([splits.holdout])
    return rows_of(rows), member_seed(member), share, weights_of(rows), (inputs, present)


def fit_claimed(
    claims: str | None, learners: Learners, member: RunConfig, loaded: Any, backwards: bool = False
) -> Answer | None:
    """Those of ``member``'s learners that this process claims first (every one without
    ``claims``), one at a time just before each fit, in the order of their names or ``backwards``;
    None when it claims none (its data are then never loaded)."""
    k = member.data.fold
    positions = range(len(learners.names))
    first = next((i for i in (reversed(positions) if backwards else positions) if take(claims, k, i)), None)
    if first is None:
        return None
    rows, seed, held, weights, asked = learner_task(member, member_splits(member, loaded))
    return fit_elsewhere(
        learners, rows, seed, held, weights, asked, lambda i: i == first or take(claims, k, i), backwards
    )


def take(claims: str | None, k: int, i: int) -> bool:
    """Whether this process fits member ``k``'s learner at position ``i`` (always without claims)."""
    return claims is None or claim(claims, f"learners-{k}-{i}")


def train_beside(
    claims: str, train: Trainer, member: RunConfig, path: str, loaded: Any, threads: int
) -> tuple[Outputs, np.ndarray] | None:
    """In the second process: train ``member`` in its folder ``path`` with ``train`` (as the run
    would), if this process claims it first; its outputs on its held-out fold."""
    if not claim(claims, f"networks-{member.data.fold}"):
        return None
    splits = member_splits(member, loaded)
    return held_out(train(member, Path(path), splits, threads, Abandoned(claims)), splits, threads)


class Abandoned(Callback):
    """Stops a member trained in the second process once its run has ended (a failed run): its
    checkpoint is left for a resume."""

    def __init__(self, claims: str):
        self.claims = claims

    def on_epoch_end(self, strategy: Strategy, state: dict[str, Any]) -> None:
        if not os.path.isdir(self.claims):
            raise RuntimeError(f"{self.claims}: the run that handed this member over has ended")


class MemberJobs:
    """The networks and learners of a cross-fitted run's members (``folds``, trained in ``paths``),
    shared with the ``side`` process where one is given: its learners (``learners``, None: none)
    always, its networks where ``beside`` (trained by ``train`` on ``threads`` in either process). A
    ``with`` block removes the claims when it ends: what the second process has not started, it
    then skips; a member it is training stops after its epoch."""

    def __init__(
        self,
        learners: Learners | None,
        folds: Sequence[RunConfig],
        paths: Sequence[Path],
        loaded: Any,
        side: Executor | None,
        threads: int,
        beside: bool,
        train: Trainer,
    ):
        self.learners, self.folds, self.loaded = learners, folds, loaded
        self.claims: str | None = None  # the claims' folder, with a second process
        self.fitted: dict[int, Answer] = {}  # the learners fitted in this process
        self.fits: dict[int, Future[Answer | None]] = {}
        self.trains: dict[int, Future[tuple[Outputs, np.ndarray] | None]] = {}
        self.seconds = 0.0  # the learners' own
        self.waited = 0.0  # the run's: fitting learners or waiting for the second process
        if side is None:
            return
        self.claims = claims = tempfile.mkdtemp(prefix="altmodal-claims-")
        for i, k in enumerate(range(len(folds), 0, -1), start=1):  # a network from the back, a learner from the front
            if beside:
                path = str(Path(paths[k - 1]).resolve())
                self.trains[k] = side.submit(train_beside, claims, train, folds[k - 1], path, loaded, threads)
            if learners is not None:
                self.fits[i] = side.submit(fit_claimed, claims, learners, folds[i - 1], loaded)

    def __enter__(self) -> MemberJobs:
        return self

    def __exit__(self, *failure: object) -> None:
        queued: list[Future[Any]] = [*self.fits.values(), *self.trains.values()]
        for future in queued:
            future.cancel()
        if self.claims is not None:
            shutil.rmtree(self.claims, ignore_errors=True)

    def here(self, k: int) -> bool:
        """Whether this process trains member ``k``'s networks (its learners: :func:`take`)."""
        return self.claims is None or claim(self.claims, f"networks-{k}")

    def splits(self, k: int) -> Splits:
        return member_splits(self.folds[k - 1], self.loaded)

    def fit_left(self) -> None:
        """Fit the learners the second process has not taken, from the last member's last learner
        back (it takes them from the first member's first on)."""
        if self.learners is None:
            return
        for k in range(len(self.folds), 0, -1):
            started = time.perf_counter()
            fitted = fit_claimed(self.claims, self.learners, self.folds[k - 1], self.loaded, backwards=True)
            if fitted is not None:
                self.fitted[k] = fitted
            self.waited += time.perf_counter() - started

    def trained_beside(self, k: int) -> tuple[Outputs, np.ndarray]:
        """Member ``k``'s outputs on its held-out fold and their rows, once the second process has
        trained it."""
        return self._wait(self.trains[k])

    def answers(self, k: int) -> dict[str, np.ndarray]:
        """name -> member ``k``'s learners' log-probabilities on its held-out fold, in the fold's
        row order, from either process (the second one is waited for only where it took some);
        the fitted learners join ``learners.fitted``."""
        assert self.learners is not None
        names = self.learners.names
        parts = [self.fitted[k]] if k in self.fitted else []
        if sum(len(part[0]) for part in parts) < len(names):
            parts.append(self._wait(self.fits[k]))
        fitted: dict[str, Any] = {}
        saved: dict[str, bytes] = {}
        answer: dict[str, np.ndarray] = {}
        for part in parts:
            fitted.update(part[0])
            saved.update(part[1])
            answer.update(part[2])
            self.seconds += part[3]
        self.learners.saved[len(self.learners.fitted)] = {n: saved[n] for n in names}  # (written with the model)
        self.learners.fitted.append({n: fitted[n] for n in names})
        return {n: answer[n] for n in names}

    def _wait(self, future: Future[Any]) -> Any:
        started = time.perf_counter()
        result = future.result()
        self.waited += time.perf_counter() - started
        assert result is not None, "a job neither process claimed"
        return result
