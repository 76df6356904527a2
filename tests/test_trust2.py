"""Hostile and careless input, round 2: folders and files a user owns are never written over, no
input gives a silently wrong result, no process outlives the command that started it, nothing
hangs, and every bad input gets one clear line naming the file, key, row, modality or value."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from altmodal import load_run
from altmodal.cli import main
from altmodal.config import ConfigError
from altmodal.data.features import DataError
from altmodal.runs import Run
from tests.conftest import TINY
from tests.test_trust import one_line_error

TRAIN = ["--epochs", "1", "--hidden", "8", "--dim", "4", "--folds", "1", "--quiet"]
SYNTHETIC = ["--dataset", "synthetic", "--hidden", "8", "--dim", "4", "--batch-size", "32", "--folds", "1", "--quiet"]
SYNTHETIC += [arg for item in TINY for arg in ("--dataset-option", item)]
BENCH = ["benchmark", "--strategies", "joint", "--seeds", "0", "--ablation", "none", "--train-missing-rates", ""]
BENCH += ["--missing-rates", "0.5", "--jobs", "1"]
ROWS = 120
LINUX = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table in /proc")


def arrays_of(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    """D: 120 samples, m0 (8 features, informative) and m1 (6), labels 0/1, float64."""
    rng = np.random.default_rng(0)
    label = np.arange(ROWS) % 2
    path = tmp_path_factory.mktemp("data") / "D.npz"
    np.savez(path, m0=rng.normal(size=(ROWS, 8)) + label[:, None], m1=rng.normal(size=(ROWS, 6)), label=label)
    return path


@pytest.fixture(scope="module")
def run(features, tmp_path_factory) -> Path:
    """R: a finished run on D."""
    out = tmp_path_factory.mktemp("run") / "R"
    assert main(["train", "--dataset", str(features), "--out", str(out), *TRAIN]) == 0
    return out


def copy_of(folder: Path, target: Path) -> Path:
    shutil.copytree(folder, target)
    return target


@contextmanager
def within(seconds: int) -> Iterator[None]:
    """Fail instead of hanging: a TimeoutError once ``seconds`` have passed."""

    def fail(*_: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ----- 1. nothing the user owns is lost ---------------------------------------------------------------


def test_train_refuses_a_folder_holding_another_tools_config(features, tmp_path, capsys):
    out = tmp_path / "theirs"
    out.mkdir()
    owned = {"config.json": '{"tool": "other", "learning_rate": 3}', "notes.txt": "mine"}
    for name, text in owned.items():
        (out / name).write_text(text)
    argv = ["train", "--dataset", str(features), "--out", str(out), *TRAIN]
    assert main(argv) == 2
    assert "holds files of its own (config.json, notes.txt) and no run" in one_line_error(capsys)
    (out / "notes.txt").unlink()  # a lone config.json that is not a run's makes no run either
    assert main(argv) == 2
    assert "holds files of its own (config.json) and no run" in one_line_error(capsys)
    assert (out / "config.json").read_text() == owned["config.json"]
    assert main([*argv, "--overwrite"]) == 0


def test_a_lone_config_of_an_unfinished_start_still_counts_as_a_run(features, run, tmp_path):
    out = tmp_path / "started"
    out.mkdir()
    (out / "config.json").write_bytes((run / "config.json").read_bytes())
    assert main(["train", "--dataset", str(features), "--out", str(out), *TRAIN]) == 0


def test_benchmark_refuses_a_folder_of_the_users_own_files(features, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    owned = {"report.md": "# my report", "main.csv": "a,b\n1,2\n", "notes.txt": "mine"}
    for name, text in owned.items():
        (out / name).write_text(text)
    assert main([*BENCH, "--dataset", str(features), "--out", str(out), *TRAIN]) == 2
    assert "holds files of its own (main.csv, notes.txt, report.md) and no benchmark" in one_line_error(capsys)
    assert {name: (out / name).read_text() for name in owned} == owned
    assert sorted(p.name for p in out.iterdir()) == sorted(owned)


def test_train_and_benchmark_refuse_each_others_folders(run, benchmark, features, tmp_path, capsys):
    theirs = copy_of(run, tmp_path / "R")
    assert main([*BENCH, "--dataset", str(features), "--out", str(theirs), *TRAIN]) == 2
    assert "and no benchmark" in one_line_error(capsys)
    bench = copy_of(benchmark, tmp_path / "b")
    assert main(["train", "--dataset", str(features), "--out", str(bench), *TRAIN]) == 2
    assert "and no run" in one_line_error(capsys)
    assert sorted(p.name for p in theirs.iterdir()) == sorted(p.name for p in run.iterdir())


def test_predict_never_writes_over_its_input(run, features, tmp_path, capsys):
    data = tmp_path / "my.npz"
    shutil.copy(features, data)
    before = data.read_bytes()
    for extra in ([], ["--overwrite"]):
        assert main(["predict", "--run", str(run), "--data", str(data), "--out", str(data), *extra]) == 2
        assert f"--out {data}: is the --data file" in one_line_error(capsys)
        assert data.read_bytes() == before


def test_predict_refuses_to_overwrite_a_users_file(run, features, tmp_path, capsys):
    out = tmp_path / "results.csv"
    out.write_text("name,score\nalice,3\n")
    argv = ["predict", "--run", str(run), "--data", str(features), "--out", str(out)]
    assert main(argv) == 2
    err = one_line_error(capsys)
    assert f"--out {out}: exists and is not a predictions file of altmodal" in err and "--overwrite" in err
    assert out.read_text() == "name,score\nalice,3\n"
    assert main([*argv, "--overwrite"]) == 0
    assert out.read_text().startswith("index,label,prediction,prob_0,prob_1,")
    out.write_text(out.read_text().replace("\n", "\n", 1))
    assert main(argv) == 0  # a predictions file it wrote is replaced without asking


def test_predict_refuses_to_write_over_a_run_file_or_through_a_link(run, features, tmp_path, capsys):
    mine = copy_of(run, tmp_path / "R")
    metrics = (mine / "metrics.json").read_text()
    argv = ["predict", "--run", str(mine), "--data", str(features)]
    assert main([*argv, "--out", str(mine / "metrics.json")]) == 2
    assert "is not a predictions file of altmodal" in one_line_error(capsys)
    assert (mine / "metrics.json").read_text() == metrics
    target = tmp_path / "precious.csv"
    target.write_text("index,prediction\n0,mine\n")  # looks like one, but the link is not ours to follow
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    assert main([*argv, "--out", str(link)]) == 2
    assert f"--out {link}: is a link" in one_line_error(capsys)
    assert main([*argv, "--out", str(link), "--overwrite"]) == 0
    assert target.read_text() == "index,prediction\n0,mine\n" and not link.is_symlink()


# ----- 2. no silently wrong result ---------------------------------------------------------------------


@pytest.mark.parametrize("member", ["m0.npy", "m0"])
def test_a_feature_file_with_two_arrays_of_one_name_is_refused(features, tmp_path, capsys, member):
    crafted = tmp_path / "twice.npz"
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((ROWS, 8)))
    with zipfile.ZipFile(features) as source, zipfile.ZipFile(crafted, "w") as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns of the duplicate name
            target.writestr(member, buffer.getvalue())
    assert main(["train", "--dataset", str(crafted), "--out", str(tmp_path / "r"), *TRAIN]) == 2
    assert f"{crafted}: holds two arrays named 'm0'" in one_line_error(capsys)
    assert main(["predict", "--run", str(tmp_path / "r"), "--data", str(crafted)]) == 2
    capsys.readouterr()


@pytest.mark.parametrize("present", [",", "", " , "])
def test_predict_with_a_present_that_names_no_modality_is_refused(run, features, tmp_path, capsys, present):
    out = tmp_path / "p.csv"
    assert main(["predict", "--run", str(run), "--data", str(features), "--present", present, "--out", str(out)]) == 2
    assert "--present names no modality" in one_line_error(capsys)
    assert not out.exists()
    with pytest.raises(DataError, match="present names no modality"):
        load_run(run).predict(features, present=[])


def _with_huge_test_value(features: Path, path: Path) -> Path:
    arrays = arrays_of(features)
    arrays["split"] = np.array(["train"] * 80 + ["val"] * 20 + ["test"] * 20)
    arrays["m0"][110, 3] = 1e300
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("standardize", [[], ["--no-standardize"]])
def test_a_value_beyond_float32_is_named_instead_of_scored(features, tmp_path, capsys, standardize):
    huge = _with_huge_test_value(features, tmp_path / "huge.npz")
    assert main(["train", "--dataset", str(huge), "--out", str(tmp_path / "r"), *TRAIN, *standardize]) == 2
    err = one_line_error(capsys)
    assert f"{huge}: array 'm0': row 110 holds 1e+300 at feature 3" in err and "float32" in err
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_predict_on_a_value_beyond_float32_names_it(run, features, tmp_path, capsys):
    huge = _with_huge_test_value(features, tmp_path / "huge.npz")
    assert main(["predict", "--run", str(run), "--data", str(huge), "--out", str(tmp_path / "p.csv")]) == 2
    assert f"{huge}: array 'm0': row 110 holds 1e+300 at feature 3" in one_line_error(capsys)


def test_nan_scores_count_as_no_class_in_metrics_as_in_predictions():
    from altmodal.metrics import Outputs, accuracy, macro_f1, summarize
    from altmodal.predictions import prediction_rows

    nan = float("nan")
    fused = torch.tensor([[nan, nan], [2.0, 1.0], [0.0, 3.0], [float("inf"), 0.0]])
    label = torch.tensor([0, 0, 1, 0])
    assert accuracy(fused, label) == pytest.approx(0.5)  # NaN or infinite scores predict no class
    assert macro_f1(fused, label, 2) == pytest.approx((2 / 4 + 1) / 2)
    present = {"a": torch.ones(4, dtype=torch.bool)}
    outputs = Outputs(label, torch.arange(4), present, fused, {"a": fused}, {"a": torch.zeros(4, 2)})
    rows = prediction_rows(outputs, ["x", "y"])
    block = summarize(outputs, 2)
    assert block["fused"]["accuracy"] == np.mean([r["prediction"] == r["label"] for r in rows])  # type: ignore[index]


def test_data_from_python_under_new_modality_names_is_another_run(features, tmp_path):
    from altmodal.experiment import resolve, train_run

    config = resolve({"epochs": 1, "hidden": (8,), "dim": 4})
    arrays = arrays_of(features)
    out = tmp_path / "r"
    assert train_run(config, out, data=arrays)["modalities"] == ["m0", "m1"]
    renamed = {"audio": arrays["m0"], "video": arrays["m1"], "label": arrays["label"]}
    with pytest.raises(ConfigError, match="holds a run with another config"):
        train_run(config, out, data=renamed)
    assert train_run(config, out, data=renamed, overwrite=True)["modalities"] == ["audio", "video"]


def test_the_fingerprint_of_data_covers_names_shapes_and_types(features):
    from altmodal.data.user import fingerprint, loaded_from

    arrays = arrays_of(features)
    base = fingerprint(loaded_from(arrays))
    variants = [
        {"m0": arrays["m1"], "m1": arrays["m0"], "label": arrays["label"]},  # names swapped
        {**arrays, "m0": arrays["m0"].reshape(ROWS, 2, 4)},  # the same bytes in another shape
        {**arrays, "m0": arrays["m0"].view(np.int64)},  # the same bytes as another type
    ]
    assert len({base, *(fingerprint(loaded_from(v)) for v in variants)}) == 4
    assert fingerprint(loaded_from(dict(arrays))) == base


@pytest.mark.parametrize(
    "line, shown", [("epochs = true", "epochs = True"), ("lr = false", "lr = False"), ("hidden = [true]", "hidden")]
)
def test_a_bool_where_a_number_belongs_is_refused(features, tmp_path, capsys, line, shown):
    pytest.importorskip("tomllib")
    conf = tmp_path / "conf.toml"
    conf.write_text(line + "\n")
    argv = ["train", "--config", str(conf), "--dataset", str(features), "--out", str(tmp_path / "r"), "--quiet"]
    assert main(argv) == 2
    err = one_line_error(capsys)
    assert f"{conf}: {shown}" in err and "not a valid" in err
    assert not (tmp_path / "r").exists()


def test_weights_for_a_modality_the_data_lacks_are_refused(features, tmp_path, capsys):
    weights = tmp_path / "w.pt"
    torch.save({}, weights)
    argv = ["train", "--dataset", str(features), "--weights", f"mo={weights}", "--out", str(tmp_path / "r"), *TRAIN]
    assert main(argv) == 2
    assert "--weights names modality 'mo'; the modalities are m0, m1" in one_line_error(capsys)


def test_a_run_without_its_preprocessing_does_not_predict_on_raw_inputs(run, features, tmp_path, capsys):
    mine = copy_of(run, tmp_path / "R")
    (mine / "preprocessing.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"preprocessing.safetensors: not found"):
        load_run(mine)
    assert main(["predict", "--run", str(mine), "--data", str(features), "--out", str(tmp_path / "p.csv")]) == 2
    err = one_line_error(capsys)
    assert "preprocessing.safetensors" in err and "train it again" in err


def test_a_preprocessing_file_without_a_modality_is_named(run, tmp_path):
    from safetensors.torch import load_file, save_file

    mine = copy_of(run, tmp_path / "R")
    stats = load_file(str(mine / "preprocessing.safetensors"))
    save_file({k: v for k, v in stats.items() if not k.startswith("m1.")}, str(mine / "preprocessing.safetensors"))
    with pytest.raises(ValueError, match=r"preprocessing.safetensors: has no statistics of modality 'm1'"):
        load_run(mine)


# ----- 3. no leaks, no hangs ---------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z"


def _end(pids: list[int]) -> None:
    for pid in pids:  # processes this test started
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


@LINUX
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is unavailable")
def test_killing_train_nproc_ends_torchrun_and_its_ranks(tmp_path):
    argv = [sys.executable, "-m", "altmodal", "train", "--nproc", "2", "--epochs", "10000", *SYNTHETIC]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen(
        [*argv, "--out", str(tmp_path / "r")],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    family: list[int] = []
    try:
        deadline = time.time() + 120
        while True:
            launchers = _children(parent.pid)
            ranks = [rank for pid in launchers for rank in _children(pid)]
            if len(ranks) >= 2:
                break
            assert time.time() < deadline and parent.poll() is None, "the ranks did not start"
            time.sleep(0.05)
        family = launchers + ranks
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 15
        while any(_alive(pid) for pid in family):
            assert time.time() < deadline, f"outlived the command: {[_cmdline(p) for p in family if _alive(p)]}"
            time.sleep(0.1)
    finally:
        _end([parent.pid, *family])


def _console_script(folder: Path) -> Path:
    """The ``altmodal`` command as pip writes it from pyproject.toml's entry point."""
    tomllib = pytest.importorskip("tomllib")
    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["altmodal"].partition(":")
    script = folder / "altmodal"
    script.write_text(
        f"import sys\nfrom {module} import {function}\nif __name__ == '__main__':\n    sys.exit({function}())\n"
    )
    return script


