"""altmodal: multimodal learning that does not go lazy.

MLA (Zhang et al., "Multimodal Representation Learning by Alternating Unimodal Adaptation",
CVPR 2024) and the baselines it is compared with, over modality-keyed batches.

The names below are imported on first use, so that importing a light module of the package
(``altmodal.workers``, ``altmodal.console``) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from altmodal.version import __version__

if TYPE_CHECKING:
    from altmodal.estimator import MultimodalClassifier
    from altmodal.experiment import resolve, train_run
    from altmodal.predictor import Predictor, load_run

__all__ = ["MultimodalClassifier", "Predictor", "__version__", "load_run", "resolve", "train_run"]

_HOMES = {
    "resolve": "experiment",
    "train_run": "experiment",
    "Predictor": "predictor",
    "load_run": "predictor",
    "MultimodalClassifier": "estimator",  # it needs scikit-learn (extra ``sklearn``)
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"altmodal.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'altmodal' has no attribute {name!r}")
