"""The Python API on tensors, and the CLI as a thin layer over it: the same settings give
the same teacher, distilled images, selection and student accuracy through both."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import ccfs
from ccfs.cli import main
from ccfs.config import load_config
from conftest import write_fake_fmnist


@pytest.fixture(scope="module")
def api_and_cli(tmp_path_factory):
    base = tmp_path_factory.mktemp("api")
    mp = pytest.MonkeyPatch()
    mp.setenv("CCFS_CACHE", str(base / "cache"))
    root = write_fake_fmnist(base / "fmnist")
    out = base / "run"
    assert main(["run", "tiny", f"data.root={root}", f"out={out}", "select.method=[ccfs,random]",
                 "select.score=aum", "device=cpu"]) == 0  # the API side runs on the CPU too
    cfg = load_config("tiny", [f"data.root={root}"])
    data = ccfs.load_dataset("fashion-mnist", str(root))
    teacher = ccfs.train_teacher(data, cfg.teacher.model, cfg.teacher.train, device="cpu")
    distilled = ccfs.distill_images(teacher, data, int(cfg.select.ipc * cfg.select.alpha), cfg.distill, device="cpu")
    yield out, cfg, data, teacher, distilled
    mp.undo()


def test_teacher_matches_the_teacher_stage(api_and_cli):
    out, _, data, teacher, _ = api_and_cli
    metrics = json.loads((out / "teacher" / "metrics.json").read_text())
    assert teacher.test_acc == pytest.approx(metrics["test_acc"])
    assert np.array_equal(teacher.correct.nonzero().flatten().numpy(), np.load(out / "teacher" / "correct_indices.npy"))
    with np.load(out / "teacher" / "scores.npz") as z:
        assert np.array_equal(z["aum"], teacher.scores["aum"])
    assert teacher.hardness("aum").tolist() == (-torch.from_numpy(teacher.scores["aum"])).tolist()


def test_distilled_images_match_the_distill_stage(api_and_cli):
    out, _, _, _, distilled = api_and_cli
    blob = torch.load(out / "distill" / "images.pt", weights_only=True)
    assert torch.equal(distilled.images, blob["images"]) and torch.equal(distilled.labels, blob["labels"])


@pytest.mark.parametrize("method", ["ccfs", "random"])
def test_selection_and_student_match_the_cli(api_and_cli, method):
    out, cfg, data, teacher, distilled = api_and_cli
    sel = ccfs.select(method, data, teacher, ipc=cfg.select.ipc, alpha=cfg.select.alpha, distilled=distilled,
                      score="aum", settings=cfg.select, filter_model=cfg.eval.models[0], recipe=cfg.train,
                      device="cpu")
    cli = json.loads((out / "select" / method / "seed0" / "selected_indices.json").read_text())
    assert sel.indices.tolist() == cli["idx_selected"]
    synthetic = ccfs.synthetic_set(data, sel.distilled, sel.indices)
    assert len(synthetic) == cfg.select.ipc * data.num_classes
    hist = ccfs.train_student(data, synthetic, teacher, model=cfg.eval.models[0], recipe=cfg.train, device="cpu")
    record = next(json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()
                  if json.loads(line)["method"] == method)
    assert hist.final_acc == pytest.approx(record["final_acc"])


def test_from_tensors_builds_a_dataset():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (20, 3, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.arange(4).repeat(5)
    d = ccfs.from_tensors(x, y, x[:8], y[:8])
    assert d.num_classes == 4 and d.channels == 3 and d.image_size == 8 and len(d.mean) == 3
    assert d.mean[0] == pytest.approx(x[:, 0].float().mean().item() / 255, rel=1e-5)


def test_selmatch_distils_its_own_part_from_its_window(api_and_cli):
    """selmatch's α part is distilled from the real images after its real part, so the set is full."""
    _, cfg, data, teacher, _ = api_and_cli
    sel = ccfs.select("selmatch", data, teacher, ipc=cfg.select.ipc, alpha=cfg.select.alpha, score="aum",
                      settings=cfg.select, device="cpu", distill_settings=replace(cfg.distill, iterations=2))
    cpc = int(cfg.select.ipc * cfg.select.alpha)
    init = sel.log["distill_init"]
    assert sel.distilled.labels.tolist() == data.train.labels[init].tolist() == sorted(sel.distilled.labels.tolist())
    assert torch.bincount(sel.distilled.labels).tolist() == [cpc] * data.num_classes
    assert len(ccfs.synthetic_set(data, sel.distilled, sel.indices)) == cfg.select.ipc * data.num_classes
    moved = (sel.distilled.images.float() - data.train.images[init].float()).abs().mean()
    assert 0 < moved < 30  # two Adam steps from the real images (from noise: about 75)


def test_unknown_method_is_a_clear_error(api_and_cli):
    _, _, data, teacher, _ = api_and_cli
    from ccfs.errors import ConfigError

    with pytest.raises(ConfigError, match="valid"):
        ccfs.select("magic", data, teacher, ipc=2)


def test_readme_python_example_uses_only_the_api():
    """The README's example parses and every `ccfs.NAME` it calls exists in the API."""
    import ast
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks, "the README has no python example"
    code = blocks[0]
    assert len(code.strip().splitlines()) <= 25
    tree = ast.parse(code)
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
             and n.value.id == "ccfs"}
    assert names and all(hasattr(ccfs, n) for n in names), names
