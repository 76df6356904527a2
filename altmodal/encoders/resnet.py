"""ResNet18 encoders for audio filterbanks and video frames, as in the paper (trained from scratch).

The backbone is the standard ResNet18 layout (He et al. 2016): a 7x7 stride-2 stem and 3x3 max
pool, then four stages of two BasicBlocks with widths w, 2w, 4w, 8w (w = 64 in the paper, so the
feature is 512-d); the module names follow the common layout (``conv1``, ``bn1``, ``layer1`` ..
``layer4``), so a ResNet18 state dict without its ``fc`` head loads into :attr:`backbone`.

- :class:`AudioResNet`: input (B, T, F) filterbanks; a one-channel stem sees them as a (T, F)
  image; the feature map is averaged over time and frequency.
- :class:`VisualResNet`: input (B, T, C, H, W) frames; every frame goes through the same 2D
  ResNet and the feature maps are averaged over time and space (the reference code's 3D average
  pool over (T, h, w)).

When ``8 w`` differs from the shared feature width ``dim``, a linear projection to ``dim`` ends the
encoder (the projection belongs to the modality's encoder, as MLA's shared head requires).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual connection (1x1 projection when the
    shape changes)."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)  # type: ignore[no-any-return]


class ResNet18(nn.Module):
    """The ResNet18 trunk without pooling or classifier: (N, C, H, W) -> (N, 8 width, h, w).

    Args:
        in_channels: input channels (1 for filterbanks, 3 for RGB frames).
        width: channels of the first stage (64 in the paper).
        blocks: BasicBlocks per stage ([2, 2, 2, 2] is ResNet18).
    """

    def __init__(self, in_channels: int = 3, width: int = 64, blocks: Sequence[int] = (2, 2, 2, 2)):
        super().__init__()
        if width < 1 or in_channels < 1:
            raise ValueError(f"ResNet18 width {width} and input channels {in_channels} must be positive")
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages: list[nn.Sequential] = []
        channels = width
        for i, count in enumerate(blocks):
            out = width * 2**i
            stride = 1 if i == 0 else 2
            layers = [BasicBlock(channels, out, stride)] + [BasicBlock(out, out) for _ in range(count - 1)]
            stages.append(nn.Sequential(*layers))
            channels = out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels = channels
        self.channels_last = False
        """Inputs are turned into channels-last memory (set by :func:`channels_last`)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))  # type: ignore[no-any-return]


def channels_last(module: nn.Module) -> bool:
    """Put every ResNet18 trunk inside ``module`` (weights and, from then on, inputs) in
    channels-last memory, the layout CUDA's convolution kernels run fastest in (tensor cores,
    no transposes); the numbers are the same. Returns whether there was one."""
    found = False
    for sub in module.modules():
        if isinstance(sub, ResNet18):
            sub.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            sub.channels_last = True
            found = True
    return found


def projection(features: int, dim: int) -> nn.Module:
    """A linear map to the shared width, or the identity when the widths already agree."""
    return nn.Identity() if features == dim else nn.Linear(features, dim)


class AudioResNet(nn.Module):
    """(B, T, F) filterbank -> (B, dim): one-channel ResNet18, averaged over time and frequency."""

    def __init__(self, in_shape: Sequence[int], dim: int, width: int = 64):
        super().__init__()
        if len(in_shape) != 2:
            raise ValueError(f"resnet18-audio expects (frames, bins) inputs, got samples of shape {tuple(in_shape)}")
        self.backbone = ResNet18(1, width)
        self.proj = projection(self.backbone.out_channels, dim)
        self.out_dim = dim

    def forward(self, x: Tensor) -> Tensor:
        maps = self.backbone(x.unsqueeze(1))  # (B, 8w, t, f)
        return self.proj(maps.mean(dim=(2, 3)))  # type: ignore[no-any-return]


class VisualResNet(nn.Module):
    """(B, T, C, H, W) frames -> (B, dim): each frame through a 2D ResNet18, maps averaged over
    time and space. Single images (B, C, H, W) and grey images (B, H, W) are one frame."""

    def __init__(self, in_shape: Sequence[int], dim: int, width: int = 64):
        super().__init__()
        if not 2 <= len(in_shape) <= 4:
            raise ValueError(
                f"resnet18-visual expects (frames, channels, height, width), (channels, height, width) or "
                f"(height, width) inputs, got samples of shape {tuple(in_shape)}"
            )
        channels = 1 if len(in_shape) == 2 else int(in_shape[-3])
        self.backbone = ResNet18(channels, width)
        self.proj = projection(self.backbone.out_channels, dim)
        self.out_dim = dim

    def forward(self, x: Tensor) -> Tensor:
        while x.dim() < 5:  # (B, H, W) -> (B, 1, H, W) -> (B, 1, 1, H, W): one frame, one channel
            x = x.unsqueeze(1)
        b, t = x.shape[:2]
        maps = self.backbone(x.flatten(0, 1))  # (B*T, 8w, h, w)
        pooled = maps.mean(dim=(2, 3)).view(b, t, -1).mean(dim=1)  # (B, 8w)
        return self.proj(pooled)  # type: ignore[no-any-return]
