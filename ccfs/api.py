"""The Python API: each step of ccfs as a function of tensors, and the one place where the
pipeline's pieces are built (models, the teacher's outputs, distilled images and the part
of them a set uses, hardness, selection inputs, filter trainers, students).

    import ccfs
    data = ccfs.load_dataset("fashion-mnist")               # or ccfs.from_tensors(...)
    teacher = ccfs.train_teacher(data)                       # the main job's teacher recipe
    distilled = ccfs.distill_images(teacher, data, per_class=10)  # SRe2L / CDA images, a Split
    sel = ccfs.select("ccfs", data, teacher, ipc=50, alpha=0.2, distilled=distilled, score="aum")
    hist = ccfs.train_student(data, ccfs.synthetic_set(data, sel.distilled, sel.indices), teacher)

The CLI stages are this API plus the run directory (`ccfs.context.Run`): they call these
functions and keep what they return as artifacts, so that a run resumes. Tensors: images
are uint8 `[N, C, H, W]`, labels int64 `[N]`; every per-sample array is indexed by train row.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ccfs.config import STUDENT_RECIPE, TEACHER_RECIPE, DistillCfg, Recipe, SelectCfg
from ccfs.data.cache import load_dataset
from ccfs.data.datasets import Dataset, Split
from ccfs.device import resolve_device
from ccfs.distill.synthesis import distill_from_config
from ccfs.errors import ConfigError
from ccfs.models import create_model
from ccfs.objectives import CrossEntropy, make_objective
from ccfs.scores import COMPUTED, to_hardness, true_class_logit
from ccfs.selection import methods
from ccfs.selection.baselines import random_balanced
from ccfs.selection.ccfs import Filter, RoundState
from ccfs.teacher.difficulty import DynamicsRecorder
from ccfs.train import History, accuracy, fit, fit_group, predict_logits

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


_INIT = threading.Lock()  # the global generator a model's initialisation draws from is one for all threads


def new_model(name: str, data: Dataset, seed: int) -> torch.nn.Module:
    """A fresh model of the registry, initialised from `seed` (also where selections of
    several seeds build their filters at once, in threads: one at a time)."""
    with _INIT:
        torch.manual_seed(seed)
        return create_model(name, data.num_classes, data.channels, data.image_size)


def _device(device) -> torch.device:
    """`auto`, a name or a torch.device; on CUDA with deterministic kernels, as the CLI's default."""
    return resolve_device(str(device))


def check_budget(data: Dataset, ipc: int) -> None:
    """IPC must fit in the smallest class."""
    counts = torch.bincount(data.train.labels, minlength=data.num_classes)
    if ipc > int(counts.min()):
        c = int(counts.argmin())
        raise ConfigError(f"select.ipc={ipc} is larger than class {c} ({data.classes[c]!r}), which "
                          f"has {int(counts[c])} training images; use select.ipc <= {int(counts.min())}")


# ----------------------------------------------------------------------------- teacher

@dataclass
class Teacher:
    """A trained (or imported) teacher and what selection needs of it; the teacher stage
    writes these fields to OUT/teacher/ and the run directory reads them back."""
    model: torch.nn.Module  # eval mode, frozen
    correct: torch.Tensor  # [N] bool: the train images it classifies correctly (the selection pool)
    true_logit: torch.Tensor  # [N] its true-class logit on un-augmented train images
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # raw scores [N], ccfs.scores signs
    test_acc: float = float("nan")  # percent
    seconds: float = 0.0  # of training
    val_acc: float | None = None  # percent, where the data has a validation split

    def hardness(self, score: str) -> torch.Tensor | None:
        """Score `score` as hardness [N] (higher = harder); None for the computed score logits."""
        if score in COMPUTED:
            return None
        if score not in self.scores:
            have = ", ".join(self.scores) or "none"
            raise ConfigError(f"select.score={score} but the teacher stage recorded {have}; "
                              f"import one with teacher.scores=FILE or pick another score")
        return to_hardness(torch.as_tensor(self.scores[score]).float(), score)


