"""Encoders: one per modality, each mapping a modality's input to a (B, dim) feature.

Builder functions, no registry magic: :func:`build_encoder` picks the encoder for a modality from
its kind (``mlp`` for feature vectors; the media encoders for audio, frames and tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from altmodal.config import option
from altmodal.encoders.mlp import MLPEncoder


@dataclass(frozen=True)
class EncoderConfig:
    """Encoder sizes. Every encoder outputs ``dim`` features, the width the heads read (d)."""

    dim: int = option(128, "feature width d shared by all modalities (the head's input)")
    hidden: tuple[int, ...] = option((256,), "hidden layer widths of the MLP encoders")
    dropout: float = option(0.0, "dropout in the MLP encoders")


def build_encoder(kind: str, in_shape: Sequence[int], config: EncoderConfig) -> nn.Module:
    """The encoder of one modality; it has an ``out_dim`` attribute equal to ``config.dim``."""
    if kind == "mlp":
        return MLPEncoder(in_shape, config.hidden, config.dim, config.dropout)
    raise ValueError(f"unknown encoder kind {kind!r}; kinds: mlp")
