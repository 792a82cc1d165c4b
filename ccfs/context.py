"""`Run`: a configuration plus its run directory, with the artifacts stages share.

Stages are functions `stage(run)` that read artifacts from `run.out` and write new
ones; everything loaded here is loaded lazily and once. `Run` is part of the shared
layer: it reads what any stage wrote (the teacher, scores, distilled images,
selections) so that no stage has to import another.
"""
from __future__ import annotations

import os
from dataclasses import replace
from functools import cached_property
from pathlib import Path

import torch

from ccfs.config import Config
from ccfs.data.datasets import Dataset, Split, carve_validation
from ccfs.errors import ConfigError


def resolve_device(name: str, deterministic: bool = True) -> torch.device:
    """The torch device for a `device` setting; on CUDA, also the kernels' determinism."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA device is available; use device=cpu or auto")
    if name.startswith("cuda"):
        set_cuda_determinism(deterministic)
    return torch.device(name)


def set_cuda_determinism(on: bool) -> None:
    """Deterministic cuDNN and cuBLAS kernels (process-wide). CPU kernels are deterministic
    already; on CUDA the default convolution backward and cuBLAS's split-K reductions are not,
    and two runs of one seed drift apart. warn_only: an op with no deterministic kernel warns
    and runs. cuBLAS reads CUBLAS_WORKSPACE_CONFIG when it starts, so this runs before any
    CUDA work. Its cost, measured: bench/results/gpu_h200.md."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = on
    torch.use_deterministic_algorithms(on, warn_only=True)


