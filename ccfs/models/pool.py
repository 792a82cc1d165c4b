"""2x2 average pooling that gives torch's results bit for bit, faster on the CPU.

The ConvNet's `AvgPool2d(2, 2)` and its backward took a third of a KD student step on the CPU
with contiguous tensors (the format ccfs uses there for instance-norm nets; torch.profiler,
convnet_w32 student + convnet_w32_bn teacher, batch 128, 1 thread). `python -m bench.pool`
(bench/results/pool.md) times the two against each other. The sums are taken in torch's order
(top-left, top-right, bottom-left, bottom-right, then times 1/4, which equals torch's division
by 4 exactly), so forward and backward agree to the bit, and so do trained weights: records made
with either stay reproducible. On CUDA and for channels-last tensors torch's kernel is used.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pool2x2(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, H // 2, W // 2]: the mean of each 2x2 block (a last odd row or
    column is dropped, as AvgPool2d(2, 2) does)."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    y = x[..., 0:h:2, 0:w:2] + x[..., 0:h:2, 1:w:2]
    y += x[..., 1:h:2, 0:w:2]
    y += x[..., 1:h:2, 1:w:2]
    return y.mul_(0.25)


def pool2x2_backward(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The input gradient of `pool2x2`: a quarter of each output's gradient to its 4 inputs,
    zero for a dropped odd row or column."""
    b, c, h, w = shape
    ho, wo = grad.shape[-2:]
    g = (grad * 0.25)[:, :, :, None, :, None].expand(b, c, ho, 2, wo, 2).reshape(b, c, 2 * ho, 2 * wo)
    return F.pad(g, (0, w - 2 * wo, 0, h - 2 * ho)) if (2 * ho, 2 * wo) != (h, w) else g


class _Pool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.shape = x.shape
        return pool2x2(x)

    @staticmethod
    def backward(ctx, grad):
        return pool2x2_backward(grad, ctx.shape)


class AvgPool2x2(nn.AvgPool2d):
    """`nn.AvgPool2d(2, 2)` (same module, same state dict), with `pool2x2` on CPU tensors
    in the contiguous format."""

    def __init__(self):
        super().__init__(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or not x.is_contiguous():
            return super().forward(x)
        return _Pool2x2.apply(x)
