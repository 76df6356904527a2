"""The benchmark grid: the paper's experiments on any dataset, one run folder per cell.

Groups of runs (each over every seed):

- ``alone``: every modality trained alone (strategy ``unimodal``): the reference for laziness;
- ``main``: every strategy on all modalities;
- ``ablation``: the paper's MLA (entropy fusion) and the default's fusion chosen on validation;
  the paper's MLA without projection, with fixed fusion, with separate heads, the two
  reference-code presets, reversed and random modality order, one modality per iteration (and,
  with ``--ablation full``, each head-projection choice: batch-mean h, the reference alpha
  schedule, Frobenius normalisation, added projection, OGD and PCA-OGD instead of OWM);
- ``missing``: every strategy trained and tested with modalities missing at each rate.
Every finished ``main`` run is also re-evaluated with modalities missing at test time only.

Runs are independent processes' work; finished ones are skipped on a re-run (their folder holds
``metrics.json``), so an interrupted benchmark resumes where it stopped. A benchmark holds the
lock of its folder (a second one on the same folder is refused), and its worker processes exit
when the benchmark's process dies. The report is written by :mod:`altmodal.report`.
"""

from __future__ import annotations

import concurrent.futures as futures
import functools
import json
import logging
import multiprocessing
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from altmodal.config import ConfigError, first_line, option, require
from altmodal.experiment import RunConfig, evaluate_run, layer, resolve, train_run
from altmodal.reference import ROWS, reference_kind, run_reference
from altmodal.runs import Run, entries
from altmodal.threads import Threads
from altmodal.workers import watch_parent

log = logging.getLogger(__name__)

DEFAULT_STRATEGIES = (
    "mla",
    "joint",
    "ume",
    "ogm_ge",
    "qmf",
    "mmpareto",
    "dgl",
    "relearn",
    "umt",
    "gblend",
    "inforeg",
    "aug",
    "reconboost",
    "midas",
    "moddrop",
    "shaspec",
    "smil",
    *ROWS,
)

PAPER: dict[str, Any] = {"preset": "paper"}
"""The ablation varies the paper's MLA (entropy fusion), the method whose claims it checks."""
CORE_ABLATION: dict[str, dict[str, Any]] = {
    "MLA": PAPER,
    "fusion chosen on validation (default)": {},
    "no projection": {**PAPER, "projection": False},
    "fixed fusion": {**PAPER, "test_fusion": "fixed"},
    "separate heads": {**PAPER, "heads": "separate"},
    "reference-code": {"preset": "reference-code"},
    "reference-code-as-released": {"preset": "reference-code-as-released"},
    "order reversed": {**PAPER, "order": "reversed"},
    "order random": {**PAPER, "order": "random"},
    "one modality per iteration": {**PAPER, "cycle": "iteration"},
}
FULL_ABLATION: dict[str, dict[str, Any]] = {
    **CORE_ABLATION,
    "h: batch mean": {**PAPER, "h_source": "batch"},
    "alpha: reference schedule": {**PAPER, "alpha_schedule": "reference"},
    "P Frobenius-normalised": {**PAPER, "normalize_p": True},
    "projection added": {**PAPER, "projection_mode": "add"},
    "entropy per batch": {**PAPER, "test_fusion": "batch-entropy"},
    "projection: OGD": {**PAPER, "projection_method": "ogd"},
    "projection: PCA-OGD": {**PAPER, "projection_method": "pca-ogd"},
}


