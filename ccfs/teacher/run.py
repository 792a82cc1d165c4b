"""The teacher stage: train on the full train set with cross-entropy while recording
per-sample training dynamics (or import a checkpoint and a score file), then write

    OUT/teacher/model.pt  metrics.json  scores.npz  forgetting.npy  correct_indices.npy
"""
from __future__ import annotations

import time

import numpy as np

from ccfs.artifacts import np_save, write_json
from ccfs.context import Run
from ccfs.errors import ConfigError
from ccfs.models import has_batchnorm, load_checkpoint, save_checkpoint
from ccfs.objectives import CrossEntropy
from ccfs.teacher.difficulty import DynamicsRecorder
from ccfs.teacher.score_files import load_score_file, save_forgetting_npy, save_scores
from ccfs.train import accuracy, fit, predict_logits

DONE = "metrics.json"  # written last: its presence means the stage finished


def _needs_batchnorm(run: Run) -> bool:
    return run.cfg.distill.method in ("sre2l", "cda")


def check_teacher_arch(run: Run, model) -> None:
    if _needs_batchnorm(run) and not has_batchnorm(model):
        raise ConfigError(f"teacher.model={run.cfg.teacher.model} has no BatchNorm layers, but "
                          f"distill.method={run.cfg.distill.method} matches BatchNorm statistics; "
                          "pick a BatchNorm teacher (e.g. convnet_w32_bn, resnet18_modified)")


def _train(run: Run, model) -> tuple[dict[str, np.ndarray], float]:
    cfg, d = run.cfg.teacher, run.data
    recorder = DynamicsRecorder(len(d.train), cfg.epochs, cfg.record_epochs)
    t0 = time.perf_counter()
    hist = fit(model, d.train, cfg.recipe(), CrossEntropy(), mean=d.mean, std=d.std,
               device=run.device, seed=run.cfg.seed, test=d.test, hook=recorder,
               progress=run.cfg.progress, desc="teacher", resume=run.teacher_dir / "resume.pt")
    print(f"teacher: {cfg.epochs} epochs, last test acc {hist.final_acc:.2f}%")
    return recorder.scores(), time.perf_counter() - t0


def _import_scores(run: Run) -> dict[str, np.ndarray]:
    name, arr = load_score_file(run.cfg.teacher.scores, run.data.train.labels)
    return {name: arr}


def teacher_stage(run: Run) -> None:
    out = run.teacher_dir
    if (out / DONE).is_file():
        print(f"teacher: done already ({out})")
        return
    cfg, d = run.cfg.teacher, run.data
    model = run.model(cfg.model, run.cfg.seed)
    check_teacher_arch(run, model)
    imported = _import_scores(run) if cfg.scores else None  # fail fast, before training
    if cfg.checkpoint:
        load_checkpoint(model, cfg.checkpoint, arch=cfg.model)
        scores, seconds = {}, 0.0
    else:
        scores, seconds = _train(run, model)
    scores.update(imported or {})
    model.to(run.device).eval()
    logits = predict_logits(model, d.train.images, d.mean, d.std, run.device).cpu()
    correct = (logits.argmax(1) == d.train.labels).nonzero().flatten().numpy()
    save_checkpoint(model, out / "model.pt", cfg.model, d.num_classes, d.channels, d.image_size)
    np_save(out / "correct_indices.npy", correct.astype(np.int64))
    if scores:
        save_scores(out / "scores.npz", scores)
    if "forgetting" in scores:
        save_forgetting_npy(out / "forgetting.npy", scores["forgetting"])
    metrics = {"test_acc": accuracy(model, d.test, d.mean, d.std, run.device),
               "train_acc": 100.0 * len(correct) / len(d.train), "seconds": seconds,
               "model": cfg.model, "imported": bool(cfg.checkpoint), "scores": sorted(scores)}
    write_json(out / DONE, metrics)
    (out / "resume.pt").unlink(missing_ok=True)
    print(f"teacher: test acc {metrics['test_acc']:.2f}%, train acc (un-augmented) "
          f"{metrics['train_acc']:.2f}%, {seconds:.0f}s -> {out}")
