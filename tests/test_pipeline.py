"""End to end: `ccfs run` on a tiny fake Fashion-MNIST produces every artifact, resumes
without redoing work, and an interrupted CCFS selection resumes to the same result."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from ccfs.cli import main
from ccfs.context import FORMAT
from conftest import write_fake_fmnist

ALL_METHODS = "[ccfs,self_evolved,random,random_distilled,forgetting,window,selmatch,herding,kcenter,distill_only,full]"


def _run(root, out, *extra, stage="run"):
    return main([stage, "tiny", f"data.root={root}", f"out={out}", "eval.full_epochs=1",
                 "select.window_betas=[0.0,0.5]", *extra])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One full run with every method, shared by the checks below."""
    base = tmp_path_factory.mktemp("e2e")
    mp = pytest.MonkeyPatch()
    mp.setenv("CCFS_CACHE", str(base / "cache"))
    root = write_fake_fmnist(base / "fmnist")
    out = base / "run"
    assert _run(root, out, f"select.method={ALL_METHODS}") == 0
    yield root, out
    mp.undo()


def test_teacher_artifacts(finished):
    _, out = finished
    t = out / "teacher"
    for name in ("model.pt", "metrics.json", "scores.npz", "forgetting.npy", "correct_indices.npy"):
        assert (t / name).is_file(), name
    metrics = json.loads((t / "metrics.json").read_text())
    correct = np.load(t / "correct_indices.npy")
    assert metrics["train_acc"] == pytest.approx(100.0 * len(correct) / 120)
    # the recorded test accuracy is the saved model's, on the 40 test images
    from ccfs.data.cache import load_dataset
    from ccfs.models import create_model, load_checkpoint
    from ccfs.train import accuracy

    d = load_dataset("fashion-mnist", str(finished[0]))
    model = load_checkpoint(create_model("convnet_w32_bn", 10, 1, 28), t / "model.pt")
    assert metrics["test_acc"] == pytest.approx(accuracy(model, d.test, d.mean, d.std))
    forgetting = np.load(t / "forgetting.npy")
    assert forgetting.dtype == np.float32 and forgetting.shape == (120,)
    with np.load(t / "scores.npz") as z:
        assert {"forgetting", "el2n", "margin", "aum"} <= set(z.files)
    assert not (t / "resume.pt").exists()


def test_distill_artifacts(finished):
    _, out = finished
    d = out / "distill"
    blob = torch.load(d / "images.pt", weights_only=True)
    # distill_only needs the full IPC (6) of distilled images per class
    assert blob["images"].dtype == torch.uint8 and blob["images"].shape == (60, 1, 28, 28)
    assert torch.equal(torch.bincount(blob["labels"]), torch.full((10,), 6))
    assert (d / "grid.png").is_file() and len(list((d / "png").iterdir())) == 10


