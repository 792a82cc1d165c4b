"""The one training loop (`fit`) and batched inference (`predict_logits`).

Data stay a uint8 tensor `[N, C, H, W]` (on the device when it fits); each step gathers
a batch of rows, augments it on the device in one `grid_sample`, normalises, and runs the
swappable objective. SGD with momentum, linear warmup then cosine, stepped per epoch.
"""
from __future__ import annotations

import copy
import math
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ccfs import distributed, stepgraph
from ccfs.artifacts import torch_save
from ccfs.config import Recipe  # noqa: F401  (defined with the config: loading one needs no torch)
from ccfs.data.augment import AugmentPolicy, Draw, apply, draw, normalize, to_float
from ccfs.data.datasets import Split
from ccfs.errors import ConfigError
from ccfs.models import batchnorm_layers

Hook = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


def augment_policy(recipe: Recipe) -> AugmentPolicy:
    """The batch augmentation a recipe asks for."""
    return AugmentPolicy(kind=recipe.augment, flip=recipe.flip, scale=(recipe.rrc_min_scale, 1.0),
                         pad=recipe.crop_pad, mix=recipe.mix)


MOMENTUM = 0.9  # SGD momentum of every model ccfs trains
WARMUP_START = 0.01  # the first warmup lr, as a fraction of the peak lr


def lr_factor(epoch: int, epochs: int, warmup: int, start: float = WARMUP_START) -> float:
    """Multiplier of the peak lr at `epoch`: linear warmup from `start`, then cosine to 0."""
    if epoch < warmup:
        return start + (1 - start) * epoch / warmup
    span = max(1, epochs - warmup)
    return 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / span))


def eval_epochs(epochs: int, last: int) -> set[int]:
    """Epochs (0-based) after which the test set is evaluated: `last` passes spread over the
    last 20 % of epochs, the final one always."""
    start = int(0.8 * epochs)
    n = max(1, min(last, epochs - start))
    return {epochs - 1 - round(i * (epochs - 1 - start) / max(1, n - 1)) for i in range(n)} if n > 1 else {epochs - 1}


def batch_indices(n: int, batch: int, generator: torch.Generator, shuffle: bool = True,
                  *, min_last: int = 2) -> list[torch.Tensor]:
    """One epoch of index batches; a trailing batch smaller than `min_last` joins the
    previous one (BatchNorm cannot train on a batch of one; under torchrun every rank's
    share of a batch needs two samples)."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    chunks = list(order.split(batch))
    if len(chunks) > 1 and len(chunks[-1]) < min_last:
        chunks[-2] = torch.cat(chunks[-2:])
        chunks.pop()
    return chunks


@dataclass
class Step:
    """One training step's batch: its rows [B] and augmentation draws, on the device."""
    rows: torch.Tensor
    aug: Draw | None


def plan_epoch(n: int, batch: int, policy: AugmentPolicy, shape: tuple[int, int], generator: torch.Generator, *,
               device, min_last: int = 2) -> list[Step]:
    """An epoch's batches and augmentation draws for images of `shape` (height, width), drawn
    up front from `generator` in the order the steps use them (so exactly what drawing step
    by step gives), then moved to the device together: no step waits on the host for its
    indices or crop boxes."""
    chunks = batch_indices(n, batch, generator, min_last=min_last)
    draws = [draw(len(c), shape[1], policy, generator, height=shape[0]) for c in chunks]
    device = torch.device(device)
    if device.type == "cpu":
        return [Step(c, d) for c, d in zip(chunks, draws)]
    sizes = [len(c) for c in chunks]
    rows = _moved(chunks, sizes, device)
    if draws[0] is None:
        return [Step(r, None) for r in rows]
    thetas = _moved([d.theta for d in draws], sizes, device) if draws[0].theta is not None else [None] * len(draws)
    perms = _moved([d.perm for d in draws], sizes, device) if draws[0].perm is not None else [None] * len(draws)
    return [Step(r, Draw(t, q, d.lam, d.centre)) for r, t, q, d in zip(rows, thetas, perms, draws)]


