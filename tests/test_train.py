"""The one training loop: schedule, eval epochs, batching, repeatability, resume, KD."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ccfs.data.datasets import Split
from ccfs.objectives import KD, CrossEntropy, kd_loss
from ccfs.train import (History, Recipe, batch_indices, eval_epochs, fit, fit_group, has_cxx_compiler, lr_factor,
                        plan_epoch, predict_logits)

MEAN, STD = (0.5,), (0.25,)
K = 3  # classes


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, K))


def tiny_split(n: int = 22, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8),
                 torch.arange(n) % K)


def tiny_recipe(**kw) -> Recipe:
    base = dict(epochs=3, batch_size=8, lr=0.1, warmup_epochs=1, augment="rrc", crop_pad=1)
    return Recipe(**{**base, **kw})


def train(model, data, recipe, **kw) -> History:
    return fit(model, data, recipe, CrossEntropy(), mean=MEAN, std=STD, progress=False, **kw)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ----------------------------------------------------------------------------- schedule

@pytest.mark.parametrize("epochs, warmup, start", [(20, 5, 0.01), (10, 0, 0.01), (7, 3, 0.2), (1, 0, 0.01)])
def test_lr_factor_warmup_then_cosine(epochs, warmup, start):
    f = [lr_factor(e, epochs, warmup, start) for e in range(epochs)]
    if warmup:
        assert f[0] == pytest.approx(start)
        steps = [b - a for a, b in zip(f[:warmup + 1], f[1:warmup + 1])]
        assert all(s == pytest.approx(steps[0]) and s > 0 for s in steps)  # linear, rising
    assert f[warmup] == pytest.approx(1.0)  # the peak is reached right after warmup
    after = f[warmup:]
    assert all(b < a for a, b in zip(after, after[1:]))  # strictly decreasing
    assert all(0 < x <= 1 for x in f)
    assert lr_factor(epochs, epochs, warmup, start) == pytest.approx(0.0, abs=1e-12)  # cosine reaches 0


def test_lr_factor_near_zero_at_the_end():
    assert lr_factor(99, 100, 5, 0.01) < 1e-3
    assert lr_factor(50, 100, 0, 0.01) == pytest.approx(0.5)  # cosine midpoint


# ----------------------------------------------------------------------------- eval epochs

@pytest.mark.parametrize("epochs", [1, 2, 3, 5, 10, 17, 30, 100, 300])
@pytest.mark.parametrize("last", [1, 2, 4, 7])
def test_eval_epochs_last_20_percent(epochs, last):
    ev = eval_epochs(epochs, last)
    assert epochs - 1 in ev
    assert 1 <= len(ev) <= last
    assert all(int(0.8 * epochs) <= e < epochs for e in ev)
    if epochs - int(0.8 * epochs) >= last:  # room for all of them: exactly `last`, spread out
        assert len(ev) == last
        assert min(ev) == int(0.8 * epochs) or last == 1


# ----------------------------------------------------------------------------- batches

@pytest.mark.parametrize("n, batch", [(2, 2), (10, 3), (17, 8), (33, 4), (64, 64), (65, 64), (5, 100), (9, 2)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_batch_indices_cover_each_index_once(n, batch, shuffle):
    chunks = batch_indices(n, batch, torch.Generator().manual_seed(n), shuffle)
    flat = torch.cat(chunks)
    assert torch.equal(flat.sort().values, torch.arange(n))
    assert all(len(c) >= 2 for c in chunks)
    assert all(len(c) <= batch + 1 for c in chunks)
    if not shuffle:
        assert torch.equal(flat, torch.arange(n))


def test_batch_indices_shuffle_is_seeded():
    a = batch_indices(50, 7, torch.Generator().manual_seed(1))
    b = batch_indices(50, 7, torch.Generator().manual_seed(1))
    c = batch_indices(50, 7, torch.Generator().manual_seed(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(torch.cat(a), torch.cat(c))


@pytest.mark.parametrize("n, expected", [(10, 32), (4999, 32), (5000, 64), (9999, 64), (10000, 128), (60000, 128)])
def test_batch_for_paper_rule(n, expected):
    assert Recipe(batch_size=0).batch_for(n) == expected


def test_batch_for_explicit_size_is_capped_by_n():
    assert Recipe(batch_size=256).batch_for(1000) == 256
    assert Recipe(batch_size=256).batch_for(100) == 100


# ----------------------------------------------------------------------------- fit

def test_fit_is_repeatable_for_a_seed():
    data, recipe = tiny_split(), tiny_recipe()
    a, b, c = tiny_net(), tiny_net(), tiny_net()
    ha = train(a, data, recipe, seed=3)
    hb = train(b, data, recipe, seed=3)
    train(c, data, recipe, seed=4)
    assert same_weights(a, b)
    assert ha.train_loss == hb.train_loss
    assert not same_weights(a, c)
    assert not same_weights(a, tiny_net())  # it trained at all


class Recorder:
    def __init__(self, data: Split):
        self.data = data
        self.seen: dict[int, list[torch.Tensor]] = {}

    def __call__(self, epoch, idx, logits, labels):
        assert logits.shape == (len(idx), K) and not logits.requires_grad
        assert torch.equal(labels, self.data.labels[idx])
        self.seen.setdefault(epoch, []).append(idx.clone())


def test_hook_sees_every_index_once_per_epoch():
    data = tiny_split(n=21)
    rec = Recorder(data)
    train(tiny_net(), data, tiny_recipe(epochs=3, batch_size=4), hook=rec)
    assert sorted(rec.seen) == [0, 1, 2]
    for epoch, chunks in rec.seen.items():
        assert torch.equal(torch.cat(chunks).sort().values, torch.arange(21)), epoch
    assert not torch.equal(torch.cat(rec.seen[0]), torch.cat(rec.seen[1]))  # reshuffled


def test_fit_evaluates_on_eval_epochs_and_learns_a_separable_task():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(30) % K
    images = torch.randint(0, 40, (30, 1, 8, 8), generator=g, dtype=torch.uint8)
    for c in range(K):  # class c: a bright column block at columns 2c..2c+1
        images[labels == c, :, :, 2 * c:2 * c + 2] = 250
    data = Split(images, labels)
    recipe = tiny_recipe(epochs=10, augment="none", flip=False, eval_last=2, lr=0.2)
    hist = train(tiny_net(), data, recipe, test=data)
    assert set(hist.test_acc) == eval_epochs(10, 2)
    assert len(hist.train_loss) == len(hist.train_acc) == 10
    assert hist.train_loss[-1] < hist.train_loss[0]
    assert hist.final_acc > 80.0


class StopAt:
    """A hook that interrupts training at the first step of `epoch`."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def __call__(self, epoch, idx, logits, labels):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_resumed_fit_equals_uninterrupted(tmp_path):
    data, recipe = tiny_split(), tiny_recipe(epochs=4, warmup_epochs=1)
    full = tiny_net()
    h_full = train(full, data, recipe, seed=5)

    ckpt = tmp_path / "resume.pt"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_net(), data, recipe, seed=5, resume=ckpt, hook=StopAt(2))
    assert ckpt.is_file()
    rec = Recorder(data)
    resumed = tiny_net(seed=99)  # other initial weights: everything must come from the checkpoint
    h_res = train(resumed, data, recipe, seed=5, resume=ckpt, hook=rec)
    assert sorted(rec.seen) == [2, 3]  # only the missing epochs ran
    assert same_weights(resumed, full)
    assert h_res.train_loss == h_full.train_loss

    rec = Recorder(data)
    again = tiny_net(seed=7)
    train(again, data, recipe, seed=5, resume=ckpt, hook=rec)  # finished: nothing left to do
    assert rec.seen == {} and same_weights(again, full)


