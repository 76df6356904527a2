"""The built-in ``synthetic`` dataset: seeded multimodal data with a controlled imbalance.

Each class ``c`` has a latent prototype ``z_c`` (``latent_dim`` standard normal values). Modality
``m`` sees a sample of class ``y`` through its own fixed random linear map ``A_m``:

    x_m = strength_m * A_m z_y + noise * eps,    eps ~ N(0, I)   (width_m values)

A fraction ``shared`` of the samples carry the class signal in every modality; each of the
others carries it in ONE modality only (chosen with probabilities ``private``, uniform by
default), the rest of its modalities seeing pure noise. Fusion must then use every modality: a
model that leans on the strong one alone misses the samples only the weak one can classify.
``missing_rate`` drops modalities from samples (keeping at least one), as absent data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from altmodal.data.dataset import MultimodalDataset
from altmodal.data.features import DataError
from altmodal.data.splits import missing_mask


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the generator; per-modality tuples have one entry per modality."""

    modalities: int = 2
    """Number of modalities, named m0, m1, ..."""
    samples: int = 1500
    classes: int = 5
    widths: tuple[int, ...] = (32,)
    """Feature width per modality (one value is used for all)."""
    strengths: tuple[float, ...] = ()
    """Signal strength per modality (default: 2.0 for m0, 0.6 for the others: m0 dominates)."""
    shared: float = 0.8
    """Fraction of samples whose class signal is in every modality; the rest hold it in one."""
    private: tuple[float, ...] = ()
    """Probability that a non-shared sample holds its signal in each modality (default uniform)."""
    latent_dim: int = 8
    noise: float = 1.0
    missing_rate: float = 0.0
    """Rate at which modalities are absent from samples (at least one kept per sample)."""
    seed: int = 0
    """The data's own seed: runs with different seeds share the data, not the split."""

    def per_modality(self, values: tuple[Any, ...], name: str) -> list[Any]:
        if len(values) == 1:
            return list(values) * self.modalities
        if len(values) != self.modalities:
            raise DataError(f"synthetic: {name} has {len(values)} values for {self.modalities} modalities")
        return list(values)


def synthetic_config(options: Mapping[str, str]) -> SyntheticConfig:
    """Build a config from ``key=value`` strings (``--dataset-option strengths=1,0.3``)."""
    fields = {f.name: f for f in dataclasses.fields(SyntheticConfig)}
    values: dict[str, Any] = {}
    for key, text in options.items():
        if key not in fields:
            raise DataError(f"synthetic: unknown option {key!r}; options: {', '.join(fields)}")
        default = getattr(SyntheticConfig(), key)
        try:
            if isinstance(default, tuple):
                kind = float if key != "widths" else int
                values[key] = tuple(kind(v) for v in str(text).split(",") if v != "")
            else:
                values[key] = type(default)(text)
        except ValueError as err:
            raise DataError(f"synthetic: option {key}={text!r} is not a valid {type(default).__name__}") from err
    config = SyntheticConfig(**values)
    if config.modalities < 1 or config.classes < 2 or config.samples < config.classes * 3:
        raise DataError("synthetic: need modalities >= 1, classes >= 2 and samples >= 3 * classes")
    return config


def generate(config: SyntheticConfig) -> MultimodalDataset:
    """The dataset drawn from ``config.seed`` (the same config gives the same data)."""
    seed = config.seed
    rng = np.random.default_rng([seed, 7])
    names = [f"m{i}" for i in range(config.modalities)]
    widths = config.per_modality(config.widths, "widths")
    strengths = config.per_modality(config.strengths or (2.0,) + (0.6,) * (config.modalities - 1), "strengths")
    private = np.asarray(config.private or [1.0] * config.modalities, dtype=float)
    if len(private) != config.modalities or (private < 0).any() or private.sum() <= 0:
        raise DataError(f"synthetic: private must hold {config.modalities} non-negative weights")
    n = config.samples
    labels = np.arange(n) % config.classes
    rng.shuffle(labels)
    prototypes = rng.standard_normal((config.classes, config.latent_dim))
    holder = rng.choice(config.modalities, size=n, p=private / private.sum())
    shared = rng.random(n) < config.shared
    arrays: dict[str, np.ndarray] = {}
    for j, m in enumerate(names):
        mixing = rng.standard_normal((config.latent_dim, widths[j])) / np.sqrt(config.latent_dim)
        carries = (shared | (holder == j)).astype(float)[:, None]
        signal = strengths[j] * carries * (prototypes[labels] @ mixing)
        arrays[m] = (signal + config.noise * rng.standard_normal((n, widths[j]))).astype(np.float32)
    present = {m: np.ones(n, dtype=bool) for m in names}
    if config.missing_rate > 0:
        present = missing_mask(present, np.arange(n), config.missing_rate, seed)
        arrays = {m: a * present[m][:, None] for m, a in arrays.items()}
    return MultimodalDataset(
        name="synthetic",
        arrays=arrays,
        present=present,
        labels=labels.astype(np.int64),
        classes=[str(c) for c in range(config.classes)],
        rows=np.arange(n),
    )
