"""The ``altmodal`` command: train, evaluate, datasets (and the commands later modules add).

Flags are generated from the config dataclasses (:mod:`altmodal.config`); ``--config FILE``
(TOML or JSON) fills settings and explicit flags win. Errors in the input end the command with
exit status 2 and one line on stderr naming what is wrong.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from altmodal.config import ConfigError, add_arguments, read_config_file
from altmodal.data.features import DataError
from altmodal.data.registry import DATASETS, DataConfig
from altmodal.data.splits import PROTOCOLS
from altmodal.distributed import init_from_env, shutdown
from altmodal.encoders import EncoderConfig
from altmodal.experiment import RunConfig, evaluate_run, layer, option_classes, resolve, train_run
from altmodal.prepare import add_prepare_command
from altmodal.strategies import STRATEGIES, TrainConfig

Handler = Callable[[argparse.Namespace], int]


def settings_from(args: argparse.Namespace, skip: Sequence[str] = ()) -> dict[str, Any]:
    """Config-file settings overlaid with the flags given explicitly on the command line."""
    from_file = read_config_file(args.config) if getattr(args, "config", None) else {}
    ignored = {"command", "config", "out", "quiet", "overwrite", "handler", "verbose", "argv", "nproc", *skip}
    return layer(from_file, {k: v for k, v in vars(args).items() if k not in ignored})


def parser_for_runs(parser: argparse.ArgumentParser, with_strategy: bool = True) -> None:
    """The flags that define a run: strategy, data, encoder, training and strategy options."""
    if with_strategy:
        parser.add_argument(
            "--strategy", default=argparse.SUPPRESS, choices=list(STRATEGIES), help="training strategy (default: joint)"
        )
    parser.add_argument("--config", help="TOML or JSON file of settings; explicit flags win")
    add_arguments(parser, DataConfig, "data")
    add_arguments(parser, EncoderConfig, "encoders")
    add_arguments(parser, TrainConfig, "training", exclude=() if with_strategy else ("seed",))
    if not with_strategy:
        return
    seen: set[str] = set()
    for name, cls in option_classes().items():
        group = parser.add_argument_group(f"strategy {name}")
        fresh = _OnlyNew(group, seen)
        add_arguments(fresh, cls)


class _OnlyNew:
    """Adds each flag once even when several strategies share an options field."""

    def __init__(self, group: Any, seen: set[str]):
        self.group = group
        self.seen = seen

    def add_argument(self, *names: str, **kwargs: Any) -> None:
        if names[0] in self.seen:
            return
        self.seen.add(names[0])
        self.group.add_argument(*names, **kwargs)


def cmd_train(args: argparse.Namespace) -> int:
    config = resolve(settings_from(args), "command line")
    out = args.out or config.default_out()
    if args.nproc < 1:
        raise ConfigError(f"--nproc must be at least 1 (got {args.nproc})")
    if args.nproc > 1:
        return launch(args.nproc, [a for a in strip_nproc(args.argv)] + ["--out", str(out)])
    dist = init_from_env(config.train.device)
    try:
        metrics = train_run(config, out, dist=dist, progress=not args.quiet, overwrite=args.overwrite)
    finally:
        shutdown()
    if dist.is_main:
        print_summary(config, str(out), metrics)
    return 0


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """The command line without its --nproc option."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run this command in ``nproc`` processes with torchrun (torch.distributed.run)."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "altmodal",
        *argv,
    ]
    return subprocess.call(command)