def test_resume_file_is_written_atomically(tmp_path):
    ckpt = tmp_path / "r.pt"
    train(tiny_net(), tiny_split(), tiny_recipe(epochs=1), resume=ckpt)
    assert [p.name for p in tmp_path.iterdir()] == ["r.pt"]
    assert torch.load(ckpt, weights_only=False)["epoch"] == 1


# ----------------------------------------------------------------------------- objectives

def test_kd_loss_zero_for_equal_logits_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(6, 5, generator=g)
    assert kd_loss(t.clone(), t, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(t + 3.0, t, 4.0).item() == pytest.approx(0.0, abs=1e-5)  # shift-invariant
    assert kd_loss(torch.randn(6, 5, generator=g), t, 4.0).item() > 1e-4


@pytest.mark.parametrize("temperature", [1.0, 4.0, 20.0])
def test_kd_loss_matches_definition(temperature):
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(4, 7, generator=g) * 5, torch.randn(4, 7, generator=g) * 5
    q = F.softmax(t / temperature, 1)
    p = F.softmax(s / temperature, 1)
    ref = (q * (q.log() - p.log())).sum(1).mean() * temperature ** 2  # KL(q || p) T², batch mean
    assert kd_loss(s, t, temperature).item() == pytest.approx(ref.item(), rel=1e-4)


def test_kd_loss_scales_with_t_squared_at_high_temperature():
    """For large T, KL(softmax(t/T) || softmax(s/T)) ~ c / T², so the T² factor keeps the
    loss (and gradient scale) roughly constant across temperatures."""
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g)
    a, b = kd_loss(s, t, 50.0).item(), kd_loss(s, t, 100.0).item()
    assert a == pytest.approx(b, rel=0.02)
    assert a > 0.01


