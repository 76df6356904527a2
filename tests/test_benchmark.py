import json
import re

import pytest

from altmodal.benchmark import BenchmarkConfig, cells, run_grid, run_path
from altmodal.cli import main
from altmodal.metrics import mean_std
from tests.conftest import TINY

ARGS = ["--dataset", "synthetic", "--epochs", "2", "--hidden", "16", "--dim", "8", "--seeds", "0,1", "--folds", "1"]
ARGS += [arg for item in TINY for arg in ("--dataset-option", item)]
ARGS += ["--missing-rates", "0.5", "--train-missing-rates", "0.5", "--ablation", "core", "--jobs", "1", "--quiet"]
ARGS += ["--strategies", "mla,joint,ume"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert main(["benchmark", "--out", str(out), *ARGS]) == 0
    return out


def test_every_report_section_and_file_is_there(bench):
    text = (bench / "report.md").read_text()
    for heading in (
        "## 1. Main table",
        "## 2. Laziness",
        "## 3. Missing modalities",
        "## 4. Ablation",
        "## 5. Analyses",
        "## 6. The paper's claims",
    ):
        assert heading in text
    for name in (
        "main",
        "laziness",
        "missing_test",
        "missing_train_test",
        "present_subsets",
        "ablation",
        "modality_gap",
        "entropy_auroc",
        "mean_entropy",
    ):
        assert (bench / f"{name}.csv").is_file()
    assert (bench / "missing.png").stat().st_size > 1000 and (bench / "curves.png").stat().st_size > 1000
    report = json.loads((bench / "report.json").read_text())
    assert {c["claim"].split(" ")[0] for c in report["claims"]} >= {"joint", "MLA"}


def test_report_numbers_equal_the_runs_metrics(bench):
    config = BenchmarkConfig(
        strategies=("mla", "joint", "ume"), seeds=(0, 1), missing_rates=(0.5,), train_missing_rates=(0.5,)
    )
    grid = cells(config, ["m0", "m1"])
    base = json.loads((bench / "report.json").read_text())["settings"]
    accuracies = []
    for cell in grid:
        if cell.group == "main" and cell.label == "mla":
            metrics = json.loads((run_path(bench, cell, cell.config(base)) / "metrics.json").read_text())
            accuracies.append(metrics["test"]["fused"]["accuracy"])
    mean, std = mean_std(accuracies)
    row = next(line for line in (bench / "report.md").read_text().splitlines() if line.startswith("| mla |"))
    assert re.search(rf"\| (\*\*)?{mean:.3f} ± {std:.3f}(\*\*)? \|", row)


def test_the_report_states_the_missing_protocol_and_what_it_realised(bench):
    text = (bench / "report.md").read_text()
    assert "nominal missing rate of the `independent` protocol" in text
    assert "an absent modality's encoder is run on a zero input" in text
    assert "| realised share / missing rate | 0.5 |" in text
    report = json.loads((bench / "report.json").read_text())
    shares = {row["label"]: row["cells"] for row in report["tables"]["missing_shares"]["rows"]}
    for label in ("test only: entries missing", "train and test: entries missing"):  # 3 strategies x 2 seeds
        assert len(shares[label]["0.5"]) == 6 and all(0.3 < v < 0.45 for v in shares[label]["0.5"])
    assert all(0.6 < v < 0.9 for v in shares["test only: samples with one modality"]["0.5"])
    grid = cells(BenchmarkConfig(seeds=(0, 1), missing_rates=(0.5,), train_missing_rates=(0.5,)), ["m0", "m1"])
    cell = next(c for c in grid if c.group == "missing")
    metrics = json.loads((run_path(bench, cell, cell.config(report["settings"])) / "metrics.json").read_text())
    assert metrics["missing"]["protocol"] == "independent" and metrics["missing"]["rate"] == 0.5
    assert set(metrics["missing"]) == {"protocol", "rate", "realised_share", "single_modality_share"}
    for claim in report["claims"]:
        assert claim["verdict"] in ("held", "inconclusive", "did not hold") and claim["n"] == 2
    assert re.search(r"- \*\*(held|inconclusive|did not hold)\*\*: MLA beats the baselines", text)


def test_rerun_skips_finished_runs(bench, monkeypatch):
    import altmodal.benchmark as benchmark

    calls = []
    original = benchmark.train_run

    def counting(config, path, **kwargs):
        calls.append(path)
        return original(config, path, **kwargs)

    monkeypatch.setattr(benchmark, "train_run", counting)
    stamps = {p: p.stat().st_mtime_ns for p in bench.glob("runs/*/metrics.json")}
    assert main(["benchmark", "--out", str(bench), *ARGS]) == 0
    assert calls  # each run was looked at ...
    assert {p: p.stat().st_mtime_ns for p in bench.glob("runs/*/metrics.json")} == stamps  # ... none retrained


def test_interrupted_grid_keeps_finished_runs(tmp_path, monkeypatch):
    import altmodal.benchmark as benchmark

    small = BenchmarkConfig(strategies=("joint", "mla"), seeds=(0,), train_missing_rates=(), ablation="none")
    grid = cells(small, ["m0", "m1"])
    base = {"dataset": "synthetic", "dataset_options": TINY, "epochs": 1, "hidden": (16,), "dim": 8}
    original = benchmark.train_run
    done = []

    def stop_on_third(config, path, **kwargs):
        if len(done) == 2:
            raise KeyboardInterrupt
        done.append(path)
        return original(config, path, **kwargs)

    monkeypatch.setattr(benchmark, "train_run", stop_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_grid(grid, base, tmp_path, jobs=1, progress=False)
    finished = sorted(p.parent.name for p in tmp_path.glob("runs/*/metrics.json"))
    assert len(finished) == 2
    monkeypatch.setattr(benchmark, "train_run", original)
    results = run_grid(grid, base, tmp_path, jobs=1, progress=False)
    assert len(results) == len(grid)


def test_parallel_grid_matches_serial(tmp_path):
    small = BenchmarkConfig(strategies=("mla",), seeds=(0,), train_missing_rates=(), ablation="none")
    grid = cells(small, ["m0", "m1"])
    base = {"dataset": "synthetic", "dataset_options": TINY, "epochs": 1, "hidden": (16,), "dim": 8}
    serial = run_grid(grid, base, tmp_path / "serial", jobs=1, progress=False)
    parallel = run_grid(grid, base, tmp_path / "parallel", jobs=2, progress=False)
    for cell in grid:
        assert serial[cell]["metrics"]["test"] == parallel[cell]["metrics"]["test"]


def test_the_peers_are_benchmark_strategies_with_their_options():
    names = ("mmpareto", "dgl:dgl-alpha=2", "gblend:gblend_mode=offline", "inforeg:inforeg_unimodal_loss=slice")
    config = BenchmarkConfig(strategies=names, seeds=(0,), train_missing_rates=(), ablation="none")
    grid = [cell for cell in cells(config, ["m0", "m1"]) if cell.group == "main"]
    resolved = [cell.config({"dataset": "synthetic"}) for cell in grid]
    assert [c.strategy for c in resolved] == ["mmpareto", "dgl", "gblend", "inforeg"]
    assert resolved[0].options["pareto_gamma"] == 1.5 and resolved[1].options["dgl_alpha"] == 2
    assert resolved[2].options["gblend_mode"] == "offline"
    assert resolved[3].options["inforeg_unimodal_loss"] == "slice"


def test_peers_and_projection_methods_are_selectable():
    strategies = ("relearn:relearn-every=5", "umt", "mla", "mla:projection-method=pca-ogd:pca-k=8")
    grid = cells(BenchmarkConfig(strategies=strategies, seeds=(0,), train_missing_rates=(), ablation="full"), ["a"])
    configs = {cell.label: cell.config({"dataset": "synthetic"}) for cell in grid}
    assert configs["relearn:relearn-every=5"].options["relearn_every"] == 5
    assert configs["umt"].strategy == "umt"
    pca = configs["mla:projection-method=pca-ogd:pca-k=8"].options
    assert pca["projection_method"] == "pca-ogd" and pca["pca_k"] == 8
    assert configs["projection: OGD"].options["projection_method"] == "ogd"


def test_the_default_grid_is_lean_and_full_adds_the_ablation_and_missing_retraining(monkeypatch, tmp_path):
    import altmodal.benchmark as benchmark

    seen = {}

    def capture(grid, base, root, **kwargs):
        seen[root.name] = {cell.group for cell in grid}
        raise SystemExit(0)

    monkeypatch.setattr(benchmark, "run_grid", capture)
    for name, extra in (("lean", []), ("full", ["--full"]), ("explicit", ["--full", "--ablation", "none"])):
        with pytest.raises(SystemExit):
            main(["benchmark", "--dataset", "synthetic", "--out", str(tmp_path / name), "--quiet", *extra])
    assert seen["lean"] == {"alone", "main"}
    assert seen["full"] == {"alone", "main", "ablation", "missing"}
    assert seen["explicit"] == {"alone", "main", "missing"}  # an explicit flag wins over --full


def test_a_failing_run_ends_the_grid_unless_it_keeps_going(tmp_path):
    from altmodal.benchmark import Cell
    from tests.conftest import tiny_settings

    base = tiny_settings(epochs=1)
    cells = [
        Cell("main", "joint", 0, {"strategy": "joint"}),
        Cell("main", "wild", 0, {"strategy": "joint", "lr": 1e30}),
    ]
    results = run_grid(cells, base, tmp_path / "grid", jobs=1, progress=False, keep_going=True)
    assert "diverged" in results[cells[1]]["error"] and results[cells[0]]["metrics"]["test"]["count"] == 75
    with pytest.raises(ValueError, match="diverged"):
        run_grid(cells[1:], base, tmp_path / "again", jobs=1, progress=False)


def test_the_smil_protocol_benchmark_tables_complete_and_incomplete_accuracy(tmp_path, capsys):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "smil_protocol.py"
    spec = importlib.util.spec_from_file_location("smil_protocol", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    options = [
        arg for item in ("samples=300", "classes=3", "widths=8", "latent_dim=4") for arg in ("--dataset-option", item)
    ]
    argv = ["--dataset", "synthetic", "--modalities", "m0,m1", "--strategies", "joint,smil", "--shares", "0.2"]
    module.main([*argv, *options, "--seeds", "0", "--epochs", "2", "--jobs", "1", "--out", str(tmp_path)])
    table = (tmp_path / "table.md").read_text().splitlines()
    assert table[0] == "| strategy | 20% complete, no m0 | 20% complete, no m1 |"
    runs = sorted((tmp_path / "runs").iterdir())
    no_m0 = next(
        r
        for r in runs
        if r.name.startswith("smil") and '"incomplete_modality": "m0"' in (r / "config.json").read_text()
    )
    metrics = json.loads((no_m0 / "metrics.json").read_text())
    cell = next(line for line in table if line.startswith("| smil |")).split(" | ")[1]
    full, alone = metrics["test"]["fused"]["accuracy"], metrics["test"]["present"]["m1"]["accuracy"]
    assert len(runs) == 4 and cell == f"{full:.3f} / {alone:.3f} (±0.000 / ±0.000)"
    from altmodal.benchmark import Cell

    metrics = {"test": {"fused": {"accuracy": 0.5}, "present": {"m1": {"accuracy": 0.25}}}}
    results = {
        Cell("smil", "joint|0.1|m0", 0, {}): {"metrics": metrics},
        Cell("smil", "joint|0.1|m0", 1, {}): {"error": "the loss diverged at epoch 2"},
        Cell("smil", "joint|0.1|m1", 0, {}): {"error": "out of memory"},
    }
    text = module.table(results, ["joint"], [0.1], ["m0", "m1"]).splitlines()
    assert text[2] == "| joint | 0.500 / 0.250 (±0.000 / ±0.000, 1 failed) | failed (1) |"
    assert text[-2:] == [
        "- joint, 10% complete, no m0: the loss diverged at epoch 2",
        "- joint, 10% complete, no m1: out of memory",
    ]