def _moved(parts: list[torch.Tensor], sizes: list[int], device: torch.device) -> list[torch.Tensor]:
    """Per-step tensors moved to the device in one copy (one per epoch, not one per step)."""
    return list(torch.cat(parts).to(device, non_blocking=True).split(sizes))


class Normalizer:
    """uint8 batch -> (augmented) normalised float batch on the device."""

    def __init__(self, mean, std, device, channels_last: bool):
        self.mean = torch.tensor(mean, device=device)
        self.std = torch.tensor(std, device=device)
        self.channels_last = channels_last

    def __call__(self, x_u8: torch.Tensor, policy: AugmentPolicy | None, aug: Draw | None):
        x = to_float(x_u8)
        if policy is not None:
            x = apply(x, policy, aug)
        x = normalize(x, self.mean, self.std)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def use_channels_last(model: nn.Module, device: torch.device) -> bool:
    """Channels-last on CUDA; on the CPU only for BatchNorm nets. `python -m bench.channels_last`
    (bench/results/channels_last.md, 2 threads) measured CPU training at 4.6k vs 3.0k img/s
    (channels-last vs contiguous) for convnet_w32_bn, but 2.0k vs 3.4k for convnet_w32 and
    332 vs 407 for convnet, whose instance norm is a GroupNorm."""
    return device.type == "cuda" or bool(batchnorm_layers(model))


def _autocast(device: torch.device, enabled: bool, *, cache: bool = True):
    """bf16 (fp16 without it) autocast on CUDA. `cache=False` inside a CUDA graph capture, which
    cannot keep autocast's cast weights between replays."""
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype, cache_enabled=cache)
    return torch.autocast(device.type, enabled=False)


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, mean, std, *, device="cpu",
                   batch_size: int = 1024, amp: bool = True, features: bool = False,
                   rows: torch.Tensor | None = None) -> torch.Tensor:
    """Logits [N, K] (float32, on `device`) of un-augmented uint8 images [N, C, H, W];
    with `features`, the model's pooled features [N, D] instead. With `rows` (indices into
    `images`), of those rows only, in that order [len(rows), K]: gathered a batch at a time,
    so a pass over part of a store never holds all its rows."""
    device = torch.device(device)
    model.eval()
    cl = use_channels_last(model, device)
    if cl and any(p.dim() == 4 and not p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters()):
        model.to(memory_format=torch.channels_last)  # only where needed: a graphed fit holds its parameters' addresses
    norm = Normalizer(mean, std, device, cl)
    n = len(images) if rows is None else len(rows)
    first, last = distributed.shard(n)  # under torchrun each rank infers its share
    # One output block, filled batch by batch: a block per batch, kept to the end, would sit
    # between each batch's freed activations on the malloc heap and fragment it (a coarse
    # pass over 200 000 rows, batch 1024, grew RSS ~6 MB a batch, to 2.6 GB).
    out = None
    for start in range(first, last, batch_size):
        stop = min(start + batch_size, last)
        batch = images[start:stop] if rows is None else images[rows[start:stop]]
        x = norm(batch.to(device, non_blocking=True), None, None)
        with _autocast(device, amp):
            y = (model.forward_features(x) if features else model(x)).float()
        if out is None:
            out = torch.empty(last - first, y.shape[1], dtype=torch.float32, device=device)
        out[start - first:stop - first] = y
    if distributed.world_size() > 1:
        width = out.shape[1] if out is not None else _output_width(model, images[:1], norm, device,
                                                                   features=features)
        mine = out if out is not None else torch.empty(0, width, device=device)
        return distributed.gather_rows(mine, n)
    return out if out is not None else torch.empty(0)


def _output_width(model, one, norm, device, *, features: bool) -> int:
    """Logit (or feature) width, for a rank whose share of a pass is empty."""
    x = norm(one.to(device), None, None)
    return (model.forward_features(x) if features else model(x)).shape[1]