def test_kd_objective_uses_frozen_teacher():
    teacher, student = tiny_net(1).train(), tiny_net(2)
    obj = KD(teacher, temperature=3.0)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    x = torch.randn(5, 1, 8, 8)
    loss, logits = obj(student, x, torch.zeros(5, dtype=torch.long))
    assert logits.shape == (5, K)
    assert loss.item() == pytest.approx(kd_loss(student(x), teacher(x), 3.0).item(), rel=1e-5)
    self_loss, _ = KD(tiny_net(1), 3.0)(teacher, x, None)
    assert self_loss.item() == pytest.approx(0.0, abs=1e-6)


# ----------------------------------------------------------------------------- inference

def test_predict_logits_shape_and_eval_mode():
    model = tiny_net().train()
    images = tiny_split(n=11).images
    running = model[1].running_mean.clone()
    out = predict_logits(model, images, MEAN, STD, batch_size=4)
    assert out.shape == (11, K) and out.dtype == torch.float32
    assert not model.training
    assert torch.equal(model[1].running_mean, running)  # BN statistics untouched
    x = (images.float() / 255 - MEAN[0]) / STD[0]
    with torch.no_grad():
        assert torch.allclose(out, model(x), atol=1e-5)  # batches joined in order


def test_best_last20():
    h = History(test_acc={3: 99.0, 8: 70.0, 9: 75.0})
    assert h.best_last20(10) == 75.0  # epoch 3 is outside the last 20 %
    assert h.final_acc == 75.0
    assert math.isnan(History(test_acc={1: 50.0}).best_last20(10))
    assert math.isnan(History().final_acc)


def test_kd_student_does_not_depend_on_what_ran_the_teacher_before():
    """The KD teacher is put in its memory format by `fit`, so a student is the same whether
    or not the teacher went through an inference pass (which converts BatchNorm nets to
    channels-last) first."""
    from ccfs.models import create_model

    data = Split(tiny_split(40).images.repeat(1, 1, 4, 4)[:, :, :28, :28], tiny_split(40).labels)
    torch.manual_seed(0)
    teacher = create_model("convnet_w32_bn", K, 1, 28).eval().requires_grad_(False)
    students = []
    for warm in (False, True):
        t = create_model("convnet_w32_bn", K, 1, 28)
        t.load_state_dict(teacher.state_dict())
        t.eval().requires_grad_(False)
        if warm:
            predict_logits(t, data.images, MEAN, STD)
        s = create_model("convnet_w32", K, 1, 28)
        s.load_state_dict(tiny_student_state())
        fit(s, data, tiny_recipe(epochs=2), KD(t, 4.0), mean=MEAN, std=STD, progress=False)
        students.append(s)
    assert same_weights(*students)


def tiny_student_state():
    from ccfs.models import create_model

    torch.manual_seed(7)
    return create_model("convnet_w32", K, 1, 28).state_dict()


# ----------------------------------------------------------------------------- train.compile
needs_cxx = pytest.mark.skipif(not has_cxx_compiler(), reason="torch.compile on the CPU needs a C++ compiler")


