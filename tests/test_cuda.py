"""Checks that only a CUDA machine can make (skipped elsewhere, CI included): run them where
a GPU is, e.g. `python -m pytest tests/test_cuda.py` (bench/gpu_session.sh runs the whole suite
there). With `deterministic` on (the default), one seed trains to bit-identical weights, so a
resumed run can end where an uninterrupted one does; CUDA inference agrees with the CPU's.
Those two passed on an H200 (bench/results/gpu_h200.md); the group and graph tests below have
not run on a GPU yet (bench/gpu_session.sh runs them)."""
from __future__ import annotations

import pytest
import torch

from ccfs.config import Recipe
from ccfs.device import resolve_device
from ccfs.models import create_model
from ccfs.objectives import CrossEntropy
from ccfs.train import fit, predict_logits

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _data(n=1024, seed=0):
    from ccfs.data.datasets import Split

    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = (torch.rand(n, 1, 28, 28, generator=g) * 80 + labels.view(-1, 1, 1, 1) * 15).to(torch.uint8)
    return Split(images, labels)


def _train(device, data):
    torch.manual_seed(0)
    model = create_model("convnet_w32_bn", 10, 1, 28)
    hist = fit(model, data, Recipe(epochs=3, batch_size=128, lr=0.05), CrossEntropy(), mean=(0.3,), std=(0.3,),
               device=device, seed=0, progress=False)
    return model, hist


def _teacher(data):
    """A convnet_w32_bn trained 2 epochs on the data: soft labels that depend on the images (an
    untrained teacher's are near uniform, and a student that learns nothing matches them)."""
    torch.manual_seed(9)
    teacher = create_model("convnet_w32_bn", 10, 1, 28)
    fit(teacher, data, Recipe(epochs=2, batch_size=128, lr=0.05), CrossEntropy(), mean=(0.3,), std=(0.3,),
        device="cuda", seed=0, progress=False, graph=False)
    return teacher


def _students(model, n):
    out = []
    for s in range(n):
        torch.manual_seed(s)
        out.append(create_model(model, 10, 1, 28))
    return out


def test_one_seed_trains_to_the_same_weights_twice():
    device = resolve_device("cuda")  # deterministic kernels: the config's default
    data = _data()
    (a, ha), (b, hb) = _train(device, data), _train(device, data)
    assert ha.train_loss == hb.train_loss
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_cuda_inference_agrees_with_the_cpu():
    data = _data(512)
    model, _ = _train(resolve_device("cuda"), data)
    gpu = predict_logits(model, data.images, (0.3,), (0.3,), device="cuda", amp=False).cpu()
    bf16 = predict_logits(model, data.images, (0.3,), (0.3,), device="cuda", amp=True).cpu()
    cpu = predict_logits(model.cpu(), data.images, (0.3,), (0.3,), device="cpu")
    assert torch.allclose(gpu, cpu, atol=1e-3, rtol=1e-3)
    assert (bf16.argmax(1) == cpu.argmax(1)).float().mean() > 0.98


def test_a_group_on_cuda_trains_as_its_members_on_the_cpu():
    """Three stacked KD students on CUDA (AMP, as the students train) end near the same three
    trained one by one on the CPU: the same rows and crops (drawn on the CPU generator, moved
    per epoch), the arithmetic in bf16 / grouped kernels; within 2 accuracy points, of a trained
    teacher's students (not chance)."""
    import copy

    from ccfs.objectives import KD
    from ccfs.train import accuracy, fit_group

    data, recipe = _data(), Recipe(epochs=3, batch_size=64, lr=0.05)
    teacher = _teacher(data)
    gpu, cpu = _students("convnet_w32", 3), _students("convnet_w32", 3)
    fit_group(gpu, [data] * 3, recipe, KD(teacher, 4.0), mean=(0.3,), std=(0.3,), seeds=[5, 6, 7],
              device="cuda", progress=False)
    cpu_teacher = copy.deepcopy(teacher).cpu()
    for m, s in zip(cpu, (5, 6, 7)):
        fit(m, data, recipe, KD(cpu_teacher, 4.0), mean=(0.3,), std=(0.3,), seed=s, progress=False)
    for a, b in zip(gpu, cpu):
        acc_a = accuracy(a, data, (0.3,), (0.3,), device="cuda")
        acc_b = accuracy(b, data, (0.3,), (0.3,), device="cpu")
        assert acc_b > 30  # chance is 10: the students learned something a wrong step would miss
        assert abs(acc_a - acc_b) <= 2.0


def _travel(after: dict, before: dict, ref: dict) -> float:
    """How far `after` is from `ref`, as a share of the distance `ref` travelled from `before`
    (float tensors only)."""
    keys = [k for k, v in ref.items() if v.is_floating_point()]
    off = sum(float((after[k].float() - ref[k].float()).norm() ** 2) for k in keys) ** 0.5
    moved = sum(float((ref[k].float() - before[k].float()).norm() ** 2) for k in keys) ** 0.5
    return off / moved


