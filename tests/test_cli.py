import json

import pytest

from altmodal.cli import main
from altmodal.config import ConfigError
from altmodal.experiment import resolve
from tests.conftest import TINY

FAST = ["--dataset", "synthetic", "--epochs", "2", "--hidden", "16", "--dim", "8", "--folds", "1", "--quiet"]
FAST += [arg for item in TINY for arg in ("--dataset-option", item)]


def test_train_writes_the_run_folder_contract(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--strategy", "joint", "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "test fused accuracy" in printed and "m0+m1" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "synthetic" and metrics["strategy"] == "joint" and metrics["seed"] == 0
    assert metrics["modalities"] == ["m0", "m1"]
    test = metrics["test"]
    assert 0 <= test["fused"]["accuracy"] <= 1 and 0 <= test["fused"]["macro_f1"] <= 1
    assert set(test["unimodal"]) == {"m0", "m1"}
    assert set(test["present"]) == {"m0+m1", "m0", "m1"}
    assert test["present"]["m0+m1"]["accuracy"] == test["fused"]["accuracy"]
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["epochs"] == 2 and config["data"]["dataset"] == "synthetic"
    header = (out / "history.csv").read_text().splitlines()[0].split(",")
    for column in ("epoch", "train_loss", "train_loss_m0", "val_accuracy", "val_accuracy_m1"):
        assert column in header
    assert len((out / "history.csv").read_text().splitlines()) == 3
    assert (out / "model.safetensors").is_file() and not (out / "checkpoint.pt").exists()
    assert [line.split(",")[0] for line in (out / "history.csv").read_text().splitlines()] == ["epoch", "1", "2"]


def test_evaluate_with_present_and_missing_rate(tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", "--out", str(out), *FAST])
    capsys.readouterr()
    assert main(["evaluate", "--run", str(out), "--present", "m1", "--json"]) == 0
    only_m1 = json.loads(capsys.readouterr().out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert only_m1["test"]["fused"]["accuracy"] == pytest.approx(metrics["test"]["present"]["m1"]["accuracy"])
    assert main(["evaluate", "--run", str(out), "--missing-rate", "0.5", "--json"]) == 0
    missing = json.loads(capsys.readouterr().out)["missing"]
    assert missing["protocol"] == "independent" and missing["rate"] == 0.5
    # two modalities, each dropped with probability 0.5, one restored where both went: 3/8 missing
    assert missing["realised_share"] == pytest.approx(0.375, abs=0.08)
    assert missing["single_modality_share"] == pytest.approx(0.75, abs=0.12)
    assert main(["evaluate", "--run", str(out), "--missing-rate", "0.5", "--missing-protocol", "share", "--json"]) == 0
    missing = json.loads(capsys.readouterr().out)["missing"]
    assert missing["protocol"] == "share" and missing["realised_share"] == pytest.approx(0.5, abs=0.01)
    assert missing["single_modality_share"] == pytest.approx(1.0)


def test_mfeat_end_to_end(tmp_path):
    out = tmp_path / "mfeat"
    assert (
        main(["train", "--dataset", "mfeat", "--modalities", "fou,mor", "--epochs", "3", "--out", str(out), "--quiet"])
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["modalities"] == ["fou", "mor"] and metrics["test"]["fused"]["accuracy"] > 0.3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "nope"], "unknown dataset 'nope'; built-in datasets: mfeat, synthetic"),
        (["--dataset", "mfeat", "--modalities", "fou,xyz"], "unknown modality 'xyz'; its modalities are fou, fac"),
        (["--dataset", "missing.npz"], "missing.npz: no such feature file"),
        (["--dataset", "synthetic", "--dataset-option", "colour=red"], "unknown option 'colour'"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(tmp_path, capsys, argv, message):
    assert main(["train", "--out", str(tmp_path / "r"), "--epochs", "1", "--quiet", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_unknown_strategy_lists_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--strategy", "lazy"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'lazy' (choose from 'mla', 'joint'," in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["train", "--strategy", "mlaa"],
            "altmodal train: error: argument --strategy: invalid choice: 'mlaa'; did "
            "you mean 'mla'? (see altmodal train --help)",
        ),
        (["train", "--fusion", "sun"], "argument --fusion: invalid choice: 'sun'; did you mean 'sum'?"),
        (["trian"], "altmodal: error: argument command: invalid choice: 'trian'; did you mean 'train'?"),
        (["train", "--epochs"], "altmodal train: error: argument --epochs: expected one argument"),
    ],
)
def test_a_bad_flag_is_answered_in_one_line_without_the_usage(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and len(err.splitlines()) == 1


def test_a_missing_label_column_names_the_closest(tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("audio__0,audio__1,video__0,Label\n" + "0.1,0.2,0.3,a\n" * 4)
    assert main(["train", "--dataset", str(table), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "t.csv: no label column 'label'; did you mean 'Label'? (name it with --label)" in err
    table.write_text("audio__0,audio__1,video__0,video__1,species\n" + "0.1,0.2,0.3,0.4,a\n" * 4)
    assert main(["train", "--dataset", str(table), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no label column 'label' (columns: species, audio__0, audio__1" in err and len(err.splitlines()) == 1


def test_train_prints_its_settings_once_one_progress_line_and_the_chosen_fusion(tmp_path, capsys):
    argv = [a for a in FAST if a != "--quiet"] + ["--folds", "2", "--learners", "none"]
    assert main(["train", "--out", str(tmp_path / "run"), *argv]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("strategy mla (") == 1 and "cross-fitted: 2 members" in captured.out
    progress = [line for line in captured.err.splitlines() if line.startswith("member ")]
    assert progress[0].startswith("member 1/2, epoch 1/2, val accuracy ")  # then one every 10 s, and the last
    assert progress[-1].startswith("member 2/2, epoch 2/2, val accuracy ") and progress[-1].endswith(", ETA 0s")
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())["strategy_summary"]
    chosen = summary["fusion"]
    assert (
        f"fusion rule {chosen}, chosen of {len(summary['fusion_scores'])} candidates on {summary['samples']} "
        f"out-of-fold predictions: honest estimate {summary['fusion_estimate']:.4f} (score when chosen "
        f"{summary['fusion_scores'][chosen]:.4f})"
    ) in captured.out


def test_progress_is_one_line_for_the_whole_run_with_an_eta():
    from types import SimpleNamespace

    from altmodal.callbacks import Progress, duration

    lines, now = [], [0.0]
    progress = Progress(lines.append, epochs=10, every=5.0, clock=lambda: now[0])
    strategy = SimpleNamespace(dist=SimpleNamespace(is_main=True))
    for member in (1, 2):
        progress.on_member_start(member, 2)
        progress.on_fit_start(strategy, None)
        for epoch in range(10):
            now[0] += 1.0
            progress.on_epoch_end(strategy, {"epoch": epoch, "history": [{"val_accuracy": 0.5}]})
    assert lines == [
        "member 1/2, epoch 1/10, val accuracy 0.500, ETA 19s",  # 1 s an epoch, 19 epochs to go
        "member 1/2, epoch 6/10, val accuracy 0.500, ETA 14s",
        "member 2/2, epoch 1/10, val accuracy 0.500, ETA 9s",
        "member 2/2, epoch 6/10, val accuracy 0.500, ETA 4s",
        "member 2/2, epoch 10/10, val accuracy 0.500, ETA 0s",  # the last epoch is always shown
    ]
    assert [duration(s) for s in (7.4, 185, 3725)] == ["7s", "3m05s", "1h02m"]


def test_config_file_fills_and_flags_win(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('epochs = 7\nlr = 0.2\n[data]\ndataset = "synthetic"\n')
    from altmodal.cli import build_parser, settings_from

    args = build_parser().parse_args(["train", "--config", str(path), "--lr", "0.3"])
    config = resolve(settings_from(args))
    assert config.train.epochs == 7 and config.train.lr == 0.3 and config.data.dataset == "synthetic"


def test_config_errors_name_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="unknown setting 'epochz'"):
        resolve({"epochz": 3})
    with pytest.raises(ConfigError, match="epochs = 'many' is not a valid int"):
        resolve({"epochs": "many"})
    with pytest.raises(ConfigError, match="option 'fusion' belongs to strategy joint"):
        resolve({"strategy": "ume", "fusion": "sum"})


def test_a_run_folder_config_can_be_fed_back(tmp_path):
    out = tmp_path / "run"
    main(["train", "--out", str(out), *FAST])
    from altmodal.config import read_config_file

    again = resolve(read_config_file(out / "config.json"))
    assert again.to_dict() == json.loads((out / "config.json").read_text())


def test_rerunning_a_finished_run_skips_it_and_another_config_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", "--out", str(out), *FAST])
    before = (out / "metrics.json").stat().st_mtime_ns
    assert main(["train", "--out", str(out), *FAST]) == 0
    assert (out / "metrics.json").stat().st_mtime_ns == before
    assert main(["train", "--out", str(out), *FAST, "--lr", "0.5"]) == 2
    assert "holds a run with another config" in capsys.readouterr().err


def test_datasets_lists_the_built_ins(capsys):
    assert main(["datasets"]) == 0
    listing = capsys.readouterr().out
    assert "mfeat" in listing and "synthetic" in listing


def test_a_preset_flag_outranks_the_options_of_a_config_file(tmp_path):
    from altmodal.cli import build_parser, settings_from
    from altmodal.experiment import RunConfig

    path = tmp_path / "config.json"
    path.write_text(json.dumps(RunConfig(strategy="mla", options=resolve({"strategy": "mla"}).options).to_dict()))
    args = build_parser().parse_args(["train", "--config", str(path), "--preset", "reference-code", "--alpha", "0.2"])
    options = resolve(settings_from(args)).options
    assert options["preset"] == "reference-code" and options["h_source"] == "batch"
    assert options["test_fusion"] == "batch-entropy" and options["alpha"] == 0.2
    # The same file with another strategy: its MLA options are dropped, not an error.
    args = build_parser().parse_args(["train", "--config", str(path), "--strategy", "joint"])
    assert resolve(settings_from(args)).strategy == "joint"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "--epochs must be at least 1 (got 0)"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--lr", "-1"], "--lr must be positive"),
        (["--dim", "0"], "--dim must be at least 1"),
        (["--device", "tpu"], "device 'tpu'; use auto, cpu, cuda or cuda:N"),
        (["--test-missing-rate", "1.5"], "--test-missing-rate must be in [0, 1)"),
        (["--strategy", "qmf", "--qmf-temperature", "0"], "--qmf-temperature must be positive"),
        (["--strategy", "mla", "--h-momentum", "2"], "--h-momentum must be in [0, 1)"),
        (["--strategy", "mla", "--fusion-weights", "0,0"], "--fusion-weights must be non-negative"),
        (["--strategy", "ogm_ge", "--ogm-start", "5", "--ogm-end", "2"], "--ogm-end must be at least --ogm-start"),
        (["--nproc", "0"], "--nproc must be at least 1"),
    ],
)
def test_bad_numbers_are_refused_before_training(tmp_path, capsys, argv, message):
    assert main(["train", "--out", str(tmp_path / "r"), *FAST, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r" / "history.csv").exists()


def test_unreadable_checkpoint_and_model_files_are_named(tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", "--out", str(out), *FAST])
    (out / "model.safetensors").write_text("not a model")
    assert main(["evaluate", "--run", str(out)]) == 2
    assert "model.safetensors: cannot be read" in capsys.readouterr().err
    (out / "metrics.json").unlink()
    (out / "checkpoint.pt").write_bytes(b"\x80\x04garbage")
    assert main(["train", "--out", str(out), *FAST]) == 2
    assert "checkpoint.pt: cannot be read" in capsys.readouterr().err


def test_a_diverging_run_stops_with_a_clear_message(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), *FAST, "--lr", "1e12"]) == 2
    assert "training diverged in epoch" in capsys.readouterr().err


def test_the_progress_line_is_rewritten_on_a_terminal_and_ended_before_a_message():
    import io
    import logging

    from altmodal.cli import ProgressLine

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    line = ProgressLine(stream)
    line("member 1/2, epoch 1/3")
    line("member 1/2, epoch 2/3")
    assert line.filter(logging.makeLogRecord({"msg": "a warning"})) is True
    line.close()  # nothing more to end
    assert stream.getvalue() == "\rmember 1/2, epoch 1/3\x1b[K\rmember 1/2, epoch 2/3\x1b[K\n"
    assert line.every == 0 and ProgressLine(io.StringIO()).every == 10
