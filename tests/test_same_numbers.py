"""Seeded runs give the numbers they gave before the package's model / loop split.

``tests/golden/runs.json`` holds, for each setting below, what ``train_run`` produced at the commit
before the split: each epoch's training loss and validation accuracy, the test accuracy and the
sum of the absolute values of the saved model's tensors (an OGD basis counts as the projection
it makes, B B^T: the basis itself is an SVD's, defined up to a rotation that differs between
linear-algebra libraries, while its projection is not). Refactoring the loop or a strategy must
leave them where they were (to float32 rounding). Regenerate the file only for a change that is
meant to move the numbers: ``python -m tests.test_same_numbers --write``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

GOLDEN = Path(__file__).parent / "golden" / "runs.json"

SETTINGS: dict[str, dict[str, Any]] = {
    "joint": {"strategy": "joint"},
    "joint-film-zero-features": {"strategy": "joint", "fusion": "film", "absent": "zero-features"},
    "unimodal": {"strategy": "unimodal", "modalities": ("m0",)},
    "ume": {"strategy": "ume"},
    "ogm_ge": {"strategy": "ogm_ge"},
    "qmf": {"strategy": "qmf", "qmf_ranking": "tolerance"},
    "relearn": {"strategy": "relearn", "relearn_every": 1},
    "umt": {"strategy": "umt", "umt_teacher_epochs": 1},
    "mmpareto": {"strategy": "mmpareto", "pareto_rescale": "tensor", "pareto_clip": 0.001},
    "dgl": {"strategy": "dgl"},
    "gblend": {"strategy": "gblend", "gblend_first": 1, "gblend_super_epoch": 1},
    "inforeg": {"strategy": "inforeg", "inforeg_average": 2, "inforeg_unimodal_loss": "slice"},
    "mla-fast": {"strategy": "mla", "preset": "fast"},
    "mla-paper": {"strategy": "mla", "preset": "paper"},
    "mla-reference-code": {"strategy": "mla", "preset": "reference-code"},
    "mla-iteration-random-ogd": {
        "strategy": "mla",
        "cycle": "iteration",
        "order": "random",
        "projection_method": "ogd",
    },
    "mla-pca-ogd-stats": {"strategy": "mla", "projection_method": "pca-ogd", "projection_stats": True},
    "mla-folds": {"strategy": "mla", "folds": 2, "learners": ("none",)},  # the networks (learners: test_learners)
}
COMMON = {"epochs": 3, "train_missing_rate": 0.3, "test_missing_rate": 0.2, "patience": 0}


def run_numbers(name: str, out: Path) -> dict[str, Any]:
    from altmodal.experiment import train_run
    from altmodal.runs import Run, read_csv
    from tests.conftest import tiny_config

    settings = {**COMMON, **SETTINGS[name]}
    if name == "mla-folds":
        settings["patience"] = 2
    config = tiny_config(**settings)
    metrics = train_run(config, out)
    history = read_csv(out / "history.csv")
    tensors = Run(out).load_tensors("model.safetensors", torch.device("cpu"))
    if "projector.others" in tensors:  # orthonormal bases (OGD): counted by the projections they make
        bases = tensors.pop("projector.others").double()
        tensors["projector.others"] = bases @ bases.transpose(1, 2)
    return {
        "train_loss": [float(row["train_loss"]) for row in history],
        "val_accuracy": [float(row["val_accuracy"]) for row in history],
        "test_accuracy": metrics["test"]["fused"]["accuracy"],
        "abs_sum": float(sum(t.double().abs().sum() for t in tensors.values() if t.is_floating_point())),
    }


@pytest.mark.parametrize("name", list(SETTINGS))
def test_seeded_runs_give_the_numbers_of_before(name, tmp_path):
    expected = json.loads(GOLDEN.read_text())[name]
    got = run_numbers(name, tmp_path / "run")
    assert got["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-4)
    assert got["val_accuracy"] == pytest.approx(expected["val_accuracy"], abs=1e-9)
    assert got["test_accuracy"] == pytest.approx(expected["test_accuracy"], abs=1e-9)
    assert got["abs_sum"] == pytest.approx(expected["abs_sum"], rel=1e-4)


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        numbers = {name: run_numbers(name, Path(tmp) / name) for name in SETTINGS}
    GOLDEN.write_text(json.dumps(numbers, indent=1) + "\n")
    print(f"wrote {GOLDEN}")
