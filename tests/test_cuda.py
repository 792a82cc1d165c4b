"""Checks that only a CUDA machine can make (skipped elsewhere, CI included): run them where
a GPU is, e.g. `python -m pytest tests/test_cuda.py` (bench/gpu_session.sh runs the whole suite
there). With `deterministic` on (the default), one seed trains to bit-identical weights, so a
resumed run can end where an uninterrupted one does; CUDA inference agrees with the CPU's.
Both passed on an H200 (bench/results/gpu_h200.md)."""
from __future__ import annotations

import pytest
import torch

from ccfs.config import Recipe
from ccfs.device import resolve_device
from ccfs.models import create_model
from ccfs.objectives import CrossEntropy
from ccfs.train import fit, predict_logits

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _data(n=1024):
    from ccfs.data.datasets import Split

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 10
    images = (torch.rand(n, 1, 28, 28, generator=g) * 80 + labels.view(-1, 1, 1, 1) * 15).to(torch.uint8)
    return Split(images, labels)


def _train(device, data):
    torch.manual_seed(0)
    model = create_model("convnet_w32_bn", 10, 1, 28)
    hist = fit(model, data, Recipe(epochs=3, batch_size=128, lr=0.05), CrossEntropy(), mean=(0.3,), std=(0.3,),
               device=device, seed=0, progress=False)
    return model, hist


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
    per epoch), the arithmetic in bf16 / grouped kernels; within 2 accuracy points."""
    from ccfs.objectives import KD
    from ccfs.train import accuracy, fit_group

    data, recipe = _data(), Recipe(epochs=3, batch_size=64, lr=0.05)
    torch.manual_seed(9)
    teacher = create_model("convnet_w32_bn", 10, 1, 28)

    def students():
        out = []
        for s in (1, 2, 3):
            torch.manual_seed(s)
            out.append(create_model("convnet_w32", 10, 1, 28))
        return out

    gpu, cpu = students(), students()
    fit_group(gpu, [data] * 3, recipe, KD(teacher, 4.0), mean=(0.3,), std=(0.3,), seeds=[5, 6, 7],
              device="cuda", progress=False)
    for m, s in zip(cpu, (5, 6, 7)):
        fit(m, data, recipe, KD(teacher.cpu(), 4.0), mean=(0.3,), std=(0.3,), seed=s, progress=False)
    for a, b in zip(gpu, cpu):
        acc_a = accuracy(a, data, (0.3,), (0.3,), device="cuda")
        acc_b = accuracy(b, data, (0.3,), (0.3,), device="cpu")
        assert abs(acc_a - acc_b) <= 2.0


@pytest.mark.parametrize("group", [1, 3])
@pytest.mark.parametrize("model", ["convnet_w32", "convnet_w32_bn"])
def test_a_graphed_step_trains_what_the_eager_step_trains(group, model, capsys, monkeypatch):
    """KD students (AMP) with the step captured as a CUDA graph against eager steps on the same
    device: the same kernels, so the same training up to GraphSGD's rounding (its update is a
    product then a sum, torch's one fused op); losses within 1 %, accuracy within 1 point, the
    BatchNorm statistics of convnet_w32_bn near. A graphed fit repeats itself bit for bit, as
    an eager one does; the graph was captured and replayed (no fallback note)."""
    from ccfs import stepgraph
    from ccfs.objectives import KD
    from ccfs.train import accuracy, fit_group

    monkeypatch.setenv(stepgraph.ENV, "1")
    device = resolve_device("cuda")  # deterministic kernels, whatever ran before
    data, recipe = _data(), Recipe(epochs=3, batch_size=48, lr=0.05)  # 1024 = 21 × 48 + 16: a short last batch
    torch.manual_seed(9)
    teacher = create_model("convnet_w32_bn", 10, 1, 28)

    def run(graph: bool, backend=None):
        models = []
        for s in range(group):
            torch.manual_seed(s)
            models.append(create_model(model, 10, 1, 28))
        hists = fit_group(models, [data] * group, recipe, KD(teacher, 4.0), mean=(0.3,), std=(0.3,),
                          seeds=list(range(group)), device=device, progress=False, graph=graph, backend=backend)
        return models, hists

    backend = stepgraph.CudaBackend(device)
    graphed, hg = run(True, backend)
    again, ha = run(True)
    eager, he = run(False)
    assert "capture failed" not in capsys.readouterr().out
    assert backend.replays == 3 * 21 - stepgraph.WARMUP  # 21 full steps an epoch, 3 epochs; 3 eager first
    for g, a, e, hg_, ha_, he_ in zip(graphed, again, eager, hg, ha, he):
        assert hg_.train_loss == ha_.train_loss
        assert all(torch.equal(x, y) for x, y in zip(g.state_dict().values(), a.state_dict().values()))
        assert hg_.train_loss == pytest.approx(he_.train_loss, rel=1e-2)
        assert abs(accuracy(g, data, (0.3,), (0.3,), device="cuda") -
                   accuracy(e, data, (0.3,), (0.3,), device="cuda")) <= 1.0
        for name, x in g.state_dict().items():
            if "running" in name:
                assert torch.allclose(x, e.state_dict()[name], rtol=0.05, atol=0.05), name
