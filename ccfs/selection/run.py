"""The select stage: run every method in `select.method` and write

    OUT/select/<run>[/seed<s>]/selected_indices.json   {"ipc", "alpha", "idx_selected"} (official format)
    OUT/select/<run>[/seed<s>]/meta.json               distilled per class, per-class counts, seconds
    OUT/select/<run>[/seed<s>]/settings.json           the settings the selection was made with
    OUT/select/<run>[/seed<s>]/inputs.json             the teacher and distilled part it was made over (sha1)
    OUT/select/ccfs/seed<s>/rounds.json                the round log (and state.json while running)

Indices in selected_indices.json and rounds.json are rows of the dataset file's train split,
as the official code reads them, whatever ccfs holds out as validation; state.json (resume
only) counts the train rows ccfs trains on.

A method with a sweep runs once per value: `window` -> `window_b0.1`, `window_b0.3`, ...
A method whose choice is random (random draws, filter initialisations) runs once per
evaluation seed s, in `seed<s>/`: the student of seed s trains on the selection of seed s.
Filters of seed s are seeded (FILTER_SEEDS + s) · 1000 + round, never a student's seed.
"""
from __future__ import annotations

import threading
import time

import torch

from ccfs import api, distributed, records
from ccfs.artifacts import read_json, torch_save, write_json
from ccfs.device import group_size
from ccfs.config import filter_recipe
from ccfs.context import Run
from ccfs.selection import methods
from ccfs.selection.ccfs import RoundState


def select_one(run: Run, run_name: str, seed: int | None = None, groups: api.FilterGroups | None = None) -> None:
    """One selection; `seed` None: a method whose choice needs no seed (made once). With
    `groups`, its filters train with other seeds' (`lockstep`)."""
    cfg, folder = run.cfg, run.selection_dir(run_name, seed)
    label = run_name if seed is None else f"{run_name} seed {seed}"
    records.check_selection_settings(folder, cfg, run_name, write=True)
    state_path, done = folder / "state.json", (folder / "selected_indices.json").is_file()
    records.check_selection_inputs(folder, run.selection_inputs(run_name), write=not (done or state_path.is_file()))
    if done:
        print(f"select {label}: done already")
        return
    state = RoundState(**read_json(state_path)) if state_path.is_file() else None
    t0 = time.perf_counter()
    sel = api.select(run_name, run.data, run.teacher, ipc=cfg.select.ipc, alpha=cfg.select.alpha,
                     distilled=run.distilled, score=cfg.select.score, settings=cfg.select,
                     filter_model=cfg.select.filter_model or cfg.eval.models[0], recipe=filter_recipe(cfg),
                     objective=cfg.eval.objective, seed=cfg.seed if seed is None else seed, device=run.device,
                     progress=cfg.progress, state=state, on_round=lambda s: write_json(state_path, s.__dict__),
                     distill_settings=cfg.distill, filter_groups=groups)
    seconds = time.perf_counter() - t0
    _write(run, folder, run_name, sel, seconds)
    if distributed.is_main():
        state_path.unlink(missing_ok=True)
    print(f"select {label}: {len(sel.indices)} real + {sel.distilled_per_class}/class distilled in {seconds:.1f}s")


def _write(run: Run, folder, run_name: str, sel: methods.Selection, seconds: float) -> None:
    """The selection's files, selected_indices.json last (its presence means finished)."""
    idx, cpc, n = sel.indices.tolist(), sel.distilled_per_class, run.data.num_classes
    if len(set(idx)) != len(idx):
        raise RuntimeError(f"selector {run_name} returned duplicate indices")  # a bug, not user input
    if "rounds" in sel.log:
        write_json(folder / "rounds.json", [{**r, "indices": run.data.file_rows(r["indices"])} for r in sel.log["rounds"]])
    extra = {}
    if methods.parse(run_name)[1].distilled == "own" and sel.distilled is not None:
        torch_save({"images": sel.distilled.images, "labels": sel.distilled.labels}, folder / "distilled.pt")
        extra = {"distilled_file": "distilled.pt", "distill_init": sel.log["distill_init"]}
    write_json(folder / "meta.json", {**extra,
        "method": run_name, "distilled_per_class": cpc, "real": len(idx), "seconds": seconds,
        "indices": "rows of the dataset file's train split",
        "real_per_class": torch.bincount(run.data.train.labels[sel.indices], minlength=n).tolist() if idx else [0] * n})
    ipc = run.cfg.select.ipc
    write_json(folder / "selected_indices.json",
               {"ipc": ipc, "alpha": cpc / ipc, "idx_selected": run.data.file_rows(idx)})  # the file's rows


def select_stage(run: Run) -> None:
    api.check_budget(run.data, run.cfg.select.ipc)
    for name in methods.run_names(run.cfg.select):
        seeds = run.selection_seeds(name)
        limit = _filter_group_limit(run)
        if limit > 1 and len(seeds) > 1 and methods.parse(name)[1].trains_filters and distributed.world_size() == 1:
            lockstep(run, name, seeds, limit)
        else:
            for seed in seeds:
                select_one(run, name, seed)


def _filter_group_limit(run: Run) -> int:
    """How many filters train at once (`eval.group`; automatic: one on the CPU)."""
    cfg = run.cfg
    size = cfg.select.ipc * run.data.num_classes
    return group_size(cfg.eval.group, run.device, lambda: api.member_bytes(
        cfg.select.filter_model or cfg.eval.models[0], run.data, filter_recipe(cfg), size))


def lockstep(run: Run, run_name: str, seeds: list[int], limit: int) -> None:
    """The selections of `seeds` at once, one thread each, their round-j filters trained as
    groups (`api.FilterGroups`); a failure is raised after the others end (a failed group
    fails each selection in it). The selections' files are each seed's, as one at a time."""
    groups = api.FilterGroups(len(seeds), limit)
    errors: dict[int, BaseException] = {}
    run.distilled, run.selection_inputs(run_name)  # (the teacher, the distilled images and their hashes
    # read once here, not by the threads at once)

    def one(seed: int) -> None:
        try:
            select_one(run, run_name, seed, groups)
        except BaseException as e:  # noqa: BLE001 - raised by the stage below, after the others
            errors[seed] = e
        finally:
            groups.leave()

    # daemon threads: an interrupt (Ctrl-C) ends the stage at once; each round's state is saved
    threads = [threading.Thread(target=one, args=(s,), name=f"select {run_name} seed {s}", daemon=True)
               for s in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[min(errors)]
