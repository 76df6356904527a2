"""Data-parallel training on CPU with gloo and two processes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from altmodal.experiment import resolve, train_run
from altmodal.strategies import STRATEGIES
from tests import ddp_workers
from tests.conftest import TINY

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is unavailable")

BASE = ["--dataset", "synthetic", "--hidden", "16", "--dim", "8", "--batch-size", "32", "--folds", "1", "--quiet"]
BASE += [arg for item in TINY for arg in ("--dataset-option", item)]


def altmodal(*args, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "altmodal", *args], env=env, capture_output=True, text=True, **kwargs)


def test_two_processes_match_one_process(tmp_path):
    args = ["train", "--strategy", "mla", "--epochs", "3", *BASE]
    one = altmodal(*args, "--out", str(tmp_path / "one"))
    two = altmodal(*args, "--nproc", "2", "--out", str(tmp_path / "two"))
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    a = load_file(tmp_path / "one" / "model.safetensors")
    b = load_file(tmp_path / "two" / "model.safetensors")
    assert (a["projector.P"] - b["projector.P"]).abs().max() < 1e-5
    assert (a["heads.shared.weight"] - b["heads.shared.weight"]).abs().max() < 1e-5
    assert not torch.allclose(a["projector.P"], torch.eye(8))
    ma = json.loads((tmp_path / "one" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert ma["test"]["fused"] == mb["test"]["fused"] and ma["test"]["unimodal"] == mb["test"]["unimodal"]
    assert ma["test"]["count"] == mb["test"]["count"] == 75  # the whole split, gathered
    history = [(tmp_path / run / "history.csv").read_text().splitlines() for run in ("one", "two")]
    columns = history[0][0].split(",")
    for row_one, row_two in zip(history[0][1:], history[1][1:]):
        a, b = dict(zip(columns, row_one.split(","))), dict(zip(columns, row_two.split(",")))
        for key in ("train_loss", "train_loss_m0", "train_accuracy_m1", "val_accuracy"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-5)


def test_every_strategy_completes_an_epoch_in_two_processes(tmp_path):
    """... and D&R's k-means and OGD's memories, which see every process's samples in sample
    order, match one process; so do MMPareto's cosines and InfoReg's traces and scores (with its
    penalty on), computed from gradients and predictions combined over processes."""
    settings = {
        "dataset": "synthetic",
        "dataset_options": list(TINY),
        "epochs": 1,
        "hidden": [16],
        "dim": 8,
        "batch_size": 32,
        "folds": 1,
    }
    runs = {name: {**settings, "strategy": name} for name in STRATEGIES}
    runs["unimodal"]["modalities"] = ["m0"]
    matched = {
        "relearn-diagnosed": {**settings, "strategy": "relearn", "relearn_every": 1, "epochs": 2},
        "mla-ogd": {**settings, "strategy": "mla", "projection_method": "ogd", "ogd_refresh": 3, "epochs": 2},
        "mmpareto-2": {**settings, "strategy": "mmpareto", "epochs": 2},
        "inforeg-window": {**settings, "strategy": "inforeg", "inforeg_k": -1.0, "epochs": 3},
        "mla-cross-fitted": {**settings, "strategy": "mla", "folds": 2, "epochs": 2},
        "aug-assigning": {**settings, "strategy": "aug", "aug_every": 1, "aug_tau": -1.0, "epochs": 2},
        "reconboost-2": {**settings, "strategy": "reconboost", "epochs": 2, "train_missing_rate": 0.3},
    }
    mp.spawn(
        ddp_workers.train_runs,
        args=(2, str(tmp_path / "store"), str(tmp_path), json.dumps({**runs, **matched})),
        nprocs=2,
        join=True,
    )
    for name in runs:
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        assert metrics["test"]["count"] == 75 and 0 <= metrics["test"]["fused"]["accuracy"] <= 1
    for name, config in matched.items():
        train_run(resolve(config), tmp_path / "one" / name)
        a = load_file(tmp_path / "one" / name / "model.safetensors")
        b = load_file(tmp_path / name / "model.safetensors")
        for key in a:
            if key == "learners._extra_state":  # skops files: their zip entries carry the time they were written
                continue
            if key == "projector.others":  # a basis is unique up to rotation: compare its projector
                a[key], b[key] = a[key] @ a[key].transpose(1, 2), b[key] @ b[key].transpose(1, 2)
            # a fusion's fitted parameters are L-BFGS's, stopped when the loss changes by < 1e-6: the
            # networks' round-off (1e-8 here) moves where it stops by up to a few 1e-4
            tolerance = 2e-3 if key.startswith("fusion.") else 1e-4
            assert (a[key].double() - b[key].double()).abs().max() < tolerance, (name, key)
    alphas = [(tmp_path / run / "history.csv").read_text() for run in ("one/relearn-diagnosed", "relearn-diagnosed")]
    column = alphas[0].splitlines()[0].split(",").index("relearn_alpha_m0")
    one, two = ([line.split(",")[column] for line in text.splitlines()] for text in alphas)
    assert one == two and one[2] != ""


def test_qmf_histories_stay_identical_across_processes(tmp_path):
    settings = {
        "dataset": "synthetic",
        "dataset_options": list(TINY),
        "epochs": 2,
        "hidden": [16],
        "dim": 8,
        "batch_size": 32,
        "folds": 1,
    }
    mp.spawn(
        ddp_workers.train_every_strategy,
        args=(2, str(tmp_path / "store"), str(tmp_path), json.dumps(settings), ["qmf"]),
        nprocs=2,
        join=True,
    )
    state = load_file(tmp_path / "qmf" / "model.safetensors")
    assert int(state["seen"].sum()) == 2 * 180  # every training sample, both modalities


def test_killed_distributed_run_resumes_to_the_same_metrics(tmp_path):
    args = ["train", "--strategy", "mla", "--epochs", "15", "--nproc", "2", *BASE]
    whole = altmodal(*args, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    cut = tmp_path / "cut"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "altmodal", *args, "--out", str(cut)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not _epochs_done(cut) >= 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (cut / "metrics.json").exists() and (cut / "checkpoint.pt").exists()
    resumed = altmodal(*args, "--out", str(cut))
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    b = json.loads((cut / "metrics.json").read_text())
    assert a["test"] == b["test"] and a["best_epoch"] == b["best_epoch"]


def _epochs_done(run):
    path = run / "history.csv"
    return len(path.read_text().splitlines()) - 1 if path.exists() else 0


@pytest.fixture(scope="module")
def collective_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("collectives")
    mp.spawn(ddp_workers.collectives, args=(2, str(out / "store"), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{rank}.pt") for rank in range(2)]


def test_batchnorm_statistics_are_averaged_over_ranks(collective_results):
    for stats in collective_results:
        assert torch.allclose(stats["mean"], torch.full((3,), 0.5))
        assert torch.allclose(stats["var"], torch.full((3,), 2.0))


def test_parameters_no_rank_computed_keep_no_gradient(collective_results):
    single = ddp_workers.tiny_model()
    initial = {k: v.clone() for k, v in single.state_dict().items()}
    ddp_workers.step_with_unused_parameters(single, torch.arange(12.0).view(4, 3), None, ddp_workers.Dist())
    for saved in collective_results:
        assert saved["grads"]["b.weight"] is None and saved["grads"]["b.bias"] is None
        assert saved["grads"]["c.weight"] is not None  # computed on rank 0 only: summed, not dropped
        for key, value in single.state_dict().items():
            assert torch.allclose(saved["state"][key], value, atol=1e-6), key
    assert torch.equal(single.state_dict()["b.weight"], initial["b.weight"])  # no weight decay applied
