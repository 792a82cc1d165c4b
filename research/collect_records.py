"""Copy the students of finished run directories into a records file of docs/records/, the
form docs/results.md's tables are generated from (`python -m ccfs.report.results_page`).

    python -m research.collect_records NAME RUN_DIR [RUN_DIR ...] [--methods a,b] [--seeds 0,1] [--ipc 275,550]

RUN_DIR is a run directory or a sweep's OUT (its ipc*_a*/ points are read). Every record of
their results.jsonl made with the point's present settings (`ccfs.records.current`, KD and
hard-label students) becomes one line of docs/records/NAME.jsonl with the fields the tables
need and what made it: the commit and whether its tree was clean, the teacher's and the
distilled images' hashes, the teacher as a sentence (its seed and accuracies from
teacher/metrics.json), the run directory (`source`) and the date. The file is rewritten
whole (atomically), so running it again as more students land only adds them.

A swept method (the oracle window's β) joins a point's records only once its pick is settled:
every value trained on the seeds the pick is made on (a pick over some of the values would be
another method). A records file SCOPES names holds only what its question asks (an option given
replaces that part of its scope).
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

from ccfs.artifacts import write_text
from ccfs.config import load_config
from ccfs.records import current, settled

FIELDS = ("method", "model", "ipc", "alpha", "seed", "objective", "final_acc", "val_acc", "images", "epochs",
          "train_seconds", "group", "settings", "teacher_sha1", "distilled_sha1", "selection_sha1", "commit", "tree_clean")

# the records files whose question fixes what they hold: "does the distilled part help?" is asked
# at 5 and 10 % (IPC 275, 550) on seeds 0-2 of each teacher, of KD students (docs/method.md §3)
SCOPES = {"distilled_part": {"methods": {"ccfs", "self_evolved"}, "seeds": {0, 1, 2}, "ipc": {275, 550},
                            "objectives": ("kd",)}}


def points(run: Path) -> list[Path]:
    found = sorted(p.parent for p in run.glob("ipc*_a*/config.yaml"))
    return found or [run]


def teacher_line(top: Path, cfg) -> str:
    m = json.loads((top / "teacher" / "metrics.json").read_text())
    return (f"{m['model']}, {cfg.teacher.train.epochs} epochs, seed {cfg.seed} "
            f"(validation {m['val_acc']:.2f} %, test {m['test_acc']:.2f} %)")


def collect(runs: list[Path], methods: set[str] | None, seeds: set[int] | None,
            ipcs: set[int] | None = None, objectives: tuple[str, ...] = ("kd", "ce")) -> list[dict]:
    out = []
    for top in runs:
        for point in points(top):
            if not (point / "results.jsonl").is_file():  # no student yet
                continue
            cfg = load_config(str(point / "config.yaml"))
            teacher = teacher_line(top, cfg)
            for r in settled(current(point, cfg, objectives), cfg):
                if ((methods and r["method"] not in methods) or (seeds is not None and r["seed"] not in seeds)
                        or (ipcs is not None and r["ipc"] not in ipcs)):
                    continue
                rec = {k: r[k] for k in FIELDS if r.get(k) is not None}
                rec["commit"] = rec.get("commit", "?")[:7]
                alpha_set = 0.0 if r["alpha"] == 0 else cfg.select.alpha  # α as asked (the tables' curves)
                out.append({**rec, "alpha_set": alpha_set, "teacher": teacher, "teacher_seed": cfg.seed,
                            "source": str(Path(top.name) / point.relative_to(top)), "date": str(date.today())})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name")
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--methods", default=None)
    ap.add_argument("--seeds", default=None)
    ap.add_argument("--ipc", default=None)
    args = ap.parse_args(argv)
    scope = SCOPES.get(args.name, {})
    methods = set(args.methods.split(",")) if args.methods else scope.get("methods")
    seeds = {int(s) for s in args.seeds.split(",")} if args.seeds else scope.get("seeds")
    ipcs = {int(s) for s in args.ipc.split(",")} if args.ipc else scope.get("ipc")
    recs = collect(args.runs, methods, seeds, ipcs, scope.get("objectives", ("kd", "ce")))
    path = Path("docs/records") / f"{args.name}.jsonl"
    old = {(r["source"], r["method"], r["model"], r["ipc"], r["seed"], r["objective"]): r
           for r in map(json.loads, path.read_text().splitlines())} if path.is_file() else {}
    for r in recs:  # a student already in the file keeps its first date
        k = (r["source"], r["method"], r["model"], r["ipc"], r["seed"], r["objective"])
        r["date"] = old.get(k, r)["date"]
    write_text(path, "".join(json.dumps(r) + "\n" for r in recs))
    print(f"{path}: {len(recs)} students from {len(args.runs)} run director{'ies' if len(args.runs) > 1 else 'y'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
