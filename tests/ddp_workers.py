"""Functions run inside spawned processes by the distributed tests (importable by the children)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch.distributed as dist

from altmodal.distributed import Dist, shutdown
from altmodal.experiment import resolve, train_run


@contextmanager
def group(rank: int, world: int, store: str) -> Iterator[Dist]:
    """This rank in a gloo group of ``world`` processes, left with ``shutdown`` (waiting for the
    others only when the body finished)."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    finished = False
    try:
        yield Dist(rank=rank, world_size=world)
        finished = True
    finally:
        shutdown(finished)


def train_every_strategy(rank: int, world: int, store: str, out: str, settings_json: str, names: list[str]) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with group(rank, world, store) as context:
        settings = json.loads(settings_json)
        for name in names:
            extra = {"modalities": ["m0"]} if name == "unimodal" else {}
            train_run(resolve({**settings, **extra, "strategy": name}), os.path.join(out, name), dist=context)


def train_runs(rank: int, world: int, store: str, out: str, runs_json: str) -> None:
    """Train each run of ``runs_json`` ({folder name: settings}) in ``out``."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with group(rank, world, store) as context:
        for name, settings in json.loads(runs_json).items():
            train_run(resolve(settings), os.path.join(out, name), dist=context)


def collectives(rank: int, world: int, store: str, out: str) -> None:
    """BatchNorm statistics averaged over ranks, and a gradient reduction with parameters that
    some or no rank computed a gradient for; each rank saves what it ends with."""
    import torch

    with group(rank, world, store) as context:
        layer = torch.nn.BatchNorm1d(3)
        layer.running_mean.fill_(float(rank))
        layer.running_var.fill_(1.0 + 2 * rank)
        context.average_norm_statistics(torch.nn.Sequential(layer))
        model = tiny_model()
        x = torch.arange(12.0).view(4, 3)[rank * 2 : rank * 2 + 2]
        step_with_unused_parameters(model, x, rank, context)
        grads = {n: p.grad for n, p in model.named_parameters()}
        saved = {"mean": layer.running_mean, "var": layer.running_var, "state": model.state_dict(), "grads": grads}
        torch.save(saved, os.path.join(out, f"rank{rank}.pt"))


def tiny_model():
    import torch

    torch.manual_seed(0)
    return torch.nn.ModuleDict({m: torch.nn.Linear(3, 2) for m in ("a", "b", "c")})


def step_with_unused_parameters(model, x, rank: int | None, context: Dist) -> None:
    """One SGD step (momentum, weight decay): ``a`` sees every row, ``c`` only rank 0's rows (the
    first half of the global batch), ``b`` none (a modality absent from the whole batch)."""
    import torch

    half = x.shape[0] if rank is not None else x.shape[0] // 2
    loss = model["a"](x).sum() + (model["c"](x[:half]).sum() if rank in (0, None) else 0)
    loss.backward()
    context.reduce_gradients(model.parameters())
    torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1).step()
