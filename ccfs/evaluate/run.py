"""The evaluate stage: fresh students trained by the shared recipe (KD from the teacher)
on each synthetic set, for every model in eval.models and seed in eval.seeds, and under
eval.hard_labels a hard-label (cross-entropy) student beside each, the same recipe
otherwise. Each result is one JSON line in OUT/results.jsonl (`ccfs.records`), with its
objective; finished students are skipped, so the stage resumes.
"""
from __future__ import annotations

import time
from dataclasses import replace

from ccfs.selection import methods
from ccfs import api, distributed, records
from ccfs.artifacts import file_sha1, git_commit, git_tree_clean, read_json
from ccfs.config import to_dict
from ccfs.context import Run
from ccfs.data.datasets import Split
from ccfs.device import group_size


def best_last20(hist, recipe) -> float | None:
    """The paper's metric, where the recipe tests more than the final epoch (None otherwise)."""
    return hist.best_last20(recipe.epochs) if len(hist.test_acc) > 1 else None


def evaluate_group(run: Run, items: list[tuple[str, str, int, str]], sets: dict) -> list[dict]:
    """Students of one model, objective and set size, trained at once as one stacked model
    (one student: as always), and their records: the accuracies, and what made them (commit,
    whether the tree was clean, the teacher's weights and the distilled images, by hash; the
    group's size). `items` are (run name, model, seed, objective) of `_todo`; `sets` caches
    each selection's synthetic set."""
    cfg, d = run.cfg, run.data
    run_name, model_name, _, objective = items[0]
    chosen = [_synthetic(run, name, seed, sets) for name, _, seed, _ in items]
    full = methods.parse(run_name)[1].full_data
    recipe = replace(cfg.train, epochs=cfg.eval.full_epochs) if full and cfg.train.steps <= 0 else cfg.train
    recipe = replace(recipe, epochs=recipe.epochs_for(len(chosen[0][0])), steps=0)  # the compute rule, resolved
    t0 = time.perf_counter()
    seeds = [seed for _, _, seed, _ in items]
    names = ", ".join(sorted({name for name, *_ in items}))
    hists = api.train_students(d, [data for data, _, _ in chosen], run.teacher, model=model_name, recipe=recipe,
                           seeds=seeds, objective=objective, device=run.device, progress=cfg.progress,
                           desc=f"eval {names} {model_name} s{','.join(map(str, seeds))} {objective}")
    seconds = (time.perf_counter() - t0) / len(items)
    made = {"dataset": d.name, "settings": records.settings_hash(cfg), "config": to_dict(cfg),
            "commit": git_commit(), "tree_clean": git_tree_clean(), "teacher_sha1": run.teacher_sha1,
            "group": len(items)}
    return [{"method": name, "model": model_name, "ipc": cfg.select.ipc, "alpha": sel["alpha"], "seed": seed,
             "objective": objective,
             "final_acc": hist.final_acc, "val_acc": hist.val_acc, "best_last20_acc": best_last20(hist, recipe),
             "test_acc_by_epoch": {str(k): v for k, v in sorted(hist.test_acc.items())},
             "images": len(data), "epochs": recipe.epochs, "train_seconds": seconds, **made,
             "distilled_sha1": _distilled_sha1(data, meta["distilled_per_class"] * d.num_classes),
             "selection_sha1": file_sha1(run.selection_dir(name, run.selection_seed(name, seed)) / "selected_indices.json")}
            for (name, _, seed, _), (data, sel, meta), hist in zip(items, chosen, hists)]


def _distilled_sha1(data: Split, n: int) -> str | None:
    """The hash of the distilled part a synthetic set holds (its first `n` rows; none for
    n = 0): the same as its selection's inputs.json, and unchanged by a grown distilled file."""
    return records.images_sha1(Split(data.images[:n], data.labels[:n]))


def _synthetic(run: Run, run_name: str, seed: int, sets: dict) -> tuple[Split, dict, dict]:
    which = (run_name, run.selection_seed(run_name, seed))
    if which not in sets:
        sets[which] = run.selection(*which)
    return sets[which]


def _set_size(run: Run, run_name: str, seed: int) -> int:
    """The size of a student's synthetic set, from its selection's files (no images read)."""
    sel_seed = run.selection_seed(run_name, seed)
    meta = read_json(run.selection_dir(run_name, sel_seed) / "meta.json")
    return len(run.selected_indices(run_name, sel_seed)["idx_selected"]) + meta["distilled_per_class"] * run.data.num_classes


