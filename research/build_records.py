"""How docs/records/*.jsonl were made: the students of docs/results.md's accuracy tables, one
JSON line each, from the recorded logs and record files (run once, at commit dd5e06d, before
those files moved from bench/results/ to research/results/; kept as the record of it).

    python -m research.build_records

Every student line of a recorded log (`evaluate <method> <model> seed S: val V%, test T%
(N images, ...)`) or record of a kept results file becomes a record with the fields the
tables need (method, model, ipc, alpha realised, alpha_set asked for, seed, final_acc,
val_acc, images) and its provenance: `teacher`; `source`, the repository file holding the
line (its path after the move); `commit` and `date`, the commit that added that line to the
repository (git blame); `run_commit`, the commit the run itself recorded, where it did.

- docs/records/fmnist_sweep.jsonl: the students of bench/results/fmnist_sweep_records.jsonl
  (made by research/sweep_summary.py, whose docstring lists its inputs), each traced back to
  its line in fmnist_sweep.md or fmnist_sweep_filters1600_records.jsonl.
- docs/records/fmnist_ipc50.jsonl: fmnist-ipc50 with 19 200-step students, convnet_w32
  (fmnist_ipc50_s19200.md) and the DC benchmark ConvNet-128 (fmnist_ipc50_dc_convnet.md, its
  19 200-step sections).
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

LINE = re.compile(r"evaluate\s+(?P<method>\S+)\s+(?P<model>\S+) seed (?P<seed>\d+): "
                  r"val (?P<val>[\d.]+)%, test (?P<test>[\d.]+)% \((?P<images>\d+) images")
OLD, NEW = "bench/results/", "research/results/"
TEACHER = "convnet_w32_bn, 15 epochs on the 55 000-image pool (validation 91.46 %, test 91.16 %)"


def blame(path: str, line: int) -> tuple[str, str]:
    """(short commit, date) of the commit that added line `line` (1-based) of `path`."""
    out = subprocess.run(["git", "blame", "--porcelain", "-L", f"{line},{line}", "--", path],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    commit = out[0].split()[0][:7]
    t = next(x.split()[1] for x in out if x.startswith("committer-time "))
    date = subprocess.run(["date", "-u", "-d", f"@{t}", "+%Y-%m-%d"], capture_output=True, text=True,
                          check=True).stdout.strip()
    return commit, date


def log_lines(path: str, first: int = 1, last: int | None = None) -> list[tuple[int, re.Match]]:
    lines = Path(path).read_text().splitlines()
    return [(i, m) for i, text in enumerate(lines, 1) if first <= i <= (last or len(lines))
            for m in [LINE.search(text)] if m]


def alpha_set(method: str, alpha: float, asked: float) -> float:
    return asked if 0 < alpha < 1 else alpha


def from_log(path: str, ipc: int, asked: float, first: int = 1, last: int | None = None) -> list[dict]:
    out = []
    for i, m in log_lines(path, first, last):
        commit, date = blame(path, i)
        alpha = int(ipc * asked) / ipc if m["method"] in ("ccfs", "random_distilled") else 0.0
        out.append({"method": m["method"], "model": m["model"], "ipc": ipc, "alpha": alpha,
                    "alpha_set": alpha_set(m["method"], alpha, asked), "seed": int(m["seed"]),
                    "final_acc": float(m["test"]), "val_acc": float(m["val"]), "images": int(m["images"]),
                    "teacher": TEACHER, "source": path.replace(OLD, NEW), "commit": commit, "date": date})
    return out


def sweep() -> list[dict]:
    log = OLD + "fmnist_sweep.md"
    lines = log_lines(log)
    fs = OLD + "fmnist_sweep_filters1600_records.jsonl"
    fs_rows = [json.loads(t) for t in Path(fs).read_text().splitlines()]
    out = []
    for r in map(json.loads, Path(OLD + "fmnist_sweep_records.jsonl").read_text().splitlines()):
        key = (r["method"], r["model"], r["seed"], r["images"])
        if r["source"] == "log":
            (i, m), *_ = [(i, m) for i, m in lines
                          if (m["method"], m["model"], int(m["seed"]), int(m["images"])) == key
                          and abs(float(m["test"]) - r["final_acc"]) < 0.005]
            path, run_commit = log, None
        else:
            (i, f), *_ = [(i, f) for i, f in enumerate(fs_rows, 1) if (f["method"], f["model"], f["seed"],
                          f["images"]) == key and f["final_acc"] == r["final_acc"]]
            path, run_commit = fs, (f.get("commit") or "")[:7]
        commit, date = blame(path, i)
        rec = {k: r[k] for k in ("method", "model", "ipc", "alpha", "seed", "final_acc", "val_acc", "images")}
        rec["alpha_set"] = alpha_set(r["method"], r["alpha"], 0.1)
        rec.update(teacher=TEACHER, source=path.replace(OLD, NEW), commit=commit, date=date)
        if run_commit:
            rec["run_commit"] = run_commit
        out.append(rec)
    return out


def ipc50() -> list[dict]:
    dc = OLD + "fmnist_ipc50_dc_convnet.md"
    first = next(i for i, t in enumerate(Path(dc).read_text().splitlines(), 1) if t.startswith("## Three seeds with "
                 "the preset's present recipe"))
    return (from_log(OLD + "fmnist_ipc50_s19200.md", 50, 0.2)
            + [r for r in from_log(dc, 50, 0.2, first) if r["model"] == "convnet_dc"])


def write(path: str, rows: list[dict]) -> None:
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{path}: {len(rows)} records")


if __name__ == "__main__":
    write("docs/records/fmnist_sweep.jsonl", sweep())
    write("docs/records/fmnist_ipc50.jsonl", ipc50())
