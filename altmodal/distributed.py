"""Data-parallel training over torch.distributed (NCCL on GPUs, gloo on CPU).

Rather than wrapping the model in DistributedDataParallel, every optimisation step averages the
gradients of exactly the parameters that step updates, in one flat all-reduce. MLA's alternating
steps update one encoder plus the head: the other encoders are neither reduced nor touched (no
hang on unused parameters, no wasted traffic), and their gradients stay None, so the optimizer
leaves their momentum and weight decay alone. Likewise a parameter that no rank computed a
gradient for in a step (an encoder whose modality is absent from the whole global batch) keeps
None, exactly as in one process.

Losses are normalised by the GLOBAL number of samples in a step (see :meth:`Dist.count`), so the
averaged gradient equals the single-process gradient of the same global batch, and a 2-process
run follows a 1-process run with the same global batch to float tolerance.

BatchNorm layers normalise with their rank's share of each batch; their running statistics are
averaged over ranks after every epoch, so all ranks (and the saved model) agree.

A single process is the same code with ``world_size == 1``: every collective is the identity.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, value: Tensor) -> Tensor:
        """The sum over ranks of ``value`` (a new tensor; ``value`` is left alone)."""
        out = value.detach().clone()
        if self.active:
            out = out.to(self.device)
            dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    def count(self, mask: Tensor) -> Tensor:
        """The global number of True entries of a (B,) mask, at least 1 (as a float tensor)."""
        if not self.active:  # the same number, three tensor operations fewer
            return mask.sum().clamp_min(1).to(torch.float32)
        return self.sum(mask.sum().to(torch.float64)).clamp_min(1).to(torch.float32)

    def reduce_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Combine the gradients of ``params`` over ranks in one flat all-reduce.

        A parameter without a gradient on this rank contributes zeros; a parameter that no rank
        has a gradient for keeps None, as in a single process, so the optimizer leaves its
        momentum and weight decay alone (one flag per parameter travels in the same all-reduce).
        All ranks name the same parameters, so they agree on the layout. Losses are normalised by
        GLOBAL counts, so the reduction is a sum and yields the gradient of the global batch's
        mean loss. A rank that has every gradient itself knows every flag is set and does not
        read them back: only a rank that lacks one waits for the device.
        """
        if not self.active:
            return
        params = [p for p in params if p.requires_grad]
        if not params:
            return
        local = [p.grad is not None for p in params]  # which gradients this rank computed
        pieces = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(self.device) for p in params]
        flat = torch.cat([*pieces, torch.tensor(local, dtype=pieces[0].dtype, device=self.device)])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        computed = local if all(local) else (flat[-len(params) :] > 0).tolist()
        offset = 0
        for p, any_rank in zip(params, computed):
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).to(p.device) if any_rank else None
            offset += n

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's parameters and buffers."""
        if not self.active:
            return
        for tensor in [*module.parameters(), *module.buffers()]:
            data = tensor.data.to(self.device)
            dist.broadcast(data, src=0)
            tensor.data.copy_(data.to(tensor.device))

    def average_norm_statistics(self, module: torch.nn.Module) -> None:
        """Average BatchNorm running means and variances over ranks (each rank saw only its
        share of the batches), so every rank, and the saved model, holds the same statistics."""
        if not self.active:
            return
        for layer in module.modules():
            if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm) and layer.track_running_stats:
                for stats in (layer.running_mean, layer.running_var):
                    if stats is not None:
                        stats.copy_(self.sum(stats).to(stats.device) / self.world_size)

    def gather(self, value: Tensor) -> Tensor:
        """Concatenate ``value`` (first axis may differ per rank) from every rank, rank order."""
        if not self.active:
            return value
        local = value.detach().to(self.device)
        sizes = [torch.zeros(1, dtype=torch.long, device=self.device) for _ in range(self.world_size)]
        dist.all_gather(sizes, torch.tensor([local.shape[0]], device=self.device))
        longest = int(max(int(s) for s in sizes))
        padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=self.device)
        padded[: local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return torch.cat([p[: int(s)] for p, s in zip(parts, sizes)]).to(value.device)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from err
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested, but CUDA is not available here")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} requested, but only {torch.cuda.device_count()} CUDA devices exist")
    return device


def init_from_env(device_name: str) -> Dist:
    """Join the torch.distributed job that torchrun describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist(device=resolve_device(device_name))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank=rank, world_size=world_size, device=device)


def shutdown(finished: bool = True) -> None:
    """Leave the process group. After a finished run every rank first waits for the others, so no
    rank tears its connections down while another still uses them (that can abort the other
    process); after a failure it leaves at once (the others may never arrive)."""
    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()
