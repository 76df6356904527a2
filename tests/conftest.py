"""Shared fixtures: tiny data and fast run settings, so the suite runs in minutes on a CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from altmodal.data.registry import DataConfig, load_splits
from altmodal.experiment import RunConfig, resolve

# The tests' models are tiny: one thread is faster than several (no thread start-up per op).
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# A small synthetic setting: 300 samples, 3 classes, m0 dominant.
TINY = ("samples=300", "classes=3", "widths=8", "latent_dim=4")


@pytest.fixture(autouse=True)
def checkpoint_every_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests interrupt runs after a given epoch, in this process or in others: there, every
    epoch writes its checkpoint (a run writes one a minute: :func:`altmodal.runs.checkpoint_seconds`,
    tested on its own)."""
    monkeypatch.setenv("ALTMODAL_CHECKPOINT_SECONDS", "0")


def tiny_settings(**overrides: object) -> dict[str, object]:
    settings: dict[str, object] = {
        "dataset": "synthetic",
        "dataset_options": TINY,
        "epochs": 2,
        "batch_size": 32,
        "hidden": (16,),
        "dim": 8,
        "lr": 0.05,
        "folds": 1,  # one model (the default mla trains five: tests of cross-fitting ask for it)
    }
    settings.update(overrides)
    return settings


def tiny_config(**overrides: object) -> RunConfig:
    return resolve(tiny_settings(**overrides))


@pytest.fixture
def tiny_splits():
    return load_splits(DataConfig(dataset="synthetic", dataset_options=TINY), seed=0)


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def train_interrupted(config: RunConfig, out: Path, monkeypatch: pytest.MonkeyPatch, after_epoch: int = 0) -> dict:
    """Train ``config`` in ``out``, interrupted right after epoch ``after_epoch`` has been
    checkpointed, then resume it to the end; returns (the checkpoint's state, the final metrics)."""
    from altmodal.experiment import train_run
    from altmodal.runs import Run

    original = Run.on_epoch_end
    seen: dict = {}

    def interrupt(self: Run, strategy: object, state: dict) -> None:
        original(self, strategy, state)
        if state["epoch"] == after_epoch:
            seen.update(state)
            raise KeyboardInterrupt

    monkeypatch.setattr(Run, "on_epoch_end", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_run(config, out)
    monkeypatch.setattr(Run, "on_epoch_end", original)
    assert (out / "checkpoint.pt").is_file() and not (out / "metrics.json").exists()
    return {"cut": seen, "metrics": train_run(config, out)}
