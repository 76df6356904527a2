"""Training speed of every strategy, measured side by side in one process.

For each strategy on a dataset: seconds per training epoch, samples per second, the share of the
epoch spent waiting for the next batch, peak memory (resident set size on a CPU, the most memory
allocated on a GPU) and the ratio to joint training; the input pipeline (batches built in the
loop, by a background thread, by worker processes); and how MLA's cost grows with the number of
modalities (2 to 6 mfeat views, synthetic data with 8) and of samples.

    python benchmarks/speed.py --quick                       # under a minute on a CPU
    python benchmarks/speed.py                               # mfeat fou,mor and fou,zer,mor
    python benchmarks/speed.py --dataset avdigits --data-dir cache/avdigits --modalities audio,visual \\
        --resnet-width 64 --precision 32,bf16 --device cuda   # on a GPU (adds GPU utilisation)

The strategies' epochs alternate (joint, ume, ..., then the next epoch of each), so that a change
in the machine's load touches all of them alike; each one's first epoch is a warm-up and is not
counted, and the figures are medians over the timed epochs. Only the training epoch is timed
(no validation). The ratios are the figures to compare across machines; on a CPU the same ratios
are also given in CPU seconds of the process, which a busy shared machine disturbs far less.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from altmodal.benchmark import strategy_settings
from altmodal.data.registry import load_splits
from altmodal.distributed import Dist, resolve_device
from altmodal.experiment import resolve, seed_everything
from altmodal.strategies import build_strategy
from altmodal.trainer import Trainer

STRATEGIES = ("joint", "ume", "ogm_ge", "qmf", "mla", "mla:preset=paper")
MFEAT_VIEWS = ("fou", "fac", "kar", "pix", "zer", "mor")


@dataclass
class Entry:
    """One configuration being timed."""

    label: str
    settings: dict[str, Any]
    group: str = ""
    """Entries of a group are compared with the group's joint entry."""
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    """CPU seconds of this process per epoch: on a busy shared machine the fairer comparison."""
    waits: list[float] = field(default_factory=list)
    peak_mib: float = 0.0
    utilisation: list[float] = field(default_factory=list)
    samples: int = 0

    @property
    def epoch(self) -> float:
        return statistics.median(self.seconds)

    @property
    def cpu_epoch(self) -> float:
        return statistics.median(self.cpu)

    @property
    def wait_share(self) -> float:
        return statistics.median(w / s for w, s in zip(self.waits, self.seconds))


class Sampler:
    """Samples a number in a background thread while it is active; returns max and mean."""

    def __init__(self, read: Any, every: float):
        self.read, self.every = read, every
        self.values: list[float] = []
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self.values, self.stop = [self.read()], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self.values.append(self.read())

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join()
        self.values.append(self.read())


def rss_mib() -> float:
    """This process's resident set size in MiB (Linux; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gpu_utilisation() -> float:
    """The GPU's utilisation in percent (NVML through torch, else nvidia-smi; NaN without)."""
    try:
        return float(torch.cuda.utilization())
    except Exception:  # torch without NVML bindings: ask nvidia-smi
        pass
    query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=5, check=True).stdout
        return float(out.split()[torch.cuda.current_device()])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return float("nan")


