"""`Run`: a configuration plus its run directory: where each artifact lives, and reading
back what a stage wrote (the dataset, the teacher, the distilled images, selections).

Stages are functions `stage(run)`; they build what they need with `ccfs.api` and keep it
in the run directory through this object. Everything read here is read lazily and once.
Nothing is built here that the API builds: a teacher read back is an `api.Teacher`, a
synthetic set is `api.synthetic_set` of the files' indices.
"""
from __future__ import annotations

from dataclasses import replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from ccfs import __version__, api
from ccfs.artifacts import file_sha1, read_artifact, read_json, write_json
from ccfs.config import Config
from ccfs.data.cache import load_dataset
from ccfs.data.datasets import Dataset, Split, carve_validation
from ccfs.data.store import open_store
from ccfs.device import resolve_device
from ccfs.distributed import device_name
from ccfs.errors import CheckpointError, ConfigError, DataError
from ccfs.models import load_checkpoint
from ccfs.records import check_selection_inputs, check_selection_settings, images_sha1
from ccfs.selection import methods


# The run-directory format this ccfs reads and writes. 1: before OUT/format.json existed;
# 2: the lean core; 3: official-format files index the dataset file's rows.
FORMAT = 3
FORMAT_FILE = "format.json"


def check_format(out: Path) -> None:
    """A run directory made by another version of the format is refused before its
    config.yaml is read, with one line naming the version that made it."""
    path = Path(out) / FORMAT_FILE
    if not path.is_file():
        if (Path(out) / "config.yaml").is_file():
            raise ConfigError(f"{out} was made by an older ccfs (run-directory format 1); this ccfs reads format "
                              f"{FORMAT}: use a new out= directory, or delete {out} to run it again")
        return
    try:
        found = read_json(path)["format"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{path} is damaged: delete it if {out} was made by this ccfs, else use a new out=") from None
    if found != FORMAT:
        made = "an older" if found < FORMAT else "a newer"
        raise ConfigError(f"{out} was made by {made} ccfs (run-directory format {found}); this ccfs reads format "
                          f"{FORMAT}: use a new out= directory, or delete {out} to run it again")


def write_format(out: Path) -> None:
    write_json(Path(out) / FORMAT_FILE, {"format": FORMAT, "ccfs": __version__})


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _load_images(path: Path) -> dict:
    """An images file {"images": uint8 [n, C, H, W], "labels": [n]}, loaded as data only."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or not {"images", "labels"} <= blob.keys():
        raise ValueError("not an images file")
    return blob


class Run:
    """`shared`: the folder holding teacher/ and distill/ when several runs share them (the
    points of an IPC / α sweep); default the run's own `out`."""

    SHARED = ("data", "teacher", "teacher_sha1", "distilled", "_part_sha1")  # settings-free: siblings reuse them

    def __init__(self, cfg: Config, shared: Path | None = None):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.shared = Path(shared) if shared is not None else self.out
        self.device = resolve_device(device_name(cfg.device), cfg.deterministic)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)

    def sibling(self, cfg: Config) -> "Run":
        """A run of another config over this run's teacher/ and distill/, reusing what this
        one has loaded of them (the dataset, the teacher, the distilled images)."""
        other = Run(cfg, shared=self.shared)
        other.__dict__.update({k: v for k, v in self.__dict__.items() if k in self.SHARED})
        return other

    # ------------------------------------------------------------------ data
    @cached_property
    def data(self) -> Dataset:
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

    # ------------------------------------------------------------------ teacher
    @property
    def teacher_dir(self) -> Path:
        return self.shared / "teacher"

    @property
    def distill_dir(self) -> Path:
        return self.shared / "distill"

    def teacher_file(self, name: str) -> Path:
        """A file the teacher stage writes, or a one-line error naming the stage to run."""
        path = self.teacher_dir / name
        if not path.is_file():
            raise ConfigError(f"{path} is missing: run `ccfs teacher` for this out= first")
        return path

    @cached_property
    def teacher(self) -> api.Teacher:
        """The teacher as the teacher stage wrote it: its weights, the train images it gets
        right (the pool), its true-class logit and the difficulty scores."""
        cfg, d = self.cfg.teacher, self.data
        model = api.new_model(cfg.model, d, 0)
        path = self.teacher_file("model.pt")
        try:
            load_checkpoint(model, path, arch=cfg.model, normalization=(d.mean, d.std))
        except CheckpointError as e:
            raise DataError(f"{e}: delete the folder {self.teacher_dir} and run the same command again, "
                            "and the teacher stage makes it again") from None
        correct = torch.zeros(len(d.train), dtype=torch.bool)
        correct[torch.from_numpy(read_artifact(self.teacher_file("correct_indices.npy"), np.load))] = True
        scores = {}
        if (self.teacher_dir / "scores.npz").is_file():
            scores = read_artifact(self.teacher_dir / "scores.npz", _load_npz)
        true_logit = torch.from_numpy(read_artifact(self.teacher_file("true_logit.npy"), np.load))
        return api.Teacher(model.to(self.device).eval().requires_grad_(False), correct, true_logit, scores)

    @cached_property
    def teacher_sha1(self) -> str:
        """A hash of the teacher's weights file: records made over one teacher share it."""
        self.teacher  # noqa: B018 - loaded first: a damaged file is named as such, not as another teacher
        return file_sha1(self.teacher_file("model.pt"))

    # ------------------------------------------------------------------ distilled images
    @cached_property
    def distilled(self) -> Split:
        """All distilled images (uint8) with labels, sorted by class."""
        path = self.distill_dir / "images.pt"
        if not path.is_file():
            return Split(torch.empty(0, *self.data.train.images.shape[1:], dtype=torch.uint8),
                         torch.empty(0, dtype=torch.long))
        blob = read_artifact(path, _load_images)
        return Split(blob["images"], blob["labels"])

    # ------------------------------------------------------------------ selections
    def selection_seeds(self, run_name: str) -> list[int | None]:
        """The seeds a method's selections are made with: every evaluation seed for a method
        whose choice is random (its student of seed s trains on its selection of seed s),
        else one seed-free selection."""
        return list(self.cfg.eval.seeds) if methods.parse(run_name)[1].seeded else [None]

    def selection_seed(self, run_name: str, seed: int) -> int | None:
        """The selection a student of evaluation seed `seed` trains on."""
        return seed if None not in self.selection_seeds(run_name) else None

    def selection_dir(self, run_name: str, seed: int | None = None) -> Path:
        folder = self.out / "select" / run_name
        return folder if seed is None else folder / f"seed{seed}"

    def selected_indices(self, run_name: str, seed: int | None = None) -> dict:
        """selected_indices.json of a finished selection, or a one-line error naming the stage."""
        path = self.selection_dir(run_name, seed) / "selected_indices.json"
        if not path.is_file():
            raise ConfigError(f"{path} is missing: run `ccfs select` first")
        return read_json(path)

    def selection_inputs(self, run_name: str) -> dict:
        """What a selection of `run_name` is made over, by hash (`records.INPUTS`): the
        teacher's weights and the distilled part it uses (the first images of each class of
        distill/images.pt; none for a method without one, or that distils its own)."""
        s = self.cfg.select
        entry = methods.parse(run_name)[1]
        part = None
        if entry.distilled in ("alpha", "ipc"):
            cpc = entry.distilled_per_class(s.ipc, s.cpc)
            if cpc not in self._part_sha1:
                self._part_sha1[cpc] = images_sha1(api.first_per_class(self.distilled, cpc, self.data.num_classes))
            part = self._part_sha1[cpc]
        return {"teacher_sha1": self.teacher_sha1, "distilled_sha1": part}

    @cached_property
    def _part_sha1(self) -> dict[int, str | None]:
        return {}

    def selection(self, run_name: str, seed: int | None = None) -> tuple[Split, dict, dict]:
        """(the synthetic set, selected_indices.json, meta.json) of a finished selection;
        selected_indices.json holds rows of the dataset file (`Dataset.file_rows`). One made
        with other settings or over other inputs is a one-line error."""
        folder = self.selection_dir(run_name, seed)
        sel = self.selected_indices(run_name, seed)
        check_selection_settings(folder, self.cfg, run_name)
        check_selection_inputs(folder, self.selection_inputs(run_name))
        meta = read_json(folder / "meta.json")
        if meta.get("distilled_file"):
            blob = read_artifact(folder / meta["distilled_file"], _load_images)
            part = Split(blob["images"], blob["labels"])
        else:
            part = api.first_per_class(self.distilled, meta["distilled_per_class"], self.data.num_classes)
        rows = self.data.pool_rows(sel["idx_selected"])  # the file's rows -> the rows ccfs trains on
        return api.synthetic_set(self.data, part, rows), sel, meta
