"""The ``altmodal`` command: train, evaluate, datasets (and the commands later modules add).

Flags are generated from the config dataclasses (:mod:`altmodal.config`); ``--config FILE``
(TOML or JSON) fills settings and explicit flags win. Errors in the input end the command with
exit status 2 and one line on stderr naming what is wrong.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch

import altmodal
from altmodal.callbacks import Progress, Summary, TensorBoardLogger
from altmodal.config import ConfigError, add_arguments, did_you_mean, fields_of, read_config_file
from altmodal.data.features import DataError
from altmodal.data.registry import DATASETS, FEATURE_FILE_DEFAULTS, DataConfig
from altmodal.data.splits import PROTOCOLS
from altmodal.distributed import init_from_env, shutdown
from altmodal.encoders import EncoderConfig
from altmodal.experiment import (
    DEFAULT_STRATEGY,
    RunConfig,
    check_given,
    check_settings,
    evaluate_run,
    layer,
    option_classes,
    resolve,
    train_run,
)
from altmodal.prepare import add_prepare_command
from altmodal.runs import without_nan
from altmodal.strategies import STRATEGIES, TrainConfig
from altmodal.threads import THREADS_HELP, parse_threads, threads_for, torch_threads
from altmodal.trainer import Callback

Handler = Callable[[argparse.Namespace], int]


def settings_from(args: argparse.Namespace, skip: Sequence[str] = ()) -> dict[str, Any]:
    """Config-file settings overlaid with the flags given explicitly on the command line."""
    from_file = read_config_file(args.config) if getattr(args, "config", None) else {}
    check_settings(from_file, str(args.config), also=skip)  # its errors name the file, not the command line
    return layer(from_file, explicit_flags(args, skip))


def explicit_flags(args: argparse.Namespace, skip: Sequence[str] = ()) -> dict[str, Any]:
    """The run settings given as flags on the command line (flags default to nothing)."""
    ignored = {
        "command",
        "config",
        "out",
        "quiet",
        "overwrite",
        "handler",
        "verbose",
        "argv",
        "nproc",
        "log",
        "threads",
    }
    ignored |= set(skip)
    return {k: v for k, v in vars(args).items() if k not in ignored}


def parser_for_runs(parser: argparse.ArgumentParser, with_strategy: bool = True) -> None:
    """The flags that define a run: strategy, data, encoder, training and strategy options."""
    if with_strategy:
        parser.add_argument(
            "--strategy",
            default=argparse.SUPPRESS,
            choices=list(STRATEGIES),
            help=f"training strategy (default: {DEFAULT_STRATEGY})",
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


FEATURE_DATA = "mfeat, synthetic and feature files (.npz, .csv, .parquet)"
"""The data :data:`~altmodal.data.registry.FEATURE_FILE_DEFAULTS` apply to, as --help names them."""


def data_defaults(for_benchmark: bool = False) -> dict[str, dict[str, object]]:
    """Data kind (as --help names it) -> the settings it changes from the dataclass defaults
    (for ``benchmark``, with the grid's own per-dataset settings)."""
    kinds: dict[str, dict[str, object]] = {FEATURE_DATA: dict(FEATURE_FILE_DEFAULTS)}
    for info in DATASETS.values():
        settings = {**info.defaults, **(info.benchmark if for_benchmark else {})}
        if info.defaults == FEATURE_FILE_DEFAULTS and set(settings) <= set(FEATURE_FILE_DEFAULTS):
            continue  # mfeat and synthetic: named with the feature files
        if settings:
            kinds[info.name] = settings
    return kinds


def default_text(value: object) -> str:
    """A default as --help shows it (tuples comma-separated, as the flags take them)."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value) or "(none)"
    return "none" if value is None else str(value)


def tell_true_defaults(parser: argparse.ArgumentParser, for_benchmark: bool = False) -> None:
    """Rewrite the "(default: X)" of each flag some data kinds set otherwise, e.g. --lr's
    "(default: 0.01 for mfeat, synthetic and feature files (.npz, .csv, .parquet); 0.05 for
    avdigits; 0.001 for the other datasets)", so that --help names the default each run gets."""
    kinds = data_defaults(for_benchmark)
    fields = {name: f for c in (DataConfig, EncoderConfig, TrainConfig) for name, (f, _) in fields_of(c).items()}
    for action in parser._actions:
        if action.dest not in fields or not action.help or "(default: " not in action.help:
            continue
        by_value: dict[str, list[str]] = {}
        for kind, settings in kinds.items():
            if action.dest in settings:
                by_value.setdefault(default_text(settings[action.dest]), []).append(kind)
        if not by_value:
            continue
        parts = [f"{value} for {_and(names)}" for value, names in by_value.items()]
        parts.append(f"{default_text(fields[action.dest].default)} for the other datasets")
        head = action.help[: action.help.index("(default: ")]
        action.help = f"{head}(default: {'; '.join(parts)})"


