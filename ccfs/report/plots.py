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


def chosen_grid(rounds: list[dict], images: np.ndarray, labels: np.ndarray, classes: list[str],
                *, path: Path, per_class: int = 4) -> None:
    """Rows = classes, column blocks = rounds: the first images chosen in each round."""
    nr, nc = len(classes), len(rounds) * per_class
    fig, axes = plt.subplots(nr, nc, figsize=(nc * 0.6, nr * 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for j, r in enumerate(rounds):
        idx = np.asarray(r["indices"], dtype=np.int64)
        for c in range(nr):
            for k, i in enumerate(idx[labels[idx] == c][:per_class]):
                img = images[i].transpose(1, 2, 0)
                axes[c, j * per_class + k].imshow(img.squeeze(), cmap="gray" if img.shape[2] == 1 else None)
        axes[0, j * per_class].set_title(f"round {r['round']}", fontsize=7, loc="left")
    for c, name in enumerate(classes):
        axes[c, 0].text(-2, 0.5, name, transform=axes[c, 0].transAxes, ha="right", va="center", fontsize=6)
    _save(fig, path)