@needs_cxx
def test_compiled_fit_repeats_itself_stays_close_to_eager_and_saves_plain_weights():
    data, recipe = tiny_split(), tiny_recipe(epochs=3)
    teacher = tiny_net(1)
    eager_kd = KD(teacher, 4.0)
    runs = []
    for compiled in (False, True, True):
        s = tiny_net()
        h = fit(s, data, replace(recipe, compile=compiled), eager_kd, mean=MEAN, std=STD, progress=False, seed=2)
        runs.append((s, h))
    (eager, he), (c1, h1), (c2, h2) = runs
    assert same_weights(c1, c2) and h1.train_loss == h2.train_loss  # the same kernels each time
    assert list(c1.state_dict()) == list(eager.state_dict())  # no _orig_mod. prefix
    assert h1.train_loss == pytest.approx(he.train_loss, rel=1e-4)  # the same recipe, other rounding
    assert not same_weights(c1, tiny_net())
    assert type(eager_kd.teacher) is nn.Sequential  # the caller's objective keeps its eager teacher


@needs_cxx
def test_compiled_resumed_fit_equals_uninterrupted(tmp_path):
    data, recipe = tiny_split(), tiny_recipe(epochs=4, compile=True)
    full = tiny_net()
    h_full = train(full, data, recipe, seed=5)
    ckpt = tmp_path / "resume.pt"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_net(), data, recipe, seed=5, resume=ckpt, hook=StopAt(2))
    resumed = tiny_net(seed=99)
    h_res = train(resumed, data, recipe, seed=5, resume=ckpt)
    assert same_weights(resumed, full) and h_res.train_loss == h_full.train_loss


def test_compile_without_a_cpp_compiler_is_a_one_line_config_error(monkeypatch):
    import shutil

    from ccfs.errors import ConfigError

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="C\\+\\+ compiler"):
        train(tiny_net(), tiny_split(), tiny_recipe(epochs=1, compile=True))


# ----------------------------------------------------------------------------- groups of models