def test_selection_outputs(finished):
    _, out = finished
    labels = torch.load(next((out.parent / "cache").glob("*.pt")), weights_only=True)["train_y"]
    expect_distilled = {"ccfs": 2, "random_distilled": 2, "selmatch": 2, "distill_only": 6, "full": 0}
    seeded = {"ccfs", "self_evolved", "random", "random_distilled"}  # one selection per evaluation seed
    folders = sorted(p.parent for p in (out / "select").rglob("selected_indices.json"))
    assert {f.parent.name for f in folders if f.name.startswith("seed")} == seeded
    assert all(f.name == "seed0" for f in folders if f.parent.name in seeded)
    for folder in folders:
        name = folder.parent.name if folder.name.startswith("seed") else folder.name
        sel = json.loads((folder / "selected_indices.json").read_text())
        assert set(sel) == {"ipc", "alpha", "idx_selected"}
        idx = sel["idx_selected"]
        assert len(set(idx)) == len(idx) and all(0 <= i < 120 for i in idx)
        meta = json.loads((folder / "meta.json").read_text())
        cpc = expect_distilled.get(name, 0)
        assert meta["distilled_per_class"] == cpc, name
        if name != "full":
            counts = torch.bincount(labels[idx], minlength=10) if idx else torch.zeros(10)
            assert counts.tolist() == [6 - cpc] * 10, name  # IPC met exactly
    rounds = json.loads((out / "select" / "ccfs" / "seed0" / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["filter_eval_acc"] is not None for r in rounds)
    se = json.loads((out / "select" / "self_evolved" / "seed0" / "rounds.json").read_text())
    assert se[0]["filter_eval_acc"] is None  # α = 0: round 1 has no filter (empty S_0)


def test_results_records(finished):
    _, out = finished
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    methods = {r["method"] for r in records}
    assert {"ccfs", "random", "window_b0", "window_b0.5", "selmatch", "full", "distill_only"} <= methods
    for r in records:
        for key in ("method", "model", "ipc", "alpha", "seed", "final_acc", "best_last20_acc",
                    "train_seconds", "config", "commit"):
            assert key in r, key
        # the final accuracy is the last evaluated epoch's, a whole number of the 40 test images
        assert r["final_acc"] == r["test_acc_by_epoch"][str(r["epochs"] - 1)]
        assert (r["final_acc"] / 2.5) == pytest.approx(round(r["final_acc"] / 2.5))
        assert list(r["test_acc_by_epoch"]) == [str(r["epochs"] - 1)]  # one test pass: the final epoch
        assert r["best_last20_acc"] is None
    # what made each record: one teacher; the distilled part by hash, shared by the sets that use the same one
    from ccfs.artifacts import file_sha1

    assert {r["teacher_sha1"] for r in records} == {file_sha1(out / "teacher" / "model.pt")}
    assert all(r["tree_clean"] in (True, False, None) for r in records)
    by = {r["method"]: r["distilled_sha1"] for r in records}
    assert by["random"] is None and by["full"] is None and by["ccfs"] == by["random_distilled"] is not None
    assert by["distill_only"] not in (None, by["ccfs"]) and by["selmatch"] not in (None, by["ccfs"])


def test_export_and_report(finished):
    root, out = finished
    exp = out / "export" / "ccfs"
    rows = (exp / "labels.csv").read_text().splitlines()
    assert rows[0] == "file,label,class,source,train_index" and len(rows) == 61
    assert all((exp / r.split(",")[0]).is_file() for r in rows[1:])
    report = (out / "report.md").read_text()
    assert "final-epoch" in report and "Round log: ccfs_seed0" in report
    for png in ("ccfs_seed0_filter_acc.png", "ccfs_seed0_difficulty.png", "ccfs_seed0_chosen.png"):
        assert (out / "plots" / png).is_file()
    # the export loads back as imported distilled images
    again = out.parent / "import"
    assert main(["distill", "tiny", f"data.root={root}", f"out={again}", "distill.method=folder",
                 f"distill.from={exp}", "select.method=[ccfs]"]) == 0
    assert torch.load(again / "distill" / "images.pt", weights_only=True)["images"].shape[0] == 20


def test_rerun_resumes_without_work(finished, capsys):
    root, out = finished
    before = (out / "results.jsonl").read_text()
    assert _run(root, out, f"select.method={ALL_METHODS}") == 0
    assert (out / "results.jsonl").read_text() == before
    assert "done already" in capsys.readouterr().out


def test_interrupted_selection_resumes_to_same_result(tmp_path, monkeypatch):
    import ccfs.selection.run as srun

    root = write_fake_fmnist(tmp_path / "fmnist")
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    args = ["select.method=[ccfs]", "select.curricula=3", "select.ipc=6"]
    assert _run(root, ref, *args, stage="teacher") == 0
    assert _run(root, ref, *args, stage="distill") == 0
    assert _run(root, ref, *args, stage="select") == 0
    for stage in ("teacher", "distill"):
        assert _run(root, cut, *args, stage=stage) == 0
    real = srun.api.filter_trainer

    def failing(*a, **kw):
        train = real(*a, **kw)

        def train_filter(j, selected, rows):
            if j == 2:
                raise KeyboardInterrupt
            return train(j, selected, rows)
        return train_filter

    monkeypatch.setattr(srun.api, "filter_trainer", failing)
    assert _run(root, cut, *args, stage="select") == 130
    assert (cut / "select" / "ccfs" / "seed0" / "state.json").is_file()
    monkeypatch.setattr(srun.api, "filter_trainer", real)
    assert _run(root, cut, *args, stage="select") == 0
    a = json.loads((ref / "select" / "ccfs" / "seed0" / "selected_indices.json").read_text())
    b = json.loads((cut / "select" / "ccfs" / "seed0" / "selected_indices.json").read_text())
    assert a == b


def test_interrupted_and_grown_distillation_match_one_made_at_once(tmp_path, monkeypatch, capsys):
    """2 images per class, then 6 (interrupted after its second batch, then resumed), give
    the images of asking for 6 at once."""
    import ccfs.distill.run as drun

    root = write_fake_fmnist(tmp_path / "fmnist")
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    small, big = (["select.method=[distill_only]", f"select.ipc={k}"] for k in (2, 6))  # batch_ipc 2
    assert _run(root, ref, *big, stage="teacher") == 0
    assert _run(root, ref, *big, stage="distill") == 0
    shutil.copytree(ref / "teacher", cut / "teacher")
    monkeypatch.setattr(drun, "SAVE_EVERY_S", 0.0)
    assert _run(root, cut, *small, stage="distill") == 0
    real, seen = drun.progress_saver, []

    def interrupting(*args):
        save = real(*args)

        def on_batch(p):
            seen.append(p.batches)
            save(p)
            if p.batches == 2:
                raise KeyboardInterrupt
        return on_batch

    monkeypatch.setattr(drun, "progress_saver", interrupting)
    assert _run(root, cut, *big, stage="distill") == 130
    assert seen == [2]  # it went on from the finished 2 per class (batch 1)
    assert json.loads((cut / "distill" / "meta.json").read_text())["per_class"] == 2  # the finished set stays
    monkeypatch.setattr(drun, "progress_saver", real)
    capsys.readouterr()
    assert _run(root, cut, *big, stage="distill") == 0
    assert "going on after 2 of 3 batches" in capsys.readouterr().out
    a, b = (torch.load(out / "distill" / "images.pt", weights_only=True) for out in (ref, cut))
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["labels"], b["labels"])
    # a damaged progress file is reported and the synthesis starts again, to the same images
    for name in ("meta.json", "images.pt"):
        (cut / "distill" / name).unlink()
    (cut / "distill" / "progress.pt").write_bytes(b"not a checkpoint")
    assert _run(root, cut, *big, stage="distill") == 0
    assert "cannot be read" in capsys.readouterr().out
    again = torch.load(cut / "distill" / "images.pt", weights_only=True)
    assert torch.equal(a["images"], again["images"])


@pytest.mark.parametrize("override, message", [
    ("select.ipc=13", "larger than class"),
    ("select.alpha=1.0", "select.alpha"),
    ("select.curricula=0", "curricula"),
    ("select.method=[ccfs,magic]", "unknown select.method"),
    ("teacher.model=resnet99", "unknown model"),
])
def test_bad_config_rejected_before_work(tmp_path, capsys, override, message):
    root = write_fake_fmnist(tmp_path / "fmnist")
    out = tmp_path / "run"
    assert _run(root, out, override) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ccfs: error:") and message in err and "Traceback" not in err
    assert not (out / "teacher").exists()


def test_score_file_of_wrong_length(tmp_path, capsys):
    root = write_fake_fmnist(tmp_path / "fmnist")
    bad = tmp_path / "forgetting.npy"
    np.save(bad, np.zeros(50, dtype=np.float32))
    assert _run(root, tmp_path / "run", f"teacher.scores={bad}") == 2
    assert "120" in capsys.readouterr().err