def train_teacher(data: Dataset, model: str = "convnet_w32_bn", recipe: Recipe | None = None, *,
                  seed: int = 0, device="auto", progress: bool = False, resume: Path | None = None) -> Teacher:
    """Train a teacher on the whole train set with cross-entropy, recording the difficulty
    scores (forgetting, EL2N, loss, margin, AUM) while it trains."""
    recipe, device = recipe or TEACHER_RECIPE, _device(device)
    net = new_model(model, data, seed)
    recorder = DynamicsRecorder(len(data.train), recipe.epochs_for(len(data.train)))
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
    correct = logits.argmax(1) == data.train.labels
    return Teacher(net.requires_grad_(False), correct, true_class_logit(logits, data.train.labels), scores,
                   test_acc, seconds, val_acc)


# ----------------------------------------------------------------------------- distill

def distill_images(teacher: Teacher | torch.nn.Module, data: Dataset, per_class: int,
                   settings: DistillCfg | None = None, *, seed: int = 0, device="auto", progress: bool = False,
                   init_indices: list[int] | None = None, resume=None, on_batch=None, **fields) -> Split:
    """`per_class` distilled images of every class by BatchNorm matching (SRe2L / CDA) from a
    BatchNorm teacher, with `settings` (default DistillCfg()) and any distill.* `fields`
    (iterations, lr, r_bn, ...) over it. `init_indices`: train rows (sorted by class) to start
    from instead of noise; `resume` / `on_batch`: going on from, and saving, progress."""
    cfg = replace(settings or DistillCfg(), **fields)
    net = teacher.model if isinstance(teacher, Teacher) else teacher
    device = _device(device)
    images, labels = distill_from_config(cfg, net.to(device), data, per_class, seed=seed, device=device,
                                         init_indices=init_indices, progress=progress, resume=resume,
                                         on_batch=on_batch)
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
    return split.subset(random_balanced(split.labels, max(1, size // k), torch.Generator().manual_seed(seed)))


FILTER_SEEDS = 1000  # filters of selection seed s are seeded (1000 + s) · 1000 + round: never a student's seed


class FilterGroups:
    """CCFS selections of several seeds in lockstep: each selection runs in its own thread and
    hands its round's filter here (`fit`); once every selection still running has handed one
    in, the filters are trained as groups (`fit_group`) of one set size, at most `limit` each,
    in seed order, and every thread goes on with its trained filter. The groups are fixed by
    the rounds, not by timing: a seed's round j waits for the other seeds' round j."""

    def __init__(self, parties: int, limit: int):
        self.parties, self.limit = parties, limit
        self.waiting: list[dict] = []
        self.cond = threading.Condition()

    def fit(self, model, data: Split, recipe: Recipe, objective, *, seed: int, order: int, **how) -> float:
        """Train `model` on `data` (seed `seed`) with the round's other filters; `order` (the
        selection's seed) fixes its place in a group. Returns its share of the group's
        training time (the group's seconds over its size)."""
        request = {"model": model, "data": data, "seed": seed, "order": order, "done": False, "error": None,
                   "seconds": 0.0, "how": {"recipe": recipe, "objective": objective, **how}}
        with self.cond:
            self.waiting.append(request)
            self._train_when_all_wait()
            while not request["done"]:
                self.cond.wait()
        if request["error"] is not None:
            raise request["error"]
        return request["seconds"]

    def leave(self) -> None:
        """A selection has finished (or failed): the others no longer wait for it."""
        with self.cond:
            self.parties -= 1
            self._train_when_all_wait()

    def _train_when_all_wait(self) -> None:
        if not self.waiting or len(self.waiting) < self.parties:
            return
        batch, self.waiting = sorted(self.waiting, key=lambda r: r["order"]), []
        try:
            for size in sorted({len(r["data"]) for r in batch}):  # sets of other sizes never share a group
                same = [r for r in batch if len(r["data"]) == size]
                for k in range(0, len(same), self.limit):
                    part = same[k:k + self.limit]
                    t0 = time.perf_counter()
                    fit_group([r["model"] for r in part], [r["data"] for r in part], seeds=[r["seed"] for r in part],
                              **part[0]["how"])
                    for r in part:
                        r["seconds"] = (time.perf_counter() - t0) / len(part)
        except BaseException as e:  # noqa: BLE001 - every selection of the batch raises it
            for r in batch:
                r["error"] = e
        finally:
            for r in batch:
                r["done"] = True
            self.cond.notify_all()


def filter_trainer(data: Dataset, distilled: Split | None, objective, *, arch: str, recipe: Recipe,
                   seed: int, device, progress: bool = False, desc: str = "filter",
                   eval_set: Split | None = None,
                   groups: FilterGroups | None = None) -> Callable[[int, list[int], torch.Tensor], Filter]:
    """`train_filter(j, selected, rows)`: a fresh filter (seed·1000 + j) trained on
    distilled ∪ train[selected]; its logits on the train rows `rows` (bool [N], the coarse
    pass over the eligible pool; other rows stay zero) and its accuracy on `eval_set`. With
    `groups`, the filter trains in a group with other selections' filters of its round."""
    # Filters train eager whatever `recipe.compile` says: their fits are short and each round's
    # set size brings new batch shapes to compile, so on 2 CPU cores compiled selections took
    # 1.5-2.3x as long as eager ones (bench/results/compile.md).
    recipe = replace(recipe, compile=False)

    def train_filter(j: int, selected: list[int], rows: torch.Tensor) -> Filter:
        s = seed * 1000 + j
        model = new_model(arch, data, s)
        t0 = time.perf_counter()
        how = dict(mean=data.mean, std=data.std, device=device, progress=progress, desc=f"{desc} {j + 1}")
        if groups is None:
            fit(model, synthetic_set(data, distilled, selected), recipe, objective, seed=s, **how)
            train_s = time.perf_counter() - t0
        else:  # its share of the group's time, not the wait for the other seeds
            train_s = groups.fit(model, synthetic_set(data, distilled, selected), recipe, objective, seed=s,
                                 order=seed, **how)
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
        return Filter(logits, acc, train_s, t2 - t1, infer=more)

    return train_filter


def select(method: str, data: Dataset, teacher: Teacher, *, ipc: int, alpha: float = 0.0,
           distilled: Split | None = None, score: str = "forgetting", settings: SelectCfg | None = None,
           filter_model: str = "convnet_w32", recipe: Recipe | None = None, objective: str = "kd",
           seed: int = 0, device="auto", progress: bool = False, state: RoundState | None = None,
           on_round: Callable[[RoundState], None] | None = None,
           distill_settings: DistillCfg | None = None, filter_groups: FilterGroups | None = None) -> methods.Selection:
    """Run one selection method and return its chosen train indices. `method`: a name of
    `ccfs.selection.methods.METHODS`, or a swept method's run name (`window_b0.3`).
    `distilled` holds at least int(ipc · alpha) images per class (the first of each class
    are used) for methods that use the distilled part; `settings` the other select.*
    options; filters are trained with `recipe` and KD from the teacher (objective "kd").
    `state` resumes a CCFS selection after its last finished round; `on_round` is called
    after every round. A method that distils its own α part (selmatch) does so from its
    chosen real images with `distill_settings` (default DistillCfg()). The distilled images
    that join the chosen ones are `Selection.distilled`. `filter_groups`: this selection's
    filters train in groups with other selections' (`FilterGroups`, several seeds at once)."""
    base, entry, param = methods.parse(method)
    settings = replace(settings or SelectCfg(), ipc=ipc, alpha=alpha, score=score)
    cpc = entry.distilled_per_class(ipc, int(ipc * alpha))
    part = first_per_class(distilled, cpc, data.num_classes) if entry.distilled in ("alpha", "ipc") else None
    device = _device(device)
    recipe = recipe or STUDENT_RECIPE
    obj = make_objective(objective, teacher.model if objective == "kd" else None, recipe.temperature)
    inputs = methods.SelectionInputs(
        labels=data.train.labels, num_classes=data.num_classes, ipc=ipc, cpc=cpc,
        hardness=teacher.hardness(entry.score or score) if entry.needs_scores else None,
        score_name=entry.score or score, teacher_correct=teacher.correct, teacher_logit=teacher.true_logit,
        features=lambda: predict_logits(teacher.model, data.train.images, data.mean, data.std, device=device,
                                        features=True).cpu(),
        train_filter=filter_trainer(data, part, obj, arch=filter_model, recipe=recipe, seed=FILTER_SEEDS + seed,
                                    device=device, progress=progress, desc=f"{method} filter",
                                    eval_set=eval_sample(held_out(data), settings.filter_eval_size),
                                    groups=filter_groups),
        cfg=settings, seed=seed, param=param, state=state, on_round=on_round)
    sel = entry.select(inputs)
    sel.distilled, sel.distilled_per_class = part, cpc
    if entry.distilled == "own" and cpc and sel.log.get("distill_init"):
        distill_settings = distill_settings or DistillCfg()
        if not distill_settings.synthesises:
            raise ConfigError(f"select.method {base} distils from the selected window: it needs "
                              "distill.method=sre2l or cda")
        sel.distilled = distill_images(teacher, data, cpc, distill_settings, seed=seed, device=device,
                                       init_indices=sel.log["distill_init"], progress=progress)
    return sel


def first_per_class(distilled: Split | None, per_class: int, num_classes: int) -> Split | None:
    """The first `per_class` distilled images of every class (None for none)."""
    if distilled is None or per_class == 0:
        return None
    keep = [i for c in range(num_classes) for i in (distilled.labels == c).nonzero().flatten()[:per_class].tolist()]
    if len(keep) < per_class * num_classes:
        raise ConfigError(f"{len(distilled)} distilled images given, {per_class} per class are needed; "
                          "in a run directory, run `ccfs distill` with this select.ipc / select.alpha")
    return distilled.subset(keep)


# ----------------------------------------------------------------------------- evaluate

def train_student(data: Dataset, synthetic: Split, teacher: Teacher | torch.nn.Module | None, *,
             model: str = "convnet_w32", recipe: Recipe | None = None, seed: int = 0,
             objective: str = "kd", device="auto", progress: bool = False, desc: str = "eval") -> History:
    """Train a fresh student on `synthetic` (KD from the teacher, or CE) and return its
    History; `History.final_acc` is the test accuracy after the last epoch, `History.val_acc`
    the validation accuracy (where `data` has a validation split), on which choices are made."""
    return train_students(data, [synthetic], teacher, model=model, recipe=recipe, seeds=[seed], objective=objective,
                          device=device, progress=progress, desc=desc)[0]


def train_students(data: Dataset, sets: list[Split], teacher: Teacher | torch.nn.Module | None, *,
                   model: str = "convnet_w32", recipe: Recipe | None = None, seeds: list[int],
                   objective: str = "kd", device="auto", progress: bool = False, desc: str = "eval") -> list[History]:
    """Fresh students, one per (set, seed), of one architecture and objective, trained at once
    as one stacked model (`ccfs.train.fit_group`; sets of one size); one student is
    `train_student`. Each student is initialised from its seed as `train_student` does."""
    recipe = recipe or STUDENT_RECIPE
    net = teacher.model if isinstance(teacher, Teacher) else teacher
    objective_fn = make_objective(objective, net if objective == "kd" else None, recipe.temperature)
    students = [new_model(model, data, seed) for seed in seeds]
    return fit_group(students, sets, recipe, objective_fn, mean=data.mean, std=data.std, device=_device(device),
                     seeds=seeds, test=data.test, val=data.val, progress=progress, desc=desc)


def member_bytes(model: str, data: Dataset, recipe: Recipe, size: int) -> int:
    """A rough size of one member of a training group: its weights, gradients and momentum;
    its set (uint8, stacked per member); its batch's activations, and the KD teacher's on
    its batch (about 64 floats per input value each, for the registry's small nets). For the
    automatic group size."""
    with torch.device("meta"):  # its shapes only: no memory, no draw from the global generator
        net = create_model(model, data.num_classes, data.channels, data.image_size)
    weights = sum(p.numel() for p in net.parameters()) * 4 * 3
    image = data.channels * data.image_size ** 2
    return weights + size * image + 2 * recipe.batch_for(size) * image * 4 * 64