def accuracy(model: nn.Module, split: Split, mean, std, *, device="cpu") -> float:
    """Top-1 accuracy in percent on un-augmented images."""
    logits = predict_logits(model, split.images, mean, std, device=device)
    return 100.0 * (logits.argmax(1).cpu() == split.labels.cpu()).float().mean().item()


@dataclass
class History:
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)  # percent, on augmented batches
    test_acc: dict[int, float] = field(default_factory=dict)  # epoch -> percent
    seconds: float = 0.0
    val_acc: float | None = None  # percent on the validation split after the last epoch

    @property
    def final_acc(self) -> float:
        return self.test_acc[max(self.test_acc)] if self.test_acc else float("nan")

    def best_last20(self, epochs: int) -> float:
        """The paper's metric: the best test accuracy among evaluated epochs in the last 20 %."""
        vals = [a for e, a in self.test_acc.items() if e >= int(0.8 * epochs)]
        return max(vals) if vals else float("nan")


def fit(model: nn.Module, data: Split, recipe: Recipe, objective, *, mean, std, device="cpu",
        seed: int = 0, test: Split | None = None, val: Split | None = None, hook: Optional[Hook] = None,
        progress: bool = True, desc: str = "train", resume: Path | None = None, graph: bool = True,
        backend=None) -> History:
    """Train `model` on `data` (uint8 images on any device) and return its History: test
    accuracy at the recipe's evaluation epochs, validation accuracy after the last one.

    `hook(epoch, indices, logits, labels)` runs after every step with the batch's detached
    logits. With `resume`, a checkpoint is written after every epoch and picked up on the
    next call, so an interrupted run ends exactly like an uninterrupted one. On CUDA with
    CCFS_CUDA_GRAPHS=1 the full-size steps replay one captured CUDA graph (ccfs.stepgraph;
    `graph=False` keeps them eager; `backend` is the tests' stand-in for CUDA's)."""
    _check_mix(recipe, objective)
    recipe = replace(recipe, epochs=recipe.epochs_for(len(data)), steps=0)  # the compute rule, resolved
    device = torch.device(device)
    cl = use_channels_last(model, device)
    model.to(device, memory_format=torch.channels_last if cl else torch.contiguous_format)
    net = _data_parallel(model, device)
    _place_teacher(objective, device)
    net, objective = _compiled(net, objective, device) if recipe.compile else (net, objective)
    mapped = data.mapped
    data = data.batches_on(device) if mapped else data.to(device)  # a store stays on the host
    norm = Normalizer(mean, std, device, cl)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=MOMENTUM,
                          weight_decay=recipe.weight_decay)
    scaler = _scaler(device, recipe)
    gen = torch.Generator().manual_seed(seed)
    hist, start = History(), 0
    if resume is not None and Path(resume).is_file():
        start, hist = _load_resume(resume, model, opt, gen, hook=hook)
    graphed = _graphable(graph, device, recipe, scaler, compiled=recipe.compile, hook=hook, mapped=mapped)
    steps = _Steps(net, opt, objective, data, norm=norm, recipe=recipe, device=device, hook=hook, scaler=scaler,
                   graphed=graphed, backend=backend, desc=desc)
    evals = eval_epochs(recipe.epochs, recipe.eval_last) if test is not None else set()
    # disable=None: tqdm draws only when stderr is a terminal (no bar noise in logs or CI)
    bar = tqdm(range(start, recipe.epochs), desc=desc, disable=None if progress else True, leave=False, unit="ep")
    try:
        for epoch in bar:
            t0 = time.perf_counter()
            steps.set_lr(epoch)
            loss, acc = steps.epoch(epoch, gen)
            hist.train_loss.append(loss)
            hist.train_acc.append(acc)
            hist.seconds += time.perf_counter() - t0
            if epoch in evals:
                hist.test_acc[epoch] = accuracy(model, test, mean, std, device=device)
            if val is not None and epoch == recipe.epochs - 1:
                hist.val_acc = accuracy(model, val, mean, std, device=device)
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.1f}",
                            test=f"{hist.test_acc.get(epoch, float('nan')):.1f}")
            if resume is not None:
                _save_resume(resume, epoch + 1, model, opt, gen=gen, hook=hook, hist=hist)
    finally:
        steps.close()
    return hist


