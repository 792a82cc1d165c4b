"""The Python API: each step of ccfs as a function of tensors.

    import ccfs
    data = ccfs.load_dataset("fashion-mnist")               # or ccfs.from_tensors(...)
    teacher = ccfs.train_teacher(data, "convnet_w32_bn", ccfs.Recipe(epochs=15, augment="crop"))
    distilled = ccfs.distill_images(teacher, data, per_class=10)  # SRe2L / CDA images, a Split
    sel = ccfs.select("ccfs", data, teacher, ipc=50, alpha=0.2, distilled=distilled, score="aum")
    hist = ccfs.train_student(data, ccfs.synthetic_set(data, sel.distilled, sel.indices), teacher)

The CLI stages are this API plus artifacts: they call these functions and write what
they return into the run directory (so they can resume). Tensors: images are uint8
`[N, C, H, W]`, labels int64 `[N]`; every per-sample array is indexed by train row.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ccfs import methods
from ccfs.config import DistillCfg, Recipe, SelectCfg
from ccfs.data.cache import load_dataset
from ccfs.data.datasets import Dataset, Split
from ccfs.models import create_model
from ccfs.objectives import CrossEntropy, make_objective
from ccfs.scores import COMPUTED, to_hardness, true_class_logit
from ccfs.selection.ccfs import Filter, RoundState
from ccfs.teacher.difficulty import DynamicsRecorder
from ccfs.train import History, accuracy, fit, predict_logits

__all__ = ["Dataset", "Recipe", "SelectCfg", "Split", "Teacher", "distill_images", "from_tensors",
           "load_dataset", "new_model", "select", "synthetic_set", "train_student", "train_teacher"]


def from_tensors(train_images: torch.Tensor, train_labels: torch.Tensor, test_images: torch.Tensor,
                 test_labels: torch.Tensor, *, classes: list[str] | None = None, mean=None, std=None,
                 name: str = "tensors") -> Dataset:
    """A Dataset from your own uint8 [N, C, H, W] images and labels; mean / std default to
    the train images' per-channel statistics."""
    if mean is None or std is None:
        x = train_images.float().div(255)
        mean, std = x.mean((0, 2, 3)).tolist(), x.std((0, 2, 3)).tolist()
    k = int(max(train_labels.max(), test_labels.max())) + 1
    return Dataset(name, Split(train_images, train_labels.long()), Split(test_images, test_labels.long()),
                   classes or [str(c) for c in range(k)], tuple(mean), tuple(std))


def new_model(name: str, data: Dataset, seed: int) -> torch.nn.Module:
    """A fresh model of the registry, initialised from `seed`."""
    torch.manual_seed(seed)
    return create_model(name, data.num_classes, data.channels, data.image_size)


def _device(device) -> torch.device:
    """`auto`, a name or a torch.device; on CUDA with deterministic kernels, as the CLI's default."""
    from ccfs.context import resolve_device

    return resolve_device(str(device))


# ----------------------------------------------------------------------------- teacher

@dataclass
class Teacher:
    model: torch.nn.Module  # eval mode, frozen
    train_logits: torch.Tensor  # [N, K] on un-augmented train images (CPU)
    train_labels: torch.Tensor  # [N]
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # raw scores [N], ccfs.scores signs
    test_acc: float = float("nan")  # percent
    seconds: float = 0.0  # of training
    val_acc: float | None = None  # percent, where the data has a validation split

    @property
    def correct(self) -> torch.Tensor:
        """[N] bool: the train images the teacher classifies correctly (the selection pool)."""
        return self.train_logits.argmax(1) == self.train_labels

    def hardness(self, score: str) -> torch.Tensor | None:
        """Score `score` as hardness [N] (higher = harder); None for the computed score logits."""
        if score in COMPUTED:
            return None
        return to_hardness(torch.as_tensor(self.scores[score]).float(), score)


def train_teacher(data: Dataset, model: str = "convnet_w32_bn", recipe: Recipe | None = None, *,
                  seed: int = 0, device="auto", progress: bool = False, resume: Path | None = None,
                  record_epochs: list[int] | None = None) -> Teacher:
    """Train a teacher on the whole train set with cross-entropy, recording the difficulty
    scores (forgetting, EL2N, loss, margin, AUM) while it trains."""
    from ccfs.config import TEACHER_RECIPE

    recipe, device = recipe or TEACHER_RECIPE, _device(device)
    net = new_model(model, data, seed)
    recorder = DynamicsRecorder(len(data.train), recipe.epochs_for(len(data.train)), record_epochs)
    t0 = time.perf_counter()
    fit(net, data.train, recipe, CrossEntropy(), mean=data.mean, std=data.std, device=device, seed=seed,
        hook=recorder, progress=progress, desc="teacher", resume=resume)  # tested once, below
    seconds = time.perf_counter() - t0
    return finish_teacher(net, data, device, recorder.scores(), seconds=seconds)


