"""The command line tells the truth: --help's defaults are those a run gets, --version, a skipped
re-run says so, --threads is applied."""

import json
import re

import pytest
import torch

import altmodal
from altmodal.benchmark import BenchmarkConfig
from altmodal.cli import build_parser, default_text, main
from altmodal.config import fields_of
from altmodal.data.registry import DATASETS
from altmodal.experiment import layer, option_classes, resolve
from tests.conftest import TINY

FAST = ["--dataset", "synthetic", "--epochs", "1", "--hidden", "16", "--dim", "8", "--folds", "1", "--quiet"]
FAST += [arg for item in TINY for arg in ("--dataset-option", item)]


def subparser(name):
    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices[name]


SAYS_NONE = ("all", "columns grouped by their MODALITY__ prefix")
"""Defaults --help describes in words: what an empty setting means."""


def printed_defaults(parser):
    """dest -> the text inside "(default: ...)" of each flag's help (argparse's line breaks undone)."""
    out = {}
    for action in parser._actions:
        match = re.search(r"\(default: (.*)\)$", " ".join((action.help or "").split()))
        if match and action.dest != "help":
            out[action.dest] = match.group(1)
    return out


def used_value(settings, dest):
    """The value of setting ``dest`` in the run that ``settings`` resolve to."""
    owner = next((n for n, c in option_classes().items() if dest in fields_of(c)), None)
    if owner is not None:
        settings = layer(settings, {"strategy": owner}) if owner != "mla" else settings
    config = resolve(settings)
    if dest == "strategy":
        return config.strategy
    if owner is not None:
        return config.options[dest]
    for section in (config.data, config.encoder, config.train, BenchmarkConfig()):
        if dest in fields_of(type(section)):
            return getattr(section, dest)
    raise KeyError(dest)


def datasets_for(kind):
    """Dataset names for a data kind as --help names it."""
    return ["x.npz", "x.csv", "x.parquet"] if kind.startswith("feature files") else [kind]


def check_defaults(parser, base_of):
    """Every default the parser prints against the value a run gets; returns how many were checked."""
    checked = 0
    media = [n for n, info in DATASETS.items() if info.needs_data_dir]
    for dest, text in printed_defaults(parser).items():
        if dest in {"threads", "config", "out", "nproc", "log", "media_root", "suite", "suite_datasets"}:
            continue
        if " for mla, " in text:  # set by mla's default preset: check it and each named preset
            value, _, rest = text.partition(" for mla, ")
            plain, _, presets = rest.partition(" for its presets ")
            assert default_text(used_value(base_of("mfeat"), dest)) == value, dest
            for preset in re.split(r", | and ", presets.removesuffix(" and the other strategies")):
                got = used_value({**base_of("mfeat"), "preset": preset}, dest)
                assert default_text(got) == plain, f"--{dest} with --preset {preset}: {got}"
            assert default_text(used_value({**base_of("mfeat"), "strategy": "joint"}, dest)) == plain
            checked += 1
            continue
        if " for " not in text:
            value = used_value(base_of("mfeat"), dest)
            shown = text if value == () and text in SAYS_NONE else default_text(value)
            assert shown == text, f"--{dest}: help says {text!r}, a run gets {value!r}"
            checked += 1
            continue
        named = []
        for part in text.split("; "):
            value, _, kinds = part.partition(" for ")
            if kinds == "the other datasets":
                others = [n for n in media if n not in named]
                assert others, f"--{dest}: no dataset left for 'the other datasets'"
                targets = others
            else:
                targets = [d for k in re.split(r"(?:, | and )(?![^(]*\))", kinds) for d in datasets_for(k)]
                named += targets
            for dataset in targets:
                got = default_text(used_value(base_of(dataset), dest))
                assert got == value, f"--{dest} on {dataset}: help says {value}, a run gets {got}"
                checked += 1
    return checked


def test_every_default_train_help_prints_is_the_one_a_run_gets():
    checked = check_defaults(subparser("train"), lambda dataset: {"dataset": dataset})
    assert checked > 60
    assert printed_defaults(subparser("train"))["strategy"] == "mla"
    assert printed_defaults(subparser("train"))["lr"].startswith("0.01 for mfeat, synthetic and feature files")


def test_every_default_benchmark_help_prints_is_the_one_its_runs_get():
    def base(dataset):
        info = DATASETS.get(dataset)
        return {**(info.benchmark if info else {}), "dataset": dataset}

    assert check_defaults(subparser("benchmark"), base) > 20
    assert printed_defaults(subparser("benchmark"))["modalities"].startswith("fou,mor for mfeat")


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"altmodal {altmodal.__version__} (torch {torch.__version__})"


def test_a_finished_run_says_it_skipped_training_even_when_quiet(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *FAST]) == 0
    assert "skipped" not in capsys.readouterr().out
    history = (out / "history.csv").read_text()
    assert main(["train", "--out", str(out), *FAST]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"run: {out} had finished: training skipped (--overwrite trains it again)"
    assert (out / "history.csv").read_text() == history


def test_threads_flag_is_applied_and_restored(tmp_path, monkeypatch):
    seen = []
    from altmodal.trainer import Trainer

    fit = Trainer.fit

    def spy(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", spy)
    before = torch.get_num_threads()
    assert main(["train", "--out", str(tmp_path / "two"), *FAST, "--threads", "2"]) == 0
    assert main(["train", "--out", str(tmp_path / "auto"), *FAST]) == 0  # a small MLP model: one thread
    assert seen == [2, 1] and torch.get_num_threads() == before
    for command in (["evaluate", "--run", str(tmp_path / "two"), "--json"],):
        assert main([*command, "--threads", "1"]) == 0
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["epochs"] == 1


@pytest.mark.parametrize("value", ["0", "many", "-2"])
def test_a_bad_thread_count_is_refused(capsys, value):
    with pytest.raises(SystemExit):
        main(["train", "--threads", value])
    assert f"--threads must be 'auto' or a positive integer (got '{value}')" in capsys.readouterr().err


def test_auto_threads_gives_one_thread_to_small_mlp_models_only():
    from torch import nn

    from altmodal.encoders.mlp import MLPEncoder
    from altmodal.threads import auto_threads, threads_for

    class Model(nn.Module):
        def __init__(self, **encoders):
            super().__init__()
            self.encoders = nn.ModuleDict(encoders)

    small = Model(a=MLPEncoder((76,), (64,), 32), b=MLPEncoder((6,), (64,), 32))
    wide = Model(a=MLPEncoder((3000,), (512,), 512))  # 1.8M parameters
    other = Model(a=MLPEncoder((6,), (64,), 32), b=nn.Conv2d(3, 8, 3))
    assert [auto_threads(m) for m in (small, wide, other, nn.Linear(3, 2))] == [1, None, None, None]
    assert threads_for("auto", wide) is None and threads_for(3, small) == 3 and threads_for(None, small) is None