def test_worker_processes_watch_their_parent_before_importing_torch(tmp_path):
    """A spawned worker first runs the command's main module, then unpickles its initializer
    (watch_parent): neither may import torch, which takes seconds."""
    module = _console_script(tmp_path).read_text().split("from ", 1)[1].split(" import")[0]
    code = f"import sys, altmodal.workers, {module}; print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@LINUX
@pytest.mark.parametrize("launcher", ["console script", "python -m"])
def test_killing_a_benchmark_right_after_its_workers_start_ends_them(features, tmp_path, launcher):
    command = [sys.executable, str(_console_script(tmp_path))] if launcher == "console script" else [sys.executable]
    command += [] if launcher == "console script" else ["-m", "altmodal"]
    argv = [*command, *BENCH[:-1], "2", "--dataset", str(features), "--out", str(tmp_path / "b"), *TRAIN]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen(argv, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    workers: list[int] = []
    try:
        deadline = time.time() + 120
        while len(workers) < 2:
            workers = [p for p in _children(parent.pid) if "spawn_main" in _cmdline(p)]
            assert time.time() < deadline and parent.poll() is None, parent.stderr.read() if parent.stderr else ""
            time.sleep(0.01)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 2.5
        while any(_alive(pid) for pid in workers):
            assert time.time() < deadline, "the workers outlived the benchmark"
            time.sleep(0.05)
    finally:
        _end([parent.pid, *workers])


def test_a_fifo_as_config_json_or_lock_is_one_clear_line(run, features, tmp_path, capsys):
    mine = copy_of(run, tmp_path / "R")
    (mine / "config.json").unlink()
    os.mkfifo(mine / "config.json")
    with within(20):
        assert main(["evaluate", "--run", str(mine)]) == 2
    assert f"{mine / 'config.json'}: is a FIFO, not a regular file" in one_line_error(capsys)
    out = tmp_path / "new"
    out.mkdir()
    os.mkfifo(out / ".lock")
    with within(20):
        assert main(["train", "--dataset", str(features), "--out", str(out), *TRAIN]) == 2
    assert f"{out / '.lock'}: is a FIFO, not a lock file" in one_line_error(capsys)
    fifo = tmp_path / "data.npz"
    os.mkfifo(fifo)
    with within(20):
        assert main(["predict", "--run", str(run), "--data", str(fifo), "--out", str(tmp_path / "p.csv")]) == 2
    assert f"{fifo}: is not a regular file" in one_line_error(capsys)
    conf = tmp_path / "conf.json"
    os.mkfifo(conf)
    with within(20):
        assert main(["train", "--config", str(conf), "--dataset", str(features), "--out", str(out), *TRAIN]) == 2
    assert f"{conf}: is a FIFO, not a regular file" in one_line_error(capsys)


def _with_memory(gib: int, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """The command in a process that may use ``gib`` GiB of memory (so that a failure to check
    sizes ends in an allocation error there, not in the machine running out of memory)."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (gib << 30, gib << 30))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "altmodal", *argv]
    return subprocess.run(command, preexec_fn=limit, env=env, capture_output=True, text=True, timeout=300)


@LINUX
def test_a_device_file_as_config_json_is_one_clear_line(run, tmp_path):
    mine = copy_of(run, tmp_path / "R")
    (mine / "config.json").unlink()
    (mine / "config.json").symlink_to("/dev/zero")  # endless: read whole, it fills the memory
    done = _with_memory(4, ["evaluate", "--run", str(mine)])
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{mine / 'config.json'}: is a character device, not a regular file" in done.stderr


@LINUX
def test_a_huge_layer_is_refused_before_it_is_built(run, features, tmp_path):
    mine = copy_of(run, tmp_path / "R")
    config = json.loads((mine / "config.json").read_text())
    config["encoder"]["hidden"] = [200_000_000, 200_000_000]
    (mine / "config.json").write_text(json.dumps(config))
    done = _with_memory(8, ["evaluate", "--run", str(mine)])
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr[-2000:]
    assert "encoder of modality 'm0' (mlp) would hold 4e+16 parameters" in done.stderr and "--hidden" in done.stderr
    # the width of the report: 2.4e9 parameters, in a process that may use 8 GiB
    conf = tmp_path / "big.json"
    conf.write_text(json.dumps({"hidden": [200_000_000]}))
    argv = ["train", "--config", str(conf), "--dataset", str(features), "--out", str(tmp_path / "r"), "--quiet"]
    done = _with_memory(8, argv)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr[-2000:]
    assert "--hidden 200000000" in done.stderr and "GiB" in done.stderr
    assert not (tmp_path / "r" / "config.json").exists()


# ----- 4. one clear line instead of a traceback -----------------------------------------------------------


def _interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    out = tmp_path / "cut"
    argv = ["train", "--out", str(out), *SYNTHETIC, "--epochs", "3"]
    original = Run.on_epoch_end

    def stop_after_first(self: Run, strategy: object, state: dict) -> None:
        original(self, strategy, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(Run, "on_epoch_end", stop_after_first)
    assert main(argv) == 130
    monkeypatch.setattr(Run, "on_epoch_end", original)
    return out, argv


@pytest.mark.parametrize(
    "edit, message",
    [
        ("rng = {}", "'rng' is not a saved random state"),
        ("rng torch = text", "'rng' is not a saved random state"),
        ("best model = {}", "'best' holds parameters of another model (missing "),
        ("training model = {}", "'training' holds parameters of another model (missing "),
    ],
)
def test_a_checkpoint_with_a_bad_rng_or_model_is_one_clear_line(tmp_path, monkeypatch, capsys, edit, message):
    out, argv = _interrupted(tmp_path, monkeypatch)
    capsys.readouterr()
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    if edit == "rng = {}":
        state["rng"] = {}
    elif edit == "rng torch = text":
        state["rng"]["torch"] = "text"
    elif edit == "best model = {}":
        state["best"]["model"] = {}
    else:
        state["training"]["model"] = {}
    torch.save(state, out / "checkpoint.pt")
    assert main(argv) == 2
    err = one_line_error(capsys)
    assert f"{out / 'checkpoint.pt'}: {message}" in err and "delete it to start the run afresh" in err


@pytest.mark.parametrize("suffix", [".toml", ".json", ".cfg"])
def test_a_binary_config_file_is_one_clear_line(features, tmp_path, capsys, suffix):
    conf = tmp_path / f"conf{suffix}"
    conf.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x01")
    assert main(["train", "--config", str(conf), "--dataset", str(features), "--out", str(tmp_path / "r")]) == 2
    assert f"{conf}: not UTF-8 text" in one_line_error(capsys)


@pytest.mark.parametrize(
    "text, message",
    [
        ("epoch = 3\n", "unknown setting 'epoch'"),
        ("[train]\nlr = 'fast'\n", "lr = 'fast' is not a valid float"),
        ("optimizer = 'lbfgs'\n", "optimizer = 'lbfgs' is not one of sgd, adam, adamw"),
    ],
)
def test_a_config_file_error_names_the_file_and_the_key(features, tmp_path, capsys, text, message):
    pytest.importorskip("tomllib")
    conf = tmp_path / "conf.toml"
    conf.write_text(text)
    for command in (["train", "--out", str(tmp_path / "r")], [*BENCH, "--out", str(tmp_path / "b")]):
        assert main([*command, "--config", str(conf), "--dataset", str(features), "--quiet"]) == 2
        err = one_line_error(capsys)
        assert f"{conf}: {message}" in err and "command line" not in err


def test_a_benchmark_config_file_sets_the_grid_and_names_itself(features, tmp_path, capsys):
    pytest.importorskip("tomllib")
    conf = tmp_path / "grid.toml"
    conf.write_text('seeds = [0]\nstrategies = ["joint"]\nablation = "none"\ntrain_missing_rates = []\n')
    argv = ["benchmark", "--config", str(conf), "--missing-rates", "", "--dataset", str(features), *TRAIN]
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    runs = sorted(p.name.split("-seed")[0] for p in (tmp_path / "b" / "runs").iterdir())
    assert runs == ["joint", "unimodal", "unimodal"]
    conf.write_text("seeds = [true]\n")
    assert main([*argv, "--out", str(tmp_path / "c")]) == 2
    assert f"{conf}: seeds = [True] is not a valid list of int" in one_line_error(capsys)
    conf.write_text('suite = "quick"\n')
    assert main([*argv, "--out", str(tmp_path / "c")]) == 2
    assert f"{conf}: suite is set on the command line only" in one_line_error(capsys)


@pytest.mark.parametrize(
    "damage",
    ["[1, 2]", "no modalities", "classes 5", "shape text", "no encoder", "best_epoch text", "not JSON"],
)
def test_a_damaged_model_json_is_one_clear_line(run, features, tmp_path, capsys, damage):
    mine = copy_of(run, tmp_path / "R")
    card = json.loads((mine / "model.json").read_text())
    if damage == "no modalities":
        del card["modalities"]
    elif damage == "classes 5":
        card["classes"] = 5
    elif damage == "shape text":
        card["modalities"]["m0"]["shape"] = "eight"
    elif damage == "no encoder":
        del card["modalities"]["m1"]["encoder"]
    elif damage == "best_epoch text":
        card["best_epoch"] = "first"
    text = {"[1, 2]": "[1, 2]", "not JSON": "{"}.get(damage, json.dumps(card))
    (mine / "model.json").write_text(text)
    assert main(["predict", "--run", str(mine), "--data", str(features), "--out", str(tmp_path / "p.csv")]) == 2
    assert f"{mine / 'model.json'}: " in one_line_error(capsys)


@pytest.fixture(scope="module")
def benchmark(features, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "b"
    assert main([*BENCH, "--dataset", str(features), "--out", str(out), *TRAIN]) == 0
    return out


@pytest.mark.parametrize("damage", ["text", "FIFO"])
def test_a_benchmark_rerun_over_a_damaged_history_is_one_clear_line(benchmark, features, tmp_path, capsys, damage):
    mine = copy_of(benchmark, tmp_path / "b")
    history = next((mine / "runs").glob("joint-*")) / "history.csv"
    if damage == "text":
        history.write_text("epoch,train_loss\n1,abc\n")
    else:
        history.unlink()
        os.mkfifo(history)
    with within(60):
        assert main([*BENCH, "--dataset", str(features), "--out", str(mine), *TRAIN]) == 2
    err = one_line_error(capsys)
    shown = "row 1, column 'train_loss' holds 'abc', not a number" if damage == "text" else "is a FIFO"
    assert f"{history}: {shown}" in err and "delete" in err


@pytest.mark.parametrize(
    "text",
    [
        '{"0.5": {"accuracy": "high", "missing": 3}}',
        '{"0.5": {"missing": {}}}',
        '{"half": {"accuracy": 0.5, "missing": {"realised_share": 0.4, "single_modality_share": 0.7}}}',
        "[1, 2]",
        "{",
    ],
)
def test_a_benchmark_rerun_over_a_hand_edited_missing_json_evaluates_again(
    benchmark, features, tmp_path, capsys, caplog, text
):
    mine = copy_of(benchmark, tmp_path / "b")
    cached = next((mine / "runs").glob("joint-*")) / "missing.json"
    good = json.loads(cached.read_text())
    cached.write_text(text)
    with caplog.at_level(logging.WARNING):
        assert main([*BENCH, "--dataset", str(features), "--out", str(mine), *TRAIN]) == 0
    assert f"{cached}: " in caplog.text and "evaluated again" in caplog.text
    assert json.loads(cached.read_text()) == good


def _cache(folder: Path) -> Path:
    from altmodal.data.corpora.cache import FORMAT, VERSION

    folder.mkdir()
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "dataset": "cremad",
        "status": "complete",
        "classes": ["a", "b"],
        "num_samples": 4,
        "modalities": {"audio": {"file": "audio.npy", "shape": [3], "dtype": "float16", "kind": "mlp"}},
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    np.save(folder / "audio.npy", np.zeros((4, 3), np.float16))
    np.save(folder / "present.npy", np.ones((4, 1), bool))
    for name, values in (("labels", [0, 1, 0, 1]), ("keys", ["a", "b", "c", "d"]), ("split", ["train"] * 4)):
        np.save(folder / f"{name}.npy", np.array(values))
    np.save(folder / "group.npy", np.array([""] * 4))
    return folder


def test_a_media_cache_without_its_dataset_is_one_clear_line(tmp_path, capsys):
    from altmodal.data.corpora.cache import open_cache

    cache = _cache(tmp_path / "cache")
    meta = json.loads((cache / "meta.json").read_text())
    del meta["dataset"]
    (cache / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"meta.json: has no 'dataset'"):
        open_cache(cache, "cremad")
    argv = ["train", "--dataset", "cremad", "--data-dir", str(cache), "--out", str(tmp_path / "r"), "--quiet"]
    assert main(argv) == 2
    assert f"{cache / 'meta.json'}: has no 'dataset'" in one_line_error(capsys)


def test_a_media_cache_naming_a_file_outside_itself_is_refused(tmp_path):
    from altmodal.data.corpora.cache import open_cache

    cache = _cache(tmp_path / "cache")
    np.save(tmp_path / "elsewhere.npy", np.zeros((4, 3), np.float16))
    meta = json.loads((cache / "meta.json").read_text())
    meta["modalities"]["audio"]["file"] = "../elsewhere.npy"
    (cache / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"meta.json: modality 'audio' has no file name"):
        open_cache(cache, "cremad")


def test_a_pickled_array_in_a_media_cache_is_named(tmp_path):
    from altmodal.data.corpora.cache import open_cache

    cache = _cache(tmp_path / "cache")
    np.save(cache / "labels.npy", np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"labels.npy: holds pickled Python objects"):
        open_cache(cache, "cremad")


def test_an_out_inside_a_file_is_one_clear_line(run, features, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    for argv in (
        ["train", "--dataset", str(features), "--out", str(notes / "run"), *TRAIN],
        ["predict", "--run", str(run), "--data", str(features), "--out", str(notes / "p.csv")],
        [*BENCH, "--dataset", str(features), "--out", str(notes / "b"), *TRAIN],
    ):
        assert main(argv) == 2
        assert f"{notes}: is a file, not a folder" in one_line_error(capsys)
    assert notes.read_text() == "mine"


def test_a_lock_that_is_a_directory_or_a_link_is_one_clear_line(features, tmp_path, capsys):
    out = tmp_path / "r"
    (out / ".lock").mkdir(parents=True)
    argv = ["train", "--dataset", str(features), "--out", str(out), *TRAIN]
    assert main(argv) == 2
    assert f"{out / '.lock'}: is a directory, not a lock file" in one_line_error(capsys)
    (out / ".lock").rmdir()
    precious = tmp_path / "precious.txt"
    precious.write_text("mine")
    (out / ".lock").symlink_to(precious)
    assert main(argv) == 2
    assert f"{out / '.lock'}: is a link, not a lock file" in one_line_error(capsys)
    assert precious.read_text() == "mine"


@pytest.mark.parametrize("seed", [str(2**70), "-1", str(2**32)])
def test_a_seed_out_of_range_says_the_range(features, tmp_path, capsys, seed):
    assert main(["train", "--dataset", str(features), "--seed", seed, "--out", str(tmp_path / "r"), *TRAIN]) == 2
    assert f"--seed must be in [0, 4294967295] (got {seed})" in one_line_error(capsys)
    assert main([*BENCH, "--seeds", seed, "--dataset", str(features), "--out", str(tmp_path / "b"), *TRAIN]) == 2
    assert f"--seed must be in [0, 4294967295] (got {seed})" in one_line_error(capsys)


def test_predict_on_no_samples_is_one_clear_line(run, tmp_path, capsys):
    empty = tmp_path / "empty.npz"
    np.savez(empty, m0=np.zeros((0, 8)), m1=np.zeros((0, 6)))
    assert main(["predict", "--run", str(run), "--data", str(empty), "--out", str(tmp_path / "p.csv")]) == 2
    assert f"{empty}: holds no samples" in one_line_error(capsys)
    with pytest.raises(DataError, match="inputs: holds no samples"):
        load_run(run).predict({"m0": np.zeros((0, 8))})


@pytest.mark.parametrize("inputs", [np.zeros((3, 14)), [[0.0] * 14] * 3, 7])
def test_predict_on_an_array_or_a_list_asks_for_a_dict_of_modality_arrays(run, inputs):
    with pytest.raises(DataError, match=r"a dict of modality arrays \('m0': \(N, 8\), 'm1': \(N, 6\)\)"):
        load_run(run).predict(inputs)


def test_a_present_mask_of_the_wrong_length_or_modality_is_named(run, features):
    model = load_run(run)
    with pytest.raises(DataError, match=r"present\['m1'\]: 5 entries for 120 samples"):
        model.predict(features, present={"m1": np.ones(5, bool)})
    with pytest.raises(DataError, match=r"present: 'mx' is not one of this model's modalities \(m0, m1\)"):
        model.predict(features, present={"mx": np.ones(ROWS, bool)})
    with pytest.raises(DataError, match=r"present\['m0'\]: holds 2 at row 0; give booleans"):
        model.predict(features, present={"m0": np.full(ROWS, 2)})
    assert (model.predict(features, present={"m0": np.ones(ROWS, bool)}) != "").all()
    # a string names modalities, as --present does (not its characters)
    assert (model.predict(features, present="m0") == model.predict(features, present=["m0"])).all()


# ----- 5. messages ---------------------------------------------------------------------------------------


def test_errors_show_no_terminal_escape_codes(tmp_path, capsys):
    name = tmp_path / "\x1b[31mred\x1b[0m\nline.npz"
    assert main(["train", "--dataset", str(name), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = one_line_error(capsys)
    assert "\x1b" not in err and "\\x1b[31mred" in err and "\\nline.npz" in err


@pytest.mark.parametrize("content", ["", "garbage\n", "12 34\n"])
def test_an_unreadable_lock_is_taken_over_with_a_clear_message(features, tmp_path, caplog, content):
    out = tmp_path / "r"
    out.mkdir()
    (out / ".lock").write_text(content)
    with caplog.at_level(logging.WARNING):
        assert main(["train", "--dataset", str(features), "--out", str(out), *TRAIN]) == 0
    assert "process None" not in caplog.text
    if content:
        assert f"taking over the lock {out / '.lock'}, which names no process ({content!r})" in caplog.text


def test_labels_in_messages_are_plain_strings(run, features, tmp_path):
    arrays = arrays_of(features)
    arrays["label"] = np.array(["7"] * ROWS)
    with pytest.raises(DataError, match=r"label '7' \(row 0\) is not one of this model's classes \(0, 1\)") as err:
        load_run(run).predict(arrays)
    assert "np.str_" not in str(err.value)


def test_two_processes_cannot_both_take_over_one_stale_lock(tmp_path, monkeypatch):
    """Each contender sees the dead holder before either takes the lock over (the check is
    made to wait for the other one); still only one may hold the folder."""
    import altmodal.runs as runs

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "run"
    folder.mkdir()
    alive = runs._alive
    for _ in range(10):
        (folder / ".lock").write_text(f"{dead.pid}\n")
        both_looked = threading.Barrier(2, timeout=0.2)

        def slow_alive(pid: int, barrier: threading.Barrier = both_looked) -> bool:
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass
            return alive(pid)

        monkeypatch.setattr(runs, "_alive", slow_alive)
        tried = threading.Barrier(2, timeout=5)
        held: list[str] = []

        def contend(name: str, tried: threading.Barrier = tried, held: list[str] = held) -> None:
            try:
                with Run(folder).lock():
                    held.append(name)
                    tried.wait()  # held until the other one has tried too
                    return
            except ConfigError:
                pass
            tried.wait()

        threads = [threading.Thread(target=contend, args=(name,)) for name in "ab"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert len(held) == 1, f"both took over the lock: {held}"
        assert not (folder / ".lock").exists()
