"""The export stage: each synthetic set as class folders of PNGs plus `labels.csv`
(file, label, class name, source, train index), loadable back with
`distill.method=folder distill.from=OUT/export/<method>`."""
from __future__ import annotations

import csv
import io

from ccfs.selection import methods
from ccfs.artifacts import write_text
from ccfs.context import Run
from ccfs.distill.folder import export_png_folder


def labels_csv(labels, sources, train_idx, classes) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["file", "label", "class", "source", "train_index"])
    seen = [0] * len(classes)
    for y, src, ti in zip(labels, sources, train_idx):
        w.writerow([f"{y:05d}/{seen[y]:05d}.png", y, classes[y], src, ti])
        seen[y] += 1
    return buf.getvalue()


def export_one(run: Run, run_name: str) -> None:
    folder = run.out / "export" / run_name
    if (folder / "labels.csv").is_file():
        return
    data, sel, meta = run.selection(run_name, run.selection_seeds(run_name)[0])  # the first seed's set
    idx = sel["idx_selected"]
    n_dist = meta["distilled_per_class"] * run.data.num_classes
    sources = ["distilled"] * n_dist + ["real"] * len(idx)
    train_idx = [-1] * n_dist + list(idx)  # selected_indices.json holds the dataset file's rows
    export_png_folder(data.images, data.labels, run.data.num_classes, folder)
    write_text(folder / "labels.csv", labels_csv(data.labels.tolist(), sources, train_idx, run.data.classes))
    print(f"export {run_name}: {len(data)} images -> {folder}")


def export_stage(run: Run) -> None:
    for run_name in methods.run_names(run.cfg.select):
        if not methods.parse(run_name)[1].full_data:  # the full train set is not a synthetic set
            export_one(run, run_name)
