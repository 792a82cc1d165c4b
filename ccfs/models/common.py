"""Pieces shared by the model definitions."""
from __future__ import annotations

import torch
from torch import nn


def torchvision_init(model: nn.Module, linear_std: float | None = 0.01) -> None:
    """torchvision's weight init, in module order: convs Kaiming-normal (fan_out, ReLU
    gain) with zero bias, BatchNorm weight 1 and bias 0, Linear N(0, linear_std²) with
    zero bias (VGG, MobileNetV2), or PyTorch's default Linear init when `linear_std` is
    None (ResNet)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0, linear_std)
            nn.init.zeros_(m.bias)


class PooledClassifier(nn.Module):
    """A conv trunk `features` -> global average pool -> Linear `classifier`, initialised
    as torchvision does (VGG and MobileNetV2 share this; the names match torchvision's)."""

    def __init__(self, features: nn.Module, num_features: int, num_classes: int):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = num_features
        self.num_classes = num_classes
        self.classifier = nn.Linear(num_features, num_classes)
        torchvision_init(self, linear_std=0.01)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.features(x)), 1)  # [B, num_features]

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.classifier(f)  # [B, num_classes]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
