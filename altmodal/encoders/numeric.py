"""A multilayer perceptron over piecewise-linear encodings of each feature (kind ``ple``).

Each feature x is cut at ``bins`` + 1 edges, the quantiles of its training values, and encoded as
its own value followed by one number per bin: 0 below the bin, 1 above it and the position inside
it in between (Gorishniy, Rubachev and Babenko, "On Embeddings for Numerical Features in Tabular
Deep Learning", NeurIPS 2022). The first linear layer of the MLP then reads a (features x (bins +
1)) vector: a piecewise-linear function of every feature, where a plain MLP reads a linear one.
The edges are buffers: fitted on the training split before training (:meth:`fit`), saved with the
model, and their number fixed by ``bins``, so a saved run rebuilds the same shapes without its data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from altmodal.encoders.mlp import MLPEncoder

BINS = 8
"""Bins per feature."""

NARROWEST_BIN = 1e-3
"""Edges that coincide (a feature with few distinct values) are pulled apart by this much: such a
bin becomes a step at its value."""


class PiecewiseLinearEncoder(nn.Module):
    """The MLP of :class:`~altmodal.encoders.mlp.MLPEncoder` over the features' piecewise-linear
    encodings (see the module docstring).

    Args:
        in_shape: the shape of one sample (flattened into features).
        hidden: widths of the hidden layers.
        out_dim: width of the output feature.
        dropout: dropout after each hidden layer.
        bins: bins per feature.
    """

    edges: Tensor
    """(features, bins + 1) each feature's bin edges, increasing."""

    def __init__(
        self, in_shape: Sequence[int], hidden: Sequence[int], out_dim: int, dropout: float = 0.0, bins: int = BINS
    ):
        super().__init__()
        features = math.prod(in_shape)
        # before fit(): the quantiles of a standardised normal feature
        normal = torch.special.ndtri(torch.linspace(0.5, bins + 0.5, bins + 1) / (bins + 1))
        self.register_buffer("edges", normal.repeat(features, 1))
        self.mlp = MLPEncoder((features * (bins + 1),), hidden, out_dim, dropout)
        self.out_dim = out_dim

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        """Set each feature's edges to the quantiles of its values in ``x`` (n, *in_shape)."""
        values = x.reshape(len(x), -1).float()
        levels = torch.linspace(0, 1, self.edges.shape[1], dtype=values.dtype)
        edges = torch.quantile(values, levels, dim=0).T  # (features, bins + 1)
        for t in range(1, edges.shape[1]):
            edges[:, t] = torch.maximum(edges[:, t], edges[:, t - 1] + NARROWEST_BIN)
        self.edges.copy_(edges)

    def forward(self, x: Tensor) -> Tensor:  # (B, *in_shape) -> (B, out_dim)
        values = x.reshape(len(x), -1)
        low, width = self.edges[:, :-1], self.edges[:, 1:] - self.edges[:, :-1]
        inside = ((values.unsqueeze(2) - low) / width).clamp(0, 1)  # (B, features, bins)
        return self.mlp(torch.cat([values.unsqueeze(2), inside], dim=2).flatten(1))  # type: ignore[no-any-return]
