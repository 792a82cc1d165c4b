"""SRe2L and CDA "recover": optimise pixels so a frozen teacher's BatchNorm statistics
and its predictions match the target classes (docs/method.md §5).

    loss = CE(f_T(aug(x)), y) + r_bn · Σ_l m_l (‖μ_l(x) − μ_l^run‖₂ + ‖σ²_l(x) − σ²_l^run‖₂)

x is the normalised image, the optimised leaf; m_l = first_bn_multiplier for the first
BatchNorm layer, 1 otherwise. CDA differs from SRe2L only by a RandomResizedCrop whose
minimum scale moves from 1.0 (easy) to `cda_min_scale` (hard) over the iterations.

Images are made batch by batch (`batch_ipc` images of every class per batch, a fresh
Adam per batch), so memory does not grow with the number of images. Random draws come
from an explicit CPU `torch.Generator`, so a seed gives the same images on any device.
In one process the batches share that generator in order, so the state after a finished
batch (a `Progress`) is all that is needed to go on from there: an interrupted synthesis
resumes, and one of more images per class continues a finished one (module run.py).
"""
from __future__ import annotations

import math
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ccfs import distributed
from ccfs.config import DistillCfg
from ccfs.data.augment import boxes_to_theta, rrc_boxes, warp
from ccfs.errors import ConfigError
from ccfs.models import batchnorm_layers


def _choices(name: str) -> tuple[str, ...]:
    """The `Literal` choices of DistillCfg's field `name`."""
    return typing.get_args(typing.get_type_hints(DistillCfg)[name])


IMPORTED = ("folder", "tensor", "none")  # distill.method values that synthesise nothing
METHODS = tuple(m for m in _choices("method") if m not in IMPORTED)
CDA_SCHEDULES = ("step", "linear", "cosine")  # CDA uses "step"; the others are kept for its paper's comparison
INITS = ("noise", "real")  # "real": from given images (selmatch starts from its window)


