"""The accuracy tables of docs/results.md and README.md, generated from the committed records.

    python -m ccfs.report.results_page            # rewrite the generated blocks of both pages, and the figures
    python -m ccfs.report.results_page --check    # exit 1, naming the blocks, where a page differs

Run it from the repository root (or give --root). A generated block is everything between a
line `<!-- generated: NAME -->` and the next `<!-- end generated -->`; the rest of a page is
prose, kept as written. The records are plain JSON lines under docs/records/, one student
each (method, model, ipc, alpha, seed, final_acc, val_acc, and where it came from: teacher,
source, commit, date), read as they are and grouped by those fields. The tables are the run
report's own (`ccfs.report.tables`); a difference is paired by seed and called a lead only
where its 95 % interval excludes zero (`tables.lead`). The figures under docs/figures/ that
FIGURES names are drawn from the records too (the run report's plot); --check reads only the
pages' text.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ccfs.config import load_config
from ccfs.records import load
from ccfs.report import tables

RECORDS = Path("docs/records")
PAGES = (Path("docs/results.md"), Path("README.md"))
# Fashion-MNIST's 60 000 train images less the presets' 5 000-image validation split
POOL, CLASSES = 55_000, 10
BLOCK = re.compile(r"(?P<head>^<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(?P<end>^<!-- end generated -->)",
                   re.S | re.M)


def read(root: Path, name: str, model: str | None = None) -> list[dict]:
    """The records of docs/records/NAME.jsonl (of one student model if given)."""
    path = root / RECORDS / f"{name}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no records file {path}")
    return [r for r in load(path) if model is None or r["model"] == model]


def ratio(records: list[dict]) -> dict[int, float]:
    """IPC -> its share of the train pool, in %."""
    return {r["ipc"]: 100.0 * r["ipc"] * CLASSES / POOL for r in records}


def _listing(values: list) -> str:
    return ", ".join(map(str, values))


def provenance(records: list[dict], name: str) -> str:
    """One paragraph: which records, how many students of which methods and seeds, when and at
    which commits they were recorded, with which teacher."""
    # a swept method's runs (window_b0.1, ...) under its own name, as the report's order names them
    methods = sorted({r["method"].rpartition("_b")[0] if tables.is_swept(r["method"]) else r["method"]
                      for r in records})
    seeds = sorted({r["seed"] for r in records})
    dates = sorted({r.get("date", "?") for r in records})
    commits = sorted({r.get("commit", "?") for r in records})
    when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
    at = (f"commit{'s' * (len(commits) > 1)} {_listing(commits)}" if len(commits) <= 3 else
          f"{len(commits)} commits (each record names its own)")
    teachers = sorted({r.get("teacher", "not recorded") for r in records})
    return (f"Records: `{RECORDS / name}.jsonl`, {len(records)} students ({_listing(methods)}; "
            f"seeds {_listing(seeds)}), recorded {when} at {at}. Teacher: {'; '.join(teachers)}.")


def drop_empty_columns(table: str) -> str:
    """A markdown table without the columns that are '–' in every row."""
    rows = [line.strip("|").split("|") for line in table.splitlines()]
    keep = [i for i in range(len(rows[0])) if any(row[i].strip() != "–" for row in rows[2:])]
    return "\n".join("|" + "|".join(row[i] for i in keep) + "|" for row in rows)


def _tables(records: list[dict], name: str) -> str:
    return "\n\n".join([provenance(records, name), drop_empty_columns(tables.results_table(records)),
                        tables.lead_table(records, ratio(records))])


def ipc50(root: Path) -> str:
    return _tables(read(root, "fmnist_ipc50", "convnet_w32"), "fmnist_ipc50")


def dc_convnet(root: Path) -> str:
    return _tables(read(root, "fmnist_ipc50", "convnet_dc"), "fmnist_ipc50")


def headline(root: Path) -> str:
    """The sweep from one command and one commit: KD results with leads, and the hard-label
    students' IOR / HLR / LRS (the set against the teacher)."""
    records = read(root, "fmnist_headline")
    share = ratio(records)
    robust = tables.label_robust_table(records)
    return "\n\n".join([provenance(records, "fmnist_headline"), tables.ratio_table(records, share),
                        "CCFS minus each method, paired by seed (test; mean ± half-width of the 95 % interval):",
                        tables.lead_table(records, share)] +
                       (["Not paired: " + "; ".join(refused) + "."] if (refused := tables.unpaired(records)) else []) +
                       (["The set against the teacher: hard-label students beside the KD ones (docs/method.md §3):",
                         robust] if robust else []))


def distilled_part(root: Path) -> str:
    """CCFS against self-evolved selection over several teachers (docs/method.md's rule)."""
    records = read(root, "distilled_part")
    return "\n\n".join([provenance(records, "distilled_part"),
                        tables.teacher_table(records, "ccfs", "self_evolved", ratio(records))])


