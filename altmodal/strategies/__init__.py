"""Training strategies, one short module each, all run by the loop in :mod:`.base`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from altmodal.config import build
from altmodal.data.dataset import Splits
from altmodal.encoders import EncoderConfig, build_encoder
from altmodal.strategies.base import DataSpec, StepOutput, Strategy, TrainConfig
from altmodal.strategies.joint import Joint
from altmodal.strategies.mla import MLA
from altmodal.strategies.ogm_ge import OGMGE
from altmodal.strategies.qmf import QMF
from altmodal.strategies.ume import UME, Unimodal

STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (MLA, Joint, Unimodal, UME, OGMGE, QMF)}


def strategy_class(name: str) -> type[Strategy]:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; strategies: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def build_strategy(
    name: str,
    splits: Splits,
    encoder: EncoderConfig,
    options: Mapping[str, Any],
) -> Strategy:
    """A strategy with one encoder per modality of ``splits`` (of the kind the dataset names)."""
    cls = strategy_class(name)
    train = splits.train
    encoders = {m: build_encoder(train.kinds.get(m, "mlp"), train.input_shape(m), encoder, m) for m in train.modalities}
    spec = DataSpec(tuple(train.modalities), train.num_classes, len(train.labels))
    built = build(cls.options_class, options) if cls.options_class is not None else None
    strategy = cls(encoders, spec, built, encoder.dim)  # type: ignore[call-arg]
    strategy.absent = encoder.absent
    return strategy


__all__ = ["STRATEGIES", "DataSpec", "StepOutput", "Strategy", "TrainConfig", "build_strategy", "strategy_class"]
