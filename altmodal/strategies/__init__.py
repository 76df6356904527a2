"""Training strategies, one short module each: a model (:mod:`altmodal.model`) plus its training
step (:mod:`.base`), all trained by the one loop of :mod:`altmodal.trainer`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import Tensor, nn

from altmodal.config import build
from altmodal.data.dataset import MultimodalDataset, Splits
from altmodal.encoders import EncoderConfig, build_encoder, check_encoder, encoder_kinds, weights_by_modality
from altmodal.encoders.numeric import PiecewiseLinearEncoder
from altmodal.strategies.aug import AUG
from altmodal.strategies.base import DataSpec, StepOutput, Strategy, TrainConfig
from altmodal.strategies.dgl import DGL
from altmodal.strategies.gblend import GBlend
from altmodal.strategies.inforeg import InfoReg
from altmodal.strategies.joint import Joint
from altmodal.strategies.midas import MIDAS
from altmodal.strategies.mla import MLA
from altmodal.strategies.mmpareto import MMPareto
from altmodal.strategies.moddrop import ModDrop
from altmodal.strategies.ogm_ge import OGMGE
from altmodal.strategies.qmf import QMF
from altmodal.strategies.reconboost import ReconBoost
from altmodal.strategies.relearn import Relearn
from altmodal.strategies.shaspec import ShaSpec
from altmodal.strategies.smil import SMIL
from altmodal.strategies.ume import UME, Unimodal
from altmodal.strategies.umt import UMT

BALANCING = (
    MLA,
    Joint,
    Unimodal,
    UME,
    OGMGE,
    QMF,
    Relearn,
    UMT,
    MMPareto,
    DGL,
    GBlend,
    InfoReg,
    AUG,
    ReconBoost,
    MIDAS,
)
"""MLA, the baselines and the peers that balance the modalities' learning (the newest last)."""
FOR_MISSING = (ModDrop, ShaSpec, SMIL)
"""Strategies built for training with missing modalities (SMIL's protocol)."""
STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (*BALANCING, *FOR_MISSING)}


def strategy_class(name: str) -> type[Strategy]:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; strategies: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def build_strategy(
    name: str,
    splits: Splits,
    encoder: EncoderConfig,
    options: Mapping[str, Any],
    custom: Mapping[str, nn.Module] | None = None,
) -> Strategy:
    """A strategy with one encoder per modality of ``splits``: the user's ``custom`` module
    (checked by a forward pass on two training samples) or one of the kind the dataset or
    ``--encoder`` names."""
    train = splits.train
    custom = dict(custom or {})
    unknown = [m for m in custom if m not in train.modalities]
    if unknown:
        raise ValueError(f"an encoder is given for {unknown[0]!r}; the modalities are {', '.join(train.modalities)}")
    for m, module in custom.items():
        check_encoder(m, module, sample_inputs(train, m), encoder.dim)
    spec = DataSpec(tuple(train.modalities), train.num_classes, len(train.labels))
    shapes = train.input_shapes()
    strategy = assemble(name, spec, encoder_kinds(train.kinds, shapes, encoder), shapes, encoder, options, custom)
    given = weights_by_modality(encoder.weights)
    for m, module in strategy.encoders.items():  # encoders that fit to data (ple's bin edges) see the training split
        if m not in custom and m not in given and isinstance(module, PiecewiseLinearEncoder):
            module.fit(sample_inputs(train, m, len(train)))
    return strategy


def assemble(
    name: str,
    spec: DataSpec,
    kinds: Mapping[str, str],
    shapes: Mapping[str, tuple[int, ...]],
    encoder: EncoderConfig,
    options: Mapping[str, Any],
    custom: Mapping[str, nn.Module] | None = None,
) -> Strategy:
    """A strategy from its parts: the ``custom`` encoders, and built ones of ``kinds`` for the rest."""
    cls = strategy_class(name)
    custom = custom or {}
    encoders = {
        m: custom[m] if m in custom else build_encoder(kinds[m], shapes[m], encoder, m) for m in spec.modalities
    }
    built = build(cls.options_class, options) if cls.options_class is not None else None
    strategy = cls(encoders, spec, built, encoder.dim)  # type: ignore[call-arg]
    strategy.absent = encoder.absent
    return strategy


def sample_inputs(dataset: MultimodalDataset, modality: str, n: int = 2) -> Tensor:
    """Up to ``n`` samples of ``modality`` (present ones) as a float batch."""
    positions = np.flatnonzero(np.asarray(dataset.present[modality])[dataset.rows])[:n]
    if len(positions) == 0:
        raise ValueError(f"{dataset.name}: modality {modality!r} is absent from every training sample")
    return dataset.gather(positions).inputs[modality]


__all__ = [
    "STRATEGIES",
    "DataSpec",
    "StepOutput",
    "Strategy",
    "TrainConfig",
    "assemble",
    "build_strategy",
    "strategy_class",
]
