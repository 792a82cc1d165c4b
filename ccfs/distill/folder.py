"""Distilled images on disk: the official class-folder layout (docs/method.md §8) and a grid.

    out_dir/00000/00000.png, 00001.png, ...   # class 0, in order
    out_dir/00001/...                         # one folder per class, even when empty

Importing accepts any folder names (sorted, as torchvision's ImageFolder orders them) so
images produced by the official SRe2L / CDA / CCFS scripts load unchanged. Writes go through
`ccfs.artifacts` (`atomic_dir`, `atomic_path`), so a crash never leaves half a folder or file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ccfs.artifacts import atomic_dir, atomic_path
from ccfs.data.images import MODES, decode_image, image_files
from ccfs.errors import DataError


def quantize(pixels01: torch.Tensor) -> torch.Tensor:
    """Float pixels in [0, 1] -> uint8 round(x · 255) (values outside [0, 1] are clamped)."""
    return (pixels01.float().clamp(0, 1) * 255).round().to(torch.uint8)


def _hw(image_size) -> tuple[int, int]:
    return (int(image_size), int(image_size)) if isinstance(image_size, int) else tuple(image_size)


def _check_images(images_u8: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
    if images_u8.dtype != torch.uint8 or images_u8.dim() != 4 or images_u8.shape[1] not in MODES:
        raise DataError(f"images must be uint8 [n, 1 or 3, H, W], got {images_u8.dtype} "
                        f"{tuple(images_u8.shape)}")
    if len(labels) != len(images_u8):
        raise DataError(f"{len(images_u8)} images but {len(labels)} labels")
    if len(labels) and not (0 <= int(labels.min()) and int(labels.max()) < num_classes):
        raise DataError(f"labels must be in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]")


def _to_pil(image: torch.Tensor) -> Image.Image:
    """uint8 [C, H, W] -> PIL image ("L" for C=1, "RGB" for C=3)."""
    arr = image.cpu().permute(1, 2, 0).numpy()  # [H, W, C]
    return Image.fromarray(np.ascontiguousarray(arr[:, :, 0] if arr.shape[2] == 1 else arr))


def export_png_folder(images_u8: torch.Tensor, labels: torch.Tensor, num_classes: int,
                      out_dir: str | os.PathLike) -> Path:
    """Write images [n, C, H, W] uint8 as out_dir/<class:05d>/<k:05d>.png, k counting
    within the class in the order given; replaces an existing out_dir."""
    _check_images(images_u8, labels, num_classes)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        for c in range(num_classes):
            folder = tmp / f"{c:05d}"
            folder.mkdir()
            for k, i in enumerate((labels.cpu() == c).nonzero().flatten().tolist()):
                _to_pil(images_u8[i]).save(folder / f"{k:05d}.png")
    return out_dir


def _class_files(root: Path, num_classes: int, cpc: int) -> list[list[Path]]:
    """Sorted class folders of root -> sorted image files of each; checks counts."""
    if not root.is_dir():
        raise DataError(f"distilled image folder {root} does not exist; check the path")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if len(folders) != num_classes:
        raise DataError(f"found {len(folders)} class folders in {root}, the dataset has "
                        f"{num_classes} classes; expected one folder per class (00000, 00001, ...)")
    files = [image_files(d) for d in folders]
    for d, fs in zip(folders, files):
        if len(fs) < cpc:
            raise DataError(f"class folder {d} has {len(fs)} images, {cpc} per class are needed; "
                            f"lower the IPC or the distilled portion alpha, or add images")
    return files


def import_png_folder(root: str | os.PathLike, num_classes: int, cpc: int, channels: int,
                      *, image_size, resize: bool = False,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Read `cpc` images per class from class folders (sorted names = class order) ->
    (uint8 [num_classes · cpc, C, H, W], labels [num_classes · cpc]), class by class.
    Takes the first cpc files in sorted name order, or a seeded random cpc (kept in
    name order) when `generator` is given. `image_size`: int or (H, W)."""
    files = _class_files(Path(root), num_classes, cpc)
    hw = _hw(image_size)
    images = []
    for fs in files:
        pick = range(cpc) if generator is None else \
            sorted(torch.randperm(len(fs), generator=generator)[:cpc].tolist())
        images += [torch.from_numpy(decode_image(fs[i], channels, hw, resize)) for i in pick]
    labels = torch.arange(num_classes).repeat_interleave(cpc)
    if not images:
        return torch.empty(0, channels, *hw, dtype=torch.uint8), labels
    return torch.stack(images), labels


def import_tensor_file(path: str | os.PathLike, num_classes: int, cpc: int, channels: int,
                       *, image_size) -> tuple[torch.Tensor, torch.Tensor]:
    """A .pt file {"images": uint8, or float pixels in [0, 1], [n, C, H, W]; "labels": [n]}
    -> the first cpc images of each class, as `import_png_folder` returns them."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"distilled image file {path} does not exist; check the path")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file
        raise DataError(f"cannot read {path} as a torch file: {e}") from None
    if not isinstance(blob, dict) or not {"images", "labels"} <= blob.keys():
        raise DataError(f"{path} must hold a dict with keys 'images' and 'labels'")
    images, labels = _tensor_images(blob["images"], path), torch.as_tensor(blob["labels"]).long().flatten()
    h, w = _hw(image_size)
    if tuple(images.shape[1:]) != (channels, h, w):
        raise DataError(f"{path}: images are {tuple(images.shape[1:])} (C, H, W), the dataset "
                        f"needs {(channels, h, w)}")
    _check_images(images, labels, num_classes)
    picks = []
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()
        if len(idx) < cpc:
            raise DataError(f"{path}: class {c} has {len(idx)} images, {cpc} per class are needed; "
                            f"lower the IPC or the distilled portion alpha")
        picks.append(idx[:cpc])
    return images[torch.cat(picks)], torch.arange(num_classes).repeat_interleave(cpc)


def _tensor_images(images, path: Path) -> torch.Tensor:
    """uint8 as is; float checked to be pixels in [0, 1] and quantized."""
    images = torch.as_tensor(images)
    if images.dim() != 4:
        raise DataError(f"{path}: images must be [n, C, H, W], got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise DataError(f"{path}: images must be uint8 or float pixels in [0, 1], got {images.dtype}")
    lo, hi = (float(images.min()), float(images.max())) if images.numel() else (0.0, 1.0)
    if lo < -1e-4 or hi > 1 + 1e-4:
        raise DataError(f"{path}: float images must be pixels in [0, 1] (not normalised), "
                        f"found values in [{lo:.3g}, {hi:.3g}]")
    return quantize(images)


def save_image_grid(images_u8: torch.Tensor, labels: torch.Tensor, num_classes: int,
                    path: str | os.PathLike, *, per_row: int = 10, pad: int = 2) -> Path:
    """A PNG with one row per class holding its first `per_row` images (black where a
    class has fewer), `pad` white pixels between cells; written atomically."""
    _check_images(images_u8, labels, num_classes)
    c, h, w = images_u8.shape[1:]
    grid = torch.full((c, num_classes * (h + pad) + pad, per_row * (w + pad) + pad), 255, dtype=torch.uint8)
    for cls in range(num_classes):
        idx = (labels.cpu() == cls).nonzero().flatten()[:per_row].tolist()
        for k in range(per_row):
            top, left = pad + cls * (h + pad), pad + k * (w + pad)
            grid[:, top:top + h, left:left + w] = images_u8[idx[k]].cpu() if k < len(idx) else 0
    path = Path(path)
    with atomic_path(path) as tmp:
        _to_pil(grid).save(tmp, format="PNG")
    return path