def separable(n: int = 30, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % K
    images = torch.randint(0, 40, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    for c in range(K):  # class c: a bright column block at columns 2c..2c+1
        images[labels == c, :, :, 2 * c:2 * c + 2] = 250
    return Split(images, labels)


def test_an_epoch_plan_draws_what_step_by_step_drawing_draws():
    """The epoch's rows and crop / flip / cutmix draws, drawn up front, are the numbers the
    training loop drew step by step before: the permutation first, then per batch the crop
    boxes (10 tries of area and log-ratio, then x0, y0), the flips, the mix permutation, λ
    and the box centre (row, then column), spelled out here from the generator itself; the
    generator ends in the same state."""
    from ccfs.data.augment import AugmentPolicy

    policy = AugmentPolicy(kind="rrc", flip=True, mix="cutmix", scale=(0.3, 1.0))
    a, b = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    plan = plan_epoch(21, 8, policy, (6, 8), a, device="cpu")
    order = torch.randperm(21, generator=b)
    assert [len(st.rows) for st in plan] == [8, 8, 5]
    assert torch.equal(torch.cat([st.rows for st in plan]), order)
    for st in plan:
        n = len(st.rows)
        torch.empty(n, 10).uniform_(0.3, 1.0, generator=b)  # areas
        torch.empty(n, 10).uniform_(math.log(3 / 4), math.log(4 / 3), generator=b)  # log aspect ratios
        torch.rand(n, generator=b), torch.rand(n, generator=b)  # x0, y0
        flip = torch.rand(n, generator=b) < 0.5
        perm, lam = torch.randperm(n, generator=b), float(torch.rand(1, generator=b))
        cy, cx = int(torch.randint(0, 6, (1,), generator=b)), int(torch.randint(0, 8, (1,), generator=b))
        assert torch.equal(st.aug.perm, perm) and (st.aug.lam, st.aug.centre) == (lam, (cy, cx))
        assert bool(st.aug.theta[0, 0, 0] < 0) == bool(flip[0])  # a flip mirrors the x scale
    assert torch.equal(a.get_state(), b.get_state())


@pytest.mark.parametrize("mix", ["none", "cutmix"])
def test_an_epoch_plan_for_a_device_moves_each_kind_of_draw_at_once(mix):
    """Off the CPU (here the meta device, which keeps shapes only) the rows, crop maps and mix
    permutations travel as one tensor each, split per step: the steps' shapes and scalars are
    the CPU plan's."""
    from ccfs.data.augment import AugmentPolicy

    policy = AugmentPolicy(kind="rrc", flip=True, mix=mix)
    cpu = plan_epoch(21, 8, policy, (8, 8), torch.Generator().manual_seed(1), device="cpu")
    meta = plan_epoch(21, 8, policy, (8, 8), torch.Generator().manual_seed(1), device="meta")
    for a, b in zip(cpu, meta, strict=True):
        assert b.rows.device.type == "meta" and b.rows.shape == a.rows.shape
        assert b.aug.theta.device.type == "meta" and b.aug.theta.shape == a.aug.theta.shape
        assert (b.aug.perm is None) == (mix == "none") and (b.aug.lam, b.aug.centre) == (a.aug.lam, a.aug.centre)
    plain = plan_epoch(21, 8, AugmentPolicy(kind="none", flip=False), (8, 8), torch.Generator(), device="meta")
    assert all(st.aug is None for st in plain)


@pytest.mark.parametrize("objective", ["kd", "ce"])
def test_a_groups_members_train_as_the_same_models_one_by_one(objective):
    """Three models trained as one stacked group, each on its own set with its own seed, end
    with the weights and BatchNorm statistics of the same three trained one by one, to float
    rounding (the group sums its members' losses and runs their convolutions as one grouped
    kernel: measured differences about 1e-4 after 3 epochs; tolerance 2e-3)."""
    def obj():
        return KD(tiny_net(9), temperature=4.0) if objective == "kd" else CrossEntropy()

    sets, seeds = [tiny_split(22, s) for s in (1, 2, 3)], [5, 6, 7]
    alone = [tiny_net(s) for s in (1, 2, 3)]
    hists = [fit(m, d, tiny_recipe(), obj(), mean=MEAN, std=STD, seed=s, progress=False)
             for m, d, s in zip(alone, sets, seeds)]
    grouped = [tiny_net(s) for s in (1, 2, 3)]
    ghists = fit_group(grouped, sets, tiny_recipe(), obj(), mean=MEAN, std=STD, seeds=seeds, progress=False)
    for a, g, ha, hg in zip(alone, grouped, hists, ghists):
        sa, sg = a.state_dict(), g.state_dict()
        for k in sa:
            assert torch.allclose(sa[k].float(), sg[k].float(), atol=2e-3), k
        assert ha.train_loss == pytest.approx(hg.train_loss, abs=1e-4)
    # BatchNorm members keep their own running statistics
    means = [g.state_dict()["1.running_mean"] for g in grouped]
    assert not torch.allclose(means[0], means[1]) and not torch.allclose(means[1], means[2])


def test_a_group_learns_and_is_tested_as_its_members_would_be():
    """Accuracy after a short run, grouped against one by one: within 5 points on a separable
    task (the tolerance: rounding differences can flip a few of 30 test images)."""
    data = separable()
    recipe = tiny_recipe(epochs=10, augment="none", flip=False, eval_last=2, lr=0.2)
    alone = [fit(tiny_net(s), data, recipe, CrossEntropy(), mean=MEAN, std=STD, seed=s, test=data, val=data,
                 progress=False) for s in (0, 1)]
    grouped = fit_group([tiny_net(0), tiny_net(1)], [data, data], recipe, CrossEntropy(), mean=MEAN, std=STD,
                        seeds=[0, 1], test=data, val=data, progress=False)
    for a, g in zip(alone, grouped):
        assert set(g.test_acc) == eval_epochs(10, 2)
        assert g.final_acc > 80.0 and abs(a.final_acc - g.final_acc) <= 5.0
        assert g.val_acc == pytest.approx(a.val_acc, abs=5.0)


def test_a_group_of_one_is_the_single_model_loop_bit_for_bit():
    """A guard: a group of one must stay today's single-model loop (`fit`, with its resume,
    hook, DDP and compile), not the stacked path, whose rounding differs."""
    a, b = tiny_net(1), tiny_net(1)
    ha = train(a, tiny_split(), tiny_recipe(), seed=3)
    hb = fit_group([b], [tiny_split()], tiny_recipe(), CrossEntropy(), mean=MEAN, std=STD, seeds=[3], progress=False)[0]
    assert same_weights(a, b) and ha.train_loss == hb.train_loss


def test_a_group_refuses_sets_of_different_sizes():
    with pytest.raises(ValueError, match="sets of one size"):
        fit_group([tiny_net(0), tiny_net(1)], [tiny_split(22), tiny_split(23)], tiny_recipe(), CrossEntropy(),
                  mean=MEAN, std=STD, seeds=[0, 1], progress=False)
