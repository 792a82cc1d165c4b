"""Batched augmentation: identity, flips, integer crop shifts, RRC box distribution."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ccfs.data.augment import AugmentPolicy, augment, boxes_to_theta, normalize, rrc_boxes, to_float, warp

ATOL = 1e-4  # grid_sample at pixel centres: exact up to float rounding


def batch(n: int = 6, c: int = 2, size: int = 10, seed: int = 0) -> torch.Tensor:
    """Random pixels in [0.1, 1]: no zero pixel, so zero padding is recognisable."""
    g = torch.Generator().manual_seed(seed)
    return 0.1 + 0.9 * torch.rand(n, c, size, size, generator=g)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def shifted(x: torch.Tensor, dx: int, dy: int, pad: int) -> torch.Tensor:
    """Crop of size HxW at offset (pad+dy, pad+dx) of x zero-padded by `pad`: x [C, H, W]."""
    h, w = x.shape[-2:]
    p = F.pad(x, (pad, pad, pad, pad))
    return p[:, pad + dy:pad + dy + h, pad + dx:pad + dx + w]


def test_none_without_flip_is_identity():
    x = batch()
    assert augment(x, AugmentPolicy(kind="none", flip=False), gen()) is x


def test_flip_only_gives_itself_or_its_mirror():
    x = batch(n=40)
    y = augment(x, AugmentPolicy(kind="none", flip=True), gen())
    assert y.shape == x.shape
    same = (y - x).abs().flatten(1).amax(1) < ATOL
    mirror = (y - x.flip(-1)).abs().flatten(1).amax(1) < ATOL
    assert torch.all(same | mirror)
    assert same.any() and mirror.any()  # per-sample random, not one coin for the batch


@pytest.mark.parametrize("pad", [1, 2, 4])
@pytest.mark.parametrize("flip", [False, True])
def test_crop_is_an_integer_shift_of_the_padded_input(pad, flip):
    x = batch(n=30, size=12)
    y = augment(x, AugmentPolicy(kind="crop", flip=flip, pad=pad), gen(pad))
    assert y.shape == x.shape
    offsets = set()
    for i in range(len(x)):
        sources = [x[i], x[i].flip(-1)] if flip else [x[i]]
        found = [(dx, dy) for src in sources for dx in range(-pad, pad + 1) for dy in range(-pad, pad + 1)
                 if torch.allclose(y[i], shifted(src, dx, dy, pad), atol=ATOL)]
        assert found, f"sample {i} is not an integer shift within ±{pad}"
        offsets.add(found[0])
    assert len(offsets) > 3  # shifts vary across the batch


def test_crop_with_zero_pad_is_identity():
    x = batch()
    assert torch.allclose(augment(x, AugmentPolicy(kind="crop", flip=False, pad=0), gen()), x, atol=ATOL)


def test_each_sample_is_augmented_from_itself_only():
    """Mixed content in one batch: a zero image stays zero, the others are not mixed in."""
    x = batch(n=8)
    x[3] = 0
    for kind in ("rrc", "crop"):
        y = augment(x, AugmentPolicy(kind=kind, pad=2), gen())
        assert torch.all(y[3] == 0)
        assert torch.all(y.flatten(1).amax(1)[[0, 1, 2, 4, 5, 6, 7]] > 0)


@pytest.mark.parametrize("kind", ["rrc", "crop", "none"])
def test_shape_dtype_and_repeatability(kind):
    x = batch(n=5, c=3, size=16)
    policy = AugmentPolicy(kind=kind)
    a, b = augment(x, policy, gen(1)), augment(x, policy, gen(1))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1 + 1e-6  # bilinear interpolation stays in range


def test_rrc_changes_images_and_differs_per_seed():
    x = batch(n=4, size=16)
    a = augment(x, AugmentPolicy(kind="rrc", flip=False), gen(1))
    b = augment(x, AugmentPolicy(kind="rrc", flip=False), gen(2))
    assert not torch.allclose(a, x, atol=1e-2)
    assert not torch.equal(a, b)


def test_unknown_kind_raises():
    with pytest.raises(ValueError, match="unknown augmentation kind"):
        augment(batch(), AugmentPolicy(kind="mixup"), gen())


# ----------------------------------------------------------------------------- RRC boxes

@pytest.mark.parametrize("scale, ratio", [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.5, 0.9), (0.5, 2.0)),
                                          ((0.25, 0.25), (1.0, 1.0))])
def test_rrc_boxes_within_ranges(scale, ratio):
    boxes = rrc_boxes(2000, scale, ratio, gen())
    assert boxes.shape == (2000, 4)
    w, h, x0, y0 = boxes.unbind(1)
    eps = 1e-5
    assert torch.all((w > 0) & (w <= 1) & (h > 0) & (h <= 1))
    assert torch.all((x0 >= 0) & (y0 >= 0) & (x0 + w <= 1 + eps) & (y0 + h <= 1 + eps))
    fallback = (w == 1) & (h == 1)
    area, r = (w * h)[~fallback], (w / h)[~fallback]
    assert torch.all((area >= scale[0] - eps) & (area <= scale[1] + eps))
    assert torch.all((r >= ratio[0] - eps) & (r <= ratio[1] + eps))
    assert fallback.float().mean() < 0.05  # these ranges almost always fit in 10 tries


def test_rrc_boxes_log_ratio_uniform_and_area_spread():
    w, h, _, _ = rrc_boxes(4000, (0.08, 1.0), (3 / 4, 4 / 3), gen()).unbind(1)
    log_r = torch.log(w / h)
    assert abs(log_r.mean().item()) < 0.02  # symmetric in log space
    area = w * h
    assert area.min() < 0.1 and area.max() > 0.95


def test_rrc_boxes_fall_back_to_the_whole_image():
    """Aspect ratios 3..4 with area >= 0.9 never fit: every box is the whole image."""
    boxes = rrc_boxes(50, (0.9, 1.0), (3.0, 4.0), gen())
    assert torch.equal(boxes, torch.tensor([[1.0, 1.0, 0.0, 0.0]]).expand(50, 4))


def test_rrc_boxes_deterministic_per_generator():
    a = rrc_boxes(100, (0.08, 1.0), (0.75, 4 / 3), gen(3))
    b = rrc_boxes(100, (0.08, 1.0), (0.75, 4 / 3), gen(3))
    c = rrc_boxes(100, (0.08, 1.0), (0.75, 4 / 3), gen(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_rrc_crops_the_box_region():
    """A box covering the left half, stretched back: output column j samples input column j/2."""
    x = torch.arange(8.0).repeat(8, 1)[None, None] / 8  # value = column / 8, [1, 1, 8, 8]
    theta = boxes_to_theta(torch.tensor([[0.5, 1.0, 0.0, 0.0]]), torch.tensor([False]))
    y = warp(x, theta)[0, 0]
    col = (torch.arange(8) + 0.5) / 2 - 0.5  # output pixel centre -> input pixel coordinate
    assert torch.allclose(y, (col.clamp(min=0) / 8).expand(8, 8), atol=1e-5)  # col < 0: between 0 and padding


# ----------------------------------------------------------------------------- normalise

def test_normalize_and_to_float():
    u8 = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2).contiguous()
    x = to_float(u8)
    assert x.dtype == torch.float32 and x.max() == 1.0 and x.min() == 0.0
    assert u8.max() == 255  # the uint8 source is not modified
    mean, std = torch.tensor([0.0, 0.2, 0.5]), torch.tensor([1.0, 0.5, 0.25])
    y = normalize(x, mean, std)
    assert torch.allclose(y[:, :, 0, 0], torch.tensor([[0.0, 0.0, 2.0]] * 2))
    assert y.shape == x.shape
    assert not math.isnan(y.sum().item())


# ---------------------------------------------------------------- mixing

@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mix_batch_combines_pairs_of_images_repeatably(kind):
    from ccfs.data.augment import mix_batch

    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 1, 8, 8).contiguous()
    a = mix_batch(x, kind, torch.Generator().manual_seed(3))
    b = mix_batch(x, kind, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == x.shape
    assert not torch.equal(a, x)
    # every output pixel is a convex combination of the image's own value and one partner's
    for i in range(4):
        vals = a[i].unique()
        assert vals.min() >= 0 and vals.max() <= 3
        if kind == "cutmix":
            assert set(vals.tolist()) <= {float(i)} | set(range(4))


def test_steps_rule_shrinks_epochs_as_the_set_grows():
    from ccfs.config import Recipe

    r = Recipe(steps=4800, batch_size=0)
    assert r.epochs_for(500) == 300  # 16 batches of 32 per epoch
    assert r.epochs_for(11000) == 56  # 86 batches of 128
    assert Recipe(epochs=7).epochs_for(11000) == 7
    assert Recipe(steps=10, batch_size=256).epochs_for(100) == 10