def readme(root: Path) -> str:
    """The README's results: the headline sweep (`fmnist-sweep`, one command, one commit), KD
    students, CCFS and random real images at each share of the data where both have every seed
    of the preset, CCFS minus random and minus self-evolved selection paired by seed; the
    full-data student; and the preset's shares still to land."""
    cfg = load_config("fmnist-sweep")
    records = tables.main_protocol(read(root, "fmnist_headline"))
    finals = {(m, i): v for (m, _, i, _), v in tables.group(records).items()}
    diffs = {(d[0], d[2]): d[4:] for d in tables.paired_differences(records)}
    share, seeds = ratio(records), len(cfg.eval.seeds)
    landed = sorted(i for i in share if all(len(finals.get((m, i), [])) == seeds for m in ("ccfs", "random")))
    lines = [("| `ccfs run fmnist-sweep` | CCFS % | random real % | CCFS − random (95 % interval) | "
              "CCFS − self-evolved |"), "|---|---|---|---|---|"]
    for i in landed:
        other = tables.lead(*diffs[("self_evolved", i)]) if ("self_evolved", i) in diffs else "–"
        lines.append(f"| {share[i]:.0f} % (IPC {i}) | {tables.fmt(finals[('ccfs', i)])} | "
                     f"{tables.fmt(finals[('random', i)])} | {tables.lead(*diffs[('random', i)])} | {other} |")
    full = [v for (m, _), v in finals.items() if tables.is_full(m)]
    if full:
        pool = f"{POOL:,}".replace(",", " ")
        lines += ["", f"The full data ({pool} images, the same step budget): {tables.fmt(full[0])}."]
    todo = [i for i in cfg.select.ipc if i not in landed]
    if todo:
        lines += ["", "Still training (the sweep lands in parts): " +
                  ", ".join(f"{100 * i * CLASSES / POOL:.0f} % (IPC {i})" for i in todo) + "."]
    return "\n".join(lines)


def readme_distilled(root: Path) -> str:
    """The README's answer to "does the distilled part help?": CCFS minus self-evolved selection
    at each ratio, the mean over teachers with its interval and verdict."""
    records = read(root, "distilled_part")
    share = ratio(records)
    rows = tables.across_teachers(records, "ccfs", "self_evolved")
    lines = [("| CCFS − self-evolved (the same curricula, no distilled part) | teachers × seeds | test, mean over "
              "teachers (95 % interval) |"), "|---|---|---|"]
    lines += [f"| IPC {r['ipc']} ({share[r['ipc']]:.0f} %) | {r['teachers']} × {r['pairs'] // r['teachers']} | "
              f"{tables.lead(*r['over_teachers'], unit='teacher')} |" for r in rows]
    return "\n".join(lines)


def headline_figure(root: Path, path: Path) -> None:
    """The headline sweep's accuracy against the share of the data, KD students, with each
    curve's 95 % band over seeds and the full-data student as a line."""
    from ccfs.report import plots  # matplotlib only where a figure is drawn

    records = tables.main_protocol(read(root, "fmnist_headline"))
    curves, full = tables.ratio_curves(records, ratio(records))
    plots.accuracy_vs_ratio(curves, full, path)


FIGURES = {Path("docs/figures/fmnist_headline_accuracy_vs_ratio.png"): headline_figure}

BLOCKS = {"ipc50": ipc50, "dc-convnet": dc_convnet, "readme-results": readme,
          "headline": headline, "distilled-part": distilled_part, "readme-distilled": readme_distilled}


def render(text: str, root: Path) -> str:
    """The page with every generated block remade from the records."""
    def fill(m: re.Match) -> str:
        if m["name"] not in BLOCKS:
            raise ValueError(f"unknown generated block {m['name']!r} (known: {', '.join(BLOCKS)})")
        return m["head"] + BLOCKS[m["name"]](root) + "\n" + m["end"]
    return BLOCK.sub(fill, text)


def differing(text: str, root: Path) -> list[str]:
    """The names of the blocks whose text differs from what the records give."""
    now = {m["name"]: m["body"] for m in BLOCK.finditer(text)}
    want = {m["name"]: m["body"] for m in BLOCK.finditer(render(text, root))}
    return [name for name in now if now[name] != want[name]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 where a page differs")
    ap.add_argument("--root", type=Path, default=Path("."), help="the repository root (default: here)")
    args = ap.parse_args(argv)
    stale = []
    for page in PAGES:
        path = args.root / page
        text = path.read_text()
        if not BLOCK.search(text):
            raise SystemExit(f"{path}: no generated block")
        if args.check:
            stale += [f"{page}: {name}" for name in differing(text, args.root)]
        elif render(text, args.root) != text:
            path.write_text(render(text, args.root))
            print(f"rewrote {path}")
    if not args.check:
        for path, draw in FIGURES.items():
            draw(args.root, args.root / path)
    if stale:
        print("out of date with docs/records/ (run python -m ccfs.report.results_page): " + "; ".join(stale),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