@dataclass(frozen=True)
class BenchmarkConfig:
    """What the grid covers."""

    strategies: tuple[str, ...] = option(
        DEFAULT_STRATEGIES,
        "strategies of the main table; a strategy with options is written name:key=value:key=value "
        "(e.g. joint:fusion=film)",
    )
    seeds: tuple[int, ...] = option((0, 1, 2), "seeds (each run of the grid is repeated per seed)")
    missing_rates: tuple[float, ...] = option(
        (0.1, 0.3, 0.5, 0.7), "missing rates evaluated at test time on every main run"
    )
    train_missing_rates: tuple[float, ...] = option(
        (), "missing rates applied at train AND test (each retrains every strategy; --full: 0.3,0.7)"
    )
    ablation: Literal["core", "full", "none"] = option(
        "none", "MLA ablation runs (core: the paper's claims, full: also each projection choice; --full: core)"
    )
    jobs: int = option(
        0, "runs in parallel (0: as many as fit in the CPU cores at --threads each, or one per GPU on CUDA)"
    )

    def __post_init__(self) -> None:
        require(len(self.seeds) > 0, "seeds", self.seeds, "at least one seed")
        require(len(self.strategies) > 0, "strategies", self.strategies, "at least one strategy")
        require(self.jobs >= 0, "jobs", self.jobs, "non-negative")
        for name in ("missing_rates", "train_missing_rates"):
            rates = getattr(self, name)
            require(all(0 < r < 1 for r in rates), name, rates, "rates in (0, 1)")


FULL_GRID: dict[str, Any] = {"train_missing_rates": (0.3, 0.7), "ablation": "core"}
"""What ``benchmark --full`` adds to the default grid (each modality alone, every strategy, the
test-time missing-modality sweep): the MLA ablation and every strategy retrained with modalities
missing."""


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    group: str
    label: str
    seed: int
    settings: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def config(self, base: Mapping[str, Any]) -> RunConfig:
        return resolve(layer(base, {**self.settings, "seed": self.seed}), f"benchmark cell {self.label!r}")

    @property
    def reference(self) -> str:
        """The learner of a reference row (:mod:`altmodal.reference`), '' for a strategy's run."""
        return reference_kind(self.label) if self.group == "main" else ""


def cells(config: BenchmarkConfig, modalities: Sequence[str]) -> list[Cell]:
    """Every run of the grid, in the order they are reported."""
    out: list[Cell] = []
    for seed in config.seeds:
        for m in modalities:
            out.append(Cell("alone", m, seed, {"strategy": "unimodal", "modalities": (m,)}))
        for name in config.strategies:
            # a reference row's run config is joint training's: the same data, split and seed
            settings = {"strategy": "joint"} if reference_kind(name) else strategy_settings(name)
            out.append(Cell("main", name, seed, settings))
        if "mla" in config.strategies and config.ablation != "none":
            variants = FULL_ABLATION if config.ablation == "full" else CORE_ABLATION
            for label, options in variants.items():
                out.append(Cell("ablation", label, seed, {"strategy": "mla", **options}))
        for rate in config.train_missing_rates:
            for name in (s for s in config.strategies if not reference_kind(s)):
                settings = {**strategy_settings(name), "train_missing_rate": rate, "test_missing_rate": rate}
                out.append(Cell("missing", f"{name}@{rate:g}", seed, settings))
    return out


def strategy_settings(spec: str) -> dict[str, Any]:
    """``name:key=value:...`` -> {"strategy": name, key: value, ...} (values parsed as JSON where
    they can be: numbers, true/false)."""
    name, *pairs = spec.split(":")
    settings: dict[str, Any] = {"strategy": name}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise ValueError(f"strategy {spec!r}: {pair!r} is not of the form key=value")
        try:
            settings[key.replace("-", "_")] = json.loads(text)
        except json.JSONDecodeError:
            settings[key.replace("-", "_")] = text
    return settings


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def run_path(root: Path, cell: Cell, config: RunConfig) -> Path:
    """Folder of a run; identical configs share it (the digest), so duplicates run once."""
    name = f"sklearn-{cell.reference}" if cell.reference else slug(config.strategy)
    return root / "runs" / f"{name}-seed{cell.seed}-{config.digest()}"