def test_teacher_checkpoint_of_wrong_architecture(tmp_path, capsys):
    from ccfs.models import create_model, save_checkpoint

    root = write_fake_fmnist(tmp_path / "fmnist")
    ckpt = tmp_path / "teacher.pt"
    save_checkpoint(create_model("convnet_w64_bn", 10, 1, 28), ckpt, "convnet_w64_bn", 10, in_channels=1, image_size=28)
    assert _run(root, tmp_path / "run", f"teacher.checkpoint={ckpt}", "select.score=logits", stage="teacher") == 2
    err = capsys.readouterr().err
    assert "convnet_w64_bn" in err and "convnet_w32_bn" in err
    assert not (tmp_path / "run" / "teacher" / "model.pt").exists()


def trained_teacher(root, tmp_path):
    """A teacher trained by `ccfs teacher tiny` (its checkpoint records its normalisation)."""
    assert _run(root, tmp_path / "source", stage="teacher") == 0
    return tmp_path / "source" / "teacher" / "model.pt"


def test_imported_teacher_and_scores(tmp_path):
    """A user's own teacher checkpoint and forgetting file are used instead of training."""
    root = write_fake_fmnist(tmp_path / "fmnist")
    ckpt = trained_teacher(root, tmp_path)
    scores = tmp_path / "forgetting.npy"
    np.save(scores, np.arange(120, dtype=np.float32))
    out = tmp_path / "run"
    assert _run(root, out, f"teacher.checkpoint={ckpt}", f"teacher.scores={scores}", stage="teacher") == 0
    assert json.loads((out / "teacher" / "metrics.json").read_text())["imported"] is True
    assert np.array_equal(np.load(out / "teacher" / "forgetting.npy"), np.arange(120, dtype=np.float32))


def test_imported_teacher_without_scores_serves_methods_that_need_none(tmp_path, capsys):
    """No score file and no recorded dynamics: methods that rank by no score still run; a
    method that needs one is refused before any work, naming the fix."""
    root = write_fake_fmnist(tmp_path / "fmnist")
    ckpt = trained_teacher(root, tmp_path)
    out = tmp_path / "run"
    assert _run(root, out, f"teacher.checkpoint={ckpt}", "select.method=[random,herding,distill_only]") == 0
    for name in ("random/seed0", "herding", "distill_only"):
        assert (out / "select" / name / "selected_indices.json").is_file()
    assert not (out / "teacher" / "scores.npz").exists()
    assert _run(root, tmp_path / "run2", f"teacher.checkpoint={ckpt}", "select.method=[ccfs]") == 2
    err = capsys.readouterr().err
    assert "teacher.scores" in err and "select.score=logits" in err
    assert not (tmp_path / "run2" / "teacher").exists()


def test_a_second_command_on_a_held_run_directory_stops_at_once(tmp_path, capsys):
    from ccfs import runlock

    root = write_fake_fmnist(tmp_path / "fmnist")
    out = tmp_path / "run"
    with runlock.hold(out, command="ccfs run tiny (the first one)"):
        assert _run(root, out) == 2
    err = capsys.readouterr().err
    assert "in use by" in err and "the first one" in err and str(os.getpid()) in err
    assert not (out / "teacher").exists()


def test_duplicate_records_are_counted_once(tmp_path):
    from ccfs import records

    rec = {"method": "ccfs", "model": "m", "ipc": 5, "alpha": 0.2, "seed": 0, "settings": "h", "final_acc": 50.0}
    assert records.unique([rec, {**rec, "final_acc": 60.0}, {**rec, "seed": 1}]) == [rec, {**rec, "seed": 1}]


def test_untrained_or_misfed_imported_teacher_is_stopped(tmp_path, capsys):
    """A teacher at chance on its train set (wrong normalisation or class order) stops the
    run before its noise becomes KD targets; nothing is written."""
    from ccfs.models import create_model, save_checkpoint

    root = write_fake_fmnist(tmp_path / "fmnist")
    ckpt = tmp_path / "random.pt"
    save_checkpoint(create_model("convnet_w32_bn", 10, 1, 28), ckpt, "convnet_w32_bn", 10, in_channels=1, image_size=28)
    out = tmp_path / "run"
    assert _run(root, out, f"teacher.checkpoint={ckpt}", "select.method=[random]") == 2
    err = capsys.readouterr().err
    assert "normalisation" in err and "class order" in err and "data.mean" in err
    assert not (out / "teacher" / "model.pt").exists()


def test_checkpoint_trained_with_other_normalisation_is_refused(tmp_path, capsys):
    root = write_fake_fmnist(tmp_path / "fmnist")
    ckpt = trained_teacher(root, tmp_path)
    out = tmp_path / "run"
    assert _run(root, out, f"teacher.checkpoint={ckpt}", "select.method=[random]", "data.mean=[0.5]",
                "data.std=[0.5]") == 2
    err = capsys.readouterr().err
    assert "normalised with mean [0.2861], std [0.353]" in err and "data.mean=[0.2861]" in err
    assert _run(root, out, f"teacher.checkpoint={ckpt}", "select.method=[random]") == 0


def test_evaluate_refuses_a_selection_made_with_other_settings(tmp_path, capsys):
    """A CCFS selection depends on the filters' recipe: students are never trained on one
    made with another; settings that only decide the test passes do not count."""
    root = write_fake_fmnist(tmp_path / "fmnist")
    out = tmp_path / "run"
    assert _run(root, out, "select.method=[ccfs]") == 0
    assert _run(root, out, "select.method=[ccfs]", "train.lr=0.5", stage="evaluate") == 2
    err = capsys.readouterr().err
    assert "other select/train settings" in err and "train.lr: " in err and "-> 0.5" in err
    assert _run(root, out, "select.method=[ccfs]", "train.eval_last=3", stage="evaluate") == 0
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 2 and recs[0]["settings"] != recs[1]["settings"]  # a student of its own, same selection


