"""The report stage: OUT/report.md with the results table, the round log of every CCFS
selection, and plots (filter accuracy per round, difficulty of the chosen images per
round, a grid of the chosen images per round). Reads records; never trains."""
from __future__ import annotations

import math
from pathlib import Path

from ccfs import records
from ccfs.artifacts import read_json, write_text
from ccfs.config import Config
from ccfs.context import Run
from ccfs.report import plots
from ccfs.report.tables import (choice_field, label_robust_table, paired_table, ratio_curves, ratio_table,
                                results_table, rounds_table, unpaired)
from ccfs.scores import hardness_label


def _teacher_section(run: Run) -> str:
    path = run.teacher_dir / "metrics.json"
    if not path.is_file():
        return ""
    m = read_json(path)
    val = f"validation accuracy {m['val_acc']:.2f} %, " if m.get("val_acc") is not None else ""
    return (f"## Teacher\n\n`{m['model']}`: {val}test accuracy {m['test_acc']:.2f} %, un-augmented train "
            f"accuracy {m['train_acc']:.2f} %, {m['seconds']:.0f} s of training"
            f"{' (imported)' if m['imported'] else ''}; scores: {', '.join(m['scores']) or 'none'}.\n")


def _rounds_section(run: Run, method: str, rounds: list[dict]) -> str:
    d = run.data
    rounds = [{**r, "indices": d.pool_rows(r["indices"]).tolist()} for r in rounds]  # file rows -> train rows
    plot_dir = run.out / "plots"
    parts = [f"## Round log: {method}\n", rounds_table(rounds, d.classes), ""]
    if any(r["filter_pool_acc"] is not None for r in rounds):
        plots.filter_accuracy(rounds, plot_dir / f"{method}_filter_acc.png")
        parts.append(f"![filter accuracy per round](plots/{method}_filter_acc.png)")
    h = run.teacher.hardness(run.cfg.select.score)
    if h is not None:
        label = hardness_label(run.cfg.select.score)
        plots.chosen_difficulty(rounds, h.numpy(), label, plot_dir / f"{method}_difficulty.png")
        parts.append(f"![difficulty of chosen images](plots/{method}_difficulty.png)")
    plots.chosen_grid(rounds, d.train.images.numpy(), d.train.labels.numpy(), d.classes,
                      path=plot_dir / f"{method}_chosen.png")
    parts.append(f"![images chosen per round](plots/{method}_chosen.png)")
    return "\n".join(parts) + "\n"


BOTH = ("kd", "ce")  # the KD students and the hard-label ones of eval.hard_labels


def full_data_length(found: list[dict], cfg: Config) -> str:
    """How long the full-data students train, from their records (else from the recipe), and
    what that means for HLR."""
    full = next((r for r in found if getattr(records.method_entry(r["method"]), "full_data", False)), None)
    if cfg.train.steps <= 0:
        epochs = full["epochs"] if full else cfg.eval.full_epochs
        return (f"The full-data students train `eval.full_epochs` = {epochs} epoch{'s' * (epochs != 1)} "
                "(train.steps is 0), the recipe of every other student otherwise; whether that converges is not "
                "checked here. A full-data student short of convergence makes HLR smaller and LRS larger than a "
                "converged one would.")
    if full:
        batch = cfg.train.batch_for(full["images"])
        length = (f"{full['epochs']} epochs of {full['images']} images, "
                  f"{full['epochs'] * math.ceil(full['images'] / batch)} optimizer steps at batch {batch}")
    else:
        length = f"about train.steps = {cfg.train.steps} optimizer steps"
    return (f"The full-data students train under the compute rule (train.steps = {cfg.train.steps}): {length}, the "
            "same number of updates as every set's student, so they see each image fewer times than a subset's "
            "students do. Convergence is not checked here; on Fashion-MNIST at 4 800 steps (11 epochs) the KD "
            "full-data student is about a point under its accuracy at four times the steps, not converged "
            "(docs/method.md §3). Against a full-data student short of convergence HLR is smaller, and LRS larger, "
            "than against a converged one, for every set alike.")