def run_cell(
    config_dict: dict[str, Any],
    path: str,
    rates: Sequence[float],
    budget: int,
    device: str = "auto",
    reference: str = "",
    threads: Threads = "auto",
) -> dict[str, Any]:
    """Train (or skip) one run on ``device`` and its test-time missing-modality evaluations
    (cached); with ``reference``, that reference row instead (:mod:`altmodal.reference`). The
    run's threads follow ``threads`` as ``train --threads`` does (:mod:`altmodal.threads`), within
    ``budget``, this job's share of the cores: what ``auto`` leaves to torch, and a reference row's."""
    import torch

    from altmodal.config import flatten
    from altmodal.distributed import Dist, resolve_device

    torch.set_num_threads(max(budget, 1))
    config = resolve(flatten(config_dict), path)
    if reference:
        return run_reference(config, reference, path, rates)
    metrics = dict(train_run(config, path, dist=Dist(device=resolve_device(device)), threads=threads))
    run = Run(path)
    cached = read_missing(run)
    for rate in rates:
        key = f"{rate:g}"
        if key not in cached:
            result = evaluate_run(path, missing_rate=rate, device=device, threads=threads)
            cached[key] = {**result["test"]["fused"], "missing": result["missing"]}
    if rates:
        run.write_json("missing.json", cached)
    return {"metrics": metrics, "missing": cached}


def read_missing(run: Run) -> dict[str, Any]:
    """A run's cached test-time missing-rate results (missing.json): rate -> fused metrics and
    the realised shares. It is a cache: an entry that is not such a result (a hand edit, a
    damaged file) is left out with a warning naming the file, and its rate is evaluated again."""
    if not run.has("missing.json"):
        return {}
    path = run.file("missing.json")
    try:
        data = run.read_json("missing.json")
    except ValueError as err:
        log.warning("%s; evaluated again", err)
        return {}
    if not isinstance(data, dict):
        log.warning("%s: holds %s, not a table of results; evaluated again", path, type(data).__name__)
        return {}
    kept = {}
    for key, entry in data.items():
        if _missing_result(key, entry):
            kept[key] = entry
        else:
            log.warning(
                "%s: entry %r is not the result of a missing rate; left out, the rates asked for are evaluated again",
                path,
                key,
            )
    return kept


def _missing_result(key: str, entry: Any) -> bool:
    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and (0 <= value <= 1 or value != value)

    try:
        rate = float(key)
    except ValueError:
        return False
    return (
        0 < rate < 1
        and f"{rate:g}" == key
        and isinstance(entry, dict)
        and number(entry.get("accuracy"))
        and isinstance(entry.get("missing"), dict)
        and all(number(entry["missing"].get(k)) for k in ("realised_share", "single_modality_share"))
    )


def check_benchmark_folder(root: Path) -> None:
    """Raise a ConfigError unless ``root`` is new, empty or a benchmark's (it holds ``runs/``):
    a benchmark writes report.md, report.json and tables, which must not replace a user's."""
    run = Run(root)
    run.check_folder()
    if not root.is_dir() or (root / "runs").is_dir():
        return
    names = entries(root)
    if names:
        raise ConfigError(
            f"{root}: the folder holds files of its own ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}) "
            "and no benchmark; choose a new or empty --out"
        )


def run_grid(
    grid: Sequence[Cell],
    base: Mapping[str, Any],
    root: Path,
    *,
    missing_rates: Sequence[float] = (),
    jobs: int = 0,
    progress: bool = True,
    keep_going: bool = False,
    threads: Threads = "auto",
) -> dict[Cell, dict[str, Any]]:
    """Run every cell (skipping finished ones) with ``jobs`` processes; results per cell. Each
    run's torch threads follow ``threads`` as ``train --threads`` does; never more threads in all
    than CPU cores (:func:`cpu_jobs`). With ``keep_going`` a run that fails (e.g. diverges)
    gives ``{"error": message}`` and the others go on; otherwise its error ends the grid.

    Raises:
        ConfigError: another process runs a benchmark in ``root``, or ``root`` holds files of
            another kind, or ``threads`` times ``jobs`` is more than the cores.
    """
    check_benchmark_folder(root)
    with Run(root).lock():
        return _run_grid(grid, base, root, missing_rates, jobs, progress, keep_going, threads)