def test_a_selection_over_changed_distilled_images_is_refused_and_its_students_train_again(tmp_path, capsys):
    """A selection folder records the teacher and the distilled part it was made over; once
    distill/images.pt changes under it, it is refused (select and evaluate) in one line, and
    when it is made again its earlier students are set aside and trained again."""
    root = write_fake_fmnist(tmp_path / "fmnist")
    out = tmp_path / "run"
    args = ("select.method=[ccfs,random]",)
    assert _run(root, out, *args) == 0
    folder = out / "select" / "ccfs" / "seed0"
    inputs = json.loads((folder / "inputs.json").read_text())
    recs = {r["method"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert inputs == {k: recs["ccfs"][k] for k in ("teacher_sha1", "distilled_sha1")}
    assert json.loads((out / "select" / "random" / "seed0" / "inputs.json").read_text())["distilled_sha1"] is None
    path = out / "distill" / "images.pt"
    blob = torch.load(path, weights_only=True)
    blob["images"][-1] = 255 - blob["images"][-1]  # the last image of the last class
    torch.save(blob, path)
    capsys.readouterr()
    for stage in ("select", "evaluate"):
        assert _run(root, out, *args, stage=stage) == 2
        err = capsys.readouterr().err
        assert f"{folder} was made over other inputs" in err and f"distilled images {inputs['distilled_sha1']} -> " in err
        assert "teacher" not in err.split("(")[1] and len(err.strip().splitlines()) == 1
    shutil.rmtree(folder)
    assert _run(root, out, *args) == 0
    assert "1 student record(s) were trained on an earlier selection" in capsys.readouterr().out
    now = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    stale = [json.loads(line) for line in (out / "results.stale.jsonl").read_text().splitlines()]
    assert stale == [recs["ccfs"]] and sorted(r["method"] for r in now) == ["ccfs", "random"]
    assert [r["distilled_sha1"] for r in now if r["method"] == "ccfs"] == [
        json.loads((folder / "inputs.json").read_text())["distilled_sha1"]] != [inputs["distilled_sha1"]]
    assert [r for r in now if r["method"] == "random"] == [recs["random"]]  # no distilled part: kept


def test_records_of_a_selection_made_again_are_set_aside_whatever_the_seeds_asked(tmp_path, capsys):
    """A selection made again over the same inputs (here: its file rewritten) has other
    students: records name the selected_indices.json they trained on (`selection_sha1`), and
    those of an earlier one are set aside, also for a seed the present command does not ask."""
    from ccfs.artifacts import file_sha1

    root = write_fake_fmnist(tmp_path / "fmnist")
    out = tmp_path / "run"
    assert _run(root, out, "select.method=[random]", "eval.seeds=[0,1]") == 0
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    path = out / "select" / "random" / "seed1" / "selected_indices.json"
    assert [r["selection_sha1"] for r in recs if r["seed"] == 1] == [file_sha1(path)]
    sel = json.loads(path.read_text())
    sel["idx_selected"] = sel["idx_selected"][1:] + sel["idx_selected"][:1]  # the same images, another file
    path.write_text(json.dumps(sel))
    capsys.readouterr()
    assert _run(root, out, "select.method=[random]", "eval.seeds=[0]", stage="evaluate") == 0
    assert "1 student record(s) were trained on an earlier selection" in capsys.readouterr().out
    now = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert now == [r for r in recs if r["seed"] == 0]
    assert [json.loads(line) for line in (out / "results.stale.jsonl").read_text().splitlines()] == [
        r for r in recs if r["seed"] == 1]
    assert _run(root, out, "select.method=[random]", "eval.seeds=[0,1]", stage="evaluate") == 0
    assert sorted(r["seed"] for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())) == [0, 1]


def test_a_distillation_grows_from_its_largest_images_and_only_over_the_same_settings(tmp_path, monkeypatch, capsys):
    """A progress file older than images.pt (left by a synthesis grown since under torchrun,
    which writes none) does not outrank it; images.pt is grown from only when its recorded
    synthesis settings are the present ones, else the synthesis starts again."""
    import ccfs.distill.run as drun

    monkeypatch.setattr(drun, "SAVE_EVERY_S", 0.0)
    root = write_fake_fmnist(tmp_path / "fmnist")
    out = tmp_path / "run"
    assert _run(root, out, "select.method=[distill_only]", stage="teacher") == 0
    made = {}
    for ipc in (3, 5, 7):
        if ipc == 5:  # grown as under torchrun: without the progress file, which stays behind at 3
            shutil.move(out / "distill" / "progress.pt", tmp_path / "progress3.pt")
        if ipc == 7:
            shutil.copy(tmp_path / "progress3.pt", out / "distill" / "progress.pt")
        assert _run(root, out, "select.method=[distill_only]", f"select.ipc={ipc}", stage="distill") == 0
        made[ipc] = torch.load(out / "distill" / "images.pt", weights_only=True)["images"].view(10, ipc, 1, 28, 28)
    assert "(the images made before are kept)" in capsys.readouterr().out
    assert torch.equal(made[7][:, :5], made[5]) and torch.equal(made[5][:, :3], made[3])
    meta = json.loads((out / "distill" / "meta.json").read_text())
    meta["synthesis"]["lr"] = 0.5  # as if made with other settings
    (out / "distill" / "meta.json").write_text(json.dumps(meta))
    (out / "distill" / "progress.pt").unlink()
    assert _run(root, out, "select.method=[distill_only]", "select.ipc=8", stage="distill") == 0
    assert "going on" not in capsys.readouterr().out


def test_check_selection_inputs_names_a_changed_teacher(tmp_path):
    from ccfs.errors import ConfigError
    from ccfs.records import check_selection_inputs

    made = {"teacher_sha1": "aaa", "distilled_sha1": None}
    check_selection_inputs(tmp_path, made)  # nothing saved, nothing written: a folder from before
    assert not (tmp_path / "inputs.json").exists()
    check_selection_inputs(tmp_path, made, write=True)
    check_selection_inputs(tmp_path, made)
    with pytest.raises(ConfigError, match=r"other inputs than this run's \(teacher aaa -> bbb, by sha1\)"):
        check_selection_inputs(tmp_path, {**made, "teacher_sha1": "bbb"})


def test_forgetting_row_uses_forgetting_scores_under_another_select_score(tmp_path):
    from ccfs.selection.baselines import hardest_window

    root = write_fake_fmnist(tmp_path / "fmnist")
    out = tmp_path / "run"
    assert _run(root, out, "select.method=[forgetting]", "select.score=aum") == 0
    chosen = json.loads((out / "select" / "forgetting" / "selected_indices.json").read_text())["idx_selected"]
    with np.load(out / "teacher" / "scores.npz") as z:
        forgetting, aum = torch.from_numpy(z["forgetting"]), torch.from_numpy(z["aum"])
    labels = torch.load(next((tmp_path / "ccfs-cache").glob("*.pt")), weights_only=True)["train_y"]
    assert chosen == hardest_window(labels, forgetting, 6, 0.0).tolist()
    assert chosen != hardest_window(labels, -aum, 6, 0.0).tolist()


def test_validation_split_run_keeps_validation_rows_out_and_records_both_accuracies(tmp_path, monkeypatch):
    """With data.val_size the teacher, the scores and every selection see only the rows left
    in the train split; students record validation and test accuracy; exports name the
    rows of the dataset file."""
    import csv

    from ccfs.data.cache import load_dataset
    from ccfs.data.datasets import carve_validation

    monkeypatch.setenv("CCFS_CACHE", str(tmp_path / "cache"))
    root = write_fake_fmnist(tmp_path / "fmnist")
    out = tmp_path / "run"
    assert _run(root, out, "data.val_size=20", "select.method=[ccfs,random]", "eval.seeds=[0]") == 0
    val_rows = set(carve_validation(load_dataset("fashion-mnist", str(root)), 20).val_rows.tolist())
    metrics = json.loads((out / "teacher" / "metrics.json").read_text())
    assert metrics["val_acc"] is not None and (metrics["val_acc"] / 5) == pytest.approx(round(metrics["val_acc"] / 5))
    forgetting = np.load(out / "teacher" / "forgetting.npy")  # the official format: one value per file row
    assert forgetting.shape == (120,) and (forgetting[sorted(val_rows)] == -1).all() and (np.delete(forgetting, sorted(val_rows)) >= 0).all()
    train_rows = np.load(out / "teacher" / "train_rows.npy")
    assert len(train_rows) == 100 and not val_rows & set(train_rows.tolist())
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["method"] for r in records} == {"ccfs", "random"}
    for r in records:  # 20 validation images: multiples of 5 %
        assert (r["val_acc"] / 5) == pytest.approx(round(r["val_acc"] / 5))
    for method in ("ccfs", "random"):
        idx = json.loads((out / "select" / method / "seed0" / "selected_indices.json").read_text())["idx_selected"]
        assert all(0 <= i < 120 for i in idx) and not val_rows & set(idx)  # the dataset file's rows
        with open(out / "export" / method / "labels.csv") as f:
            file_rows = [int(row["train_index"]) for row in csv.DictReader(f) if row["source"] == "real"]
        assert file_rows == idx
    rounds = json.loads((out / "select" / "ccfs" / "seed0" / "rounds.json").read_text())
    chosen = json.loads((out / "select" / "ccfs" / "seed0" / "selected_indices.json").read_text())["idx_selected"]
    assert sorted(i for r in rounds for i in r["indices"]) == sorted(chosen)
    assert "validation split" in (out / "report.md").read_text()


