"""Distilled images from a config: the one mapping from `distill.*` settings to the
synthesis parameters, and the call that makes images of every class from a teacher.

Called through `ccfs.api.distill_images` by the distill stage (the α part), by selmatch's
selection (it distils its own α part from its window) and by API users.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from ccfs.data.datasets import Dataset
from ccfs.distill.bn_matching import SynthParams, synthesize
from ccfs.distill.folder import quantize


def synth_params(cfg) -> SynthParams:
    """`distill.*` (a DistillCfg) -> SynthParams for `synthesize`."""
    return SynthParams(method=cfg.method, iterations=cfg.iterations, lr=cfg.lr, r_bn=cfg.r_bn, jitter=cfg.jitter,
                       flip=True, batch_ipc=cfg.batch_ipc)


def synthesize_classes(params: SynthParams, teacher: torch.nn.Module, data: Dataset, per_class: int, *,
                   seed: int = 0, device="cpu", init_indices: list[int] | None = None,
                   progress: bool = False, **resumable) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_class` images of every class -> (uint8 [C·per_class, ch, H, W], labels), class by
    class. With `init_indices` (train rows, sorted by class) synthesis starts from those real
    images, else from noise. `resumable`: `resume` / `on_batch` of `synthesize`."""
    labels = torch.arange(data.num_classes).repeat_interleave(per_class)
    gen = torch.Generator().manual_seed(seed)
    init = None
    if init_indices is not None:
        params = replace(params, init="real")
        init = data.train.images[torch.as_tensor(init_indices)].float() / 255
    pixels = synthesize(teacher, labels.to(device), tuple(data.train.images.shape[1:]), data.mean, std=data.std,
                        params=params, generator=gen, init_images=None if init is None else init.to(device), progress=progress,
                        **resumable)
    return quantize(pixels.cpu()), labels


def distill_from_config(cfg, teacher: torch.nn.Module, data: Dataset, per_class: int, **kw):
    """`synthesize_classes` with the parameters of a DistillCfg."""
    return synthesize_classes(synth_params(cfg), teacher, data, per_class, **kw)
