"""Trained runs as products: predict on new files, reload in Python, own encoders and data,
moving runs between folders and devices, training controls, callbacks, the small CLI things."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from altmodal import load_run, resolve, train_run
from altmodal.benchmark import job_devices
from altmodal.callbacks import TensorBoardLogger, fit_summary
from altmodal.cli import main
from altmodal.config import ConfigError
from altmodal.data import collate
from altmodal.data.user import loaded_from
from altmodal.experiment import evaluate_run
from altmodal.optim import build_optimizer, lr_factor
from altmodal.strategies import TrainConfig, build_strategy
from altmodal.trainer import Trainer
from tests.conftest import tiny_config

FAST = ["--epochs", "2", "--hidden", "16", "--dim", "8", "--lr", "0.05", "--folds", "1", "--quiet"]


def feature_file(path, n=160, seed=0):
    """String labels, a (N, 2, 3) modality that a third of the samples lack."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    arrays = {
        "audio": rng.normal(size=(n, 6)) + y[:, None],
        "video": rng.normal(size=(n, 2, 3)) + 0.5 * y[:, None, None],
        "label": np.array(["cat", "dog", "owl"])[y],
        "present_video": rng.random(n) > 0.33,
    }
    np.savez(path, **arrays)
    return arrays


def read_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("products")
    arrays = feature_file(root / "train.npz")
    run = root / "run"
    assert main(["train", "--dataset", str(root / "train.npz"), "--strategy", "mla", "--out", str(run), *FAST]) == 0
    unlabelled = {k: v for k, v in arrays.items() if k != "label"}
    np.savez(root / "new.npz", **unlabelled)
    return root, run, arrays


def test_run_folder_is_self_contained(trained):
    _, run, _ = trained
    card = json.loads((run / "model.json").read_text())
    assert card["classes"] == ["cat", "dog", "owl"]
    assert card["modalities"] == {
        "audio": {"shape": [6], "encoder": "mlp"},
        "video": {"shape": [2, 3], "encoder": "mlp"},
    }
    assert card["versions"]["torch"] == torch.__version__ and card["best_epoch"] in (1, 2)
    assert set(card["preprocessing"]) == {"audio", "video"}
    assert json.loads((run / "config.json").read_text())["data"]["dataset"].startswith("/")  # stored absolute
    rows = read_rows(run / "predictions_test.csv")
    assert list(rows[0])[:6] == ["index", "label", "prediction", "prob_cat", "prob_dog", "prob_owl"]
    absent = [r for r in rows if r["present_video"] == "0"]
    assert absent and all(r["prediction_video"] == "" for r in absent)
    assert all(r["prediction_audio"] in ("cat", "dog", "owl") for r in rows)


def test_predict_on_unlabelled_copy_matches_the_run_and_python(trained, capsys):
    root, run, arrays = trained
    out = root / "preds.csv"
    assert main(["predict", "--run", str(run), "--data", str(root / "new.npz"), "--out", str(out), "-v"]) == 0
    assert "accuracy" not in capsys.readouterr().out  # no accuracy line: the file has no labels
    rows = read_rows(out)
    assert len(rows) == 160 and "label" not in rows[0]
    by_index = {r["index"]: r for r in rows}
    for test_row in read_rows(run / "predictions_test.csv"):
        row = by_index[test_row["index"]]
        assert row["prediction"] == test_row["prediction"]
        assert row["prediction_video"] == test_row["prediction_video"]
    model = load_run(run, device="cpu")
    unlabelled = {k: v for k, v in arrays.items() if k != "label"}
    fused, each = model.predict_proba(unlabelled), model.modality_proba(unlabelled)
    cli = np.array([[float(r[f"prob_{c}"]) for c in model.classes] for r in rows])
    np.testing.assert_allclose(fused, cli, rtol=1e-6)
    missing = ~arrays["present_video"]
    assert np.isnan(each["video"][missing]).all() and not np.isnan(each["video"][~missing]).any()
    assert list(model.predict({"audio": arrays["audio"]})[:3]) == [
        model.classes[int(i)] for i in each["audio"][:3].argmax(1)
    ]
    assert model.embed({"video": arrays["video"]})["video"].shape == (160, 8)