def test_official_format_selection_indexes_the_dataset_file_under_a_validation_split(tmp_path, monkeypatch):
    """An official-format score file and a validation split: the forgetting baseline's
    selected_indices.json, read with the official indexing (rows of the dataset file), is
    the per-class top-k by the file's scores among the rows not held out, ties by row."""
    from ccfs.data.cache import load_dataset
    from ccfs.data.datasets import carve_validation

    monkeypatch.setenv("CCFS_CACHE", str(tmp_path / "cache"))
    root = write_fake_fmnist(tmp_path / "fmnist")
    scores = np.random.default_rng(0).integers(0, 4, 120).astype(np.float32)  # forgetting counts, many ties
    np.save(tmp_path / "forgetting.npy", scores)
    out = tmp_path / "run"
    args = ("data.val_size=20", "select.method=[forgetting]", f"teacher.scores={tmp_path / 'forgetting.npy'}")
    assert _run(root, out, *args, stage="teacher") == 0 and _run(root, out, *args, stage="select") == 0
    chosen = json.loads((out / "select" / "forgetting" / "selected_indices.json").read_text())["idx_selected"]
    data = load_dataset("fashion-mnist", str(root))
    held_out = set(carve_validation(data, 20).val_rows.tolist())
    labels = data.train.labels.tolist()
    want = [r for c in range(10) for r in sorted((r for r in range(120) if labels[r] == c and r not in held_out),
                                                  key=lambda r: (-scores[r], r))[:6]]
    assert chosen == want
    assert (np.load(out / "teacher" / "forgetting.npy") == np.where(np.isin(np.arange(120), list(held_out)), -1, scores)).all()


def test_random_methods_select_once_per_evaluation_seed(tmp_path, monkeypatch):
    """A student of seed s trains on its method's selection of seed s: random draws and CCFS
    filters change with the seed; seed-free methods select once."""
    monkeypatch.setenv("CCFS_CACHE", str(tmp_path / "cache"))
    root = write_fake_fmnist(tmp_path / "fmnist")
    out = tmp_path / "run"
    assert _run(root, out, "select.method=[ccfs,random,forgetting]", "eval.seeds=[0,1]") == 0
    sel = {(m, s): json.loads((out / "select" / m / f"seed{s}" / "selected_indices.json").read_text())["idx_selected"]
           for m in ("ccfs", "random") for s in (0, 1)}
    assert sel[("random", 0)] != sel[("random", 1)]
    assert not (out / "select" / "forgetting" / "seed0").exists()
    assert (out / "select" / "forgetting" / "selected_indices.json").is_file()
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["method"], r["seed"]) for r in records) == [
        ("ccfs", 0), ("ccfs", 1), ("forgetting", 0), ("forgetting", 1), ("random", 0), ("random", 1)]
    assert "paired by seed" in (out / "report.md").read_text()


