"""Plots for the report (matplotlib, Agg backend). Pure functions of artifacts."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ccfs.artifacts import atomic_path  # noqa: E402


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def log_axis(xs: list[float]) -> bool:
    """A log x axis where the points are positive and span a factor of 10 or more (0.2 % to
    20 %: on a linear axis the small sets crowd together)."""
    return bool(xs) and min(xs) > 0 and max(xs) / min(xs) >= 10


def accuracy_vs_ratio(curves: dict[str, list[tuple[float, float, float]]], full: float | None,
                      path: Path, *, xlabel: str = "synthetic set size, % of the train set") -> None:
    """The sweep's headline figure: each method's mean accuracy against the data ratio (or α)
    with its 95 % confidence band over seeds, `curves[method] = [(x, mean, half-width), ...]`,
    the full-data student as a line; the x axis is logarithmic where the points span a factor
    of 10 or more."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, pts in sorted(curves.items()):
        pts = sorted(pts)
        xs, ys, half = [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]
        line, = ax.plot(xs, ys, marker="o", ms=4, label=name)
        ax.fill_between(xs, [y - h for y, h in zip(ys, half)], [y + h for y, h in zip(ys, half)],
                        color=line.get_color(), alpha=0.15, lw=0)
    if full is not None:
        ax.axhline(full, color="k", ls="--", lw=1, label="full data")
    xs = sorted({p[0] for pts in curves.values() for p in pts})
    if log_axis(xs):
        ax.set_xscale("log")
        ax.set_xticks(xs, [f"{x:.2g}" for x in xs])
        ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("final-epoch test accuracy % (band: 95 % interval)")
    if ax.get_legend_handles_labels()[0]:  # a sweep's report before its first result has none
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    _save(fig, path)


def filter_accuracy(rounds: list[dict], path: Path) -> None:
    """Filter accuracy per round: on the fixed held-out sample (validation where the run has
    a split) and on the pool rows it inferred (un-augmented train images not yet selected;
    under the lazy coarse pass only the part the fine stage reached, easiest first)."""
    r = [x for x in rounds if x["filter_pool_acc"] is not None]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    if any(x["filter_eval_acc"] is not None for x in r):
        ax.plot([x["round"] for x in r], [x["filter_eval_acc"] for x in r], "o-", label="held-out sample")
    ax.plot([x["round"] for x in r], [x["filter_pool_acc"] for x in r], "s--", label="pool rows inferred")
    ax.set_xlabel("round (curriculum)")
    ax.set_ylabel("filter accuracy %")
    ax.set_xticks([x["round"] for x in rounds])
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, path)


def chosen_difficulty(rounds: list[dict], hardness: np.ndarray, score: str, path: Path) -> None:
    """Distribution of the difficulty score of the images chosen in each round."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    data = [hardness[np.asarray(x["indices"], dtype=np.int64)] for x in rounds if x["indices"]]
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(data) + 1), [f"round {x['round']}" for x in rounds if x["indices"]])
    ax.set_ylabel(f"{score} (higher = harder)")
    ax.set_title("difficulty of the chosen real images")
    ax.grid(alpha=0.3, axis="y")
    _save(fig, path)


def mosaic(rounds: list[dict], images: np.ndarray, labels: np.ndarray, n_classes: int, *, per_class: int = 4,
           gap: int = 1, block_gap: int = 4) -> tuple[np.ndarray, list[int]]:
    """The chosen-images grid as one RGB uint8 picture [rows, cols, 3] on white: a row of
    cells per class, a block of `per_class` cells per round (the first images chosen of that
    class in that round; fewer leave white), `gap` pixels between cells and `block_gap`
    between blocks; and each block's first column. Grayscale images become gray RGB."""
    h, w = images.shape[2:]
    step_x, step_y = w + gap, h + gap
    block_w = per_class * step_x - gap + block_gap
    out = np.full((n_classes * step_y - gap, len(rounds) * block_w - block_gap, 3), 255, dtype=np.uint8)
    starts = [j * block_w for j in range(len(rounds))]
    for x0, r in zip(starts, rounds):
        idx = np.asarray(r["indices"], dtype=np.int64)
        for cls in range(n_classes):
            for k, i in enumerate(idx[labels[idx] == cls][:per_class]):
                y, x = cls * step_y, x0 + k * step_x
                out[y:y + h, x:x + w] = np.broadcast_to(images[i].transpose(1, 2, 0), (h, w, 3))
    return out, starts


def chosen_grid(rounds: list[dict], images: np.ndarray, labels: np.ndarray, classes: list[str],
                *, path: Path, per_class: int = 4) -> None:
    """Rows = classes, column blocks = rounds: the first images chosen in each round, drawn as
    one picture (an axes per image took seconds for 10 classes and grows with classes × rounds)."""
    gap = 1
    grid, starts = mosaic(rounds, images, labels, len(classes), per_class=per_class, gap=gap)
    h = images.shape[2] + gap  # a row of cells
    nr, nc = len(classes), len(rounds) * per_class
    fig, ax = plt.subplots(figsize=(max(nc * 0.6, 2.0), max(nr * 0.6, 1.0)))
    ax.imshow(grid, interpolation="nearest")
    ax.set_yticks([c * h + (h - 1) / 2 for c in range(nr)], classes, fontsize=6)
    ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    for x0, r in zip(starts, rounds):
        ax.text(x0, -1, f"round {r['round']}", fontsize=7, ha="left", va="bottom")
    _save(fig, path)
