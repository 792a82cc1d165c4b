"""VGG-11 with BatchNorm, for small images.

A 2x2 max-pool is skipped once the feature map is already 1 px (28 px input reaches
1 px after four pools); an adaptive average pool to 1x1 ends the trunk, so the head is
Linear(512, num_classes) at every input size.
"""
from __future__ import annotations

import torch
from torch import nn

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


class VGG(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 32,
                 cfg: list = CFG_11):
        super().__init__()
        self.features = _trunk(cfg, in_channels, image_size)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = [v for v in cfg if v != "M"][-1]
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's VGG init.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.features(x)), 1)  # [B, 512]

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.classifier(f)  # [B, num_classes]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
