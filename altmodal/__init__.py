"""altmodal: multimodal learning that does not go lazy.

MLA (Zhang et al., "Multimodal Representation Learning by Alternating Unimodal Adaptation",
CVPR 2024) and the baselines it is compared with, over modality-keyed batches.
"""

__version__ = "0.1.0"

from typing import Any

from altmodal.experiment import resolve, train_run
from altmodal.predictor import Predictor, load_run

__all__ = ["MultimodalClassifier", "Predictor", "__version__", "load_run", "resolve", "train_run"]


def __getattr__(name: str) -> Any:
    """``MultimodalClassifier`` is imported on first use: it needs scikit-learn (extra ``sklearn``)."""
    if name == "MultimodalClassifier":
        from altmodal.estimator import MultimodalClassifier

        return MultimodalClassifier
    raise AttributeError(f"module 'altmodal' has no attribute {name!r}")