def label_robust_section(found: list[dict], cfg: Config) -> list[str]:
    """The report's section on how much of each set's accuracy comes from the set and how
    much from the teacher (DD-Ranking's IOR, HLR and LRS); none without hard-label students."""
    table = label_robust_table(found)
    if not table:
        return []
    return ["## The set or the teacher: hard-label students (DD-Ranking's IOR, HLR, LRS)\n",
            "Beside each KD student, a hard-label student (cross-entropy on the set's own labels, the same recipe "
            "otherwise; `eval.hard_labels`). IOR: the set's final-epoch test accuracy minus random real images' at the "
            "same IPC under the same protocol, paired by seed (under KD, and under hard labels); HLR: the full-data "
            "hard-label student's accuracy minus the set's hard-label accuracy, paired by seed; LRS = (e^a − e^−1) / "
            "(e − e^−1) with a = ½·IOR − ½·HLR, IOR under KD and both as fractions, per seed and then averaged "
            "(DD-Ranking, 2025; docs/method.md §3). IOR and HLR are in points, LRS in %; each with the half-width of "
            "its 95 % interval. The other tables compare KD students only.\n",
            table, "", full_data_length(found, cfg), ""]


def sweep_report(out, points: list[Run]) -> None:
    """OUT/report.md of an IPC / α sweep: every point's results in one table, accuracy
    against the data ratio per method with the full-data student as a line, and (where α
    varies) accuracy against α; each point's own report.md holds its round logs."""
    found, both, ratio = [], [], {}
    for p in points:
        found += [{**r, "alpha_set": p.cfg.select.alpha if 0 < r["alpha"] < 1 else r["alpha"]}  # ratio table rows
                  for r in records.current(p.out, p.cfg)]
        both += records.current(p.out, p.cfg, BOTH)
        ratio[p.cfg.select.ipc] = 100.0 * p.cfg.select.ipc * p.data.num_classes / len(p.data.train)
    curves, full = ratio_curves(found, ratio)
    plots.accuracy_vs_ratio(curves, full, Path(out) / "plots" / "accuracy_vs_ratio.png")
    paired = paired_table(found)
    parts = [f"# ccfs sweep report: {points[0].cfg.data.name}\n",
             f"Points (IPC, α): {', '.join(f'({p.cfg.select.ipc}, {p.cfg.select.alpha:g})' for p in points)}; "
             "each has its run directory and report.md under this one. Accuracies are final-epoch test top-1 "
             "in %, mean ± std over seeds; validation accuracy beside them.\n",
             "| IPC | data % |\n|---|---|\n" + "\n".join(f"| {i} | {r:.2f} |" for i, r in sorted(ratio.items())), "",
             "## Final-epoch test accuracy against the data ratio\n",
             ratio_table(found, ratio) if found else "no results yet", "",
             "The full-data student (the whole train pool, recorded at the first point) fills its row. "
             "Pairs below compare it with CCFS at every IPC.\n",
             "## Results\n", results_table(found) if found else "no results yet", "",
             *(["## CCFS against each method, paired by seed\n", paired, *unpaired(found), ""] if paired else []),
             *label_robust_section(both, points[0].cfg),
             "![accuracy against the data ratio](plots/accuracy_vs_ratio.png)", ""]
    write_text(Path(out) / "report.md", "\n".join(parts))
    print(f"report: {Path(out) / 'report.md'}")


def report_stage(run: Run) -> None:
    found = records.current(run.out, run.cfg)
    cfg = run.cfg
    if choice_field(found) == "val_acc":
        where = (f"Choices (the oracle window's β) are made on the validation split ({len(run.data.val)} train "
                 "images held out of everything); the test set only reports them.")
    else:
        where = ("This run has no validation split (data.val_size 0): the oracle window's β is picked on "
                 "TEST accuracy, as SelMatch's oracle is, so that row is optimistic.")
    paired = paired_table(found)
    parts = [f"# ccfs report: {cfg.data.name}, IPC {cfg.select.ipc}, α {cfg.select.alpha}\n",
             f"Run directory `{run.out}`; config in `config.yaml`. Accuracies are top-1 in %, "
             "mean ± sample std over seeds (n = number of students). **final-epoch test** accuracy is the "
             "primary figure; the validation accuracy is where choices are made; the paper's metric (best "
             "test accuracy over the evaluated epochs in the last 20 % of training) selects epochs on the "
             f"test set. {where}\n",
             _teacher_section(run), "## Results\n", results_table(found) if found else "no results yet", "",
             *(["## CCFS against each method, paired by seed\n", paired, *unpaired(found), ""] if paired else []),
             *label_robust_section(records.current(run.out, cfg, BOTH), cfg)]
    for path in sorted([*(run.out / "select").glob("*/rounds.json"), *(run.out / "select").glob("*/seed*/rounds.json")]):
        folder = path.parent
        name = folder.name if folder.parent.name == "select" else f"{folder.parent.name}_{folder.name}"
        parts.append(_rounds_section(run, name, read_json(path)))
    write_text(run.out / "report.md", "\n".join(parts))
    print(f"report: {run.out / 'report.md'}")
