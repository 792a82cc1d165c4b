"""ccfs.distill: BatchNorm-matching synthesis (SRe2L / CDA) and distilled-image files."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from ccfs.distill import (BNStatsLoss, SynthParams, cda_min_scale, class_batches, export_png_folder,
                          import_png_folder, import_tensor_file, quantize, save_image_grid,
                          synthesize)
from ccfs.distill.bn_matching import Progress
from ccfs.distill import folder
from ccfs.errors import ConfigError, DataError


def tiny_bn_net(channels: int = 3, num_classes: int = 3, seed: int = 0) -> nn.Module:
    """Two conv+BN blocks (the second at half resolution) and a linear head."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 4 * 4, num_classes))  # 8x8 inputs


def bn_inputs(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The inputs of every BatchNorm2d of net on x (eval mode), in module order."""
    seen, hooks = [], [m.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
                       for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    net.eval()(x)
    for h in hooks:
        h.remove()
    return seen


def matched_net(x: torch.Tensor) -> nn.Module:
    """A tiny BN net whose running stats are exactly the batch statistics of x's BN inputs:
    one train-mode pass with momentum 1, then running_var made biased (torch stores the
    unbiased estimate, BN normalises with the biased one)."""
    net = tiny_bn_net()
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.momentum = 1.0
    with torch.no_grad():
        inputs = []
        hooks = [m.register_forward_hook(lambda m, i, o: inputs.append(i[0])) for m in bns]
        net.train()(x)
        for h in hooks:
            h.remove()
        for m, inp in zip(bns, inputs):
            n = inp.numel() // inp.shape[1]
            m.running_var.mul_((n - 1) / n)
    return net.eval()


def reference_term(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """‖μ − μ_run‖₂ + ‖σ² − σ²_run‖₂ written out with explicit sums."""
    per_channel = x.transpose(0, 1).reshape(x.shape[1], -1)  # [C, B·H·W]
    mu = per_channel.sum(1) / per_channel.shape[1]
    var = ((per_channel - mu[:, None]) ** 2).sum(1) / per_channel.shape[1]
    return ((mu - bn.running_mean) ** 2).sum().sqrt() + ((var - bn.running_var) ** 2).sum().sqrt()


# ---------------------------------------------------------------- BN statistics loss

def test_bn_loss_is_zero_when_batch_stats_equal_running_stats():
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    net = matched_net(x)
    with BNStatsLoss(net, first_bn_multiplier=10.0) as bn:
        net(x)
        assert bn.loss().item() == pytest.approx(0.0, abs=1e-4)
        net(torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(2)))
        assert bn.loss().item() > 0.1


def test_bn_loss_uses_biased_variance():
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    net = matched_net(x)
    first = next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    n = x.numel() // x.shape[1]
    with torch.no_grad():
        first.running_var.mul_(n / (n - 1))  # the unbiased estimate torch would store
    with BNStatsLoss(net, first_bn_multiplier=1.0) as bn:
        net(x)
        assert bn.loss().item() > 1e-3


def test_bn_loss_matches_reference_and_weights_first_layer():
    net = tiny_bn_net().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    terms = [reference_term(inp, m) for inp, m in zip(bn_inputs(net, x), bns)]
    losses = {}
    for mult in (1.0, 3.0):
        with BNStatsLoss(net, first_bn_multiplier=mult) as bn:
            net(x)
            losses[mult] = bn.loss().item()
    assert losses[1.0] == pytest.approx(float(terms[0] + terms[1]), rel=1e-5)
    assert losses[3.0] == pytest.approx(float(3 * terms[0] + terms[1]), rel=1e-5)


def test_bn_loss_needs_batchnorm_and_removes_hooks():
    with pytest.raises(ConfigError, match="needs a teacher with BatchNorm"):
        BNStatsLoss(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()))
    net = tiny_bn_net().eval()
    with BNStatsLoss(net) as bn:
        pass
    net(torch.randn(2, 3, 8, 8))
    with pytest.raises(RuntimeError, match="before a forward"):
        bn.loss()


# ---------------------------------------------------------------- CDA schedule

@pytest.mark.parametrize("schedule", ["step", "linear", "cosine"])
def test_cda_min_scale_endpoints_and_monotone(schedule):
    total = 100
    values = [cda_min_scale(t, total, schedule, 0.08, milestone=0.5) for t in range(total + 1)]
    assert values[0] == pytest.approx(1.0)
    assert values[-1] == pytest.approx(0.08)
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert all(0.08 - 1e-9 <= v <= 1.0 + 1e-9 for v in values)


def test_cda_min_scale_shapes():
    assert cda_min_scale(49, 100, "step", 0.08, milestone=0.5) == 1.0
    assert cda_min_scale(50, 100, "step", 0.08, milestone=0.5) == 0.08
    assert cda_min_scale(50, 100, "linear", 0.08, milestone=0.5) == pytest.approx(0.54)
    assert cda_min_scale(50, 100, "cosine", 0.08, milestone=0.5) == pytest.approx(0.54)
    assert cda_min_scale(25, 100, "cosine", 0.08, milestone=0.5) > cda_min_scale(25, 100, "linear", 0.08, milestone=0.5)


# ---------------------------------------------------------------- synthesis

def test_synth_params_validation():
    with pytest.raises(ConfigError, match="method"):
        SynthParams(method="mtt")
    with pytest.raises(ConfigError, match="cda_schedule"):
        SynthParams(cda_schedule="exp")
    with pytest.raises(ConfigError, match="batch_ipc"):
        SynthParams(batch_ipc=0)


def test_class_batches_hold_every_class():
    labels = torch.arange(3).repeat_interleave(3)  # [0,0,0,1,1,1,2,2,2]
    batches = class_batches(labels, 2)
    assert [b.tolist() for b in batches] == [[0, 1, 3, 4, 6, 7], [2, 5, 8]]
    shuffled = torch.tensor([2, 0, 1, 0, 2, 1])
    batches = class_batches(shuffled, 1)
    assert [shuffled[b].tolist() for b in batches] == [[0, 1, 2], [0, 1, 2]]
    assert sorted(torch.cat(batches).tolist()) == list(range(6))


def teacher_net() -> nn.Module:
    """tiny_bn_net with running stats from a calibration batch (like a trained teacher's)
    and a sharper head, so pixels can move its predictions within a few steps."""
    net = tiny_bn_net()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average: running stats of the one batch
    with torch.no_grad():
        net.train()(torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(9)))
        net[-1].weight.mul_(3)
    return net.eval()


@pytest.mark.parametrize("method", ["sre2l", "cda"])
def test_synthesize_lowers_loss_and_keeps_label_order(method):
    teacher = teacher_net()
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
    params = SynthParams(method=method, iterations=30, lr=0.25, r_bn=0.01, jitter=1,
                         batch_ipc=1, cda_schedule="linear", cda_min_scale=0.5)
    history: list = []
    out = synthesize(teacher, labels, (3, 8, 8), mean, std=std, params=params,
                     generator=torch.Generator().manual_seed(0), history=history)
    assert out.shape == (6, 3, 8, 8) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert len(history) == 4  # (first, last) for each of the 2 batches
    total = [ce + params.r_bn * bn for ce, bn in history]
    assert total[1] < total[0] and total[3] < total[2]
    # each image is recognised as its own label, far better than as any other class
    logits = teacher((out - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    ce = [nn.functional.cross_entropy(logits, (labels + shift) % 3).item() for shift in range(3)]
    assert ce[0] < 1.0 and ce[0] + 2.0 < min(ce[1:])
    assert all(not p.requires_grad for p in teacher.parameters()) and not teacher.training


def test_synthesize_clamps_pixels_between_steps():
    """lr 100 throws the pixels far out of range in one step; the clamp must bring them
    back before the next forward, or the BN statistics there explode."""
    teacher = teacher_net()
    history: list = []
    params = SynthParams(iterations=2, lr=100.0, jitter=0, flip=False)
    synthesize(teacher, torch.arange(3), (3, 8, 8), (0.5,) * 3, std=(0.25,) * 3, params=params,
               generator=torch.Generator().manual_seed(0), history=history)
    (_, bn_first), (_, bn_second) = history
    assert bn_second < 100 * bn_first  # clamped: ~24x; unclamped: ~60000x


def test_synthesize_is_seeded_and_real_init_round_trips():
    teacher = tiny_bn_net(channels=1)
    labels = torch.tensor([2, 0, 1, 1, 0, 2])
    params = SynthParams(iterations=2, lr=0.1, batch_ipc=2)
    a, b = (synthesize(teacher, labels, (1, 8, 8), [0.3], std=[0.4], params=params, generator=torch.Generator().manual_seed(5))
            for _ in range(2))
    assert torch.equal(a, b)
    init = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(6))
    real = SynthParams(iterations=1, lr=1e-9, init="real", batch_ipc=1)
    out = synthesize(teacher, labels, (1, 8, 8), [0.3], std=[0.4], params=real, generator=torch.Generator().manual_seed(5),
                     init_images=init)
    assert torch.equal(quantize(out), init)
    with pytest.raises(ConfigError, match="needs init_images"):
        synthesize(teacher, labels, (1, 8, 8), [0.3], std=[0.4], params=real, generator=torch.Generator())


class Interrupted(Exception):
    pass


def test_an_interrupted_synthesis_resumes_to_the_same_images():
    teacher = tiny_bn_net(channels=1)
    labels = torch.arange(3).repeat_interleave(4)
    params = SynthParams(method="cda", iterations=3, lr=0.1, batch_ipc=1, jitter=1)

    def run(**kw):
        return synthesize(teacher, labels, (1, 8, 8), [0.3], std=[0.4], params=params,
                          generator=torch.Generator().manual_seed(5), **kw)

    whole = run()
    kept = []

    def stop_after_two(p):
        kept.append(Progress(p.batches, p.pixels.clone(), p.rng.clone()))
        if p.batches == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        run(on_batch=stop_after_two)
    assert [p.batches for p in kept] == [1, 2]
    assert torch.equal(run(resume=kept[-1]), whole)
    assert not torch.equal(run(resume=Progress(2, kept[-1].pixels, kept[0].rng)), whole)  # the state matters
    with pytest.raises(ConfigError, match="does not fit"):
        run(resume=Progress(9, kept[-1].pixels, kept[-1].rng))


GROW_KEY = {"batch_ipc": 2, "init": "noise", "classes": 3}


def growable_synthesis():
    """(run(per_class, **synthesize kwargs), its progress key): a seeded noise-initialised
    synthesis of 3 classes in batches of 2 images per class."""
    teacher = tiny_bn_net(channels=1)
    params = SynthParams(iterations=2, lr=0.1, batch_ipc=2, jitter=1)

    def run(per_class, **kw):
        return synthesize(teacher, torch.arange(3).repeat_interleave(per_class), (1, 8, 8), [0.3], std=[0.4],
                          params=params, generator=torch.Generator().manual_seed(5), **kw)
    return run, dict(GROW_KEY)


def test_a_finished_synthesis_grows_into_the_larger_one():
    """With noise initialisation and full batches, the first batches of 4 images per class
    are those of 2 per class: continuing after them gives the larger synthesis exactly."""
    from ccfs.distill.run import resume_point

    run, key = growable_synthesis()

    last = []
    small = run(2, on_batch=lambda p: last.append((p.batches, quantize(p.pixels), p.rng.clone())))
    batches, images, rng = last[-1]
    saved = {"key": key, "per_class": 2, "batches": batches, "images": images, "rng": rng}
    resume = resume_point(saved, key, 4)
    assert resume.batches == 1 and resume.breaks == () and torch.equal(
        quantize(resume.pixels.view(3, 4, 1, 8, 8)[:, :2]), quantize(small).view(3, 2, 1, 8, 8))
    assert torch.equal(quantize(run(4, resume=resume)), quantize(run(4)))
    # not a continuation: another key, an unfinished or a larger saved synthesis, real init
    assert resume_point(saved, {**key, "batch_ipc": 1}, 4) is None
    assert resume_point({**saved, "batches": 0}, key, 4) is None
    assert resume_point(saved, key, 1) is None
    real = {**key, "init": "real"}
    assert resume_point({**saved, "key": real}, real, 4) is None
    assert resume_point(saved, key, 2).batches == 1  # the same request: after its saved batches


def test_a_synthesis_grown_after_a_partial_batch_keeps_every_earlier_image():
    """3 images per class in batches of 2 end with a partial batch; grown to 6 the new
    batches start at the 4th image (a break), the first 3 of each class stay as they were,
    and an interrupted growth resumes to the same images."""
    from ccfs.distill.run import batch_count, resume_point

    run, key = growable_synthesis()

    kept = []
    small = quantize(run(3, on_batch=lambda p: kept.append(Progress(p.batches, quantize(p.pixels), p.rng.clone()))))
    saved = {"key": key, "per_class": 3, "batches": kept[-1].batches, "images": kept[-1].pixels, "rng": kept[-1].rng}
    resume = resume_point(saved, key, 6)
    assert (resume.batches, resume.breaks) == (2, (3,)) and batch_count(6, 2, (3,)) == 4
    steps = []
    big = quantize(run(6, resume=resume, on_batch=lambda p: steps.append(
        Progress(p.batches, p.pixels.clone(), p.rng.clone(), p.breaks))))
    assert torch.equal(big.view(3, 6, 1, 8, 8)[:, :3], small.view(3, 3, 1, 8, 8))
    assert [p.batches for p in steps] == [3, 4] and all(p.breaks == (3,) for p in steps)
    assert not torch.equal(big, quantize(run(6)))  # not the images of asking for 6 at once
    assert torch.equal(quantize(run(6, resume=steps[0])), big)  # interrupted after batch 3, resumed
    assert [b.tolist() for b in class_batches(torch.arange(2).repeat_interleave(6), 2, (3,))] == [
        [0, 1, 6, 7], [2, 8], [3, 4, 9, 10], [5, 11]]


# ---------------------------------------------------------------- files

def random_u8(n, c, size=6, seed=0):
    return torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("channels", [1, 3])
def test_png_round_trip(tmp_path, channels):
    images = random_u8(6, channels)
    labels = torch.tensor([1, 0, 2, 0, 1, 2])
    out = export_png_folder(images, labels, 4, tmp_path / "distilled")
    assert sorted(p.name for p in out.iterdir()) == ["00000", "00001", "00002", "00003"]
    assert sorted(p.name for p in (out / "00001").iterdir()) == ["00000.png", "00001.png"]
    assert not list((out / "00003").iterdir())
    assert [p.name for p in tmp_path.iterdir()] == ["distilled"]  # no temporary left
    (out / "00003").rmdir()  # import needs cpc images in every class
    got, got_labels = import_png_folder(out, 3, 2, channels, image_size=6)
    order = torch.tensor([1, 3, 0, 4, 2, 5])  # class by class, in the given order
    assert torch.equal(got, images[order]) and got.dtype == torch.uint8
    assert got_labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_export_replaces_existing_folder(tmp_path):
    labels = torch.tensor([0, 1])
    export_png_folder(random_u8(2, 1, seed=1), labels, 2, tmp_path / "d")
    second = random_u8(2, 1, seed=2)
    export_png_folder(second, labels, 2, tmp_path / "d")
    got, _ = import_png_folder(tmp_path / "d", 2, 1, 1, image_size=6)
    assert torch.equal(got, second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_failed_export_keeps_the_old_folder(tmp_path, monkeypatch):
    labels = torch.tensor([0, 1])
    first = random_u8(2, 1, seed=1)
    export_png_folder(first, labels, 2, tmp_path / "d")

    def crash(image):
        raise OSError("disk full")
    monkeypatch.setattr(folder, "_to_pil", crash)
    with pytest.raises(OSError, match="disk full"):
        export_png_folder(random_u8(2, 1, seed=2), labels, 2, tmp_path / "d")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
    assert torch.equal(import_png_folder(tmp_path / "d", 2, 1, 1, image_size=6)[0], first)


def test_import_skips_hidden_and_other_files(tmp_path):
    images = random_u8(2, 1)
    root = export_png_folder(images, torch.tensor([0, 1]), 2, tmp_path / "d")
    (root / "00000" / "._00000.png").write_bytes(b"macOS metadata")  # AppleDouble file
    (root / "00000" / "notes.txt").write_text("not an image")
    got, _ = import_png_folder(root, 2, 1, 1, image_size=6)
    assert torch.equal(got, images)


def test_import_accepts_any_sorted_folder_names(tmp_path):
    images = random_u8(2, 3)
    export_png_folder(images, torch.tensor([0, 1]), 2, tmp_path / "d")
    (tmp_path / "d" / "00000").rename(tmp_path / "d" / "zebra")
    (tmp_path / "d" / "00001").rename(tmp_path / "d" / "ant")
    got, labels = import_png_folder(tmp_path / "d", 2, 1, 3, image_size=6)
    assert torch.equal(got, images[[1, 0]]) and labels.tolist() == [0, 1]


def test_import_errors(tmp_path):
    images, labels = random_u8(6, 1), torch.arange(3).repeat_interleave(2)
    root = export_png_folder(images, labels, 3, tmp_path / "d")
    with pytest.raises(DataError, match="does not exist"):
        import_png_folder(tmp_path / "missing", 3, 1, 1, image_size=6)
    with pytest.raises(DataError, match="found 3 class folders in .* the dataset has 10 classes"):
        import_png_folder(root, 10, 1, 1, image_size=6)
    with pytest.raises(DataError, match="has 2 images, 3 per class"):
        import_png_folder(root, 3, 3, 1, image_size=6)
    with pytest.raises(DataError, match="the dataset needs L 8x8"):
        import_png_folder(root, 3, 1, 1, image_size=8)
    with pytest.raises(DataError, match="the dataset needs RGB 6x6"):
        import_png_folder(root, 3, 1, 3, image_size=6)
    (root / "00001" / "00000.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image"):
        import_png_folder(root, 3, 1, 1, image_size=6)


def test_import_resize_converts_size_and_mode(tmp_path):
    root = export_png_folder(random_u8(2, 1), torch.tensor([0, 1]), 2, tmp_path / "d")
    got, _ = import_png_folder(root, 2, 1, 3, image_size=8, resize=True)
    assert got.shape == (2, 3, 8, 8) and got.dtype == torch.uint8
    assert torch.equal(got[:, 0], got[:, 1])  # grey converted to RGB: equal channels


def test_seeded_random_choice(tmp_path):
    images, labels = random_u8(12, 1), torch.arange(2).repeat_interleave(6)
    root = export_png_folder(images, labels, 2, tmp_path / "d")
    first, _ = import_png_folder(root, 2, 2, 1, image_size=6)
    picks = [import_png_folder(root, 2, 2, 1, image_size=6, generator=torch.Generator().manual_seed(s))[0]
             for s in (0, 0, 1, 2, 3, 4)]
    assert torch.equal(picks[0], picks[1])
    assert any(not torch.equal(p, first) for p in picks)
    for p in picks:  # each pick is two distinct images of the right class
        for k, cls in enumerate([0, 0, 1, 1]):
            pool = images[labels == cls]
            assert any(torch.equal(p[k], img) for img in pool)
        assert not torch.equal(p[0], p[1]) and not torch.equal(p[2], p[3])


def test_import_tensor_file(tmp_path):
    images, labels = random_u8(6, 3), torch.tensor([2, 0, 1, 0, 2, 1])
    torch.save({"images": images, "labels": labels}, tmp_path / "u8.pt")
    got, got_labels = import_tensor_file(tmp_path / "u8.pt", 3, 1, 3, image_size=6)
    assert torch.equal(got, images[[1, 2, 0]]) and got_labels.tolist() == [0, 1, 2]
    torch.save({"images": images.float() / 255, "labels": labels}, tmp_path / "f.pt")
    got, _ = import_tensor_file(tmp_path / "f.pt", 3, 2, 3, image_size=6)
    assert torch.equal(got, images[[1, 3, 2, 5, 0, 4]])
    with pytest.raises(DataError, match="needs"):
        import_tensor_file(tmp_path / "u8.pt", 3, 1, 3, image_size=8)
    with pytest.raises(DataError, match="3 per class"):
        import_tensor_file(tmp_path / "u8.pt", 3, 3, 3, image_size=6)
    torch.save({"images": images.float() / 255 - 0.5, "labels": labels}, tmp_path / "norm.pt")
    with pytest.raises(DataError, match=r"pixels in \[0, 1\]"):
        import_tensor_file(tmp_path / "norm.pt", 3, 1, 3, image_size=6)


def test_quantize():
    u8 = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(quantize(u8.float() / 255), u8)
    assert quantize(torch.tensor([-0.1, 0.2, 1.3])).tolist() == [0, 51, 255]


def test_save_image_grid(tmp_path):
    images, labels = random_u8(3, 3, size=4), torch.tensor([1, 0, 1])
    path = save_image_grid(images, labels, 3, tmp_path / "grid.png", per_row=2, pad=1)
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]  # no temporary left
    with Image.open(path) as img:
        assert img.mode == "RGB" and img.size == (2 * 5 + 1, 3 * 5 + 1)
        grid = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)
    assert torch.equal(grid[:, 6:10, 1:5], images[0])  # class 1, first image
    assert torch.equal(grid[:, 6:10, 6:10], images[2])  # class 1, second image
    assert int(grid[:, 1:5, 6:10].max()) == 0  # class 0 has one image: black cell
    assert not (tmp_path / "grid.png.tmp").exists()
