"""The distill stage: the α part of the synthetic set, written to

    OUT/distill/images.pt   {"images": uint8 [n, C, H, W], "labels": [n]} sorted by class
    OUT/distill/png/        class folders 00000/, 00001/, ... (the official layout)
    OUT/distill/grid.png    one row per class, for people to look at
    OUT/distill/meta.json   method, images per class, seconds, images/s

`sre2l` / `cda` synthesise from the BatchNorm teacher (docs/method.md §5); `folder` / `tensor`
import images made by any other method; `none` makes no distilled images.
"""
from __future__ import annotations

import time

import torch

from ccfs import methods
from ccfs.artifacts import read_json, torch_save, write_json
from ccfs.context import Run
from ccfs.distill.folder import export_png_folder, import_png_folder, import_tensor_file, save_image_grid
from ccfs.synthesis import distill_from_config


def _import(run: Run, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    c, d = run.cfg.distill, run.data
    if c.method == "folder":
        gen = torch.Generator().manual_seed(run.cfg.seed) if c.random_choice else None
        return import_png_folder(c.from_, d.num_classes, per_class, d.channels, image_size=d.image_size,
                                 resize=c.resize, generator=gen)
    return import_tensor_file(c.from_, d.num_classes, per_class, d.channels, image_size=d.image_size)


def distill_stage(run: Run) -> None:
    out = run.distill_dir
    per_class = methods.distilled_needed(run.cfg.select, run.cpc)
    done = (out / "meta.json").is_file() and read_json(out / "meta.json")["per_class"] >= per_class
    if done or per_class == 0 or run.cfg.distill.method == "none":
        if per_class and run.cfg.distill.method == "none":
            print("distill: method none, no distilled images (methods that need them will fail)")
        return
    t0 = time.perf_counter()
    if run.cfg.distill.synthesises:
        images, labels = distill_from_config(run.cfg.distill, run.teacher, run.data, per_class,
                                             seed=run.cfg.seed, device=run.device, progress=run.cfg.progress)
    else:
        images, labels = _import(run, per_class)
    seconds = time.perf_counter() - t0
    n = run.data.num_classes
    export_png_folder(images, labels, n, out / "png")
    save_image_grid(images, labels, n, out / "grid.png")
    torch_save({"images": images, "labels": labels}, out / "images.pt")
    write_json(out / "meta.json", {"method": run.cfg.distill.method, "per_class": per_class,
                                   "images": len(labels), "seconds": seconds,
                                   "images_per_second": len(labels) / max(seconds, 1e-9)})
    print(f"distill: {len(labels)} images ({per_class}/class, {run.cfg.distill.method}) in {seconds:.0f}s")