@pytest.mark.parametrize("progress_file", [True, False])
def test_a_sweep_grown_by_a_larger_point_keeps_the_distilled_images_of_the_done_ones(tmp_path, monkeypatch,
                                                                                      capsys, progress_file):
    """A sweep made at IPC 6 (3 distilled a class, a partial batch of batch_ipc 2) then grown
    by IPC 10 (5 a class): the first 3 of each class stay as they were, so the IPC 6 point's
    selections and students stay valid; with or without the progress file (deleted, or a
    torchrun synthesis, which writes none)."""
    monkeypatch.setenv("CCFS_CACHE", str(tmp_path / "cache"))
    root = write_fake_fmnist(tmp_path / "fmnist")
    out = tmp_path / "sweep"
    args = ("select.alpha=0.5", "select.method=[random_distilled]")
    assert _run(root, out, "select.ipc=[6]", *args) == 0
    before = torch.load(out / "distill" / "images.pt", weights_only=True)
    if not progress_file:
        (out / "distill" / "progress.pt").unlink()
    capsys.readouterr()
    assert _run(root, out, "select.ipc=[6,10]", *args) == 0
    said = capsys.readouterr().out
    assert "going on after 2 of 3 batches" in said and "were made over other inputs" not in said
    after = torch.load(out / "distill" / "images.pt", weights_only=True)
    assert after["images"].shape[0] == 50 and torch.equal(after["images"].view(10, 5, 1, 28, 28)[:, :3],
                                                          before["images"].view(10, 3, 1, 28, 28))
    assert json.loads((out / "distill" / "meta.json").read_text())["breaks"] == [3]
    recs = [json.loads(line) for p in sorted(out.glob("ipc*/results.jsonl")) for line in p.read_text().splitlines()]
    assert sorted(r["ipc"] for r in recs) == [6, 10] and not list(out.glob("ipc*/results.stale.jsonl"))


def test_ipc_and_alpha_lists_run_a_sweep_over_one_teacher(tmp_path, monkeypatch):
    """select.ipc / select.alpha lists: one teacher and one distilled set in OUT (as many per
    class as the largest point needs), a run directory per point, α-free methods once per
    IPC, the full-data student once, and a sweep report with the accuracy-vs-ratio plot."""
    monkeypatch.setenv("CCFS_CACHE", str(tmp_path / "cache"))
    root = write_fake_fmnist(tmp_path / "fmnist")
    out = tmp_path / "sweep"
    assert _run(root, out, "select.ipc=[4,6]", "select.alpha=[0.25,0.5]", "select.method=[ccfs,random,full]") == 0
    assert (out / "teacher" / "metrics.json").is_file() and not (out / "ipc4_a0.25" / "teacher").exists()
    blob = torch.load(out / "distill" / "images.pt", weights_only=True)
    assert torch.bincount(blob["labels"]).tolist() == [3] * 10  # int(6 · 0.5)
    methods = {p.name: {json.loads(line)["method"] for line in (p / "results.jsonl").read_text().splitlines()}
               for p in sorted(out.glob("ipc*"))}
    assert methods == {"ipc4_a0.25": {"ccfs", "random", "full"}, "ipc4_a0.5": {"ccfs"},
                       "ipc6_a0.25": {"ccfs", "random"}, "ipc6_a0.5": {"ccfs"}}
    sel = json.loads((out / "ipc6_a0.5" / "select" / "ccfs" / "seed0" / "selected_indices.json").read_text())
    assert sel["alpha"] == 0.5 and len(sel["idx_selected"]) == 30
    report = (out / "report.md").read_text()
    assert "sweep report" in report
    rows = {tuple(c.strip() for c in line.split("|")[1:5]) for line in report.split("## Results")[1].splitlines()
            if line.startswith("| ccfs |")}
    # α as realised: int(6 · 0.25) = 1 distilled image of 6
    assert rows == {("ccfs", "convnet_w32", "4", "0.25"), ("ccfs", "convnet_w32", "4", "0.5"),
                    ("ccfs", "convnet_w32", "6", "0.1667"), ("ccfs", "convnet_w32", "6", "0.5")}
    assert (out / "plots" / "accuracy_vs_ratio.png").is_file()
    assert (out / "ipc4_a0.5" / "report.md").is_file()
    ratio = report.split("## Results")[0]  # rows by the α asked for: 0.25 at IPC 6 realises 1/6
    assert {line.split("|")[3].strip() for line in ratio.splitlines() if line.startswith("| ccfs |")} == {"0.25", "0.5"}


def test_a_sweep_finishes_each_point_before_the_next(tmp_path, monkeypatch):
    """Teacher and distill once, then select → evaluate → export → report point by point,
    the sweep report redrawn after every point: a long sweep's first points land early."""
    from ccfs import pipeline

    monkeypatch.setenv("CCFS_CACHE", str(tmp_path / "cache"))
    root = write_fake_fmnist(tmp_path / "fmnist")
    calls, real = [], pipeline._stages

    def recording():
        def wrap(name, fn):
            return lambda run: (calls.append((name, run.out.name)), fn(run))
        return {name: wrap(name, fn) for name, fn in real().items()}

    monkeypatch.setattr(pipeline, "_stages", recording)
    assert _run(root, tmp_path / "sweep", "select.ipc=[4,6]", "select.alpha=0.25",
                "select.method=[random]") == 0
    assert [name for name, _ in calls[:2]] == ["teacher", "distill"]  # into OUT, for every point
    assert calls[2:] == [*[(s, "ipc4_a0.25") for s in ("select", "evaluate", "export", "report")],
                         *[(s, "ipc6_a0.25") for s in ("select", "evaluate", "export", "report")]]


def test_more_methods_for_one_point_land_in_its_directory_and_the_report_keeps_every_point(tmp_path, monkeypatch):
    """`select.ipc=[6]` over a sweep's OUT is a sweep of one point: its records go to
    OUT/ipc6_a0.25 beside the earlier ones (a one-element list once ran as a plain run in OUT
    itself), and the sweep report still shows the points this invocation did not name."""
    monkeypatch.setenv("CCFS_CACHE", str(tmp_path / "cache"))
    root = write_fake_fmnist(tmp_path / "fmnist")
    out = tmp_path / "sweep"
    assert _run(root, out, "select.ipc=[4,6]", "select.alpha=0.25", "select.method=[random]") == 0
    assert _run(root, out, "select.ipc=[6]", "select.alpha=0.25", "select.method=[ccfs]") == 0
    assert not (out / "results.jsonl").exists() and not (out / "select").exists()
    methods = {json.loads(line)["method"] for line in (out / "ipc6_a0.25" / "results.jsonl").read_text().splitlines()}
    assert methods == {"random", "ccfs"}
    results = (out / "report.md").read_text().split("## Results")[1]
    rows = {tuple(c.strip() for c in line.split("|")[1:4]) for line in results.splitlines() if line.startswith("| ")}
    assert {("random", "convnet_w32", "4"), ("random", "convnet_w32", "6"), ("ccfs", "convnet_w32", "6")} <= rows


