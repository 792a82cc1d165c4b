"""What each CCFS round chose, split into the coarse-to-fine picks and the shortfall fill.

    python -m research.rounds runs/fmnist-sweep/ipc550_a0.1 [--method ccfs]

For every selection under RUN/select/<method>/[seed*/] prints, per round: the filter's
accuracy on the held-out sample, the images the coarse-to-fine rule picked and their mean
hardness, and the images the last round's fill added (and theirs). The paper's Figure 4
pattern is filter accuracy rising and the picks getting harder each round; at high IPC the
fill (easiest first by default) can hide that pattern in the round's overall mean.
Reads the run's records only; trains nothing.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ccfs.scores import to_hardness


def teacher_dir(run: Path) -> Path:
    """A sweep point's teacher lives one level up."""
    return run / "teacher" if (run / "teacher").is_dir() else run.parent / "teacher"


def split_round(entry: dict) -> tuple[list[int], list[int]]:
    """(coarse-to-fine picks, fill) of one round's indices, in the order the round logs them."""
    fill = entry["filled_from_pool"] + entry["filled_outside_pool"]
    idx = entry["indices"]
    return idx[: len(idx) - fill], idx[len(idx) - fill:]


def describe(rounds: list[dict], hardness: np.ndarray) -> list[str]:
    rows = []
    for r in rounds:
        picks, fill = split_round(r)
        mean = (lambda ix: f"{hardness[ix].mean():.3f}" if ix else "–")
        acc = "–" if r["filter_eval_acc"] is None else f"{r['filter_eval_acc']:.2f}"
        rows.append(f"| {r['round']} | {acc} | {len(picks)} | {mean(picks)} | {len(fill)} | {mean(fill)} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--method", default="ccfs")
    args = ap.parse_args(argv)
    scores = np.load(teacher_dir(args.run) / "scores.npz")
    for path in sorted((args.run / "select" / args.method).glob("**/rounds.json")):
        rounds = json.loads(path.read_text())
        name = rounds[0]["score"]
        hardness = to_hardness(scores[name], name)
        print(f"\n{path.parent.relative_to(args.run)} (hardness: {name}, higher = harder)\n")
        print("| round | filter acc % (held-out sample) | picked | picks' mean hardness | filled | fill's mean hardness |")
        print("|---|---|---|---|---|---|")
        print("\n".join(describe(rounds, hardness)))


if __name__ == "__main__":
    main()