@dataclass(frozen=True)
class SynthParams:
    """How `synthesize` optimises pixels. Defaults: SRe2L on CIFAR (docs/method.md §5)."""
    method: str = "sre2l"  # "sre2l" | "cda" (adds the easy-to-hard RandomResizedCrop)
    iterations: int = 1000  # Adam steps per batch
    lr: float = 0.25  # Adam lr on normalised pixels, cosine-decayed to 0 over `iterations`
    r_bn: float = 0.01  # weight of the BatchNorm statistics term
    first_bn_multiplier: float = 10.0  # extra weight of the first BN layer's term
    jitter: int = 4  # pixels; random circular roll in [-jitter, jitter] per axis
    flip: bool = True  # random horizontal flip, one coin per batch and step
    batch_ipc: int = 1  # images per class in one optimisation batch
    cda_schedule: str = "step"  # how the RRC minimum scale goes 1.0 -> cda_min_scale
    cda_min_scale: float = 0.08  # RRC area fraction at the hard end
    cda_milestone: float = 0.5  # fraction of iterations; "step": scale 1.0 before, min after
    init: str = "noise"  # "noise": N(0, 1) in normalised space; "real": from init_images

    def __post_init__(self):
        checks = [
            (self.method in METHODS, f"method must be one of {METHODS}, got {self.method!r}"),
            (self.cda_schedule in CDA_SCHEDULES,
             f"cda_schedule must be one of {CDA_SCHEDULES}, got {self.cda_schedule!r}"),
            (self.init in INITS, f"init must be one of {INITS}, got {self.init!r}"),
            (self.iterations >= 1, f"iterations must be >= 1, got {self.iterations}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.r_bn >= 0, f"r_bn must be >= 0, got {self.r_bn}"),
            (self.first_bn_multiplier >= 0,
             f"first_bn_multiplier must be >= 0, got {self.first_bn_multiplier}"),
            (self.jitter >= 0, f"jitter must be >= 0 pixels, got {self.jitter}"),
            (self.batch_ipc >= 1, f"batch_ipc must be >= 1, got {self.batch_ipc}"),
            (0 < self.cda_min_scale <= 1, f"cda_min_scale must be in (0, 1], got {self.cda_min_scale}"),
            (0 <= self.cda_milestone <= 1, f"cda_milestone must be in [0, 1], got {self.cda_milestone}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"distill: {message}")


class BNStatsLoss:
    """Forward hooks on every BatchNorm layer (with running stats) of `teacher`.

    After each forward, `loss()` returns Σ_l m_l (‖μ_l − μ_l^run‖₂ + ‖σ²_l − σ²_l^run‖₂)
    over that forward, where μ_l, σ²_l are the per-channel mean and biased variance of the
    layer's input, and m_l = first_bn_multiplier for the first layer (module order), else 1.
    Use as a context manager, or call `remove()` to detach the hooks."""

    def __init__(self, teacher: nn.Module, first_bn_multiplier: float = 10.0):
        layers = batchnorm_layers(teacher)
        if not layers:
            raise ConfigError(
                f"distillation by BatchNorm matching (SRe2L/CDA) needs a teacher with BatchNorm "
                f"layers with running statistics; {type(teacher).__name__} has none: "
                f"use a BatchNorm architecture (e.g. resnet18 or convnet_bn) or import distilled images")
        self.weights = [first_bn_multiplier] + [1.0] * (len(layers) - 1)
        self.terms: list[torch.Tensor | None] = [None] * len(layers)
        self.handles = [layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(layers)]

    def _hook(self, i: int):
        def hook(module, inputs, output):
            x = inputs[0].float()  # [B, C, ...]
            dims = [0] + list(range(2, x.dim()))
            mean = x.mean(dims)  # [C]
            var = x.var(dims, unbiased=False)  # [C], biased like BN's normalisation
            self.terms[i] = (torch.linalg.vector_norm(mean - module.running_mean)
                             + torch.linalg.vector_norm(var - module.running_var))
        return hook

    def loss(self) -> torch.Tensor:
        """The weighted sum over the layers run in the last forward; clears the record."""
        used = [(w, t) for w, t in zip(self.weights, self.terms) if t is not None]
        if not used:
            raise RuntimeError("BNStatsLoss.loss() called before a forward of the teacher")
        self.terms = [None] * len(self.terms)
        return sum(w * t for w, t in used)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def __enter__(self) -> "BNStatsLoss":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def cda_min_scale(step: int, total: int, schedule: str, min_scale: float, *, milestone: float) -> float:
    """RandomResizedCrop minimum area fraction at `step` of `total`: 1.0 (easy) at step 0,
    `min_scale` (hard) at step `total`. "step": 1.0 while step < milestone · total, then
    min_scale; "linear": straight line in step / total; "cosine": half cosine in step / total."""
    progress = min(max(step / max(total, 1), 0.0), 1.0)
    if schedule == "step":
        return 1.0 if step < milestone * total else min_scale
    if schedule == "linear":
        return 1.0 - (1.0 - min_scale) * progress
    if schedule == "cosine":
        return min_scale + (1.0 - min_scale) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ConfigError(f"distill: cda_schedule must be one of {CDA_SCHEDULES}, got {schedule!r}")


def class_runs(n: int, batch_ipc: int, breaks: Sequence[int] = ()) -> list[tuple[int, int]]:
    """A class's `n` positions as runs [start, stop) of `batch_ipc`, each also ending at every
    position in `breaks` (a synthesis grown after a partial batch)."""
    bounds = [0, *sorted(x for x in set(breaks) if 0 < x < n), n]
    return [(i, min(i + batch_ipc, hi)) for lo, hi in pairwise(bounds) for i in range(lo, hi, batch_ipc)]


def class_batches(labels: torch.Tensor, batch_ipc: int, breaks: Sequence[int] = ()) -> list[torch.Tensor]:
    """Positions in `labels` grouped into batches: batch b holds the b-th run of every class
    (`class_runs`; class-major inside the batch). With equal class counts every batch holds
    every class; a class with fewer images drops out of the last batches."""
    runs = []
    for c in labels.unique().tolist():
        p = (labels == c).nonzero().flatten()
        runs.append([p[a:b] for a, b in class_runs(len(p), batch_ipc, breaks)])
    return [torch.cat([r[b] for r in runs if b < len(r)]) for b in range(max(map(len, runs), default=0))]


def _augment(x: torch.Tensor, params: SynthParams, step: int, generator: torch.Generator) -> torch.Tensor:
    """x [B, C, H, W] normalised -> augmented copy: (CDA: per-sample RRC) + flip + roll."""
    flip = params.flip and bool(torch.rand(1, generator=generator) < 0.5)  # one coin per batch
    if params.method == "cda":
        lo = cda_min_scale(step, params.iterations, params.cda_schedule,
                           params.cda_min_scale, milestone=params.cda_milestone)
        boxes = rrc_boxes(x.shape[0], (lo, 1.0), (3 / 4, 4 / 3), generator)
        x = warp(x, boxes_to_theta(boxes, torch.full((x.shape[0],), flip)))
    elif flip:
        x = torch.flip(x, dims=(3,))
    if params.jitter > 0:
        dy, dx = torch.randint(-params.jitter, params.jitter + 1, (2,), generator=generator).tolist()
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    return x


def _optimise_batch(teacher: nn.Module, bn: BNStatsLoss, x: torch.Tensor, y: torch.Tensor,
                    *, bounds: tuple[torch.Tensor, torch.Tensor], params: SynthParams,
                    generator: torch.Generator, history: list | None, bar) -> torch.Tensor:
    """Adam on the normalised batch x [B, C, H, W]; returns the optimised x (detached)."""
    x = x.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=params.lr, betas=(0.5, 0.9), eps=1e-8)
    for t in range(params.iterations):
        for group in opt.param_groups:  # cosine decay to 0, no warmup (SRe2L's lr_cosine_policy)
            group["lr"] = 0.5 * (1 + math.cos(math.pi * t / params.iterations)) * params.lr
        with torch.autocast(x.device.type, enabled=False):  # pixels are optimised in fp32
            logits = teacher(_augment(x, params, t, generator))
            ce = F.cross_entropy(logits.float(), y)
            bn_term = bn.loss()
        opt.zero_grad(set_to_none=True)
        (ce + params.r_bn * bn_term).backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(*bounds)
        if history is not None and t in (0, params.iterations - 1):
            history.append((ce.item(), bn_term.item()))
        bar.update(1)
    return x.detach()


@dataclass
class Progress:
    """A synthesis after its first `batches` batches: the pixels [n, C, H, W] in [0, 1] (rows
    of later batches are zero; in `on_batch` the live buffer, to be copied if kept), the
    generator's state after them, and where the batches of
    each class restart (`class_batches`'s `breaks`: a grown synthesis keeps the batches of
    the smaller one)."""
    batches: int
    pixels: torch.Tensor
    rng: torch.Tensor
    breaks: tuple[int, ...] = ()


def synthesize(teacher: nn.Module, labels: torch.Tensor, image_shape: Sequence[int],
               mean: Sequence[float] | torch.Tensor, *, std: Sequence[float] | torch.Tensor,
               params: SynthParams, generator: torch.Generator,
               init_images: torch.Tensor | None = None, progress: bool = False,
               history: list | None = None, resume: Progress | None = None,
               on_batch: Callable[[Progress], None] | None = None) -> torch.Tensor:
    """Distil one image per entry of `labels` [n] -> float pixels [n, C, H, W] in [0, 1]
    on the CPU, in the order of `labels`.

    `teacher` is put in eval mode and frozen (requires_grad False). `mean`, `std` [C] are
    the teacher's input normalisation. `init_images` [n, C, H, W] (uint8, or float pixels
    in [0, 1]) is required for init="real" and refused otherwise. `history`, if given,
    receives (ce, bn) floats (bn unweighted by r_bn) at the first and the last iteration
    of every batch, in batch order (one entry per batch when iterations == 1).

    `resume` starts after its finished batches, with its batch layout (the result is the one
    an uninterrupted call gives); `on_batch` (one process only) receives the Progress after
    every batch."""
    device = next(teacher.parameters()).device
    teacher.eval().requires_grad_(False)
    c, h, w = (int(s) for s in image_shape)
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, c, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, c, 1, 1)
    bounds = ((0 - mean_t) / std_t, (1 - mean_t) / std_t)  # valid normalised range per channel
    init = _check_init(init_images, params, len(labels), (c, h, w))
    out = torch.zeros(len(labels), c, h, w)
    breaks = resume.breaks if resume is not None else ()
    batches = class_batches(labels.cpu(), params.batch_ipc, breaks)
    world, rank = distributed.world_size(), distributed.rank()
    if world > 1 and on_batch is not None:
        raise ConfigError("distill: saving a synthesis's progress works in one process only (not under torchrun)")
    start = 0
    if resume is not None:
        if resume.pixels.shape != out.shape or not 0 <= resume.batches <= len(batches):
            raise ConfigError(f"distill: a saved synthesis of {tuple(resume.pixels.shape)} images after "
                              f"{resume.batches} batches does not fit this one ({tuple(out.shape)}, {len(batches)} batches)")
        start = resume.batches
        if rank == 0:  # under torchrun the ranks' images are summed: the kept ones counted once
            out.copy_(resume.pixels)
        generator.set_state(resume.rng)
    if world > 1:  # torchrun: rank r makes batches r, r + N, ...; each batch its own generator
        base = int(torch.randint(2**62, (1,), generator=generator))
        gens = [torch.Generator().manual_seed(base + b) for b in range(len(batches))]
    else:
        gens = [generator] * len(batches)
    mine = range(rank + start, len(batches), world)
    bar = tqdm(total=len(mine) * params.iterations, disable=None if progress else True, desc="distill")
    with BNStatsLoss(teacher, params.first_bn_multiplier) as bn:
        for b in mine:
            pos, gen = batches[b], gens[b]
            if init is None:
                x = torch.randn(len(pos), c, h, w, generator=gen).to(device)
            else:
                x = (init[pos].to(device) - mean_t) / std_t
            x = _optimise_batch(teacher, bn, x, labels[pos].to(device), bounds=bounds, params=params, generator=gen, history=history, bar=bar)
            out[pos] = (x * std_t + mean_t).clamp(0, 1).cpu()
            if on_batch is not None:
                on_batch(Progress(b + 1, out, gen.get_state(), breaks))
    bar.close()
    if world > 1:
        distributed.sum_(out)  # each image is non-zero on one rank only
    return out


def _check_init(init_images: torch.Tensor | None, params: SynthParams, n: int,
                shape: tuple[int, int, int]) -> torch.Tensor | None:
    """Validate `init_images` against `params.init`; return float pixels [n, C, H, W] or None."""
    if params.init == "noise":
        if init_images is not None:
            raise ConfigError("distill: init_images were given but init is 'noise'; set init: real")
        return None
    if init_images is None:
        raise ConfigError("distill: init 'real' needs init_images (real images, one per label)")
    if tuple(init_images.shape) != (n, *shape):
        raise ConfigError(f"distill: init_images have shape {tuple(init_images.shape)}, "
                          f"expected {(n, *shape)} (one image per label)")
    if init_images.dtype == torch.uint8:
        return init_images.float() / 255.0
    return init_images.float().clamp(0, 1)
