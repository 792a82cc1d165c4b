"""MobileNetV2 (width 1.0) adapted to small images.

torchvision's layout (stem, inverted residual stages, 1x1 conv to 1280, pool, Linear)
with the early strides reduced as is common for CIFAR: for <= 32 px input the stem and
the 24-channel stage have stride 1 (total stride 8, 32 -> 4 px); for <= 64 px only
the stem does (total stride 16, 64 -> 4 px); larger input keeps torchvision's strides.
"""
from __future__ import annotations

import torch
from torch import nn

from ccfs.models.common import PooledClassifier

# (expansion t, out channels c, blocks n, stride s) from the MobileNetV2 paper.
STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
          (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, *, groups: int = 1,
             act: bool = True) -> list[nn.Module]:
    conv = nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(c_out)] + ([nn.ReLU6(inplace=True)] if act else [])


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        self.use_residual = stride == 1 and c_in == c_out
        layers = _conv_bn(c_in, hidden, 1) if expand != 1 else []
        layers += _conv_bn(hidden, hidden, 3, stride, groups=hidden)  # depthwise
        layers += _conv_bn(hidden, c_out, 1, act=False)  # linear bottleneck
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


def _early_strides(image_size: int) -> tuple[int, int]:
    """Strides of (stem, 24-channel stage) for an input of `image_size` px."""
    if image_size <= 32:
        return 1, 1
    return (1, 2) if image_size <= 64 else (2, 2)


class MobileNetV2(PooledClassifier):
    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 32):
        stem_stride, stage2_stride = _early_strides(image_size)
        layers: list[nn.Module] = [nn.Sequential(*_conv_bn(in_channels, 32, 3, stem_stride))]
        channels = 32
        for i, (t, c, n, s) in enumerate(STAGES):
            s = stage2_stride if i == 1 else s
            for j in range(n):
                layers.append(InvertedResidual(channels, c, s if j == 0 else 1, t))
                channels = c
        layers.append(nn.Sequential(*_conv_bn(channels, 1280, 1)))
        super().__init__(nn.Sequential(*layers), num_features=1280, num_classes=num_classes)
