"""A multilayer perceptron encoder for feature vectors (any trailing shape is flattened)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from torch import Tensor, nn


class MLPEncoder(nn.Module):
    """Linear-ReLU layers from the flattened input to an ``out_dim`` feature (post-ReLU).

    Args:
        in_shape: the shape of one sample.
        hidden: widths of the hidden layers.
        out_dim: width of the output feature (the shared width d that heads read).
        dropout: dropout after each hidden layer.
    """

    def __init__(self, in_shape: Sequence[int], hidden: Sequence[int], out_dim: int, dropout: float = 0.0):
        super().__init__()
        widths = [math.prod(in_shape), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in itertools.pairwise(widths):
            layers += [nn.Linear(a, b), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        layers += [nn.Linear(widths[-1], out_dim), nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:  # (B, *in_shape) -> (B, out_dim)
        return self.net(x)  # type: ignore[no-any-return]