def test_predict_with_labels_prints_accuracy_and_evaluate_agrees(trained, capsys):
    root, run, _ = trained
    assert main(["predict", "--run", str(run), "--data", str(root / "train.npz"), "--out", str(root / "p.csv")]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "160 samples" in printed
    model = load_run(run)
    metrics = model.evaluate(str(root / "train.npz"))
    assert f"accuracy {metrics['fused']['accuracy']:.4f}" in printed
    assert read_rows(root / "p.csv")[0]["label"] in model.classes


@pytest.mark.parametrize(
    "change, message",
    [
        ({"audio": np.zeros((4, 5))}, "modality 'audio' has samples of shape (5,) (5 features); the model was trained"),
        ({"video": np.zeros((4, 3, 2))}, "modality 'video' has samples of shape (3, 2)"),
    ],
)
def test_predict_names_a_mismatch_with_the_run(trained, capsys, change, message):
    root, run, _ = trained
    np.savez(root / "bad.npz", **{"audio": np.zeros((4, 6)), **change})
    assert main(["predict", "--run", str(run), "--data", str(root / "bad.npz"), "--out", str(root / "b.csv")]) == 2
    err = capsys.readouterr().err
    assert message in err and "bad.npz" in err and not (root / "b.csv").exists()


def test_a_moved_run_predicts_and_a_cuda_config_evaluates_on_cpu(trained, tmp_path, capsys):
    root, run, _ = trained
    moved = tmp_path / "elsewhere"
    shutil.copytree(run, moved)
    config = json.loads((moved / "config.json").read_text())
    config["train"]["device"] = "cuda"
    (moved / "config.json").write_text(json.dumps(config))
    for folder, name in ((run, "here.csv"), (moved, "moved.csv")):
        assert (
            main(["predict", "--run", str(folder), "--data", str(root / "new.npz"), "--out", str(tmp_path / name)]) == 0
        )
    assert read_rows(tmp_path / "moved.csv") == read_rows(tmp_path / "here.csv")
    capsys.readouterr()
    assert main(["evaluate", "--run", str(moved), "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    metrics = json.loads((run / "metrics.json").read_text())
    assert result["test"]["fused"]["accuracy"] == pytest.approx(metrics["test"]["fused"]["accuracy"])


def test_evaluate_prints_a_readable_summary_with_counts(trained, capsys):
    _, run, _ = trained
    assert main(["evaluate", "--run", str(run), "--present", "video"]) == 0
    printed = capsys.readouterr().out
    assert "test fused accuracy" in printed and "(n=" in printed and "NaN" not in printed
    assert "audio" in printed and "n/a" in printed  # audio absent everywhere: no accuracy, no NaN
    assert main(["evaluate", "--run", str(run), "--present", "video", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["test"]["unimodal"]["audio"]["accuracy"] is None


class Shallow(nn.Module):
    """A user's encoder: (B, 6) -> (B, width)."""

    def __init__(self, width):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, width), nn.ReLU())

    def forward(self, x):
        return self.net(x)


def test_an_own_encoder_of_the_wrong_width_fails_before_the_first_epoch(tmp_path):
    arrays = feature_file(tmp_path / "f.npz")
    config = resolve({"dataset": "f.npz", "epochs": 1, "hidden": (16,), "dim": 8})
    with pytest.raises(
        ValueError, match=r"encoder of modality 'audio' \(Shallow\) maps .* to \(2, 5\); it must give \(2, 8\)"
    ):
        train_run(config, tmp_path / "r", data=arrays, encoders={"audio": Shallow(5)})
    assert not (tmp_path / "r" / "history.csv").exists()


def test_own_encoder_and_data_from_python_write_a_run_load_run_reads(tmp_path):
    arrays = feature_file(tmp_path / "f.npz")
    config = resolve({"strategy": "joint", "epochs": 1, "hidden": (16,), "dim": 8, "lr": 0.05})
    result = train_run(config, tmp_path / "r", data=arrays, encoders={"audio": Shallow(8)})
    assert 0 <= result["test"]["fused"]["accuracy"] <= 1
    fused = result.model.predict_proba(arrays)
    assert json.loads((tmp_path / "r" / "model.json").read_text())["modalities"]["audio"]["encoder"].endswith("Shallow")
    with pytest.raises(ConfigError, match="modality 'audio' was trained with your own encoder"):
        load_run(tmp_path / "r")
    again = load_run(tmp_path / "r", encoders={"audio": Shallow(8)})
    np.testing.assert_allclose(again.predict_proba(arrays), fused, rtol=1e-6)
    with pytest.raises(ConfigError, match="trained on data handed over from Python"):
        evaluate_run(tmp_path / "r")


def test_a_dataloader_of_batches_gives_the_same_data_as_arrays(tmp_path):
    arrays = feature_file(tmp_path / "f.npz", n=20)
    samples = [
        {
            "inputs": {
                "audio": arrays["audio"][i],
                "video": arrays["video"][i] if arrays["present_video"][i] else None,
            },
            "label": ["cat", "dog", "owl"].index(arrays["label"][i]),
        }
        for i in range(20)
    ]
    loader = torch.utils.data.DataLoader(samples, batch_size=7, collate_fn=collate)
    from_loader = loaded_from(loader).dataset
    from_arrays = loaded_from(arrays).dataset
    np.testing.assert_allclose(from_loader.arrays["audio"], from_arrays.arrays["audio"], rtol=1e-6)
    assert (from_loader.present["video"] == arrays["present_video"]).all()
    assert (from_loader.labels == from_arrays.labels).all()
    assert collate(samples[:2]).inputs["audio"].dtype == torch.float32


def test_encoder_flag_picks_the_visual_resnet_for_an_image_array(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "img.npz", image=rng.random((24, 8, 8)), tab=rng.normal(size=(24, 3)), label=np.arange(24) % 2)
    args = ["--dataset", str(tmp_path / "img.npz"), "--encoder", "image=resnet18-visual", "--resnet-width", "4"]
    assert main(["train", "--out", str(tmp_path / "r"), *args, *FAST[:-1], "--epochs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "image (8, 8) -> VisualResNet" in printed and "sgd lr 0.05" in printed
    card = json.loads((tmp_path / "r" / "model.json").read_text())
    assert card["modalities"]["image"]["encoder"] == "resnet18-visual"
    assert main(["train", "--out", str(tmp_path / "q"), *args[:2], "--encoder", "photo=mlp", *FAST]) == 2
    assert "--encoder names modality 'photo'" in capsys.readouterr().err


def test_schedules_warmup_and_optimizers():
    step = TrainConfig(epochs=10, lr_step=3, lr_gamma=0.5, warmup_epochs=2)
    assert [lr_factor(e, step) for e in range(6)] == [1 / 3, 2 / 3, 1.0, 1.0, 1.0, 0.5]
    cosine = TrainConfig(epochs=4, scheduler="cosine")
    assert [round(lr_factor(e, cosine), 6) for e in range(4)] == [1.0, 0.853553, 0.5, 0.146447]
    assert lr_factor(7, TrainConfig(scheduler="none")) == 1.0
    params = [nn.Parameter(torch.ones(2))]
    assert isinstance(build_optimizer(params, TrainConfig(optimizer="adamw")), torch.optim.AdamW)
    with pytest.raises(ConfigError, match="--warmup-epochs must be in"):
        TrainConfig(epochs=2, warmup_epochs=2)


def test_gradient_clipping_bounds_the_step(tiny_splits):
    config = tiny_config(strategy="joint", epochs=1, lr=1.0, momentum=0.0, weight_decay=0.0, grad_clip=1e-3)
    strategy = build_strategy(config.strategy, tiny_splits, config.encoder, config.options)
    Trainer.attach(strategy, config.train)
    start = [p.detach().clone() for p in strategy.parameters()]
    batch = tiny_splits.train.gather(np.arange(32))
    strategy.training_step(batch)
    moved = torch.sqrt(sum(((p.detach() - s) ** 2).sum() for p, s in zip(strategy.parameters(), start)))
    assert float(moved) <= 1e-3 + 1e-6  # one step: lr 1 x gradient norm clipped at 1e-3


def test_tensorboard_logger_and_start_summary(tmp_path, tiny_splits):
    config = tiny_config(epochs=1)
    logger = TensorBoardLogger(tmp_path / "tb")
    result = train_run(config, tmp_path / "r", callbacks=[logger])
    assert list((tmp_path / "tb").glob("events.out.tfevents.*")) and result["best_epoch"] >= 1
    lines = fit_summary(result.model.strategy, tiny_splits, config.train)
    assert lines[0].startswith("device cpu; samples train") and "parameters" in lines[-1]


def test_small_cli_things(capsys):
    assert main(["datasets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    starts = {line.index(line.split()[1], len(line.split()[0])) for line in lines}
    assert len(starts) == 1  # descriptions start in one column
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "(default: all)" in text and "(default: all) (default" not in text.replace("\n", " ").replace("  ", " ")


def test_benchmark_spreads_runs_over_gpus_not_cores():
    assert job_devices("cuda", 0, 16, 2) == (2, ["cuda:0", "cuda:1"])
    assert job_devices("auto", 0, 16, 0) == (16, ["cpu"])
    assert job_devices("cuda:1", 0, 16, 2) == (1, ["cuda:1"])
    assert job_devices("cpu", 3, 16, 2) == (3, ["cpu"])


def test_predict_on_a_prepared_media_cache(tmp_path, capsys):
    pytest.importorskip("PIL")
    pytest.importorskip("tokenizers")
    from altmodal.prepare import prepare
    from tests.test_corpora_others import fake_food

    fake_food(tmp_path / "food", "jsonl")
    prepare(
        "food101", tmp_path / "food", tmp_path / "cache", {"image_size": "16", "max_tokens": "8", "min_frequency": "1"}
    )
    small = ["--resnet-width", "2", "--text-width", "8", "--text-heads", "2", "--text-layers", "1", "--batch-size", "4"]
    run = tmp_path / "run"
    argv = ["train", "--dataset", "food101", "--data-dir", str(tmp_path / "cache"), "--out", str(run), *small]
    assert main([*argv, *FAST, "--epochs", "1"]) == 0
    capsys.readouterr()
    out = tmp_path / "p.csv"
    assert main(["predict", "--run", str(run), "--data", str(tmp_path / "cache"), "--out", str(out)]) == 0
    rows = read_rows(out)
    assert len(rows) == 12 and {r["label"] for r in rows} == {"apple_pie", "baklava", "sushi"}
    by_index = {r["index"]: r["prediction"] for r in rows}
    assert all(by_index[r["index"]] == r["prediction"] for r in read_rows(run / "predictions_test.csv"))
    assert "accuracy" in capsys.readouterr().out


def test_benchmark_runs_take_the_thread_rule_of_train_and_never_more_threads_than_cores(monkeypatch, tmp_path):
    import altmodal.benchmark as benchmark

    assert job_devices("cpu", 0, 8, 0, 2) == (4, ["cpu"])  # as many 2-thread runs as fit in 8 cores
    assert job_devices("cpu", 0, 2, 0, "auto") == (2, ["cpu"])
    with pytest.raises(ConfigError, match="--threads 2 with --jobs 2 is 4 torch threads on 2 CPU cores"):
        job_devices("cpu", 2, 2, 0, 2)
    seen = {}

    def train(config, path, dist, threads):
        seen.update(asked=threads, torch=torch.get_num_threads())
        return {}

    monkeypatch.setattr(benchmark, "train_run", train)
    before = torch.get_num_threads()
    try:
        benchmark.run_cell(tiny_config().to_dict(), str(tmp_path / "run"), (), budget=2, threads="auto")
    finally:
        torch.set_num_threads(before)
    assert seen == {"asked": "auto", "torch": 2}  # train's rule, within the job's share of the cores
