"""benchmarks/results_plots.py: the tables its figures are drawn from, read from a tiny suite
folder written here (the figures themselves are only checked to be written)."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "results_plots.py"


@pytest.fixture(scope="module")
def plots():
    spec = importlib.util.spec_from_file_location("results_plots", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def table(columns, rows):
    return {"columns": columns, "rows": [{"label": label, "cells": cells} for label, cells in rows.items()]}


def report(modalities, fused, alone, missing, ratios):
    """A report.json as a suite writes it, with the tables the figures read."""
    main_rows = {s: {"fused accuracy": v, "s/epoch": [1.0] * len(v)} for s, v in fused.items()}
    main_rows["each modality alone"] = {f"{m} (unimodal)": v for m, v in alone.items()}
    columns = ["fused accuracy", *(f"{m} (unimodal)" for m in modalities), "s/epoch"]
    return {
        "command": "altmodal benchmark --suite real",
        "modalities": list(modalities),
        "tables": {
            "main": table(columns, main_rows),
            "missing_test": table(["0", "0.5"], missing),
            "laziness": table(list(modalities), ratios),
        },
    }


@pytest.fixture
def suite(tmp_path):
    a = report(
        ["x", "y"],
        {"joint": [0.7, 0.8], "mla": [0.9, 0.8], "sklearn:linear": [0.75, 0.75]},
        {"x": [0.6, 0.6], "y": [0.7, 0.6]},
        {"mla": {"0": [0.9, 0.8], "0.5": [0.7, 0.6]}, "sklearn:linear": {"0": [0.75, 0.75], "0.5": [0.5, 0.4]}},
        {"mla": {"x": [1.0, 1.1], "y": [0.9, 0.95]}, "joint": {"x": [0.5, 0.7], "y": [1.0, 1.0]}},
    )
    b = report(["v"], {"mla": [0.5]}, {"v": [0.4]}, {"mla": {"0": [0.5]}}, {"mla": {"v": [1.0]}})
    for name, content in (("set-a", a), ("set-b", b)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(content))
    (tmp_path / "unfinished" / "runs").mkdir(parents=True)
    (tmp_path / "cache").mkdir()
    return tmp_path


def test_the_suite_is_read_by_dataset_folder_and_unfinished_ones_are_named(plots, suite):
    reports, skipped = plots.read_suite(suite)
    assert list(reports) == ["set-a", "set-b"] and skipped == ["unfinished"]
    with pytest.raises(SystemExit, match=r"no <dataset>/report\.json here"):
        plots.read_suite(suite / "unfinished")
    with pytest.raises(SystemExit, match="no such folder"):
        plots.read_suite(suite / "absent")


def test_accuracy_per_strategy_then_the_best_modality_alone(plots, suite):
    reports, _ = plots.read_suite(suite)
    points = plots.accuracy_points("set-a", reports["set-a"])
    assert [(p.strategy, p.x, p.values) for p in points] == [
        ("joint", "joint", (0.7, 0.8)),
        ("mla", "mla", (0.9, 0.8)),
        ("sklearn:linear", "sklearn:linear", (0.75, 0.75)),
        ("best modality alone", "y", (0.7, 0.6)),
    ]
    assert points[1].mean == pytest.approx(0.85) and points[1].sd == pytest.approx(math.sqrt(0.005))
    assert points[2].sd == 0.0 and plots.accuracy_points("set-b", reports["set-b"])[0].sd == 0.0
    order = plots.strategies(points)
    assert order == ["mla", "joint", "sklearn:linear", "best modality alone"]
    assert [plots.kind(s) for s in order] == ["default", "other", "reference", "alone"]


def test_missing_rates_and_laziness_ratios_per_strategy(plots, suite):
    reports, _ = plots.read_suite(suite)
    missing = plots.missing_points("set-a", reports["set-a"])
    assert [(p.strategy, p.x) for p in missing] == [
        ("mla", "0"),
        ("mla", "0.5"),
        ("sklearn:linear", "0"),
        ("sklearn:linear", "0.5"),
    ]
    assert [p.mean for p in missing] == pytest.approx([0.85, 0.65, 0.75, 0.45])
    lazy = plots.laziness_points("set-a", reports["set-a"]) + plots.laziness_points("set-b", reports["set-b"])
    lowest = plots.lowest(lazy)
    assert {k: (p.x, round(p.mean, 3)) for k, p in lowest.items()} == {
        ("set-a", "mla"): ("y", 0.925),
        ("set-a", "joint"): ("x", 0.6),
        ("set-b", "mla"): ("v", 1.0),
    }
    assert list(plots.by_dataset(lazy)) == ["set-a", "set-b"]


def test_the_script_writes_the_three_figures(plots, suite, tmp_path_factory, capsys):
    out = tmp_path_factory.mktemp("figures")
    plots.main([str(suite), str(out)])
    assert sorted(p.name for p in out.iterdir()) == sorted(plots.FIGURES)
    assert "left out (no report.json): unfinished" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"usage: python benchmarks/results_plots\.py SUITE_FOLDER OUT_FOLDER"):
        plots.main([str(suite)])
