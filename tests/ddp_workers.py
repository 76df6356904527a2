"""Functions run inside spawned processes by the distributed tests (importable by the children)."""

from __future__ import annotations

import json
import os

import torch.distributed as dist

from altmodal.distributed import Dist, shutdown
from altmodal.experiment import resolve, train_run


def train_every_strategy(rank: int, world: int, store: str, out: str, settings_json: str, names: list[str]) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        context = Dist(rank=rank, world_size=world)
        settings = json.loads(settings_json)
        for name in names:
            extra = {"modalities": ["m0"]} if name == "unimodal" else {}
            train_run(resolve({**settings, **extra, "strategy": name}), os.path.join(out, name), dist=context)
    finally:
        shutdown()


def train_runs(rank: int, world: int, store: str, out: str, runs_json: str) -> None:
    """Train each run of ``runs_json`` ({folder name: settings}) in ``out``."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        context = Dist(rank=rank, world_size=world)
        for name, settings in json.loads(runs_json).items():
            train_run(resolve(settings), os.path.join(out, name), dist=context)
    finally:
        shutdown()


def average_batchnorm(rank: int, world: int, store: str, out: str) -> None:
    import torch

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        layer = torch.nn.BatchNorm1d(3)
        layer.running_mean.fill_(float(rank))
        layer.running_var.fill_(1.0 + 2 * rank)
        Dist(rank=rank, world_size=world).average_norm_statistics(torch.nn.Sequential(layer))
        torch.save({"mean": layer.running_mean, "var": layer.running_var}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        shutdown()
