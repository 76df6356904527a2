"""UMT: teachers trained alone (stage 1), feature distillation into joint training (stage 2)."""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import altmodal.strategies.umt as umt_module
from altmodal.encoders import EncoderConfig
from altmodal.experiment import resolve, train_run
from altmodal.runs import Run, read_csv
from altmodal.strategies import build_strategy
from altmodal.strategies.base import TrainConfig
from altmodal.trainer import Trainer
from tests.conftest import tiny_config, train_interrupted


def test_distillation_loss_by_hand_with_a_missing_modality(tiny_splits):
    config = resolve({"strategy": "umt", "umt_weight": 2.0})
    umt = build_strategy("umt", tiny_splits, EncoderConfig(dim=8, hidden=(16,)), config.options)
    Trainer.attach(umt, TrainConfig(batch_size=32))
    batch = tiny_splits.train.gather(torch.arange(8).numpy())
    present = dict(batch.present)
    present["m1"] = torch.tensor([True, False] * 4)
    batch = batch.with_present(present)
    umt.train()
    with torch.no_grad():
        z = umt.encode(batch)
        t = {m: umt.teacher(m).encoders[m](batch.inputs[m]) for m in umt.modalities}
        fused = F.cross_entropy(umt.head(z), batch.label)
    d0 = ((z["m0"] - t["m0"]) ** 2).mean(dim=1).mean()
    d1 = ((z["m1"] - t["m1"]) ** 2).mean(dim=1)[0::2].mean()  # present samples only
    out = umt.training_step(batch)
    assert out.extras["umt_distill_m0"] == pytest.approx(float(d0), rel=1e-5)
    assert out.extras["umt_distill_m1"] == pytest.approx(float(d1), rel=1e-5)
    assert float(out.loss) == pytest.approx(float(fused + 2.0 * (d0 + d1)), rel=1e-5)
    assert not umt.teachers.training and all(p.grad is None for p in umt.teachers.parameters())


def test_teachers_train_once_stay_frozen_and_resume_exactly(tmp_path, monkeypatch):
    calls = []
    original_train_alone = umt_module.train_alone

    def counting(loop, model, *args):
        calls.append(model.modalities[0])
        return original_train_alone(loop, model, *args)

    monkeypatch.setattr(umt_module, "train_alone", counting)
    config = tiny_config(strategy="umt", epochs=3, umt_teacher_epochs=2)
    whole = train_run(config, tmp_path / "whole")
    assert calls == ["m0", "m1"]
    rows = read_csv(Run(tmp_path / "whole").file("history.csv"))
    assert all(row["umt_stage1_seconds"] > 0 and 0 <= row["umt_teacher_val_accuracy_m1"] <= 1 for row in rows)
    assert all("umt_distill_m0" in row for row in rows)

    calls.clear()
    run = train_interrupted(config, tmp_path / "cut", monkeypatch)
    assert calls == ["m0", "m1"]  # stage 1 ran before the interruption, not again: the checkpoint held it
    resumed = run["metrics"]
    assert resumed["test"] == whole["test"]
    a = load_file(tmp_path / "whole" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a) and bool(a["teachers_ready"])
    # The student's epochs never moved the teachers.
    teachers = {k: v for k, v in run["cut"]["training"]["model"].items() if k.startswith("teachers.")}
    assert teachers and all(torch.equal(a[k], v) for k, v in teachers.items())