@contextmanager
def measured(entry: Entry, device: torch.device) -> Iterator[None]:
    """Time a block; record its peak memory (and GPU utilisation on CUDA) into ``entry``."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    memory = Sampler(rss_mib, 0.005)
    usage = Sampler(gpu_utilisation, 0.1) if cuda else None
    with memory, usage if usage is not None else nullcontext():
        yield
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else max(memory.values)
    entry.peak_mib = max(entry.peak_mib, peak)
    if usage is not None:
        entry.utilisation.extend(v for v in usage.values if v == v)


def race(entries: Sequence[Entry], epochs: int) -> None:
    """Train every entry for ``epochs`` timed epochs (after one warm-up), in turns."""
    built = []
    for entry in entries:
        config = resolve(entry.settings)
        seed_everything(config.train.seed)
        splits = load_splits(config.data, config.train.seed)
        strategy = build_strategy(config.strategy, splits, config.encoder, config.options)
        Trainer.attach(strategy, config.train, Dist(device=resolve_device(config.train.device)))
        entry.samples = len(splits.train)
        built.append((entry, strategy, splits.train))
    for epoch in range(epochs + 1):
        for entry, strategy, train in built:
            with measured(entry, strategy.device):
                started, cpu = time.perf_counter(), time.process_time()
                strategy.trainer.train_epoch(strategy, train, epoch)
                if strategy.device.type == "cuda":
                    torch.cuda.synchronize(strategy.device)
                seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            if epoch > 0:
                entry.seconds.append(seconds)
                entry.cpu.append(cpu)
                entry.waits.append(strategy.trainer.data_seconds)


def strategy_table(entries: Sequence[Entry], cuda: bool) -> str:
    """Markdown table; ratios against the joint entry of the same precision."""
    base = {e.group: e for e in entries if e.settings["strategy"] == "joint"}
    head = "| strategy | s/epoch | samples/s | data wait | peak memory (MiB) | x joint |"
    rule = "|---|---|---|---|---|---|"
    head, rule = (
        head + (" GPU util |" if cuda else " CPU s/epoch | x joint (CPU s) |"),
        rule + ("---|" if cuda else "---|---|"),
    )
    rows = [head, rule]
    for e in entries:
        joint = base.get(e.group)
        row = (
            f"| {e.label} | {e.epoch:.3f} | {e.samples / e.epoch:,.0f} | {100 * e.wait_share:.1f}% "
            f"| {e.peak_mib:,.0f} | {e.epoch / joint.epoch if joint else float('nan'):.2f} |"
        )
        if cuda:
            row += f" {statistics.mean(e.utilisation):.0f}% |" if e.utilisation else " n/a |"
        else:
            row += f" {e.cpu_epoch:.3f} | {e.cpu_epoch / joint.cpu_epoch if joint else float('nan'):.2f} |"
        rows.append(row)
    return "\n".join(rows)


def scaling_table(pairs: Sequence[tuple[str, Entry, Entry]], what: str) -> str:
    head = f"| {what} | joint s/epoch | MLA s/epoch | MLA x joint | x joint (CPU s) | MLA ms per 1k samples |"
    rows = [head, "|---|---|---|---|---|---|"]
    for name, joint, mla in pairs:
        rows.append(
            f"| {name} | {joint.epoch:.3f} | {mla.epoch:.3f} | {mla.epoch / joint.epoch:.2f} "
            f"| {mla.cpu_epoch / joint.cpu_epoch:.2f} | {1000 * mla.epoch / mla.samples * 1000:.1f} |"
        )
    return "\n".join(rows)


def common(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = {"device": args.device, "loader": args.loader, "workers": args.workers}
    settings.update({"kernel": args.kernel, "batch_size": args.batch_size, "seed": 0})
    return settings


def dataset_settings(args: argparse.Namespace, modalities: str) -> dict[str, Any]:
    settings: dict[str, Any] = {"dataset": args.dataset, **common(args)}
    if args.data_dir:
        settings["data_dir"] = args.data_dir
    if modalities:
        settings["modalities"] = tuple(modalities.split(","))
    if args.resnet_width:
        settings["resnet_width"] = args.resnet_width
    return settings


def strategies_section(args: argparse.Namespace, report: dict[str, Any], cuda: bool) -> None:
    for modalities in args.modalities:
        entries = [
            Entry(f"{name}" + (f" ({precision})" if len(args.precision) > 1 else ""), settings, precision)
            for precision in args.precision
            for name in args.strategies
            for settings in [{**dataset_settings(args, modalities), **strategy_settings(name), "precision": precision}]
        ]
        race(entries, args.epochs)
        title = f"{args.dataset} {modalities or '(all modalities)'}, batch {args.batch_size}"
        emit(report, f"strategies: {title}", strategy_table(entries, cuda), entries)


def pipeline_section(args: argparse.Namespace, report: dict[str, Any], cuda: bool) -> None:
    ways = {"in the loop": {"loader": "loop"}, "thread": {"loader": "thread"}, "2 workers": {"loader": "workers"}}
    entries = [
        Entry(f"{name}, {way}", {**dataset_settings(args, args.modalities[0]), "strategy": name, **extra}, way)
        for way, extra in ways.items()
        for name in ("joint", "mla")
    ]
    race(entries, args.epochs)
    emit(report, f"input pipeline: {args.dataset} {args.modalities[0]}", strategy_table(entries, cuda), entries)


def scaling_sections(args: argparse.Namespace, report: dict[str, Any]) -> None:
    counts = (2, 4, 6) if args.quick else (2, 3, 4, 5, 6)
    cases: list[tuple[str, dict[str, Any]]] = [
        (f"mfeat, {k} views", {"dataset": "mfeat", "modalities": MFEAT_VIEWS[:k]}) for k in counts
    ]
    synthetic = ("samples=1500", "modalities=8", "widths=16")
    cases.append(("synthetic, 8 modalities", {"dataset": "synthetic", "dataset_options": synthetic}))
    pairs = scaled(args, cases)
    emit(report, "MLA with more modalities", scaling_table(pairs, "data"), [e for _, j, m in pairs for e in (j, m)])
    sizes = (750, 1500, 3000) if args.quick else (750, 1500, 3000, 6000)
    cases = [(f"{n:,}", {"dataset": "synthetic", "dataset_options": (f"samples={n}",)}) for n in sizes]
    pairs = scaled(args, cases)
    emit(report, "MLA with more samples (synthetic, 2 modalities)", scaling_table(pairs, "samples"), [])


def scaled(args: argparse.Namespace, cases: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, Entry, Entry]]:
    pairs = [
        (
            name,
            Entry("joint", {**common(args), **data, "strategy": "joint"}),
            Entry("mla", {**common(args), **data, "strategy": "mla"}),
        )
        for name, data in cases
    ]
    race([e for _, joint, mla in pairs for e in (joint, mla)], args.epochs)
    return pairs


def emit(report: dict[str, Any], title: str, table: str, entries: Sequence[Entry]) -> None:
    print(f"\n### {title}\n\n{table}", flush=True)
    report[title] = {
        e.label: {"seconds": e.seconds, "cpu": e.cpu, "waits": e.waits, "peak_mib": e.peak_mib} for e in entries
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and cases: under a minute on a CPU")
    parser.add_argument("--dataset", default="mfeat")
    parser.add_argument("--data-dir", default=None, help="prepared cache of a media dataset (altmodal prepare)")
    parser.add_argument("--modalities", action="append", help="comma-separated; repeat for several sets")
    parser.add_argument(
        "--strategies",
        default=";".join(STRATEGIES),
        help="';'-separated, options after colons, e.g. joint;mla:preset=paper:projection=false",
    )
    parser.add_argument("--epochs", type=int, default=None, help="timed epochs per strategy (after one warm-up)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--resnet-width", type=int, default=None)
    parser.add_argument("--precision", default="32", help="comma-separated: 32, bf16, 16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--loader", default="auto", choices=["auto", "loop", "thread", "workers"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--kernel", default="auto", choices=["auto", "fused", "foreach"])
    parser.add_argument("--skip", default="", help="sections to leave out: pipeline, scaling")
    parser.add_argument("--json", default=None, help="also write every timing to this file")
    args = parser.parse_args(argv)
    args.strategies = (
        args.strategies.replace(";", " ").split() if ";" in args.strategies else args.strategies.split(",")
    )
    args.precision = args.precision.split(",")
    if args.modalities is None:
        args.modalities = (
            ["fou,mor"] if args.quick else (["fou,mor", "fou,zer,mor"] if args.dataset == "mfeat" else [""])
        )
    if args.epochs is None:
        args.epochs = 3 if args.quick else 10
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    started = time.perf_counter()
    print(f"device: {device_name(device)}; torch {torch.__version__}; {' '.join(sys.argv[1:])}")
    report: dict[str, Any] = {"device": device_name(device), "argv": sys.argv[1:]}
    strategies_section(args, report, device.type == "cuda")
    if "pipeline" not in args.skip:
        pipeline_section(args, report, device.type == "cuda")
    if "scaling" not in args.skip:
        scaling_sections(args, report)
    print(f"\n({time.perf_counter() - started:.0f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)


if __name__ == "__main__":
    main()