def finish_teacher(net: torch.nn.Module, data: Dataset, device, scores: dict, *, seconds: float) -> Teacher:
    """A trained (or imported) teacher's logits on the train set and test accuracy."""
    net.to(device).eval()
    logits = predict_logits(net, data.train.images, data.mean, data.std, device=device).cpu()
    test_acc = accuracy(net, data.test, data.mean, data.std, device=device)
    val_acc = accuracy(net, data.val, data.mean, data.std, device=device) if data.val is not None else None
    return Teacher(net.requires_grad_(False), logits, data.train.labels, scores, test_acc, seconds, val_acc)


# ----------------------------------------------------------------------------- distill

def distill_images(teacher: Teacher | torch.nn.Module, data: Dataset, per_class: int, *, method: str = "cda",
            seed: int = 0, device="auto", progress: bool = False, **settings) -> Split:
    """`per_class` distilled images of every class by BatchNorm matching (SRe2L / CDA) from a
    BatchNorm teacher. `settings`: any distill.* key (iterations, lr, r_bn, ...)."""
    from ccfs.config import DistillCfg
    from ccfs.synthesis import distill_from_config

    net = teacher.model if isinstance(teacher, Teacher) else teacher
    cfg = replace(DistillCfg(), method=method, **settings)
    device = _device(device)
    images, labels = distill_from_config(cfg, net.to(device), data, per_class, seed=seed, device=device,
                                         progress=progress)
    return Split(images, labels)


# ----------------------------------------------------------------------------- select

def synthetic_set(data: Dataset, distilled: Split | None, indices) -> Split:
    """distilled images ∪ train[indices], as one uint8 Split."""
    real = data.train.subset(indices)
    if distilled is None or len(distilled) == 0:
        return real
    return Split(torch.cat([distilled.images, real.images]), torch.cat([distilled.labels, real.labels]))


def held_out(data: Dataset) -> Split:
    """Where models are checked while choices are being made: the validation split if
    there is one, else the test set."""
    return data.val if data.val is not None else data.test


