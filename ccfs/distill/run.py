"""The distill stage: the α part of the synthetic set, written to

    OUT/distill/images.pt   {"images": uint8 [n, C, H, W], "labels": [n]} sorted by class
    OUT/distill/png/        class folders 00000/, 00001/, ... (the official layout)
    OUT/distill/grid.png    one row per class, for people to look at
    OUT/distill/meta.json   method, images per class, seconds, images/s

`sre2l` / `cda` synthesise from the BatchNorm teacher (SPEC.md §5); `folder` / `tensor`
import images made by any other method; `none` makes no distilled images.
"""
from __future__ import annotations

import time
from dataclasses import replace

import torch

from ccfs.artifacts import read_json, torch_save, write_json
from ccfs.context import Run
from ccfs.errors import ConfigError
from ccfs.distill.bn_matching import SynthParams, synthesize
from ccfs.distill.folder import (export_png_folder, import_png_folder, import_tensor_file, quantize,
                                 save_image_grid)
from ccfs.selection.run import method_names


def per_class_needed(run: Run) -> int:
    """cpc for CCFS, or the full IPC when distill_only is evaluated."""
    methods = method_names(run.cfg)
    return run.cfg.select.ipc if "distill_only" in methods else run.cpc


def _real_init(run: Run, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random real images of the right classes (pixels in [0, 1]), for init=real."""
    train = run.data.train
    pick = [int(pool[torch.randint(len(pool), (1,), generator=gen)])
            for pool in [(train.labels == int(c)).nonzero().flatten() for c in labels]]
    return train.images[pick].float() / 255


def _synthesize(run: Run, per_class: int, init_indices: list[int] | None = None):
    """Synthesise per_class images per class; with init_indices (sorted by class), start
    from those real images instead of noise or a random real choice."""
    c, d = run.cfg.distill, run.data
    params = SynthParams(method=c.method, iterations=c.iterations, lr=c.lr, r_bn=c.r_bn,
                         first_bn_multiplier=c.first_bn_multiplier, jitter=c.jitter, flip=True,
                         batch_ipc=c.batch_ipc, cda_schedule=c.cda_schedule, init=c.init)
    labels = torch.arange(d.num_classes).repeat_interleave(per_class)
    gen = torch.Generator().manual_seed(run.cfg.seed)
    init = _real_init(run, labels, gen) if c.init == "real" else None
    if init_indices is not None:
        params = replace(params, init="real")
        init = d.train.images[torch.as_tensor(init_indices)].float() / 255
    pixels = synthesize(run.teacher, labels.to(run.device), tuple(d.train.images.shape[1:]), d.mean, d.std,
                        params, gen, init_images=None if init is None else init.to(run.device),
                        progress=run.cfg.progress)
    return quantize(pixels.cpu()), labels


def _import(run: Run, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    c, d = run.cfg.distill, run.data
    if c.method == "folder":
        gen = torch.Generator().manual_seed(run.cfg.seed) if c.random_choice else None
        return import_png_folder(c.from_, d.num_classes, per_class, d.channels, d.image_size,
                                 resize=c.resize, generator=gen)
    return import_tensor_file(c.from_, d.num_classes, per_class, d.channels, d.image_size)


def distill_from_real(run: Run, init_indices: list[int], per_class: int) -> dict:
    """The selmatch baseline's α part: SRe2L/CDA started from the given real images."""
    if run.cfg.distill.method not in ("sre2l", "cda"):
        raise ConfigError("select.method selmatch distils from the selected window: it needs "
                          "distill.method=sre2l or cda")
    images, labels = _synthesize(run, per_class, init_indices)
    return {"images": images, "labels": labels}


def distill_stage(run: Run) -> None:
    out = run.out / "distill"
    per_class = per_class_needed(run)
    done = (out / "meta.json").is_file() and read_json(out / "meta.json")["per_class"] >= per_class
    if done or per_class == 0 or run.cfg.distill.method == "none":
        if per_class and run.cfg.distill.method == "none":
            print("distill: method none, no distilled images (methods that need them will fail)")
        return
    t0 = time.perf_counter()
    if run.cfg.distill.method in ("sre2l", "cda"):
        images, labels = _synthesize(run, per_class)
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
