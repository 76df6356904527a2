"""A small transformer text encoder trained from scratch (the paper's M3AE weights are not
obtainable; local weights can be loaded through ``EncoderConfig.weights``).

Token ids (B, L) -- arriving as float32 from the batch, exact below 2**24 -- index a learned
embedding (id 0 is padding) plus a learned position embedding; a few pre-norm transformer
layers attend over the non-padding tokens; the outputs are averaged over the non-padding tokens
and projected to the shared width ``dim`` (when the model width differs). A row of padding only
(an absent or empty text) encodes to a constant vector rather than NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from altmodal.encoders.resnet import projection


class TextEncoder(nn.Module):
    """(B, L) token ids -> (B, dim).

    Args:
        in_shape: (L,), the padded sequence length.
        vocab_size: embedding rows (the tokenizer's vocabulary size).
        dim: output width d.
        width: model width.
        layers: transformer layers.
        heads: attention heads (must divide ``width``).
        dropout: dropout inside the transformer layers.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        vocab_size: int,
        dim: int,
        width: int = 128,
        layers: int = 2,
        heads: int = 4,
        dropout: float = 0.1,
    ):
        super().__init__()
        if len(in_shape) != 1:
            raise ValueError(f"text encoders expect (tokens,) inputs, got samples of shape {tuple(in_shape)}")
        if width % heads:
            raise ValueError(f"text width {width} is not a multiple of the {heads} attention heads")
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, width, padding_idx=0)
        self.position = nn.Parameter(torch.zeros(1, int(in_shape[0]), width))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=4 * width, dropout=dropout, batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.proj = projection(width, dim)
        self.out_dim = dim

    def forward(self, x: Tensor) -> Tensor:
        ids = x.long()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(
                f"token id {int(ids.max()) if int(ids.max()) >= self.vocab_size else int(ids.min())} is outside "
                f"the text encoder's vocabulary of {self.vocab_size}"
            )
        pad = ids == 0  # (B, L)
        attend_nothing = pad.all(dim=1)
        pad[attend_nothing, 0] = False  # keep attention finite for all-padding rows
        h = self.embed(ids) + self.position[:, : ids.shape[1]]
        h = self.norm(self.transformer(h, src_key_padding_mask=pad))
        keep = (~pad).unsqueeze(-1).to(h.dtype)
        pooled = (h * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1.0)
        return self.proj(pooled)  # type: ignore[no-any-return]