def test_sweep_seeds_train_only_the_picked_beta_on_the_other_seeds(tmp_path, monkeypatch, capsys):
    """eval.sweep_seeds=1: every β on seed 0, then the β best on validation over seed 0 on
    seeds 1 and 2; an invocation stopped after the first pass goes on with the second."""
    monkeypatch.setenv("CCFS_CACHE", str(tmp_path / "cache"))
    root = write_fake_fmnist(tmp_path / "fmnist")
    out = tmp_path / "run"
    args = ["select.method=[window]", "data.val_size=20"]
    assert _run(root, out, *args, "eval.seeds=[0]") == 0  # the first pass, as if stopped there
    first = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["method"], r["seed"]) for r in first) == [("window_b0", 0), ("window_b0.5", 0)]
    best = max(first, key=lambda r: r["val_acc"])["method"]  # ties: the first trained
    capsys.readouterr()
    assert _run(root, out, *args, "eval.seeds=[0,1,2]", "eval.sweep_seeds=1") == 0
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["method"], r["seed"]) for r in recs[2:]) == [(best, 1), (best, 2)]
    said = capsys.readouterr().out
    assert f"evaluate window: {best} picked on validation over seed 0" in said
    assert f"{best} ← oracle window (β picked on validation, seed 0)" in (out / "report.md").read_text()
    assert _run(root, out, *args, "eval.seeds=[0,1,2]", "eval.sweep_seeds=1") == 0  # nothing left to train
    assert len((out / "results.jsonl").read_text().splitlines()) == 4


def test_a_run_directory_of_another_format_is_refused_in_one_line(finished, tmp_path, capsys):
    """A run directory from an older ccfs (no format.json), a newer one, or a damaged format
    file: one line naming the format and what to do, before its config.yaml is parsed; the
    same directory with this ccfs's format is the same run."""
    root, src = finished
    out = tmp_path / "old"
    shutil.copytree(src, out)
    assert json.loads((out / "format.json").read_text())["format"] == FORMAT
    assert _run(root, out, "select.method=[random]") == 0
    assert "done already" in capsys.readouterr().out
    (out / "config.yaml").write_text("select:\n  quota: equal\n")  # a key this version lacks: never parsed
    (out / "format.json").unlink()
    assert _run(root, out, "select.method=[random]") == 2
    err = capsys.readouterr().err.strip()
    assert "older ccfs (run-directory format 1)" in err and "new out=" in err and len(err.splitlines()) == 1
    (out / "format.json").write_text(json.dumps({"format": FORMAT + 1}))
    assert _run(root, out, "select.method=[random]") == 2
    assert f"newer ccfs (run-directory format {FORMAT + 1})" in capsys.readouterr().err
    (out / "format.json").write_text("{not json")
    assert _run(root, out, "select.method=[random]") == 2
    assert "format.json is damaged" in capsys.readouterr().err


def test_hard_label_students_beside_the_kd_ones_leave_the_kd_records_alone(tmp_path, monkeypatch, capsys):
    """eval.hard_labels: one KD and one hard-label record per method and seed, the KD ones the
    same as a run without it, the report's IOR / HLR / LRS table; switched on later over the
    same out=, it trains only the hard-label students."""
    monkeypatch.setenv("CCFS_CACHE", str(tmp_path / "cache"))
    root = write_fake_fmnist(tmp_path / "fmnist")
    args = ["select.method=[random,random_distilled,full]", "eval.seeds=[0,1]"]
    fields = ("method", "model", "ipc", "alpha", "seed", "settings", "final_acc", "test_acc_by_epoch", "epochs")

    def recs(out):
        return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]

    assert _run(root, tmp_path / "plain", *args) == 0
    assert _run(root, tmp_path / "both", *args, "eval.hard_labels=true") == 0
    plain, both = recs(tmp_path / "plain"), recs(tmp_path / "both")
    assert sorted((r["method"], r["seed"], r["objective"]) for r in both) == sorted(
        (m, s, o) for m in ("random", "random_distilled", "full") for s in (0, 1) for o in ("kd", "ce"))
    same = [{k: r[k] for k in fields} for r in plain]
    assert [{k: r[k] for k in fields} for r in both if r["objective"] == "kd"] == same
    assert [r["objective"] for r in both] == ["kd"] * 6 + ["ce"] * 6  # the KD students first
    report = (tmp_path / "both" / "report.md").read_text()
    assert "hard-label students (DD-Ranking's IOR, HLR, LRS)" not in (tmp_path / "plain" / "report.md").read_text()
    table = report.split("DD-Ranking's IOR, HLR, LRS)")[1]
    rows = [line for line in table.splitlines() if line.startswith("| random")]
    assert [r.split("|")[1].strip() for r in rows] == ["random", "random_distilled"]
    assert "0 (the reference)" in rows[0] and "(n=2)" in rows[1].split("|")[-2]  # LRS of random + distilled
    assert "The full-data students train `eval.full_epochs` = 1 epoch (train.steps is 0)" in table
    # the KD results table counts the KD students only
    assert "| random | convnet_w32 | 6 | 0 | " in report and "(n=2)" in report.split("## Results")[1].split("\n\n")[1]
    capsys.readouterr()
    assert _run(root, tmp_path / "plain", *args, "eval.hard_labels=true") == 0  # switched on later
    later = recs(tmp_path / "plain")
    assert later[:6] == plain and [r["objective"] for r in later[6:]] == ["ce"] * 6
    assert [r["final_acc"] for r in later[6:]] == [r["final_acc"] for r in both[6:]]
    assert capsys.readouterr().out.count("(hard labels): ") == 6


