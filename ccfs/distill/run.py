"""The distill stage: the α part of the synthetic set, written to

    OUT/distill/images.pt   {"images": uint8 [n, C, H, W], "labels": [n]} sorted by class
    OUT/distill/png/        class folders 00000/, 00001/, ... (the official layout)
    OUT/distill/grid.png    one row per class, for people to look at
    OUT/distill/meta.json   method, images per class, seconds, images/s (and `breaks`: where a
                            grown synthesis started new batches)
    OUT/distill/progress.pt a synthesis after its last saved batch: an interrupted one resumes
                            from it (one process)

A later request for more images per class grows a finished synthesis: its images stay as the
first of each class (selections made over them stay valid) and only the new ones are made.
Grown from its progress file (one process) after full batches, that gives the images of
asking for the larger number at once; after a partial batch the new batches start where the
old ones ended (`grown`), and without a usable progress file (`from_images`) they draw from a
generator of their own, so a directory grown in parts can hold other new images than one
made at once (selections and records hold the hash of the part they use, `ccfs.records`).

`sre2l` / `cda` synthesise from the BatchNorm teacher (docs/method.md §5); `folder` / `tensor`
import images made by any other method; `none` makes no distilled images.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ccfs import distributed
from ccfs.api import distill_images
from ccfs.selection import methods
from ccfs.artifacts import read_artifact, read_json, torch_save, write_json
from ccfs.context import Run
from ccfs.distill.bn_matching import Progress, class_runs
from ccfs.distill.folder import (export_png_folder, import_png_folder, import_tensor_file, quantize,
                                 save_image_grid)
from ccfs.distill.synthesis import synth_params

PROGRESS = "progress.pt"
SAVE_EVERY_S = 60.0  # seconds between progress saves (and always after the last batch)


def _import(run: Run, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    c, d = run.cfg.distill, run.data
    if c.method == "folder":
        gen = torch.Generator().manual_seed(run.cfg.seed) if c.random_choice else None
        return import_png_folder(c.from_, d.num_classes, per_class, d.channels, image_size=d.image_size,
                                 resize=c.resize, generator=gen)
    return import_tensor_file(c.from_, d.num_classes, per_class, d.channels, image_size=d.image_size)


def synthesis_key(run: Run) -> dict:
    """What a synthesis's images depend on besides the run's pinned teacher and data."""
    d = run.data
    return {**asdict(synth_params(run.cfg.distill)), "seed": run.cfg.seed, "classes": d.num_classes,
            "shape": list(d.train.images.shape[1:])}


def resume_point(saved: dict | None, key: dict, per_class: int) -> Progress | None:
    """Where a synthesis of `per_class` images per class can start from a saved progress
    file: after its saved batches if it was the same request; after all of them if it was a
    finished synthesis of fewer images per class with noise initialisation (`grown`: its
    images are kept, the generator goes on from its state); else from scratch (None)."""
    if saved is None or saved["key"] != key:
        return None
    pixels, old, breaks = saved["images"].float() / 255, saved["per_class"], tuple(saved.get("breaks", ()))
    if old == per_class:
        return Progress(saved["batches"], pixels, saved["rng"], breaks)
    finished = saved["batches"] == batch_count(old, key["batch_ipc"], breaks)
    if old < per_class and finished and key["init"] == "noise":
        return grown(Progress(saved["batches"], pixels, saved["rng"], breaks), old, per_class, key)
    return None


def grown(done: Progress, old: int, per_class: int, key: dict) -> Progress:
    """A finished synthesis of `old` images per class as the start of one of `per_class`:
    its images kept as the first `old` of each class, its batches the first ones. Where its
    last batch was partial, the new batches start at `old` (a break), so that no earlier
    image is made again; with full batches the result is the one of asking for `per_class`
    at once."""
    classes, b, breaks = key["classes"], key["batch_ipc"], done.breaks
    if (old - (breaks[-1] if breaks else 0)) % b:
        breaks = (*breaks, old)
    pixels = torch.zeros(classes, per_class, *done.pixels.shape[1:])
    pixels[:, :old] = done.pixels.view(classes, old, *done.pixels.shape[1:])
    return Progress(done.batches, pixels.flatten(0, 1), done.rng, breaks)


def batch_count(per_class: int, batch_ipc: int, breaks: tuple[int, ...] = ()) -> int:
    """How many batches a synthesis of `per_class` images per class makes (`class_batches`)."""
    return len(class_runs(per_class, batch_ipc, breaks))


def progress_saver(path: Path, key: dict, per_class: int, batches: int, every_s: float = SAVE_EVERY_S):
    """`on_batch` for `synthesize`: writes the progress file (atomically) after the last batch
    and otherwise at most every `every_s` seconds."""
    last = time.monotonic()

    def save(p: Progress) -> None:
        nonlocal last
        if p.batches < batches and time.monotonic() - last < every_s:
            return
        torch_save({"key": key, "per_class": per_class, "batches": p.batches, "images": quantize(p.pixels),
                    "rng": p.rng.clone(), "breaks": list(p.breaks)}, path)
        last = time.monotonic()
    return save


def load_progress(path: Path) -> dict | None:
    """The saved progress file, or None where there is none or it cannot be used (it is only
    a shortcut: an unreadable one is reported and the synthesis starts again)."""
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, weights_only=True)
        if not isinstance(saved, dict) or not {"key", "per_class", "batches", "images", "rng"} <= saved.keys():
            raise ValueError("not a progress file")
        return saved
    except Exception as e:  # noqa: BLE001 - any damage means the same: start again
        print(f"distill: {path} cannot be read ({type(e).__name__}); starting the synthesis again")
        return None


def _synthesise(run: Run, per_class: int) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """The distilled images and the breaks of their batch layout, going on from
    OUT/distill/progress.pt where it allows, else from a smaller finished images.pt
    (`from_images`): a growth never makes an earlier image again."""
    path, key, b = run.distill_dir / PROGRESS, synthesis_key(run), run.cfg.distill.batch_ipc
    single = distributed.world_size() == 1  # torchrun: every rank makes its share, no progress file
    saved = load_progress(path) if single else None
    if saved is not None and saved["per_class"] < _meta(run).get("per_class", 0):
        saved = None  # older than images.pt (grown under torchrun since): images.pt holds the images
    resume, source = resume_point(saved, key, per_class), f"({path})"
    if resume is None:
        resume, source = from_images(run, key, per_class), "(the images made before are kept)"
    batches = batch_count(per_class, b, resume.breaks if resume else ())
    if resume is not None and resume.batches:
        print(f"distill: going on after {resume.batches} of {batches} batches {source}")
    made = distill_images(run.teacher, run.data, per_class, run.cfg.distill, seed=run.cfg.seed, device=run.device,
                          progress=run.cfg.progress, resume=resume,
                          on_batch=progress_saver(path, key, per_class, batches, SAVE_EVERY_S) if single else None)
    return made.images, made.labels, resume.breaks if resume else ()


def from_images(run: Run, key: dict, per_class: int) -> Progress | None:
    """A finished OUT/distill/images.pt of fewer images per class, made with the same
    synthesis settings, where no progress file says how it was made (deleted, damaged, or
    made under torchrun): its images kept (`grown`), the new batches drawn from a generator
    of their own, seeded by the run's seed and the kept count."""
    meta, images_path = _meta(run), run.distill_dir / "images.pt"
    old, breaks = meta.get("per_class", 0), tuple(meta.get("breaks", ()))
    if not (0 < old < per_class and images_path.is_file() and key["init"] == "noise"
            and meta.get("synthesis") == json.loads(json.dumps(key))):
        return None
    pixels = read_artifact(images_path, lambda f: torch.load(f, weights_only=True))["images"].float() / 255
    if len(pixels) != old * key["classes"]:
        return None
    rng = torch.Generator().manual_seed(run.cfg.seed * 1_000_003 + old).get_state()
    return grown(Progress(batch_count(old, key["batch_ipc"], breaks), pixels, rng, breaks), old, per_class, key)