class _Steps:
    """One model's training steps over a fit. Under torchrun (`net` wrapped in DDP) every rank
    draws the same global batch and augmentation, trains on its share, and the loss is scaled
    so the averaged gradient is the global batch's mean; the hook sees the whole batch's logits.
    With `graphed` (`_graphable`) the full-size steps replay one CUDA graph (ccfs.stepgraph)
    and the optimizer is its GraphSGD."""

    def __init__(self, net, opt, objective, data: Split, *, norm: Normalizer, recipe: Recipe, device, hook,
                 scaler, graphed: bool, backend=None, desc: str = "train"):
        self.net, self.opt, self.objective, self.data, self.norm = net, opt, objective, data, norm
        self.recipe, self.device, self.hook, self.scaler = recipe, device, hook, scaler
        self.policy = augment_policy(recipe)
        self.world = distributed.world_size()
        self.sgd = stepgraph.GraphSGD(opt, device) if graphed else None
        self.graph = stepgraph.StepGraph(self._graph_step, enabled=graphed, device=device, backend=backend, name=desc)
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.epoch_now = 0

    def close(self) -> None:
        """Free the graph and its pool now (the step refers back to this object: a cycle, which
        only Python's cyclic collector would free) and the last gradients."""
        self.graph.close()
        self.opt.zero_grad(set_to_none=True)

    def set_lr(self, epoch: int) -> None:
        _set_lr(self.opt, self.recipe, epoch, self.sgd)

    def epoch(self, epoch: int, gen: torch.Generator) -> tuple[float, float]:
        """One epoch: (mean loss, accuracy in percent on the augmented batches)."""
        self.net.train()
        self.epoch_now = epoch
        self.loss_sum.zero_()
        self.correct.zero_()
        data = self.data
        for st in plan_epoch(len(data), self.recipe.batch_for(len(data)), self.policy, tuple(data.images.shape[-2:]),
                             gen, device=self.device, min_last=2 * self.world):
            if self.graph.enabled:
                self.graph(st.rows, None if st.aug is None else st.aug.theta)
            else:
                self.step(st.rows, st.aug)
        distributed.sum_(self.loss_sum)
        n = len(data)
        return self.loss_sum.item() / n, 100.0 * self.correct.item() / n

    def _graph_step(self, rows: torch.Tensor, theta: torch.Tensor | None) -> None:
        self.step(rows, None if theta is None else Draw(theta=theta), cache=False)

    def step(self, rows: torch.Tensor, aug: Draw | None, *, cache: bool = True) -> None:
        data, world = self.data, self.world
        x = self.norm(data.images[rows], self.policy, aug)  # [B, C, H, W], the global batch
        y = data.labels[rows]
        a, b = distributed.shard(len(rows))
        with _autocast(self.device, self.recipe.amp, cache=cache):
            loss, logits = self.objective(self.net, x[a:b], y[a:b])
        self.opt.zero_grad(set_to_none=True)
        if self.sgd is not None:
            loss.backward()
            self.sgd.step()
        else:
            self.scaler.scale(loss * ((b - a) * world / len(rows)) if world > 1 else loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        logits = distributed.gather_rows(logits.detach().float(), len(rows))  # [B, K]
        if self.hook is not None:
            self.hook(self.epoch_now, rows, logits, y)
        self.loss_sum += loss.detach() * (b - a)
        self.correct += (logits.argmax(1) == y).sum()


def fit_group(models: list[nn.Module], sets: list[Split], recipe: Recipe, objective, *, mean, std,
              seeds: list[int], device="cpu", test: Split | None = None, val: Split | None = None,
              progress: bool = True, desc: str = "train", graph: bool = True, backend=None) -> list[History]:
    """Train G models of one architecture, each on its own set (all of one size) with its own
    seed (its rows and augmentation), and return their Histories. A group of one is `fit`.
    More are one stacked model (torch.func: the members' parameters and buffers stacked, the
    forward vmapped), one optimizer over the stacked tensors (SGD is elementwise, so each
    member follows its own trajectory), the KD teacher one call over the G batches; BatchNorm
    members keep their own running statistics. The same training as `fit` up to float
    rounding: a member's loss is summed with the others' before the backward pass and its
    convolutions run as one grouped kernel. Each History's `seconds` is the group's time over
    G. No resume: a group that is stopped trains again from its start. With CUDA graphs on and no mix,
    the group's step is one CUDA graph, as in `fit`. A group trains eager
    and contiguous (no `recipe.compile`, no channels-last), and on a GPU without bf16 one
    loss scaler serves all members (an overflow in one skips the step of all)."""
    if len(models) != len(sets) or len(models) != len(seeds) or not models:
        raise ValueError("fit_group needs one set and one seed per model")
    if len(models) == 1:
        return [fit(models[0], sets[0], recipe, objective, mean=mean, std=std, device=device, seed=seeds[0],
                    test=test, val=val, progress=progress, desc=desc, graph=graph, backend=backend)]
    if len({len(d) for d in sets}) > 1:
        raise ValueError(f"a group trains sets of one size, not {sorted({len(d) for d in sets})}")
    _check_mix(recipe, objective)
    n, g = len(sets[0]), len(models)
    recipe = replace(recipe, epochs=recipe.epochs_for(n), steps=0)
    device = torch.device(device)
    for m in models:
        m.to(device, memory_format=torch.contiguous_format)
    _place_teacher(objective, device)
    params, buffers = torch.func.stack_module_state(models)  # {name: [G, ...]}
    base = copy.deepcopy(models[0]).to("meta")
    forward = torch.vmap(lambda p, b, x: torch.func.functional_call(base, (p, b), (x,)))
    if all(d is sets[0] for d in sets):  # one set for all (the full data): a view, not G copies
        images = sets[0].images.to(device).unsqueeze(0).expand(g, *sets[0].images.shape)  # [G, N, C, H, W] uint8
        labels = sets[0].labels.to(device).unsqueeze(0).expand(g, n)  # [G, N]
    else:
        images = torch.stack([d.images for d in sets]).to(device)
        labels = torch.stack([d.labels for d in sets]).to(device)
    member = torch.arange(g, device=device)[:, None]
    norm = Normalizer(mean, std, device, False)
    policy = augment_policy(recipe)
    opt = torch.optim.SGD(list(params.values()), lr=recipe.lr, momentum=MOMENTUM, weight_decay=recipe.weight_decay)
    scaler = _scaler(device, recipe)
    graphed = _graphable(graph, device, recipe, scaler, compiled=False)  # a group trains eager, whatever compile says
    sgd = stepgraph.GraphSGD(opt, device) if graphed else None
    loss_sum = torch.zeros(g, device=device)
    correct = torch.zeros(g, device=device, dtype=torch.long)

    def step(rows, theta, steps=None, *, cache: bool = True) -> None:
        x = _group_batch(images, member, rows, steps, norm, policy, theta)  # [G, B, C, H, W]
        y = labels[member, rows]
        with _autocast(device, recipe.amp, cache=cache):
            losses, logits = objective.members(lambda xs: forward(params, buffers, xs), x, y)
        opt.zero_grad(set_to_none=True)
        if sgd is not None:
            losses.sum().backward()
            sgd.step()
        else:
            scaler.scale(losses.sum()).backward()
            scaler.step(opt)
            scaler.update()
        loss_sum.add_(losses.detach() * rows.shape[1])
        correct.add_((logits.detach().argmax(2) == y).sum(1))

    graph_step = stepgraph.StepGraph(lambda rows, theta: step(rows, theta, cache=False), enabled=graphed,
                                     device=device, backend=backend, name=desc)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    hists = [History() for _ in models]
    evals = eval_epochs(recipe.epochs, recipe.eval_last) if test is not None else set()
    bar = tqdm(range(recipe.epochs), desc=desc, disable=None if progress else True, leave=False, unit="ep")
    try:
        for epoch in bar:
            t0 = time.perf_counter()
            _set_lr(opt, recipe, epoch, sgd)
            base.train()
            plans = [plan_epoch(n, recipe.batch_for(n), policy, tuple(images.shape[-2:]), gen, device=device)
                     for gen in gens]
            loss_sum.zero_()
            correct.zero_()
            for steps in zip(*plans):
                rows = torch.stack([st.rows for st in steps])  # [G, B]
                theta = None if policy.mix != "none" or steps[0].aug is None else torch.cat([st.aug.theta for st in steps])
                if graph_step.enabled:
                    graph_step(rows, theta)
                else:
                    step(rows, theta, steps)
            seconds = (time.perf_counter() - t0) / g
            losses_, accs = (loss_sum / n).tolist(), (100.0 * correct / n).tolist()
            last = epoch == recipe.epochs - 1
            if epoch in evals or (val is not None and last):
                _unstack(params, buffers, models)
            for k, (m, h) in enumerate(zip(models, hists)):
                h.train_loss.append(losses_[k])
                h.train_acc.append(accs[k])
                h.seconds += seconds
                if epoch in evals:
                    h.test_acc[epoch] = accuracy(m, test, mean, std, device=device)
                if val is not None and last:
                    h.val_acc = accuracy(m, val, mean, std, device=device)
            bar.set_postfix(loss=f"{sum(losses_) / g:.3f}", acc=f"{sum(accs) / g:.1f}")
    finally:
        graph_step.close()
        opt.zero_grad(set_to_none=True)
    _unstack(params, buffers, models)
    return hists


def _group_batch(images, member, rows, steps: tuple[Step, ...] | None, norm: Normalizer, policy: AugmentPolicy,
                 theta: torch.Tensor | None):
    """The G members' batches, each augmented by its own draws: one warp over all G·B images
    by the members' maps `theta` [G·B, 2, 3] (a mix permutes within each member's batch, so it
    runs per member, from its `steps`)."""
    g, b = rows.shape
    if policy.mix != "none":
        return torch.stack([norm(images[k, st.rows], policy, st.aug) for k, st in enumerate(steps)])
    x = norm(images[member, rows].flatten(0, 1), policy, None if theta is None else Draw(theta=theta))
    return x.view(g, b, *x.shape[1:])


@torch.no_grad()
def _unstack(params: dict, buffers: dict, models: list[nn.Module]) -> None:
    """Copy member k's slice of the stacked parameters and buffers into models[k]."""
    for k, m in enumerate(models):
        for name, t in params.items():
            m.get_parameter(name).copy_(t[k])
        for name, t in buffers.items():
            m.get_buffer(name).copy_(t[k])


def _check_mix(recipe: Recipe, objective) -> None:
    if recipe.mix != "none" and not hasattr(objective, "teacher"):
        raise ValueError("train.mix mixes images without mixing labels: it needs a KD objective (a teacher)")


def _scaler(device: torch.device, recipe: Recipe) -> torch.amp.GradScaler:
    """fp16 loss scaling where AMP runs on a CUDA device without bf16 (off otherwise)."""
    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and recipe.amp
                                and not torch.cuda.is_bf16_supported())