def test_grouped_students_record_what_one_by_one_students_record(tmp_path, monkeypatch):
    """eval.group=2: the students of a method train two at a time as one stacked model; their
    records carry the group's size and the accuracies of the same students trained one by one
    within 3 points (float rounding over a short run on a few dozen test images); sets of other
    sizes (random and the full data) never share a group."""
    from ccfs.config import load_config
    from ccfs.context import Run
    from ccfs.evaluate.run import groups

    monkeypatch.setenv("CCFS_CACHE", str(tmp_path / "cache"))
    root = write_fake_fmnist(tmp_path / "fmnist")
    args = ["select.method=[random,full]", "eval.seeds=[0,1,2]"]
    assert _run(root, tmp_path / "one", *args, "eval.group=1") == 0
    assert _run(root, tmp_path / "two", *args, "eval.group=2") == 0

    def recs(out):
        return {(r["method"], r["seed"]): r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}

    one, two = recs(tmp_path / "one"), recs(tmp_path / "two")
    assert one.keys() == two.keys() and len(one) == 6
    assert [two[("random", s)]["group"] for s in (0, 1, 2)] == [2, 2, 1]
    assert {one[k]["group"] for k in one} == {1}
    for k in one:
        assert abs(one[k]["final_acc"] - two[k]["final_acc"]) <= 3.0, k
    cfg = load_config("tiny", [f"data.root={root}", f"out={tmp_path / 'two'}", *args, "eval.group=4"])
    todo = [(m, "convnet_w32", s, "kd") for m in ("random", "full") for s in (0, 1, 2)]
    assert [[(m, s) for m, _, s, _ in g] for g in groups(Run(cfg), todo)] == [
        [("random", 0), ("random", 1), ("random", 2)], [("full", 0), ("full", 1), ("full", 2)]]


def test_ccfs_seeds_in_lockstep_select_what_one_at_a_time_selects_up_to_rounding(tmp_path, monkeypatch, capsys):
    """eval.group=2: the two seeds' CCFS selections run at once, each round's filters trained
    as one group. The filters differ from one-at-a-time filters by float rounding only, which
    can flip a borderline image's coarse-stage verdict: on the tiny data, measured 0 of 80
    chosen images differ; the tolerance is 10 % of them. Each seed's files are written as one at
    a time, and its student trains."""
    monkeypatch.setenv("CCFS_CACHE", str(tmp_path / "cache"))
    root = write_fake_fmnist(tmp_path / "fmnist")
    args = ["select.method=[ccfs]", "eval.seeds=[0,1]"]
    from ccfs import api

    sizes = []
    real = api.fit_group
    monkeypatch.setattr(api, "fit_group", lambda models, *a, **k: sizes.append(len(models)) or real(models, *a, **k))
    assert _run(root, tmp_path / "one", *args, "eval.group=1") == 0
    assert sizes == [1, 1]  # one at a time: every filter and student alone
    assert _run(root, tmp_path / "three", *args, "eval.group=2") == 0
    grouped = sizes[2:]  # 2 CCFS rounds x 2 seeds' filters, then the 2 students; a round's group splits where
    assert sum(grouped) == 2 * 2 + 2 and grouped[0] == 2 and grouped[-1] == 2  # carried shortfalls made its sets
    assert len(grouped) <= 4  # differ in size (it depends on rounding: torch's thread count, for one)

    def chosen(out, s):
        return set(json.loads((out / "select" / "ccfs" / f"seed{s}" / "selected_indices.json").read_text())["idx_selected"])

    differ = total = 0
    for s in (0, 1):
        a, b = chosen(tmp_path / "one", s), chosen(tmp_path / "three", s)
        assert len(a) == len(b)
        differ, total = differ + len(a - b), total + len(a)
        assert (tmp_path / "three" / "select" / "ccfs" / f"seed{s}" / "rounds.json").is_file()
    print(f"lockstep against one at a time: {differ} of {total} chosen images differ")
    assert differ <= 0.1 * total
    recs = [json.loads(line) for line in (tmp_path / "three" / "results.jsonl").read_text().splitlines()]
    assert sorted(r["seed"] for r in recs) == [0, 1]


def test_filter_groups_train_a_round_once_every_selection_has_handed_its_filter_in():
    """FilterGroups: three threads' filters are trained together, in seed order, sets of other
    sizes in their own group; a selection that leaves no longer holds the others back."""
    import threading

    from ccfs import api

    calls = []
    groups = api.FilterGroups(parties=3, limit=8)
    real_fit_group = api.fit_group
    api.fit_group = lambda models, sets, seeds, **how: calls.append((list(seeds), [len(d) for d in sets]))
    try:
        def one(order, n):
            groups.fit(object(), type("S", (), {"__len__": lambda self: n})(), None, None, seed=100 + order, order=order)
            groups.leave()

        threads = [threading.Thread(target=one, args=(o, n)) for o, n in ((2, 5), (0, 5), (1, 7))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        assert not any(t.is_alive() for t in threads)
    finally:
        api.fit_group = real_fit_group
    assert calls == [([100, 102], [5, 5]), ([101], [7])]


def test_models_built_in_threads_at_once_are_the_models_of_their_seeds(fake_fmnist):
    """Lockstep selections build their filters in threads: each from its seed, as alone (the
    global generator they draw from is taken one model at a time)."""
    import threading

    from ccfs import api
    from ccfs.data.cache import load_dataset

    data = load_dataset("fashion-mnist", fake_fmnist)
    alone = {s: api.new_model("convnet_w32", data, s).state_dict() for s in range(6)}
    for _ in range(5):
        built: dict[int, dict] = {}
        threads = [threading.Thread(target=lambda s=s: built.__setitem__(s, api.new_model("convnet_w32", data, s).state_dict()))
                   for s in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for s in range(6):
            assert all(torch.equal(alone[s][k], built[s][k]) for k in alone[s]), s
