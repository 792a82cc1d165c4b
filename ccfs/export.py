"""The export stage: each synthetic set as class folders of PNGs plus `labels.csv`
(file, label, class name, source, train index), loadable back with
`distill.method=folder distill.from=OUT/export/<method>`."""
from __future__ import annotations

import csv
import io

from ccfs.artifacts import read_json, write_text
from ccfs.context import Run
from ccfs.distill.folder import export_png_folder
from ccfs.evaluate.run import synthetic_for
from ccfs.selection.run import method_names

SKIP = ("full",)  # the full train set is not a synthetic set


def labels_csv(labels, sources, train_idx, classes) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["file", "label", "class", "source", "train_index"])
    seen = [0] * len(classes)
    for y, src, ti in zip(labels, sources, train_idx):
        w.writerow([f"{y:05d}/{seen[y]:05d}.png", y, classes[y], src, ti])
        seen[y] += 1
    return buf.getvalue()


def export_one(run: Run, method: str) -> None:
    folder = run.out / "export" / method
    if (folder / "labels.csv").is_file():
        return
    data, _ = synthetic_for(run, method)
    meta = read_json(run.out / "select" / method / "meta.json")
    idx = read_json(run.out / "select" / method / "selected_indices.json")["idx_selected"]
    n_dist = meta["distilled_per_class"] * run.data.num_classes
    sources = ["distilled"] * n_dist + ["real"] * len(idx)
    train_idx = [-1] * n_dist + idx
    export_png_folder(data.images, data.labels, run.data.num_classes, folder)
    write_text(folder / "labels.csv", labels_csv(data.labels.tolist(), sources, train_idx, run.data.classes))
    print(f"export {method}: {len(data)} images -> {folder}")


def export_stage(run: Run) -> None:
    for method in method_names(run.cfg):
        if method not in SKIP:
            export_one(run, method)
