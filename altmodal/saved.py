"""What a run folder holds about its trained model: model.json's card (everything prediction
needs besides the weights), the weights, and the preprocessing statistics; written by
:mod:`altmodal.experiment`, read by :mod:`altmodal.predictor`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from altmodal.config import first_line
from altmodal.data.dataset import Splits
from altmodal.encoders import encoder_kinds
from altmodal.model import Model
from altmodal.runs import ADVICE, Run
from altmodal.settings import RunConfig
from altmodal.version import __version__


def model_card(
    model: Model, splits: Splits, config: RunConfig, custom: Mapping[str, torch.nn.Module]
) -> dict[str, Any]:
    """What model.json holds: everything prediction needs besides the weights."""
    train = splits.train
    kinds = encoder_kinds(train.kinds, train.input_shapes(), config.encoder)
    kinds.update({m: f"custom:{type(module).__module__}.{type(module).__qualname__}" for m, module in custom.items()})
    card: dict[str, Any] = {
        "format": 1,
        "strategy": config.strategy,
        "dataset": config.data.dataset,
        "dataset_options": list(config.data.dataset_options),
        "classes": [str(c) for c in train.classes],
        "label_type": "integer" if train.integer_labels else "string",
        "modalities": {m: {"shape": list(train.input_shape(m)), "encoder": kinds[m]} for m in train.modalities},
        "num_samples": len(train.labels),
        "preprocessing": {m: "standardize" for m in splits.preprocessing},
        "best_epoch": model.best_epoch,
        "versions": {"altmodal": __version__, "torch": torch.__version__},
    }
    if train.columns:
        card["columns"] = {m: list(train.columns[m]) for m in train.modalities}
        card["label_column"] = config.data.label
    return card


def check_model_card(card: Any, path: Path) -> dict[str, Any]:
    """``card`` (a run's model.json) checked for what prediction reads from it.

    Raises:
        ValueError: an entry is missing or of the wrong kind; the message names ``path`` and it.
    """
    problem = ""
    if not isinstance(card, dict):
        problem = f"holds {type(card).__name__}, not the JSON object of a model"
    elif not isinstance(card.get("classes"), list) or not all(isinstance(c, str) for c in card["classes"]):
        problem = f"'classes' is {_shown(card.get('classes'))}, not a list of class names"
    elif not isinstance(card.get("modalities"), dict) or not card["modalities"]:
        problem = f"'modalities' is {_shown(card.get('modalities'))}, not a table of the model's modalities"
    elif not isinstance(card.get("strategy"), str):
        problem = f"'strategy' is {_shown(card.get('strategy'))}, not a strategy name"
    elif not _count(card.get("num_samples")) or not _count(card.get("best_epoch")):
        problem = "'num_samples' or 'best_epoch' is not a count"
    elif not isinstance(card.get("preprocessing", {}), dict):
        problem = f"'preprocessing' is {_shown(card.get('preprocessing'))}, not a table of modalities"
    else:
        for m, entry in card["modalities"].items():
            shape = entry.get("shape") if isinstance(entry, dict) else None
            if not isinstance(shape, list) or not all(_count(n) and n > 0 for n in shape):
                problem = f"modality {m!r} has shape {_shown(shape)}, not a list of sizes"
            elif not isinstance(entry.get("encoder"), str):
                problem = f"modality {m!r} has encoder {_shown(entry.get('encoder'))}, not an encoder kind"
            if problem:
                break
        unknown = [m for m in card.get("preprocessing", {}) if m not in card["modalities"]]
        if unknown and not problem:
            problem = f"'preprocessing' names modality {unknown[0]!r}, which the model does not have"
    if problem:
        raise ValueError(f"{path}: {problem}; {ADVICE['model.json']}")
    return card


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _shown(value: Any) -> str:
    return "missing" if value is None else repr(value) if len(repr(value)) < 60 else type(value).__name__


def flat_stats(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """``{"<modality>.<name>": tensor}`` for a safetensors file."""
    return {f"{m}.{k}": torch.from_numpy(np.asarray(v)) for m, d in stats.items() for k, v in d.items()}


def load_model_weights(model: Model, run: Run) -> None:
    """Load a run's selected model into ``model`` (model.safetensors; model.pt in older runs)."""
    if run.has("model.safetensors") or not run.has("model.pt"):
        saved: Any = {"model": run.load_tensors("model.safetensors", model.device)}
        restore(model, saved, run.file("model.safetensors"))
    else:
        restore(model, run.load("model.pt", map_location=model.device), run.file("model.pt"))


def restore(model: Model, saved: Any, path: Path) -> None:
    """Load a saved model into ``model``; a file of another shape or kind is a clear error."""
    if not isinstance(saved, Mapping) or "model" not in saved:
        raise ValueError(f"{path}: not an altmodal model file (no 'model' entry)")
    try:
        model.load_state_dict(saved["model"])
    except (RuntimeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: does not fit the model its config.json describes ({first_line(err)})") from err