def tell_preset_defaults(parser: argparse.ArgumentParser) -> None:
    """Rewrite the "(default: X)" of each run setting that the default strategy's default preset
    sets, e.g. --folds's "(default: 5 for mla, 1 for its presets fast, paper, ... and the other
    strategies)"."""
    from altmodal.experiment import preset_settings

    cls = STRATEGIES[DEFAULT_STRATEGY]
    fields = {name: f for c in (DataConfig, EncoderConfig, TrainConfig) for name, (f, _) in fields_of(c).items()}
    presets = getattr(cls.options_class, "PRESETS", {})
    for action in parser._actions:
        value = preset_settings(cls).get(action.dest)
        if action.dest not in fields or value is None or not action.help or "(default: " not in action.help:
            continue
        plain_default = fields[action.dest].default
        others = [p for p, settings in presets.items() if settings.get(action.dest, plain_default) != value]
        head = action.help[: action.help.index("(default: ")]
        plain = default_text(fields[action.dest].default)
        action.help = (
            f"{head}(default: {default_text(value)} for {DEFAULT_STRATEGY}, {plain} for its presets "
            f"{_and(others)} and the other strategies)"
        )


def _and(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


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
    check_given(explicit_flags(args), config)
    out = args.out or config.default_out()
    if args.nproc < 1:
        raise ConfigError(f"--nproc must be at least 1 (got {args.nproc})")
    if args.nproc > 1:
        return launch(args.nproc, [a for a in strip_nproc(args.argv)] + ["--out", str(out)])
    dist = init_from_env(config.train.device)
    line = ProgressLine(sys.stderr)
    callbacks: list[Callback] = [] if args.quiet else [Summary(print), Progress(line, config.train.epochs, line.every)]
    if args.log == "tensorboard":
        callbacks.append(TensorBoardLogger(Path(out) / "tensorboard"))
    handlers = logging.getLogger().handlers
    for handler in handlers:
        handler.addFilter(line)
    finished = False
    try:
        metrics = train_run(config, out, dist=dist, overwrite=args.overwrite, callbacks=callbacks, threads=args.threads)
        finished = True
    finally:
        for handler in handlers:
            handler.removeFilter(line)
        line.close()
        shutdown(finished)
    if dist.is_main:
        if metrics.skipped:
            print(f"run: {out} had finished: training skipped (--overwrite trains it again)")
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
    """Run this command in ``nproc`` processes with torchrun (torch.distributed.run), through
    :mod:`altmodal.launch`: killed, even by SIGKILL, this process leaves no torchrun or rank behind."""
    command = [
        sys.executable,
        "-m",
        "altmodal.launch",  # torchrun, which ends with its ranks when this process dies
        str(os.getpid()),
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "altmodal",
        *argv,
    ]
    return subprocess.call(command)


class ProgressLine:
    """Where ``train`` writes its progress: on a terminal one line, rewritten after each epoch;
    elsewhere (a log file) a line every ``every`` seconds."""

    def __init__(self, stream: Any):
        self.stream = stream
        self.terminal = bool(getattr(stream, "isatty", lambda: False)())
        self.every = 0.0 if self.terminal else 10.0
        self.open = False

    def __call__(self, text: str) -> None:
        self.stream.write(f"\r{text}\x1b[K" if self.terminal else f"{text}\n")
        self.stream.flush()
        self.open = self.terminal

    def close(self) -> None:
        """End the rewritten line (the next output starts on a line of its own)."""
        if self.open:
            self.stream.write("\n")
            self.open = False

    def filter(self, record: logging.LogRecord) -> bool:
        """As a logging filter: a message logged while the line is open starts on a line of its own."""
        self.close()
        return True


def print_summary(config: RunConfig, out: str, metrics: Mapping[str, Any]) -> None:
    test = metrics["test"]
    print(
        f"run: {out}  ({config.strategy} on {config.data.dataset}, seed {config.train.seed}, "
        f"best epoch {metrics['best_epoch']} of {metrics['epochs']})"
    )
    print_block(test, "test")
    print_fusion(metrics.get("strategy_summary", {}))


def print_fusion(summary: Mapping[str, Any]) -> None:
    """The fusion rule a run chose among its candidates, and the honest estimate of the choice."""
    if "fusion_scores" not in summary or "fusion_estimate" not in summary:
        return
    where = "out-of-fold predictions" if summary.get("held_out") == "out-of-fold" else "validation samples"
    chosen = summary["fusion"]
    print(
        f"fusion rule {chosen}, chosen of {len(summary['fusion_scores'])} candidates on {summary['samples']} "
        f"{where}: honest estimate {_figure(summary['fusion_estimate'])} (score when chosen "
        f"{_figure(summary['fusion_scores'][chosen])})"
    )


def print_block(block: Mapping[str, Any], split: str) -> None:
    """A split's metrics block as aligned lines, with the number of samples behind each figure."""
    fused = block["fused"]
    print(
        f"{split} fused accuracy {_figure(fused['accuracy'])}  macro-F1 {_figure(fused['macro_f1'])}  "
        f"(n={block['count']})"
    )
    print("unimodal accuracy (each modality's own prediction inside the model):")
    for m, row in block["unimodal"].items():
        print(f"  {m:<24} {_figure(row['accuracy'])}  (n={row['count']})")
    if block["present"]:
        print("present subsets (the fused model with only these modalities present):")
        for name, row in block["present"].items():
            print(f"  {name:<24} {_figure(row['accuracy'])}  (n={row['count']})")


def _figure(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.4f}"  # NaN (null in JSON): no sample to score


def modality_list(text: str | None, flag: str = "--present", what: str = "modality") -> list[str] | None:
    """The comma-separated names (modalities unless ``what`` says otherwise) of a flag (None when
    it is not given)."""
    if text is None:
        return None
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise ConfigError(f"{flag} names no {what}; give one or more, comma-separated")
    return names


def cmd_evaluate(args: argparse.Namespace) -> int:
    present = modality_list(args.present)
    result = evaluate_run(
        args.run,
        present=present,
        missing_rate=args.missing_rate,
        missing_protocol=args.missing_protocol,
        split=args.split,
        device=args.device,
        threads=args.threads,
    )
    if args.json:
        print(json.dumps(without_nan(result), indent=2, allow_nan=False))
        return 0
    shown = f"only {'+'.join(result['present'])} present" if present else "each sample's own modalities"
    missing = result.get("missing") or {}
    rate = (
        f", modalities dropped at rate {missing['rate']:g} by the {missing['protocol']} protocol: "
        f"{missing['realised_share']:.1%} of entries missing, {missing['single_modality_share']:.1%} of samples "
        "with one modality"
        if args.missing_rate and missing
        else ""
    )
    print(f"run: {result['run']}  ({args.split} split, {shown}{rate})")
    print_block(result[args.split], args.split)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from altmodal.predictions import check_output
    from altmodal.predictor import load_run
    from altmodal.runs import write_csv

    out = Path(args.out)
    present = modality_list(args.present)
    check_output(out, args.data, args.overwrite)
    model = load_run(args.run, device=args.device)
    with torch_threads(threads_for(args.threads, model.strategy)):
        rows = model.table(args.data, present)
    write_csv(out, rows)
    print(f"predictions: {out}  ({len(rows)} samples, {len(model.classes)} classes)")
    scored = [r for r in rows if r["prediction"] != ""]
    if rows and "label" in rows[0] and scored:
        correct = sum(r["prediction"] == r["label"] for r in scored)
        unscored = f"; {len(rows) - len(scored)} without any left out" if len(scored) < len(rows) else ""
        counts = f"{correct} correct of {len(scored)} samples with a modality{unscored}"
        print(f"accuracy {correct / len(scored):.4f}  ({counts})")
    return 0


FLAGS_ONLY = ("suite", "suite_datasets", "media_root", "threads")
"""Benchmark settings a config file may not set (the suite's, where its data lives, the threads)."""


def benchmark_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The run settings a benchmark's cells share: its flags and config file less the grid's own."""
    from altmodal.benchmark import BenchmarkConfig
    from altmodal.config import fields_of

    return settings_from(args, skip=[*fields_of(BenchmarkConfig), *FLAGS_ONLY, "full"])


def cmd_benchmark(args: argparse.Namespace) -> int:
    from altmodal.benchmark import FULL_GRID, BenchmarkConfig, cells, modalities_of, run_grid
    from altmodal.config import build, coerce, fields_of
    from altmodal.data.registry import DATASETS
    from altmodal.report import write_report
    from altmodal.tables import markdown

    settings = benchmark_settings(args)
    names = fields_of(BenchmarkConfig)
    for key in FLAGS_ONLY:
        if key in settings:
            raise ConfigError(f"{args.config}: {key} is set on the command line only (--{key.replace('_', '-')})")
    # the grid's settings: a config file's, overlaid with the flags given
    grid_values = {
        k: coerce(BenchmarkConfig, k, settings.pop(k), str(args.config)) for k in list(settings) if k in names
    }
    grid_values.update({k: coerce(BenchmarkConfig, k, v, "command line") for k, v in vars(args).items() if k in names})
    if args.full:
        grid_values = {**FULL_GRID, **grid_values}
    bench = build(BenchmarkConfig, grid_values)
    if getattr(args, "suite", None):
        return run_suite_command(args, bench, settings)
    dataset = str(settings.get("dataset", DataConfig().dataset))
    info = DATASETS.get(dataset)
    base = {**(info.benchmark if info else {}), **settings}
    modalities = modalities_of(base)
    grid = cells(bench, modalities)
    out = Path(args.out or f"runs/benchmark-{Path(dataset).stem}")
    results = run_grid(
        grid,
        base,
        out,
        missing_rates=bench.missing_rates,
        jobs=bench.jobs,
        progress=not args.quiet,
        threads=args.threads,
    )
    command = "altmodal " + shlex.join(args.argv)
    report = write_report(results, grid, base, modalities, out, command)
    print(markdown(report["tables"]["main"], "strategy", mark_best=True))
    print(f"report: {out / 'report.md'}")
    return 0


def run_suite_command(args: argparse.Namespace, bench: Any, settings: Mapping[str, Any]) -> int:
    from altmodal.suite import data_folder, render, run_suite

    if "dataset" in settings:
        raise ConfigError("--suite chooses the datasets: leave out --dataset")
    out = Path(args.out or f"runs/suite-{args.suite}")
    summary = run_suite(
        args.suite,
        out,
        strategies=bench.strategies,
        seeds=bench.seeds if "seeds" in vars(args) else None,
        settings=settings,
        data=data_folder(getattr(args, "media_root", None)),
        jobs=bench.jobs,
        progress=not args.quiet,
        threads=args.threads,
        only=modality_list(getattr(args, "suite_datasets", None), "--suite-datasets", "dataset"),
    )
    print(render(summary).split("\n## ")[0])
    print(f"suite report: {out / 'suite.md'}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    width = max(len(name) for name in [*DATASETS, "<file>.parquet"])
    for info in DATASETS.values():
        notes = [", ".join(f"{k}={_show(v)}" for k, v in d.items()) for d in (info.defaults, info.benchmark)]
        extra = (f" [defaults: {notes[0]}]" if notes[0] else "") + (f" [benchmark: {notes[1]}]" if notes[1] else "")
        print(f"{info.name:<{width}}  {info.description}{extra}")
    print(
        f"{'<file>.npz':<{width}}  a feature file: one array per modality, 'label', optional 'split' "
        "and 'present_<modality>' (see altmodal.data.features)"
    )
    print(
        f"{'<file>.csv':<{width}}  a table (also .parquet): one row per sample, --label COLUMN, modalities by "
        "MODALITY__ column prefix or --modality NAME=COLUMNS (see altmodal.data.table)"
    )
    return 0


def _show(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the usage of ``train`` runs to a hundred
    lines), a bad choice with the closest valid one."""

    CHOICE = re.compile(r"invalid choice: (['\"]?)(.*?)\1 \(choose from (.*)\)$")

    def error(self, message: str) -> NoReturn:
        bad = self.CHOICE.search(message)
        if bad:
            choices = [c.strip().strip("'\"") for c in bad.group(3).split(",")]
            near = did_you_mean(bad.group(2), choices)
            if near:
                message = f"{message[: bad.start()]}invalid choice: {bad.group(2)!r}{near}"
        self.exit(2, f"{self.prog}: error: {printable(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="altmodal", description="Multimodal learning that does not go lazy (MLA and its baselines).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument(
        "--version", action="version", version=f"altmodal {altmodal.__version__} (torch {torch.__version__})"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train one run and write its folder")
    parser_for_runs(train)
    tell_true_defaults(train)
    tell_preset_defaults(train)
    train.add_argument("--threads", type=parse_threads, default="auto", help=THREADS_HELP)
    train.add_argument("--out", help="run folder (default: runs/<dataset>-<strategy>-seed<S>-<config hash>)")
    train.add_argument("--overwrite", action="store_true", help="discard an existing run in --out")
    train.add_argument("--quiet", action="store_true", help="no summary and no progress bars")
    train.add_argument(
        "--log", choices=["tensorboard"], help="also log every epoch to OUT/tensorboard (extra: tensorboard)"
    )
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
    evaluate.add_argument("--split", default="test", choices=["train", "val", "test"], help="(default: test)")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    evaluate.add_argument("--threads", type=parse_threads, default="auto", help=THREADS_HELP)
    evaluate.set_defaults(handler=cmd_evaluate)

    predict = sub.add_parser("predict", help="predict labels for new samples with a finished run's model")
    predict.add_argument("--run", required=True, help="the run folder")
    predict.add_argument(
        "--data",
        required=True,
        help="an .npz feature file, a .csv / .parquet table (labels optional: the run's columns are read by "
        "name) or a prepared media cache folder",
    )
    predict.add_argument("--present", help="only these modalities present, comma-separated")
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    predict.add_argument("--out", default="predictions.csv", help="the CSV to write (default: predictions.csv)")
    predict.add_argument(
        "--overwrite", action="store_true", help="replace --out even when it is not a predictions file altmodal wrote"
    )
    predict.add_argument("--threads", type=parse_threads, default="auto", help=THREADS_HELP)
    predict.set_defaults(handler=cmd_predict)

    from altmodal.benchmark import BenchmarkConfig

    bench = sub.add_parser("benchmark", help="run the paper's experiments on a dataset and write a report")
    parser_for_runs(bench, with_strategy=False)
    tell_true_defaults(bench, for_benchmark=True)
    tell_preset_defaults(bench)
    add_arguments(bench, BenchmarkConfig, "grid")
    bench.add_argument("--out", help="report and runs folder (default: runs/benchmark-<dataset> or -<suite>)")
    bench.add_argument(
        "--threads",
        type=parse_threads,
        default="auto",
        help="torch CPU threads of each run, as train --threads: a number, or auto: 1 for a model of MLP encoders "
        "under 1M parameters, the run's share of the CPU cores for others; --jobs 0 runs as many at once as fit in "
        "the cores (default: auto)",
    )
    bench.add_argument(
        "--suite",
        default=argparse.SUPPRESS,
        help="run a suite of datasets instead of one (real: 11 real multi-view datasets, mfeat and AV-digits, "
        "3 seeds; dev: mfeat views, synthetic data and AV-digits, 3 seeds; quick: dev's feature datasets, one seed, "
        "fewer epochs) and write suite.md with each strategy's wins, ties, losses and mean rank",
    )
    bench.add_argument(
        "--suite-datasets",
        default=argparse.SUPPRESS,
        metavar="NAMES",
        help="run only these datasets of the suite, in this order (comma-separated folder names, e.g. "
        "bbcsport,mfeat-fou-mor; default: all)",
    )
    bench.add_argument(
        "--media-root",
        default=argparse.SUPPRESS,
        help="the data folder of a suite: the real suite's multiview/<name>.npz (written by `altmodal prepare "
        "multiview`) and AV-digits' raw fsdd/ and mnist/ (default: $ALTMODAL_DATA; a missing multiview file stops "
        "the suite, AV-digits without its folders is skipped)",
    )
    bench.add_argument(
        "--full",
        action="store_true",
        help="the complete grid: also the MLA ablation (--ablation core) and every strategy retrained with "
        "modalities missing at 0.3 and 0.7 (--train-missing-rates 0.3,0.7)",
    )
    bench.add_argument("--quiet", action="store_true", help="no progress bar")
    bench.set_defaults(handler=cmd_benchmark)

    datasets = sub.add_parser("datasets", help="list the built-in datasets")
    datasets.set_defaults(handler=cmd_datasets)
    add_prepare_command(sub)
    for command in sub.choices.values():  # -v also after the subcommand
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log details")
    return parser


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\\x1b``, ``\\n``): a name in a message cannot
    drive the terminal or break the message's one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class _PrintableFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    stream = logging.StreamHandler()
    stream.setFormatter(_PrintableFormatter("%(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[stream])
    handler: Handler = args.handler
    try:
        return handler(args)
    except (ConfigError, DataError, ValueError, OSError) as err:  # OSError: a file that cannot be read or written
        print(f"altmodal: error: {printable(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "altmodal: interrupted; finished epochs are checkpointed, run the same command to resume", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
