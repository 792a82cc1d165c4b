"""Image files: the one list of extensions ccfs reads, and the one decoder.

Used by the dataset readers (image-folder datasets, Tiny ImageNet: always resized to the
dataset's size) and by the import of distilled images (an image of the wrong mode or size
is an error unless resizing is asked for).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ccfs.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
MODES = {1: "L", 3: "RGB"}  # channels -> PIL mode


def image_files(folder: Path) -> list[Path]:
    """The image files of `folder` (by extension, any case; hidden files skipped), sorted by name."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file())


def decode_image(path: Path, channels: int, hw: tuple[int, int], resize: bool = True) -> np.ndarray:
    """One image file -> uint8 [C, H, W] with `channels` (1: grayscale, 3: RGB) and size
    `hw` = (H, W) in pixels. An image of another mode or size is converted and resized
    (bilinear) when `resize`, else it is a DataError that names both. An unreadable or
    truncated file is a DataError naming the file."""
    mode, (h, w) = MODES[channels], hw
    try:
        with Image.open(path) as im:
            im.load()  # the full decode, so a truncated file fails here
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path} ({e}); replace or delete the file") from None
    if im.mode != mode or im.size != (w, h):
        if not resize:
            raise DataError(
                f"image {path} is {im.mode} {im.size[0]}x{im.size[1]} (WxH), the dataset needs "
                f"{mode} {w}x{h}; re-export the images or import with resize enabled")
        im = im.convert(mode)
        if im.size != (w, h):
            im = im.resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.uint8).reshape(h, w, channels).transpose(2, 0, 1).copy()  # [C, H, W]
