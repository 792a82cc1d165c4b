"""VGG-11 with BatchNorm, for small images.

A 2x2 max-pool is skipped once the feature map is already 1 px (28 px input reaches
1 px after four pools); an adaptive average pool to 1x1 ends the trunk, so the head is
Linear(512, num_classes) at every input size.
"""
from __future__ import annotations

from torch import nn

from ccfs.models.common import PooledClassifier

CFG_11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


def _trunk(cfg: list, in_channels: int, image_size: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels, size = in_channels, image_size  # size in px
    for v in cfg:
        if v == "M":
            if size > 1:
                layers.append(nn.MaxPool2d(2, 2))
                size //= 2
            continue
        layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1),
                   nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
        channels = v
    return nn.Sequential(*layers)


class VGG(PooledClassifier):
    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 32,
                 cfg: list = CFG_11):
        super().__init__(_trunk(cfg, in_channels, image_size),
                         num_features=[v for v in cfg if v != "M"][-1], num_classes=num_classes)
