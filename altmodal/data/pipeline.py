"""Batches prepared ahead of the training step, so that the device does not wait for the data.

:func:`prefetch` walks an :class:`~altmodal.data.dataset.EpochBatches` in order and yields its
batches on the training device. Three ways, one result (each batch is built from its number
alone, so the batches, their order and their augmentation are the same whichever is used):

- ``loop``: each batch is built in the loop when it is needed (no overlap);
- ``thread``: one background thread builds up to ``ahead`` batches in advance, copies them to a
  GPU through pinned memory on a side CUDA stream, and augments them there;
- ``workers``: worker processes of a torch DataLoader build (and augment, on the CPU) the
  batches; the loader pins them and the loop copies them asynchronously.

On a GPU the thread keeps the device fed while the host only launches kernels. On a CPU the
step itself needs the cores: a thread competes with it for them and for the interpreter lock,
and worker processes pay their start-up at every epoch; ``benchmarks/speed.py`` measures all
three.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import Any

import torch

from altmodal.data.batch import Batch
from altmodal.data.dataset import EpochBatches

_DONE = object()


def prefetch(
    batches: EpochBatches, device: torch.device, loader: str = "thread", *, ahead: int = 2, workers: int = 2
) -> Generator[Batch, None, None]:
    """The batches of ``batches`` in order, on ``device``.

    Args:
        batches: the epoch's batches (their ``device`` is set here).
        device: where the training step runs.
        loader: ``loop``, ``thread`` or ``workers`` (see the module's docstring).
        ahead: how many batches may wait ready (thread and workers).
        workers: worker processes (``workers``).
    """
    if loader not in ("loop", "thread", "workers") or ahead < 1 or workers < 1:
        raise ValueError(f"prefetch: loader {loader!r} with {ahead} ahead and {workers} workers is not possible")
    if loader == "loop":
        batches.device = device
        for b in range(len(batches)):
            yield batches[b]
    elif loader == "workers":
        yield from _with_workers(batches, device, ahead, workers)
    else:
        yield from _with_thread(batches, device, ahead)


def _with_workers(batches: EpochBatches, device: torch.device, ahead: int, workers: int) -> Iterator[Batch]:
    batches.device = torch.device("cpu")
    loader = torch.utils.data.DataLoader(
        batches,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        prefetch_factor=ahead,
        pin_memory=device.type == "cuda",
    )
    for batch in loader:
        yield batch.to(device)


def _with_thread(batches: EpochBatches, device: torch.device, ahead: int) -> Iterator[Batch]:
    batches.device = device
    ready: queue.Queue[Any] = queue.Queue(maxsize=ahead)
    stop = threading.Event()
    side = torch.cuda.Stream(device) if device.type == "cuda" else None

    def put(item: Any) -> None:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def produce() -> None:
        try:
            if side is not None:
                torch.cuda.set_device(device)  # the current device is per thread
            for b in range(len(batches)):
                if stop.is_set():
                    return
                if side is None:
                    put((batches[b], None))
                    continue
                with torch.cuda.stream(side):
                    batch = batches[b]
                    done = torch.cuda.Event()
                    done.record(side)
                put((batch, done))
            put(_DONE)
        except BaseException as err:  # handed to the consumer, which raises it
            put(err)

    thread = threading.Thread(target=produce, name="altmodal-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            batch, done = item
            if done is not None:
                _hand_over(batch, done)
            yield batch
    finally:
        stop.set()
        thread.join()


def _hand_over(batch: Batch, done: torch.cuda.Event) -> None:
    """Make the current CUDA stream wait for the side stream's work on ``batch`` and tell the
    caching allocator that the current stream uses its memory."""
    current = torch.cuda.current_stream(batch.label.device)
    current.wait_event(done)
    for tensor in (*batch.inputs.values(), *batch.present.values(), batch.label, batch.index):
        tensor.record_stream(current)