def _set_lr(opt: torch.optim.Optimizer, recipe: Recipe, epoch: int, sgd: stepgraph.GraphSGD | None = None) -> None:
    """The epoch's learning rate: warmup, then cosine (`lr_factor`); also in a GraphSGD's device
    tensor where the step is graphed."""
    lr = recipe.lr * lr_factor(epoch, recipe.epochs, recipe.warmup_epochs)
    for group in opt.param_groups:
        group["lr"] = lr
    if sgd is not None:
        sgd.set_lr(lr)


def _graphable(graph: bool, device: torch.device, recipe: Recipe, scaler, *, compiled: bool, hook=None,
               mapped: bool = False) -> bool:
    """Whether a fit's full-size steps are captured as one CUDA graph (ccfs.stepgraph): asked for
    (`graph`), wanted on the device, and nothing in the step that a graph cannot hold: a per-step
    hook, a mix (Python numbers per batch), fp16 loss scaling (its step reads the host), torchrun,
    torch.compile, or a store-backed set (rows read on the host)."""
    return (graph and stepgraph.wanted(device) and hook is None and not mapped and not compiled
            and recipe.mix == "none" and not scaler.is_enabled() and distributed.world_size() == 1)


def has_cxx_compiler() -> bool:
    """Whether a C++ compiler is on PATH: inductor needs one to compile for the CPU."""
    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def _compiled(net: nn.Module, objective, device: torch.device):
    """`train.compile`: the training forward of `net` and of a KD teacher through
    torch.compile (inductor), one static graph per batch shape (a full batch and the last
    one), so a resumed run replays the same kernels. Evaluation stays eager. Each fit starts
    from a cleared dynamo cache: every set size brings its own last-batch shape, and over a
    sweep's fits (one function, ConvNet.forward, for students, filters and teacher) the graphs
    would pass dynamo's recompile limit (8 a function), after which it runs eager without
    failing. Clearing costs about a second a fit: the graphs come back from inductor's
    on-disk cache (measured on 1 loaded thread: 2.2 s against 0.7 s for a 550-image epoch)."""
    if device.type == "cpu" and not has_cxx_compiler():
        raise ConfigError("train.compile on the CPU needs a C++ compiler (g++ or clang++ on PATH): install "
                          "one or set train.compile=false")
    torch._dynamo.reset()
    net = torch.compile(net, dynamic=False)
    if getattr(objective, "teacher", None) is not None:
        objective = copy.copy(objective)  # the caller's objective keeps its eager teacher
        objective.teacher = torch.compile(objective.teacher, dynamic=False)
    return net, objective