def _meta(run: Run) -> dict:
    """OUT/distill/meta.json of the images made so far ({} where there are none)."""
    path = run.distill_dir / "meta.json"
    return read_json(path) if path.is_file() else {}


def distill_stage(run: Run) -> None:
    out = run.distill_dir
    per_class = methods.distilled_needed(run.cfg.select, run.cfg.select.cpc)
    done = _meta(run).get("per_class", 0) >= per_class
    if done or per_class == 0 or run.cfg.distill.method == "none":
        if per_class and run.cfg.distill.method == "none":
            print("distill: method none, no distilled images (methods that need them will fail)")
        return
    t0 = time.perf_counter()
    breaks: tuple[int, ...] = ()
    if run.cfg.distill.synthesises:
        run.distill_dir.mkdir(parents=True, exist_ok=True)
        images, labels, breaks = _synthesise(run, per_class)
    else:
        images, labels = _import(run, per_class)
    seconds = time.perf_counter() - t0
    n = run.data.num_classes
    export_png_folder(images, labels, n, out / "png")
    save_image_grid(images, labels, n, out / "grid.png")
    torch_save({"images": images, "labels": labels}, out / "images.pt")
    write_json(out / "meta.json", {"method": run.cfg.distill.method, "per_class": per_class,
                                   "images": len(labels), "seconds": seconds,
                                   "images_per_second": len(labels) / max(seconds, 1e-9),
                                   **({"synthesis": synthesis_key(run)} if run.cfg.distill.synthesises else {}),
                                   **({"breaks": list(breaks)} if breaks else {})})
    print(f"distill: {len(labels)} images ({per_class}/class, {run.cfg.distill.method}) in {seconds:.0f}s")