class Run:
    """`shared`: the folder holding teacher/ and distill/ when several runs share them (the
    points of an IPC / α sweep); default the run's own `out`."""

    SHARED = ("data", "teacher", "teacher_logit", "scores", "teacher_correct", "distilled")  # settings-free

    def __init__(self, cfg: Config, shared: Path | None = None):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.shared = Path(shared) if shared is not None else self.out
        from ccfs.distributed import device_name

        self.device = resolve_device(device_name(cfg.device), cfg.deterministic)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)

    # ------------------------------------------------------------------ data
    @cached_property
    def data(self) -> Dataset:
        from ccfs.data.cache import load_dataset
        from ccfs.data.store import open_store

        d = self.cfg.data
        options = {k: v for k, v in (("image_size", d.image_size), ("channels", d.channels)) if v}
        if d.store:  # on disk: every stage reads batches of rows from the store (pread, no mapping)
            data = open_store(d.store, d.name, d.image_size, d.channels)
        else:
            data = load_dataset(d.name, d.root, **options)
        for key in ("mean", "std"):
            value = getattr(d, key)
            if value is not None and len(value) != data.channels:
                raise ConfigError(f"data.{key} has {len(value)} values, the images have {data.channels} "
                                  f"channels; give one per channel")
        data = replace(data, mean=tuple(d.mean or data.mean), std=tuple(d.std or data.std))
        return carve_validation(data, d.val_size) if d.val_size else data

    @property
    def cpc(self) -> int:
        """Distilled images per class: int(IPC * alpha)."""
        return int(self.cfg.select.ipc * self.cfg.select.alpha)

    def model(self, name: str, seed: int):
        from ccfs.models import create_model

        torch.manual_seed(seed)
        d = self.data
        return create_model(name, d.num_classes, d.channels, d.image_size)

    # ------------------------------------------------------------------ teacher artifacts
    def sibling(self, cfg: Config) -> "Run":
        """A run of another config over this run's teacher/ and distill/, reusing what this
        one has loaded of them (the dataset, the teacher, its scores, the distilled images)."""
        other = Run(cfg, shared=self.shared)
        other.__dict__.update({k: v for k, v in self.__dict__.items() if k in self.SHARED})
        return other

    @property
    def teacher_dir(self) -> Path:
        return self.shared / "teacher"

    @property
    def distill_dir(self) -> Path:
        return self.shared / "distill"

    @cached_property
    def teacher(self) -> torch.nn.Module:
        from ccfs.models import load_checkpoint

        path = self._teacher_file("model.pt")
        model = self.model(self.cfg.teacher.model, 0)
        load_checkpoint(model, path, arch=self.cfg.teacher.model, normalization=(self.data.mean, self.data.std))
        return model.to(self.device).eval().requires_grad_(False)

    def _teacher_file(self, name: str):
        """A file the teacher stage writes, or a one-line error naming the stage to run."""
        path = self.teacher_dir / name
        if not path.is_file():
            raise ConfigError(f"{path} is missing: run `ccfs teacher` for this out= first")
        return path

    @cached_property
    def teacher_logit(self) -> torch.Tensor:
        """[N] the teacher's true-class logit on un-augmented train images, as the teacher
        stage recorded it (computed once per run; older runs recompute it here)."""
        import numpy as np

        path = self.teacher_dir / "true_logit.npy"
        if path.is_file():
            return torch.from_numpy(np.load(path))
        from ccfs.scores import true_class_logit
        from ccfs.train import predict_logits

        d = self.data
        return true_class_logit(predict_logits(self.teacher, d.train.images, d.mean, d.std, device=self.device).cpu(),
                                d.train.labels)

    @cached_property
    def hardness(self) -> torch.Tensor | None:
        """The configured score select.score as hardness [N] (higher = harder), or None
        for score `logits` (taken from the filters, or the teacher's logits)."""
        return self.hardness_of(self.cfg.select.score)

    def hardness_of(self, name: str) -> torch.Tensor | None:
        """Score `name` as hardness [N], or None for a computed score (`logits`)."""
        from ccfs.scores import COMPUTED, to_hardness

        if name in COMPUTED:
            return None
        if name not in self.scores:
            have = ", ".join(self.scores) or "none"
            raise ConfigError(f"select.score={name} but the teacher stage recorded {have}; "
                              f"import one with teacher.scores=FILE or pick another score")
        return to_hardness(self.scores[name].float(), name)

    def objective(self):
        """The loss of filters and students (eval.objective: KD from the teacher, or CE)."""
        from ccfs.objectives import make_objective

        kd = self.cfg.eval.objective == "kd"
        return make_objective(self.cfg.eval.objective, self.teacher if kd else None, self.cfg.train.temperature)

    def check_budget(self) -> None:
        """IPC must fit in the smallest class."""
        counts = torch.bincount(self.data.train.labels, minlength=self.data.num_classes)
        ipc = self.cfg.select.ipc
        if ipc > int(counts.min()):
            c = int(counts.argmin())
            raise ConfigError(f"select.ipc={ipc} is larger than class {c} ({self.data.classes[c]!r}), which "
                              f"has {int(counts[c])} training images; use select.ipc <= {int(counts.min())}")

    @cached_property
    def scores(self) -> dict[str, torch.Tensor]:
        """Difficulty scores recorded by (or imported into) the teacher stage, raw values."""
        import numpy as np

        path = self.teacher_dir / "scores.npz"
        if not path.is_file():
            self._teacher_file("model.pt")  # no teacher stage at all: say so, not "no scores"
            return {}
        with np.load(path) as z:
            return {k: torch.from_numpy(z[k]) for k in z.files}

    @cached_property
    def teacher_correct(self) -> torch.Tensor:
        import numpy as np

        mask = torch.zeros(len(self.data.train), dtype=torch.bool)
        mask[torch.from_numpy(np.load(self._teacher_file("correct_indices.npy")))] = True
        return mask

    # ------------------------------------------------------------------ distilled images
    @cached_property
    def distilled(self) -> Split:
        """All distilled images (uint8) with labels, sorted by class."""
        path = self.distill_dir / "images.pt"
        if not path.is_file():
            return Split(torch.empty(0, *self.data.train.images.shape[1:], dtype=torch.uint8),
                         torch.empty(0, dtype=torch.long))
        blob = torch.load(path, weights_only=True)
        return Split(blob["images"], blob["labels"])

    def distilled_part(self, per_class: int) -> Split:
        """The first `per_class` distilled images of every class."""
        d = self.distilled
        if per_class == 0:
            return d.subset([])
        keep = [i for c in range(self.data.num_classes)
                for i in (d.labels == c).nonzero().flatten()[:per_class].tolist()]
        part = d.subset(keep)
        if len(part) < per_class * self.data.num_classes:
            raise ConfigError(f"the run has {len(d)} distilled images, {per_class} per class are needed; "
                              "re-run `ccfs distill` with this select.ipc / select.alpha")
        return part

    def synthetic_set(self, distilled_per_class: int, indices, distilled: Split | None = None) -> Split:
        """distilled images ∪ train[indices], as one uint8 Split. `distilled` replaces the
        run's distilled images (the selmatch baseline distils its own)."""
        part = distilled if distilled is not None else self.distilled_part(distilled_per_class)
        real = self.data.train.subset(indices)
        return Split(torch.cat([part.images, real.images]), torch.cat([part.labels, real.labels]))

    # ------------------------------------------------------------------ selections
    def selection_seeds(self, run_name: str) -> list[int | None]:
        """The seeds a method's selections are made with: every evaluation seed for a method
        whose choice is random (its student of seed s trains on its selection of seed s),
        else one seed-free selection."""
        from ccfs import methods

        return list(self.cfg.eval.seeds) if methods.parse(run_name)[1].seeded else [None]

    def selection_seed(self, run_name: str, seed: int) -> int | None:
        """The selection a student of evaluation seed `seed` trains on."""
        return seed if None not in self.selection_seeds(run_name) else None

    def selection_dir(self, run_name: str, seed: int | None = None) -> Path:
        folder = self.out / "select" / run_name
        return folder if seed is None else folder / f"seed{seed}"

    def selected_indices(self, run_name: str, seed: int | None = None) -> dict:
        """selected_indices.json of a finished selection, or a one-line error naming the stage."""
        from ccfs.artifacts import read_json

        path = self.selection_dir(run_name, seed) / "selected_indices.json"
        if not path.is_file():
            raise ConfigError(f"{path} is missing: run `ccfs select` first")
        return read_json(path)

    def selection(self, run_name: str, seed: int | None = None) -> tuple[Split, dict, dict]:
        """(the synthetic set, selected_indices.json, meta.json) of a finished selection."""
        from ccfs.artifacts import read_json

        folder = self.selection_dir(run_name, seed)
        sel = self.selected_indices(run_name, seed)
        from ccfs.records import same_selection_settings, selection_settings, settings_mismatch

        now = selection_settings(self.cfg, run_name)
        if (folder / "settings.json").is_file() and not same_selection_settings(
                saved := read_json(folder / "settings.json"), now):
            raise ConfigError(settings_mismatch(folder, saved, now))
        meta = read_json(folder / "meta.json")
        own = None
        if meta.get("distilled_file"):
            blob = torch.load(folder / meta["distilled_file"], weights_only=True)
            own = Split(blob["images"], blob["labels"])
        return self.synthetic_set(meta["distilled_per_class"], sel["idx_selected"], own), sel, meta