def _place_teacher(objective, device: torch.device) -> None:
    """A KD teacher runs on the device in the memory format the rule above gives it, so its
    logits (and every student's) do not depend on what ran the teacher before."""
    teacher = getattr(objective, "teacher", None)
    if teacher is not None:
        cl = use_channels_last(teacher, device)
        teacher.to(device, memory_format=torch.channels_last if cl else torch.contiguous_format)


def _data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP under torchrun (gradients averaged over ranks; BatchNorm statistics per rank,
    running statistics broadcast from rank 0), the model itself otherwise."""
    if distributed.world_size() == 1:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _save_resume(path, epoch, model, opt, *, gen, hook, hist: History) -> None:
    state = {"epoch": epoch, "model": model.state_dict(), "opt": opt.state_dict(),
             "gen": gen.get_state(), "hist": hist.__dict__,
             "hook": hook.state_dict() if hasattr(hook, "state_dict") else None}
    torch_save(state, path)


def _load_resume(path, model, opt, gen, *, hook):
    """The state after the last finished epoch; a resume file that cannot be read (cut short
    by a crash or a full disk) is only a shortcut: training starts again from epoch 0."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # data only: no code runs
    except Exception as e:  # noqa: BLE001 - any damage means the same: start again
        print(f"train: {path} cannot be read ({type(e).__name__}); training from the first epoch")
        return 0, History()
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    gen.set_state(state["gen"])
    if state["hook"] is not None and hasattr(hook, "load_state_dict"):
        hook.load_state_dict(state["hook"])
    hist = History(**state["hist"])
    return state["epoch"], hist