def groups(run: Run, todo: list[tuple[str, str, int, str]]) -> list[list[tuple[str, str, int, str]]]:
    """The students of `todo`, in its order, as training groups: consecutive students of one
    model, objective, kind (full data or not) and set size, at most `_limit` in a group.
    Sets of other sizes never share a group (each member would need its own step count)."""
    out: list[list] = []
    last, limits = None, {}  # the limit of each (model, size), worked out once
    for item in todo:
        name, model, seed, objective = item
        k = (model, objective, methods.parse(name)[1].full_data, _set_size(run, name, seed))
        if k == last and (model, k[3]) not in limits:
            limits[(model, k[3])] = _limit(run, model, k[3], len(todo))
        if out and k == last and len(out[-1]) < limits[(model, k[3])]:
            out[-1].append(item)
        else:
            out.append([item])
        last = k
    return out


def _limit(run: Run, model: str, size: int, todo: int) -> int:
    """A group's largest size: `eval.group` (automatic: `group_size`); one under
    train.compile (a group trains eager); under torchrun at most an even share of the
    students, so that every rank has a group to train."""
    if run.cfg.train.compile:
        return 1
    limit = group_size(run.cfg.eval.group, run.device, lambda: api.member_bytes(model, run.data, run.cfg.train, size))
    return min(limit, max(1, -(-todo // distributed.world_size())))


def seeds_of(run_name: str, model: str, seeds: list[int], sweep_seeds: int, picks: dict[tuple, str]) -> list[int]:
    """The evaluation seeds a student run trains: every seed, except for the values of a
    swept method under eval.sweep_seeds = N: the first N seeds, and the others only for the
    value picked over them (`records.sweep_picks`)."""
    if sweep_seeds <= 0 or sweep_seeds >= len(seeds) or not methods.is_sweep(run_name):
        return list(seeds)
    return list(seeds) if picks.get((methods.parse(run_name)[0], model)) == run_name else list(seeds[:sweep_seeds])


def hard_label_runs(cfg, run_names: list[str]) -> set[str]:
    """The run names that also get a hard-label student (eval.hard_labels: true, every one;
    a list, the runs of the methods it names; none under eval.objective=ce, whose students
    are hard-label ones already). A name that is no method is a ConfigError."""
    asked = cfg.eval.hard_labels
    if cfg.eval.objective != "kd" or asked in (False, []):
        return set()
    if asked is True:
        return set(run_names)
    for name in asked:
        methods.get(name)  # an unknown name fails, listing the methods
    return {n for n in run_names if methods.parse(n)[0] in asked}


def _records(run: Run) -> list[dict]:
    """This run's records (of every objective): its IPC and its selection settings."""
    settings = records.settings_hash(run.cfg)
    return [r for r in records.load(run.out / records.FILE)
            if r.get("settings") == settings and r["ipc"] == run.cfg.select.ipc]


def _picks(run: Run, recs: list[dict]) -> dict[tuple, str]:
    ev = run.cfg.eval
    if ev.sweep_seeds <= 0:
        return {}
    own = [r for r in recs if records.objective_of(r) == ev.objective]  # the run's own students pick
    return records.sweep_picks(own, methods.run_names(run.cfg.select), list(ev.seeds[:ev.sweep_seeds]))


def _todo(run: Run) -> list[tuple[str, str, int, str]]:
    """(run name, model, seed, objective) of every student not recorded yet, in a fixed
    order: the run's own (KD) students first, then the hard-label ones of eval.hard_labels
    (the same seeds: under eval.sweep_seeds, the KD pick's)."""
    names, ev, ipc = methods.run_names(run.cfg.select), run.cfg.eval, run.cfg.select.ipc
    recs = _records(run)
    done = {records.record_key(r) for r in recs}
    picks, settings = _picks(run, recs), records.settings_hash(run.cfg)
    alpha = {n: run.selected_indices(n, run.selection_seeds(n)[0])["alpha"] for n in names}
    hard = hard_label_runs(run.cfg, names)  # empty under eval.objective=ce
    runs = [(n, ev.objective) for n in names] + [(n, "ce") for n in names if n in hard]
    return [(n, m, s, obj) for n, obj in runs for m in ev.models
            for s in seeds_of(n, m, ev.seeds, ev.sweep_seeds, picks)
            if records.key(n, m, ipc, alpha[n], seed=s, settings=settings, objective=obj) not in done]


def evaluate_stage(run: Run) -> None:
    """Every missing student; under torchrun one student per rank at a time (waves of
    world-size students), rank 0 appending the wave's records in a fixed order."""
    hard_label_runs(run.cfg, methods.run_names(run.cfg.select))  # a misnamed method fails before any student
    world, rank = distributed.world_size(), distributed.rank()
    distributed.on_main(lambda: _check_inputs(run))
    sets: dict[tuple, tuple] = {}  # (run name, selection seed) -> its synthetic set, built once
    # two passes: under eval.sweep_seeds the picked value's other seeds are known only after the first
    for second in range(2 if run.cfg.eval.sweep_seeds > 0 else 1):
        if second:
            distributed.on_main(lambda: _say_picks(run))
        todo = distributed.on_main(lambda: _todo(run))
        _train(run, todo, world, rank, sets)


def _check_inputs(run: Run) -> None:
    """Every selection of the run over the present teacher and distilled images (a one-line
    error for one made over others: `records.check_selection_inputs`), and the records of
    students of an earlier selection (one made again: its file or its inputs differ from the
    record's) set aside (`records.stale`), so that they train again."""
    for name in methods.run_names(run.cfg.select):
        for seed in run.selection_seeds(name):
            folder = run.selection_dir(name, seed)
            if (folder / "inputs.json").is_file():
                records.check_selection_inputs(folder, run.selection_inputs(name))
    recs, present = _records(run), {}
    for r in recs:
        which = (r["method"], r["seed"])
        if which not in present:
            present[which] = _made_of(run.selection_dir(r["method"], run.selection_seed(r["method"], r["seed"])))
    gone = records.stale(recs, present)
    if gone:
        records.set_aside(run.out, gone)
        print(f"evaluate: {len(gone)} student record(s) were trained on an earlier selection than the present "
              f"one (made again); moved to {run.out / records.STALE}, training them again")


def _made_of(folder) -> dict:
    """What a selection folder is, by hash, for `records.stale`: its inputs.json and the sha1
    of its selected_indices.json ({} for no finished selection)."""
    if not (folder / "selected_indices.json").is_file():
        return {}
    inputs = read_json(folder / "inputs.json") if (folder / "inputs.json").is_file() else {}
    return {**inputs, "selection_sha1": file_sha1(folder / "selected_indices.json")}


def _say_picks(run: Run) -> None:
    first, recs = run.cfg.eval.seeds[:run.cfg.eval.sweep_seeds], _records(run)
    on = "validation" if records.choice_field(recs) == "val_acc" else "TEST accuracy (no validation split)"
    for (base, model), name in sorted(_picks(run, recs).items()):
        print(f"evaluate {base}: {name} picked on {on} over seed{'s' * (len(first) > 1)} "
              f"{', '.join(map(str, first))} ({model}); only it trains on the other seeds")


def _train(run: Run, todo: list[tuple[str, str, int, str]], world: int, rank: int, sets: dict) -> None:
    """The groups of `todo` (`groups`), under torchrun one group per rank at a time (waves of
    world-size groups), rank 0 appending each wave's records in `todo`'s order."""
    todo_groups = distributed.on_main(lambda: groups(run, todo))  # one grouping for every rank (free memory differs)
    for start in range(0, len(todo_groups), world):
        wave = todo_groups[start:start + world]
        recs = None
        if rank < len(wave):
            with distributed.local():  # independent students: no DDP, no sharded test pass
                recs = evaluate_group(run, wave[rank], sets)
        for r in [r for got in distributed.gather(recs) if got is not None for r in got]:
            if distributed.is_main():
                records.append(run.out, r)
                val = f"val {r['val_acc']:.2f}%, " if r.get("val_acc") is not None else ""
                # a hard-label student says so before the colon: log readers of KD lines skip it
                hard = " (hard labels)" if r["objective"] != run.cfg.eval.objective else ""
                print(f"evaluate {r['method']:>14} {r['model']:>14} seed {r['seed']}{hard}: {val}test "
                      f"{r['final_acc']:.2f}% ({r['images']} images, {r['train_seconds']:.0f}s)")