def _run_grid(
    grid: Sequence[Cell],
    base: Mapping[str, Any],
    root: Path,
    missing_rates: Sequence[float],
    jobs: int,
    progress: bool,
    keep_going: bool = False,
    threads: Threads = "auto",
) -> dict[Cell, dict[str, Any]]:
    configs = {cell: cell.config(base) for cell in grid}
    paths = {cell: run_path(root, cell, configs[cell]) for cell in grid}
    unique: dict[Path, Cell] = {}
    for cell in grid:
        unique.setdefault(paths[cell], cell)
    cores = os.cpu_count() or 1
    device = next(iter(configs.values())).train.device if configs else "cpu"
    jobs, devices = job_devices(device, jobs, cores, _cuda_count(), threads)
    jobs = min(jobs, len(unique)) or 1
    budget = threads if isinstance(threads, int) else max(cores // jobs, 1)
    results: dict[Path, dict[str, Any]] = {}
    bar = _bar(len(unique), progress)
    tasks = [
        (
            configs[c].to_dict(),
            str(p),
            missing_rates if c.group == "main" else (),
            budget,
            devices[i % len(devices)],
            c.reference,
            threads,
        )
        for i, (p, c) in enumerate(unique.items())
    ]
    if jobs == 1:
        for task, path in zip(tasks, unique):
            _describe(bar, unique[path])
            results[path] = _outcome(functools.partial(run_cell, *task), keep_going)
            bar.update(1)
    else:
        context = multiprocessing.get_context("spawn")
        with futures.ProcessPoolExecutor(
            max_workers=jobs, mp_context=context, initializer=watch_parent, initargs=(os.getpid(),)
        ) as pool:
            pending = {pool.submit(run_cell, *task): path for task, path in zip(tasks, unique)}
            try:
                for done in futures.as_completed(pending):
                    path = pending[done]
                    results[path] = _outcome(done.result, keep_going)
                    _describe(bar, unique[path])
                    bar.update(1)
            except BaseException:
                for f in pending:
                    f.cancel()
                raise
    bar.close()
    return {cell: results[paths[cell]] for cell in grid}


def _outcome(result: Callable[[], dict[str, Any]], keep_going: bool) -> dict[str, Any]:
    """A run's result, or with ``keep_going`` its error (a one-line message) in place of it."""
    try:
        return result()
    except (ValueError, RuntimeError) as err:
        if not keep_going:
            raise
        log.warning("a run failed and the grid goes on: %s", first_line(err))
        return {"error": first_line(err)}


def cpu_jobs(jobs: int, threads: Threads, cores: int) -> int:
    """Runs in parallel on the CPU: ``jobs``, or (0) as many as fit in the ``cores`` when each
    takes ``threads`` torch threads (one each for ``auto``).

    Raises:
        ConfigError: ``jobs`` runs of ``threads`` threads each would need more than ``cores``.
    """
    each = threads if isinstance(threads, int) else 1
    if jobs and each > 1 and jobs * each > cores:
        raise ConfigError(
            f"--threads {each} with --jobs {jobs} is {jobs * each} torch threads on {cores} CPU cores "
            f"(more only slows every run); give --jobs {max(cores // each, 1)} or fewer threads"
        )
    return jobs or max(cores // each, 1)


def job_devices(device: str, jobs: int, cores: int, gpus: int, threads: Threads = "auto") -> tuple[int, list[str]]:
    """Runs in parallel and the devices they take turns on: by default as many as fit in the CPU
    cores (:func:`cpu_jobs`) on the CPU, one per GPU with ``cuda``/``auto`` (runs spread over the
    GPUs), one on a named GPU."""
    if device in ("auto", "cuda") and gpus > 0:
        return jobs or gpus, [f"cuda:{i}" for i in range(gpus)]
    if device.startswith("cuda"):
        return jobs or 1, [device]
    return cpu_jobs(jobs, threads, cores), ["cpu"]


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="benchmark", unit="run", disable=not enabled, dynamic_ncols=True)


def _describe(bar: Any, cell: Cell) -> None:
    bar.set_postfix_str(f"{cell.group}: {cell.label} seed {cell.seed}")


def modalities_of(base: Mapping[str, Any]) -> list[str]:
    """The modalities the grid's runs use (the dataset's, or the ones selected)."""
    from altmodal.data.registry import load, select_modalities

    config = resolve(dict(base))
    return select_modalities(load(config.data).dataset, config.data.modalities).modalities


def labels(grid: Iterable[Cell], group: str) -> list[str]:
    seen: list[str] = []
    for cell in grid:
        if cell.group == group and cell.label not in seen:
            seen.append(cell.label)
    return seen