@pytest.mark.parametrize("objective", ["kd", "ce"])
@pytest.mark.parametrize("group", [1, 3])
@pytest.mark.parametrize("model", ["convnet_w32", "convnet_w32_bn"])
def test_a_graphed_step_trains_what_the_same_step_trains_uncaptured(objective, group, model, capsys, monkeypatch):
    """The step captured as a CUDA graph against the same step run uncaptured on the same device
    (the CPU tests' PythonReplay backend: the same warm-up, GraphSGD and kernels, each "replay"
    a Python call): KD of a trained teacher with AMP, or cross-entropy in float32; a group's
    members on different sets; a test and a validation pass between epochs (which must not move
    the parameters the graph holds). Per-epoch losses within 0.2 % and each member's weights
    within 1 % of the distance they travelled: a graph that misses the refresh of one input (the
    rows, the augmentation) or holds a frozen lr is off by far more. Against torch's eager step
    (graph=False, torch's SGD) losses within 3 % (GraphSGD rounds otherwise; 0.5 % on the CPU). A graphed fit repeats itself bit for bit; the
    graph was captured and replayed (no fallback note)."""
    import copy

    from ccfs import stepgraph
    from ccfs.objectives import KD
    from ccfs.train import fit_group
    from tests.test_stepgraph import PythonReplay

    monkeypatch.setenv(stepgraph.ENV, "1")
    monkeypatch.setattr(stepgraph, "_failed", False)  # each case tries its own capture
    device = resolve_device("cuda")  # deterministic kernels, whatever ran before
    sets = [_data(seed=s) for s in range(group)]
    recipe = Recipe(epochs=3, batch_size=48, lr=0.05, amp=objective == "kd")  # 1024 = 21 × 48 + 16: a short last batch
    obj = KD(_teacher(sets[0]), 4.0) if objective == "kd" else CrossEntropy()
    held_out = _data(256, seed=99)
    init = [copy.deepcopy(m.state_dict()) for m in _students(model, group)]

    def run(graph: bool, backend=None):
        models = _students(model, group)
        hists = fit_group(models, sets, recipe, obj, mean=(0.3,), std=(0.3,), seeds=list(range(group)),
                          device=device, test=held_out, val=held_out, progress=False, graph=graph, backend=backend)
        return [m.state_dict() for m in models], hists

    cuda = stepgraph.CudaBackend(device)
    graphed, hg = run(True, cuda)
    again, ha = run(True)
    replayed, hr = run(True, PythonReplay())
    _, he = run(False)
    assert "capture failed" not in capsys.readouterr().out
    assert cuda.replays == 3 * 21 - stepgraph.WARMUP  # 21 full steps an epoch, 3 epochs; 3 eager first
    for m in range(group):
        assert hg[m].train_loss == ha[m].train_loss
        assert all(torch.equal(x, y) for x, y in zip(graphed[m].values(), again[m].values()))
        assert hg[m].train_loss == pytest.approx(hr[m].train_loss, rel=2e-3)
        assert _travel(graphed[m], init[m], replayed[m]) < 0.01
        assert hg[m].test_acc and hg[m].val_acc is not None
        assert abs(hg[m].final_acc - hr[m].final_acc) <= 1.0
        assert hg[m].train_loss == pytest.approx(he[m].train_loss, rel=3e-2)


def test_a_graphed_fit_resumes_where_it_stopped(monkeypatch, tmp_path):
    """Killed after epoch 2 and run again, a graphed fit (convnet_w32_bn, float32) ends where an
    uninterrupted one does: it captures again, its momentum from the checkpoint. Losses within
    0.2 %, weights within 1 % of their travel (the re-run warm-up steps are eager kernels)."""
    import copy

    from ccfs import stepgraph
    from tests.test_stepgraph import resumed_against_whole

    monkeypatch.setenv(stepgraph.ENV, "1")
    monkeypatch.setattr(stepgraph, "_failed", False)
    device = resolve_device("cuda")

    def net(seed):
        torch.manual_seed(seed)
        return create_model("convnet_w32_bn", 10, 1, 28)

    init = copy.deepcopy(net(1).state_dict())
    backends = []

    def backend():
        backends.append(stepgraph.CudaBackend(device))
        return backends[-1]

    resumed, h_res, whole, h_whole = resumed_against_whole(
        monkeypatch, tmp_path, backend, net, _data(), Recipe(epochs=4, batch_size=48, lr=0.05, amp=False),
        mean=(0.3,), std=(0.3,), device=device)
    assert [b.replays for b in backends] == [4 * 21 - 3, 2 * 21 - 3, 2 * 21 - 3]  # captured again on resuming
    assert h_res.train_loss == pytest.approx(h_whole.train_loss, rel=2e-3)
    assert _travel(resumed.state_dict(), init, whole.state_dict()) < 0.01
