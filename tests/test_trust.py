"""Hostile and careless input: no file runs code, no user file is lost, every bad input gets one
clear line."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from altmodal.benchmark import BenchmarkConfig, cells, run_path
from altmodal.cli import benchmark_settings, build_parser, main
from altmodal.experiment import RunConfig
from altmodal.runs import Run
from tests.test_cli import FAST

LOCK = ".lock"  # the lock file a process working in a run folder holds


class Payload:
    """Pickles into a call that creates ``marker`` when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def plant(path: Path, marker: Path) -> None:
    torch.save({"model": Payload(marker), "epoch": 0}, path)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", "--out", str(out), *FAST]) == 0
    return out


def copy_run(source: Path, target: Path, weights: bool = True) -> Path:
    """A copy of a finished run; without ``weights``, an older run's folder whose weights would
    be in model.pt (the file the tests plant)."""
    target.mkdir()
    names = ["config.json", "metrics.json", "history.csv", "model.json", "preprocessing.safetensors"]
    for name in names + (["model.safetensors"] if weights else []):
        (target / name).write_bytes((source / name).read_bytes())
    return target


# ----- 1. loading a run never executes code ---------------------------------------------------------


def test_a_planted_model_file_does_not_run_in_evaluate(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run", weights=False)
    marker = tmp_path / "marker"
    plant(run / "model.pt", marker)
    assert main(["evaluate", "--run", str(run)]) == 2
    err = one_line_error(capsys)
    assert f"{run / 'model.pt'}: holds objects other than tensors" in err and "refused and not run" in err
    assert not marker.exists()


def test_a_planted_checkpoint_does_not_run_when_training_resumes(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    (run / "metrics.json").unlink()
    marker = tmp_path / "marker"
    plant(run / "checkpoint.pt", marker)
    for argv in (
        ["train", "--out", str(run), *FAST],
        ["train", "--config", str(run / "config.json"), "--out", str(run)],
    ):
        assert main([*argv, "--quiet"]) == 2
        assert f"{run / 'checkpoint.pt'}: holds objects other than tensors" in one_line_error(capsys)
        assert not marker.exists()


@pytest.mark.parametrize("planted", ["checkpoint.pt", "model.pt"])
def test_a_planted_file_does_not_run_in_a_rerun_benchmark(tmp_path, capsys, planted):
    root = tmp_path / "bench"
    argv = ["benchmark", "--strategies", "joint", "--seeds", "0", "--ablation", "none"]
    argv += ["--train-missing-rates", "", "--missing-rates", "0.5", "--jobs", "1", "--out", str(root), *FAST]
    common = benchmark_settings(build_parser().parse_args(argv))
    grid = cells(
        BenchmarkConfig(strategies=("joint",), seeds=(0,), ablation="none", train_missing_rates=()), ["m0", "m1"]
    )
    marker = tmp_path / "marker"
    for cell in grid:  # every run of the grid: started (checkpoint) or finished (model)
        config = cell.config(common)
        folder = run_path(root, cell, config)
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(config.to_dict()))
        if planted == "model.pt":
            (folder / "metrics.json").write_text("{}")
        plant(folder / planted, marker)
    assert main(argv) == 2
    assert f"{planted}: holds objects other than tensors" in one_line_error(capsys)
    assert not marker.exists()


# ----- 2. nothing the user owns is lost -------------------------------------------------------------


def test_train_refuses_a_folder_of_the_users_own_files(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    owned = {"metrics.json": "my metrics", "model.pt": "my model", "history.csv": "my history"}
    for name, text in owned.items():
        (out / name).write_text(text)
    assert main(["train", "--out", str(out), *FAST]) == 2
    assert "holds files of its own (history.csv, metrics.json, model.pt) and no run" in one_line_error(capsys)
    assert {name: (out / name).read_text() for name in owned} == owned
    assert main(["train", "--out", str(out), *FAST, "--overwrite"]) == 0
    assert json.loads((out / "metrics.json").read_text())["strategy"] == "mla"


def test_a_file_given_as_a_run_folder_is_one_clear_line(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert main(["train", "--out", str(target), *FAST]) == 2
    assert f"{target}: is a file, not a run folder" in one_line_error(capsys)
    assert main(["evaluate", "--run", str(target)]) == 2
    assert f"{target}: is a file, not a run folder" in one_line_error(capsys)
    assert target.read_text() == "mine"


def test_a_folder_in_use_is_refused_and_a_stale_lock_is_taken_over(tmp_path, capsys, caplog):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text(f"{os.getppid()}\n")  # a living process (pytest's parent)
    assert main(["train", "--out", str(out), *FAST]) == 2
    assert f"{out} is in use by process {os.getppid()}" in one_line_error(capsys)
    assert not (out / "config.json").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK).write_text(f"{dead.pid}\n")
    assert main(["train", "--out", str(out), *FAST]) == 0
    assert f"taking over the lock of process {dead.pid}" in caplog.text
    assert (out / "metrics.json").is_file() and not (out / LOCK).exists()


def test_a_benchmark_folder_in_use_is_refused(tmp_path):
    from altmodal.benchmark import run_grid
    from altmodal.config import ConfigError

    root = tmp_path / "bench"
    with Run(root).lock():
        with pytest.raises(ConfigError, match="is in use by process"):
            run_grid([], {}, root, progress=False)


def test_benchmark_workers_exit_when_the_benchmark_process_dies(tmp_path):
    pid_file = tmp_path / "worker.pid"
    script = textwrap.dedent(
        f"""
        import concurrent.futures as futures, multiprocessing, os, time
        from altmodal.workers import watch_parent
        if __name__ == "__main__":
            pool = futures.ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"), initializer=watch_parent,
                initargs=(os.getpid(), 0.1))
            worker = pool.submit(os.getpid).result()
            open({str(pid_file)!r}, "w").write(str(worker))
            pool.submit(time.sleep, 60)
            time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        deadline = time.time() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.time() < deadline and parent.poll() is None, "the pool did not start"
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 10
        while _running(worker):
            assert time.time() < deadline, "the worker outlived its parent"
            time.sleep(0.1)
    finally:
        if parent.poll() is None:
            parent.kill()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(") ")[1].startswith("Z"))


def test_a_failed_start_leaves_no_config_behind(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *FAST, "--modalities", "m0,nope"]) == 2
    capsys.readouterr()
    assert not (out / "config.json").exists()
    # an old folder holding only a run's config (left by an earlier version) counts as empty
    out.mkdir(exist_ok=True)
    (out / "config.json").write_text(json.dumps(RunConfig().to_dict()))
    assert main(["train", "--out", str(out), *FAST]) == 0


@pytest.mark.parametrize("name", ["model.safetensors", "model.pt"])
def test_a_corrupt_model_of_a_finished_run_says_how_to_recover(finished_run, tmp_path, capsys, name):
    run = copy_run(finished_run, tmp_path / "run", weights=False)
    (run / name).write_bytes(b"PK\x03\x04 truncated")
    assert main(["evaluate", "--run", str(run)]) == 2
    err = one_line_error(capsys)
    assert f"{name}: cannot be read" in err and "train the run again (the same command with --overwrite)" in err
    assert "delete it" not in err


def test_run_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        Run(tmp_path / "run").write_json("config.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "run" / "config.json").stat().st_mode & 0o777 == 0o644


# ----- 4. one clear line instead of a traceback ------------------------------------------------------


@pytest.mark.parametrize("content", ["[1, 2]", "null", '"text"'])
def test_a_config_json_that_is_not_an_object_is_one_clear_line(finished_run, tmp_path, capsys, content):
    run = copy_run(finished_run, tmp_path / "run")
    (run / "config.json").write_text(content)
    assert main(["evaluate", "--run", str(run)]) == 2
    assert f"{run / 'config.json'}: holds" in one_line_error(capsys)
    assert main(["train", "--out", str(run), *FAST]) == 2
    assert f"{run / 'config.json'}: holds" in one_line_error(capsys)


def test_a_hand_edited_checkpoint_is_one_clear_line(finished_run, tmp_path, capsys):
    from altmodal.experiment import train_run
    from tests.conftest import tiny_config

    config = tiny_config(epochs=3)
    out = tmp_path / "cut"
    original = Run.on_epoch_end

    def stop_after_first(self, strategy, state):
        original(self, strategy, state)
        raise KeyboardInterrupt

    Run.on_epoch_end = stop_after_first  # type: ignore[method-assign]
    try:
        with pytest.raises(KeyboardInterrupt):
            train_run(config, out)
    finally:
        Run.on_epoch_end = original  # type: ignore[method-assign]
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["history"] = 3
    torch.save(state, out / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"checkpoint.pt: 'history' is not a list of per-epoch rows"):
        train_run(config, out)


def test_a_directory_given_as_a_feature_file_is_named_a_directory(tmp_path, capsys):
    folder = tmp_path / "features.npz"
    folder.mkdir()
    assert main(["train", "--out", str(tmp_path / "r"), "--dataset", str(folder), "--quiet"]) == 2
    assert f"{folder}: is a directory, not a feature file" in one_line_error(capsys)


def test_present_naming_no_modality_is_refused(finished_run, capsys):
    assert main(["evaluate", "--run", str(finished_run), "--present", ","]) == 2
    assert "--present names no modality" in one_line_error(capsys)


def test_numpy_rng_state_is_stored_as_plain_types():
    from altmodal.trainer import rng_state, set_rng_state

    np.random.seed(5)
    np.random.normal()  # leaves a cached gaussian
    state = rng_state()
    expected = np.random.random(3)
    np.random.seed(9)
    set_rng_state(state)
    assert np.array_equal(np.random.random(3), expected)
    kinds = {type(v) for v in state["numpy"].values()}
    assert kinds <= {str, int, float, torch.Tensor}
