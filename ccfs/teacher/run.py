"""The teacher stage: train on the full train set with cross-entropy while recording
per-sample training dynamics (or import a checkpoint and a score file), then write

    OUT/teacher/model.pt  metrics.json  scores.npz  forgetting.npy  correct_indices.npy  true_logit.npy
    OUT/teacher/train_rows.npy  (with a validation split) each train row's row in the dataset file

forgetting.npy is the official format: one value per row of the dataset file's train split,
HELD_OUT for rows held out as validation. scores.npz, correct_indices.npy and true_logit.npy
are ccfs's own: they index the train rows ccfs trains on, which train_rows.npy maps to the
file's rows where a validation split is carved out (metrics.json says which).
"""
from __future__ import annotations

import numpy as np

from ccfs import distributed
from ccfs.api import Teacher, finish_teacher, new_model, train_teacher
from ccfs.artifacts import np_save, write_json
from ccfs.context import Run
from ccfs.errors import ConfigError
from ccfs.models import has_batchnorm, load_checkpoint, save_checkpoint
from ccfs.teacher.score_files import load_dataset_scores, save_forgetting_npy, save_scores

DONE = "metrics.json"  # written last: its presence means the stage finished
HELD_OUT = -1.0  # forgetting.npy's value at a held-out row: below every count, never among the most forgotten


def _needs_batchnorm(run: Run) -> bool:
    return run.cfg.distill.synthesises


def check_teacher_arch(run: Run, model) -> None:
    if _needs_batchnorm(run) and not has_batchnorm(model):
        raise ConfigError(f"teacher.model={run.cfg.teacher.model} has no BatchNorm layers, but "
                          f"distill.method={run.cfg.distill.method} matches BatchNorm statistics; "
                          "pick a BatchNorm teacher (e.g. convnet_w32_bn, resnet18_modified)")


def check_imported_accuracy(run: Run, teacher: Teacher) -> None:
    """An imported teacher far below what a trained one gives is being fed inputs it was not
    trained on: stop before its noise becomes KD targets and the selection pool."""
    d = run.data
    acc = 100.0 * float(teacher.correct.float().mean())
    chance = 100.0 / d.num_classes
    if acc < 2 * chance:
        raise ConfigError(
            f"the imported teacher classifies only {acc:.1f} % of the train images correctly (chance {chance:.1f} %, "
            f"floor twice chance): usually its input normalisation differs (data.mean={list(d.mean)} "
            f"data.std={list(d.std)}; set the constants it was trained with) or its class order differs "
            f"from the dataset's")


def _import_scores(run: Run) -> dict[str, np.ndarray]:
    name, arr = load_dataset_scores(run.cfg.teacher.scores, run.data)
    return {name: arr}


def _teacher(run: Run) -> Teacher:
    """Import the configured checkpoint, or train a teacher while recording its scores."""
    cfg, d = run.cfg.teacher, run.data
    model = new_model(cfg.model, d, run.cfg.seed)
    check_teacher_arch(run, model)
    if cfg.checkpoint:
        load_checkpoint(model, cfg.checkpoint, arch=cfg.model, normalization=(d.mean, d.std))
        teacher = finish_teacher(model, d, run.device, {}, seconds=0.0)
        check_imported_accuracy(run, teacher)
        return teacher
    return train_teacher(d, cfg.model, cfg.train, seed=run.cfg.seed, device=run.device, progress=run.cfg.progress,
                         resume=run.teacher_dir / "resume.pt")


def teacher_stage(run: Run) -> None:
    out = run.teacher_dir
    if (out / DONE).is_file():
        print(f"teacher: done already ({out})")
        return
    cfg, d = run.cfg.teacher, run.data
    imported = _import_scores(run) if cfg.scores else {}  # fail fast, before training
    teacher = _teacher(run)
    scores = {**teacher.scores, **imported}
    correct = teacher.correct.nonzero().flatten().numpy()
    save_checkpoint(teacher.model, out / "model.pt", cfg.model, d.num_classes, in_channels=d.channels, image_size=d.image_size,
                    mean=d.mean, std=d.std)
    np_save(out / "correct_indices.npy", correct.astype(np.int64))
    np_save(out / "true_logit.npy", teacher.true_logit.numpy())
    if scores:
        save_scores(out / "scores.npz", scores)
    if "forgetting" in scores:
        save_forgetting_npy(out / "forgetting.npy", d.file_values(np.asarray(scores["forgetting"], np.float32), HELD_OUT))
    if d.train_rows is not None:
        np_save(out / "train_rows.npy", d.train_rows.numpy())
    metrics = {"test_acc": teacher.test_acc, "val_acc": teacher.val_acc, "train_acc": 100.0 * len(correct) / len(d.train),
               "seconds": teacher.seconds, "model": cfg.model, "imported": bool(cfg.checkpoint),
               "scores": sorted(scores),
               "rows": "dataset file" if d.train_rows is None else
               "train rows after the validation split (train_rows.npy: their rows in the dataset file)"}
    write_json(out / DONE, metrics)
    if distributed.is_main():
        (out / "resume.pt").unlink(missing_ok=True)
    val = f"val acc {teacher.val_acc:.2f}%, " if teacher.val_acc is not None else ""
    print(f"teacher: {val}test acc {metrics['test_acc']:.2f}%, train acc (un-augmented) "
          f"{metrics['train_acc']:.2f}%, {teacher.seconds:.0f}s -> {out}")
