"""The select stage: run every method in `select.method` and write

    OUT/select/<run>[/seed<s>]/selected_indices.json   {"ipc", "alpha", "idx_selected"} (official format)
    OUT/select/<run>[/seed<s>]/meta.json               distilled per class, per-class counts, seconds
    OUT/select/<run>[/seed<s>]/settings.json           the settings the selection was made with
    OUT/select/ccfs/seed<s>/rounds.json                the round log (and state.json while running)

A method with a sweep runs once per value: `window` -> `window_b0.1`, `window_b0.3`, ...
A method whose choice is random (random draws, filter initialisations) runs once per
evaluation seed s, in `seed<s>/`: the student of seed s trains on the selection of seed s.
Filters of seed s are seeded (FILTER_SEEDS + s) · 1000 + round, never a student's seed.
"""
from __future__ import annotations

import time
from dataclasses import replace

import torch

from ccfs import distributed, methods, records
from ccfs.artifacts import read_json, torch_save, write_json
from ccfs.config import Recipe
from ccfs.context import Run
from ccfs.errors import ConfigError
from ccfs.api import FILTER_SEEDS, eval_sample, filter_trainer, held_out
from ccfs.methods import SelectionInputs
from ccfs.selection.ccfs import RoundState
from ccfs.train import predict_logits


def filter_recipe(cfg) -> Recipe:
    """The filters' recipe: the students' (`train.*`) with `select.filter_epochs` (which
    replaces the steps rule) or `select.filter_steps` (the steps rule's count) if set.
    records._as_selection_sees applies the same rule to settings dicts (saved ones too)."""
    s = cfg.select
    if s.filter_epochs is not None:
        return replace(cfg.train, epochs=s.filter_epochs, steps=0)
    if s.filter_steps is not None:
        return replace(cfg.train, steps=s.filter_steps)
    return cfg.train


def make_filter_trainer(run: Run, run_name: str, cpc: int, seed: int):
    """`train_filter(j, selected)` for the run: the filters' recipe on the method's
    distilled part ∪ train[selected]."""
    cfg = run.cfg
    return filter_trainer(run.data, run.distilled_part(cpc) if cpc else None, run.objective(),
                          arch=cfg.select.filter_model or cfg.eval.models[0], recipe=filter_recipe(cfg), seed=FILTER_SEEDS + seed,
                          device=run.device, progress=cfg.progress, desc=f"{run_name} filter",
                          eval_set=eval_sample(held_out(run.data), cfg.select.filter_eval_size))


def _features(run: Run) -> torch.Tensor:
    """Teacher features [N, D] of the un-augmented train set (herding, k-center)."""
    d = run.data
    return predict_logits(run.teacher, d.train.images, d.mean, d.std, device=run.device, features=True).cpu()


def _inputs(run: Run, run_name: str, folder, seed: int) -> SelectionInputs:
    base, method, param = methods.parse(run_name)
    cpc = method.distilled_per_class(run.cfg.select.ipc, run.cpc)
    score = methods.score_of(base, run.cfg.select)
    state_path = folder / "state.json"
    state = RoundState(**read_json(state_path)) if state_path.is_file() else None
    return SelectionInputs(
        labels=run.data.train.labels, num_classes=run.data.num_classes, ipc=run.cfg.select.ipc,
        cpc=cpc, hardness=run.hardness_of(score) if score else None, score_name=score or run.cfg.select.score,
        teacher_correct=run.teacher_correct, teacher_logit=run.teacher_logit,
        features=lambda: _features(run), train_filter=make_filter_trainer(run, run_name, cpc, seed),
        cfg=run.cfg.select, seed=seed, param=param, state=state,
        on_round=lambda s: write_json(state_path, s.__dict__))


def _check_settings(run: Run, run_name: str, folder) -> None:
    """A method folder made with other settings is never silently reused."""
    path = folder / "settings.json"
    now = records.selection_settings(run.cfg, run_name)
    if path.is_file() and not records.same_selection_settings(saved := read_json(path), now):
        raise ConfigError(records.settings_mismatch(folder, saved, now))
    if not path.is_file():
        write_json(path, now)


def _own_distilled(run: Run, init: list[int], per_class: int) -> dict:
    """selmatch: its α part, SRe2L/CDA started from the given real images."""
    from ccfs.synthesis import distill_from_config

    if not run.cfg.distill.synthesises:
        raise ConfigError("select.method selmatch distils from the selected window: it needs "
                          "distill.method=sre2l or cda")
    images, labels = distill_from_config(run.cfg.distill, run.teacher, run.data, per_class, seed=run.cfg.seed,
                                         device=run.device, init_indices=init, progress=run.cfg.progress)
    return {"images": images, "labels": labels}


def select_one(run: Run, run_name: str, seed: int | None = None) -> None:
    """One selection; `seed` None: a method whose choice needs no seed (made once)."""
    folder = run.selection_dir(run_name, seed)
    label = run_name if seed is None else f"{run_name} seed {seed}"
    _check_settings(run, run_name, folder)
    if (folder / "selected_indices.json").is_file():
        print(f"select {label}: done already")
        return
    inputs = _inputs(run, run_name, folder, run.cfg.seed if seed is None else seed)
    t0 = time.perf_counter()
    sel = methods.parse(run_name)[1].select(inputs)
    seconds = time.perf_counter() - t0
    idx = sel.indices.tolist()
    if len(set(idx)) != len(idx):
        raise RuntimeError(f"selector {run_name} returned duplicate indices")  # a bug, not user input
    if "rounds" in sel.log:
        write_json(folder / "rounds.json", sel.log["rounds"])
    extra = {}
    if sel.log.get("distill_init") and inputs.cpc:
        torch_save(_own_distilled(run, sel.log["distill_init"], inputs.cpc), folder / "distilled.pt")
        extra = {"distilled_file": "distilled.pt", "distill_init": sel.log["distill_init"]}
    n = run.data.num_classes
    write_json(folder / "meta.json", {**extra,
        "method": run_name, "distilled_per_class": inputs.cpc, "real": len(idx), "seconds": seconds,
        "real_per_class": torch.bincount(run.data.train.labels[sel.indices], minlength=n).tolist() if idx else [0] * n})
    ipc = run.cfg.select.ipc
    write_json(folder / "selected_indices.json", {"ipc": ipc, "alpha": inputs.cpc / ipc, "idx_selected": idx})
    if distributed.is_main():
        (folder / "state.json").unlink(missing_ok=True)
    print(f"select {label}: {len(idx)} real + {inputs.cpc}/class distilled in {seconds:.1f}s")


def select_stage(run: Run) -> None:
    run.check_budget()
    for name in methods.run_names(run.cfg.select):
        for seed in run.selection_seeds(name):
            select_one(run, name, seed)