def eval_sample(split: Split, size: int, seed: int = 0) -> Split | None:
    """A fixed class-balanced sample of `size` images (the filters' accuracy for the round
    log), or None for size 0."""
    if size <= 0:
        return None
    k = int(split.labels.max()) + 1
    from ccfs.selection.baselines import random_balanced

    return split.subset(random_balanced(split.labels, max(1, size // k), torch.Generator().manual_seed(seed)))


FILTER_SEEDS = 1000  # filters of selection seed s are seeded (1000 + s) · 1000 + round: never a student's seed


def filter_trainer(data: Dataset, distilled: Split | None, objective, *, arch: str, recipe: Recipe,
                   seed: int, device, progress: bool = False, desc: str = "filter",
                   eval_set: Split | None = None) -> Callable[[int, list[int], torch.Tensor], Filter]:
    """`train_filter(j, selected, rows)`: a fresh filter (seed·1000 + j) trained on
    distilled ∪ train[selected]; its logits on the train rows `rows` (bool [N], the coarse
    pass over the eligible pool; other rows stay zero) and its accuracy on `eval_set`."""
    # Filters train eager whatever `recipe.compile` says: their fits are short and each round's
    # set size brings new batch shapes to compile, so on 2 CPU cores compiled selections took
    # 1.5-2.3x as long as eager ones (bench/results/compile.md).
    recipe = replace(recipe, compile=False)

    def train_filter(j: int, selected: list[int], rows: torch.Tensor) -> Filter:
        s = seed * 1000 + j
        model = new_model(arch, data, s)
        t0 = time.perf_counter()
        fit(model, synthetic_set(data, distilled, selected), recipe, objective, mean=data.mean, std=data.std,
            device=device, seed=s, progress=progress, desc=f"{desc} {j + 1}")
        t1 = time.perf_counter()
        idx = rows.nonzero().flatten()
        logits = torch.zeros(len(data.train), data.num_classes)
        # rows=, not images[idx]: the eligible rows are gathered a batch at a time (a store's never all at once)
        if len(idx):  # a lazy coarse pass asks for no rows up front
            logits[idx] = predict_logits(model, data.train.images, data.mean, data.std, device=device, rows=idx).cpu()
        t2 = time.perf_counter()
        acc = accuracy(model, eval_set, data.mean, data.std, device=device) if eval_set is not None else None
        more = lambda rows: predict_logits(model, data.train.images, data.mean, data.std,  # noqa: E731
                                           device=device, rows=rows).cpu()
        return Filter(logits, acc, t1 - t0, t2 - t1, infer=more)

    return train_filter


def select(method: str, data: Dataset, teacher: Teacher, *, ipc: int, alpha: float = 0.0,
           distilled: Split | None = None, score: str = "forgetting", settings: SelectCfg | None = None,
           filter_model: str = "convnet_w32", recipe: Recipe | None = None, objective: str = "kd",
           seed: int = 0, param: float = 0.0, device="auto", progress: bool = False,
           hardness: torch.Tensor | None = None, state: RoundState | None = None,
           on_round: Callable[[RoundState], None] | None = None,
           distill_settings: DistillCfg | None = None) -> methods.Selection:
    """Run one selection method (a name of `ccfs.methods.METHODS`) and return its chosen
    train indices. `distilled` holds int(ipc · alpha) images per class (first per class are
    used) for methods that use the distilled part; `settings` the other select.* options;
    filters are trained with `recipe` and KD from the teacher (objective "kd"). A method that
    distils its own α part (selmatch) does so from its chosen real images with
    `distill_settings` (default DistillCfg()), into `Selection.distilled`."""
    entry = methods.get(method)
    settings = replace(settings or SelectCfg(), ipc=ipc, alpha=alpha, score=score)
    cpc = entry.distilled_per_class(ipc, int(ipc * alpha))
    part = _first_per_class(distilled, cpc, data.num_classes) if entry.distilled in ("alpha", "ipc") else None
    device = _device(device)
    if hardness is None and entry.needs_scores:
        hardness = teacher.hardness(entry.score or score)
    obj = make_objective(objective, teacher.model if objective == "kd" else None, (recipe or Recipe()).temperature)
    inputs = methods.SelectionInputs(
        labels=data.train.labels, num_classes=data.num_classes, ipc=ipc, cpc=cpc, hardness=hardness,
        score_name=score, teacher_correct=teacher.correct,
        teacher_logit=true_class_logit(teacher.train_logits, data.train.labels),
        features=lambda: predict_logits(teacher.model, data.train.images, data.mean, data.std, device=device,
                                        features=True).cpu(),
        train_filter=filter_trainer(data, part, obj, arch=filter_model, recipe=recipe or Recipe(), seed=FILTER_SEEDS + seed,
                                    device=device, progress=progress, desc=f"{method} filter",
                                    eval_set=eval_sample(held_out(data), settings.filter_eval_size)),
        cfg=settings, seed=seed, param=param, state=state, on_round=on_round)
    sel = entry.select(inputs)
    sel.distilled = part
    if entry.distilled == "own" and cpc and sel.log.get("distill_init"):
        from ccfs.synthesis import distill_from_config

        images, labels = distill_from_config(distill_settings or DistillCfg(), teacher.model.to(device), data, cpc,
                                             seed=seed, device=device, init_indices=sel.log["distill_init"],
                                             progress=progress)
        sel.distilled = Split(images, labels)
    return sel


def _first_per_class(distilled: Split | None, per_class: int, num_classes: int) -> Split | None:
    if distilled is None or per_class == 0:
        return None
    keep = [i for c in range(num_classes) for i in (distilled.labels == c).nonzero().flatten()[:per_class].tolist()]
    if len(keep) < per_class * num_classes:
        raise ValueError(f"{len(distilled)} distilled images given, {per_class} per class are needed")
    return distilled.subset(keep)


# ----------------------------------------------------------------------------- evaluate

def train_student(data: Dataset, synthetic: Split, teacher: Teacher | torch.nn.Module | None, *,
             model: str = "convnet_w32", recipe: Recipe | None = None, seed: int = 0,
             objective: str = "kd", device="auto", progress: bool = False, desc: str = "eval",
             objective_fn=None) -> History:
    """Train a fresh student on `synthetic` (KD from the teacher, or CE) and return its
    History; `History.final_acc` is the test accuracy after the last epoch, `History.val_acc`
    the validation accuracy (where `data` has a validation split), on which choices are made."""
    recipe = recipe or Recipe()
    if objective_fn is None:
        net = teacher.model if isinstance(teacher, Teacher) else teacher
        objective_fn = make_objective(objective, net if objective == "kd" else None, recipe.temperature)
    student = new_model(model, data, seed)
    return fit(student, synthetic, recipe, objective_fn, mean=data.mean, std=data.std, device=_device(device),
               seed=seed, test=data.test, val=data.val, progress=progress, desc=desc)
