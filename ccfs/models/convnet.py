"""The ConvNet of the dataset-distillation literature (Zhao et al., DC / DSA / DM).

`depth` blocks of [conv3x3 -> norm -> ReLU -> AvgPool 2x2], then flatten -> Linear.
Module names follow the DC code (`features`, `classifier`) so its checkpoints load.
"""
from __future__ import annotations

import torch
from torch import nn

from ccfs.errors import ConfigError

NORMS = ("instance", "batch", "none")


def _norm(kind: str, width: int) -> list[nn.Module]:
    if kind == "instance":
        # DC code: instance norm as GroupNorm with one group per channel, affine.
        return [nn.GroupNorm(width, width, affine=True)]
    if kind == "batch":
        return [nn.BatchNorm2d(width)]
    return []


class ConvNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 32,
                 *, width: int = 128, depth: int = 3, norm: str = "instance",
                 first_padding: int = 1):
        """`first_padding` pads the first conv only. 1 gives 28 -> 14 -> 7 -> 3; the DC
        code uses 3 for 1-channel 28 px input, which makes it 32 -> 16 -> 8 -> 4."""
        super().__init__()
        if norm not in NORMS:
            raise ConfigError(f"convnet norm must be one of {', '.join(NORMS)}, got {norm!r}")
        layers: list[nn.Module] = []
        size, channels = image_size + 2 * (first_padding - 1), in_channels  # px
        for d in range(depth):
            padding = first_padding if d == 0 else 1
            layers += [nn.Conv2d(channels, width, kernel_size=3, padding=padding)]
            layers += _norm(norm, width) + [nn.ReLU(inplace=True), nn.AvgPool2d(2, 2)]
            channels, size = width, size // 2
        if size < 1:
            raise ConfigError(f"convnet depth {depth} is too deep for {image_size} px images")
        self.features = nn.Sequential(*layers)
        self.num_features = width * size * size
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.features(x), 1)  # [B, width * s * s]

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.classifier(f)  # [B, num_classes]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
