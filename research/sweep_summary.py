"""The Fashion-MNIST sweep as one table and one plot, rebuilt from what was recorded.

    python -m research.sweep_summary --extract research/results/fmnist_sweep.md \
        --records research/results/fmnist_sweep_b_records.jsonl runs/sweep-donly/results.jsonl \
        runs/sweep-donly/ipc275_a0.1/results.jsonl runs/sweep-donly/ipc1100_a0.1/results.jsonl \
        --write research/results/fmnist_sweep_records_filters4800.jsonl
    python -m research.sweep_summary --records runs/fs1600/ipc*_a0.1/results.jsonl \
        --write research/results/fmnist_sweep_filters1600_records.jsonl
    python -m research.sweep_summary --records research/results/fmnist_sweep_records_filters4800.jsonl \
        --supersede research/results/fmnist_sweep_filters1600_records.jsonl \
        --write research/results/fmnist_sweep_records.jsonl \
        --report research/results/fmnist_sweep_summary.md --plot docs/figures/fmnist_sweep_accuracy_vs_ratio.png

`fmnist-sweep` was run in parts over several sessions, into run directories that are not
all kept. Every student's line in the recorded logs (`evaluate <method> <model> seed S:
val V%, test T% (N images, ...)`) and every kept record carries what the tables need, so
`--extract` turns the logs into per-seed records (IPC = N / classes; the full-data student
is filed under the smallest IPC, as the sweep records it), `--records` adds result files,
and `--write` keeps the union, one record per (method, model, IPC, α, seed); the
`runs/` files are not kept on a fresh machine, the written files are (the last command
rebuilds the table and plot from them alone). The same
student found twice must agree, else the script stops. The report and plot are the sweep
report's own tables (`ccfs.report.tables`) and figure (`ccfs.report.plots`).
`--supersede` takes result files of rows re-run after the preset's settings changed (the
filters' length, 1 600 steps from 2026-12-06): their students replace the recorded ones, which
stay in the logs.

As these commands ran, the files lived under bench/results/. The last one's records
(research/results/fmnist_sweep_records.jsonl then) are now docs/records/fmnist_sweep.jsonl,
each with its provenance added by research/build_records.py; docs/results.md's sweep tables
are made from that file by `python -m ccfs.report.results_page`, which replaces this
script's tables. The figure docs/figures/fmnist_sweep_accuracy_vs_ratio.png is this script's.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from ccfs import records
from ccfs.artifacts import write_text
from ccfs.report import plots
from ccfs.report.tables import paired_table, ratio_curves, ratio_table, results_table

LINE = re.compile(r"evaluate\s+(?P<method>\S+)\s+(?P<model>\S+) seed (?P<seed>\d+): "
                  r"val (?P<val>[\d.]+)%, test (?P<test>[\d.]+)% \((?P<images>\d+) images")
POOL, CLASSES, ALPHA = 55_000, 10, 0.1  # the sweep's train pool after its 5 000-image validation split


def alpha_of(method: str, ipc: int) -> float:
    """The α a sweep record holds: realised int(IPC·α)/IPC for the methods with a distilled
    part, 1 for distill-only, 0 for the rest."""
    if method in ("ccfs", "random_distilled"):
        return int(ipc * ALPHA) / ipc
    return 1.0 if method == "distill_only" else 0.0


def from_log(text: str) -> list[dict]:
    out = []
    for m in LINE.finditer(text):
        images = int(m["images"])
        full = m["method"] == "full"
        ipc = 0 if full else images // CLASSES
        out.append({"method": m["method"], "model": m["model"], "ipc": ipc, "alpha": alpha_of(m["method"], ipc),
                    "seed": int(m["seed"]), "final_acc": float(m["test"]), "val_acc": float(m["val"]),
                    "images": images, "source": "log"})
    return out


def rounded(r: dict) -> tuple[float, float]:
    return round(r["final_acc"], 2), round(r["val_acc"], 2)


def student(r: dict) -> tuple:
    return r["method"], r["model"], r["ipc"], round(r["alpha"], 4), r["seed"]


def merge(found: list[dict]) -> list[dict]:
    """One record per student; a student seen twice must have the same accuracies (to the
    logs' two decimals)."""
    by_key: dict[tuple, dict] = {}
    for r in found:
        k = student(r)
        if k in by_key and rounded(by_key[k]) != rounded(r):
            raise SystemExit(f"{k}: recorded twice with different accuracies {rounded(by_key[k])} and {rounded(r)}")
        by_key.setdefault(k, r)
    smallest = min(k[2] for k in by_key if k[2])
    return [{**r, "ipc": r["ipc"] or smallest} for r in by_key.values()]


def supersede(found: list[dict], newer: list[dict]) -> list[dict]:
    """`found` with every student that `newer` also holds replaced by newer's record: rows
    re-run after the preset's settings changed take the place of the recorded ones."""
    replaced = {student(r) for r in newer}
    return [r for r in found if student(r) not in replaced] + newer


def read_records(paths: list[Path]) -> list[dict]:
    keep = ("method", "model", "ipc", "alpha", "seed", "final_acc", "val_acc", "images")
    # a file this script wrote keeps each record's first source (a log, a run's results file)
    return [{**{k: r[k] for k in keep}, "source": r.get("source", str(p))} for p in paths for r in records.load(p)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--extract", type=Path, nargs="*", default=[], help="markdown logs to read student lines from")
    ap.add_argument("--records", type=Path, nargs="*", default=[], help="results.jsonl files")
    ap.add_argument("--supersede", type=Path, nargs="*", default=[],
                    help="results.jsonl files whose students replace the same students found elsewhere")
    ap.add_argument("--write", type=Path, help="write the merged records here (jsonl)")
    ap.add_argument("--report", type=Path, help="write the sweep tables here (markdown)")
    ap.add_argument("--plot", type=Path, help="draw accuracy against the data ratio here (png)")
    args = ap.parse_args()
    missing = [str(p) for p in args.extract + args.records + args.supersede if not p.is_file()]
    if missing:
        raise SystemExit(f"sweep_summary: no such file: {', '.join(missing)}")
    found = merge([r for p in args.extract for r in from_log(p.read_text())] + read_records(args.records))
    if args.supersede:
        found = supersede(found, merge(read_records(args.supersede)))
    found.sort(key=lambda r: (r["ipc"], r["method"], r["seed"]))
    if args.write:
        write_text(args.write, "".join(json.dumps(r) + "\n" for r in found))
    rows = [{**r, "alpha_set": ALPHA if 0 < r["alpha"] < 1 else r["alpha"]} for r in found]
    ratio = {ipc: 100.0 * ipc * CLASSES / POOL for ipc in {r["ipc"] for r in found}}
    if args.plot:
        curves, full = ratio_curves(rows, ratio)
        plots.accuracy_vs_ratio(curves, full, args.plot)
    text = "\n".join(["## Final-epoch test accuracy against the data ratio\n", ratio_table(rows, ratio), "",
                      "## Results\n", results_table(rows), "",
                      "## CCFS against each method, paired by seed\n", paired_table(rows), ""])
    if args.report:
        write_text(args.report, text)
    print(text)


if __name__ == "__main__":
    main()