def print_summary(config: RunConfig, out: str, metrics: Mapping[str, Any]) -> None:
    test = metrics["test"]
    print(
        f"run: {out}  ({config.strategy} on {config.data.dataset}, seed {config.train.seed}, "
        f"best epoch {metrics['best_epoch'] + 1} of {metrics['epochs']})"
    )
    print(f"test fused accuracy {test['fused']['accuracy']:.4f}  macro-F1 {test['fused']['macro_f1']:.4f}")
    print("unimodal accuracy (each modality's own prediction inside the model):")
    for m, block in test["unimodal"].items():
        print(f"  {m:<12} {block['accuracy']:.4f}")
    print("present subsets (the fused model with only these modalities present):")
    for name, block in test["present"].items():
        print(f"  {name:<24} {block['accuracy']:.4f}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    present = [m.strip() for m in args.present.split(",") if m.strip()] if args.present is not None else None
    result = evaluate_run(
        args.run,
        present=present,
        missing_rate=args.missing_rate,
        missing_protocol=args.missing_protocol,
        split=args.split,
    )
    print(json.dumps(result, indent=2))
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from altmodal.benchmark import BenchmarkConfig, cells, modalities_of, run_grid
    from altmodal.config import build, coerce, fields_of
    from altmodal.data.registry import DATASETS
    from altmodal.report import write_report
    from altmodal.tables import markdown

    settings = settings_from(args, skip=list(fields_of(BenchmarkConfig)))
    dataset = str(settings.get("dataset", DataConfig().dataset))
    info = DATASETS.get(dataset)
    base = {**(info.benchmark if info else {}), **settings}
    names = fields_of(BenchmarkConfig)
    grid_values = {k: coerce(BenchmarkConfig, k, v, "command line") for k, v in vars(args).items() if k in names}
    bench = build(BenchmarkConfig, grid_values)
    modalities = modalities_of(base)
    grid = cells(bench, modalities)
    out = Path(args.out or f"runs/benchmark-{Path(dataset).stem}")
    results = run_grid(grid, base, out, missing_rates=bench.missing_rates, jobs=bench.jobs, progress=not args.quiet)
    command = "altmodal " + shlex.join(args.argv)
    report = write_report(results, grid, base, modalities, out, command)
    print(markdown(report["tables"]["main"], "strategy", mark_best=True))
    print(f"report: {out / 'report.md'}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    for info in DATASETS.values():
        notes = [", ".join(f"{k}={_show(v)}" for k, v in d.items()) for d in (info.defaults, info.benchmark)]
        extra = (f" [defaults: {notes[0]}]" if notes[0] else "") + (f" [benchmark: {notes[1]}]" if notes[1] else "")
        print(f"{info.name:<12} {info.description}{extra}")
    print(
        f"{'<file>.npz':<12} a feature file: one array per modality, 'label', optional 'split' "
        "and 'present_<modality>' (see altmodal.data.features)"
    )
    return 0


def _show(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="altmodal", description="Multimodal learning that does not go lazy (MLA and its baselines)."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train one run and write its folder")
    parser_for_runs(train)
    train.add_argument("--out", help="run folder (default: runs/<dataset>-<strategy>-seed<S>-<config hash>)")
    train.add_argument("--overwrite", action="store_true", help="discard an existing run in --out")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="train data-parallel in this many processes (torchrun; gloo on CPU, NCCL on GPUs)",
    )
    train.set_defaults(handler=cmd_train)

    evaluate = sub.add_parser("evaluate", help="re-evaluate a finished run")
    evaluate.add_argument("--run", required=True, help="the run folder")
    evaluate.add_argument("--present", help="only these modalities present, comma-separated")
    evaluate.add_argument("--missing-rate", type=float, default=0.0, help="drop modalities at this rate (>=1 kept)")
    evaluate.add_argument(
        "--missing-protocol",
        choices=list(PROTOCOLS),
        help="what --missing-rate means (default: the run's --missing-protocol); see `altmodal train --help`",
    )
    evaluate.add_argument("--split", default="test", choices=["train", "val", "test"])
    evaluate.set_defaults(handler=cmd_evaluate)

    from altmodal.benchmark import BenchmarkConfig

    bench = sub.add_parser("benchmark", help="run the paper's experiments on a dataset and write a report")
    parser_for_runs(bench, with_strategy=False)
    add_arguments(bench, BenchmarkConfig, "grid")
    bench.add_argument("--out", help="report and runs folder (default: runs/benchmark-<dataset>)")
    bench.add_argument("--quiet", action="store_true", help="no progress bar")
    bench.set_defaults(handler=cmd_benchmark)

    datasets = sub.add_parser("datasets", help="list the built-in datasets")
    datasets.set_defaults(handler=cmd_datasets)
    add_prepare_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    handler: Handler = args.handler
    try:
        return handler(args)
    except (ConfigError, DataError, ValueError, FileNotFoundError) as err:
        print(f"altmodal: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "altmodal: interrupted; finished epochs are checkpointed, run the same command to resume", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
