"""Stages and `ccfs run`: each stage is a function of a `Run`; `run` chains them.

Before any work, the whole configuration is checked against the data (budgets, score
files, architectures), so a bad config fails in seconds, not after the teacher.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from itertools import product
from pathlib import Path

import yaml

from ccfs import api, distributed, records, runlock
from ccfs.artifacts import write_text
from ccfs.config import Config, dump_config, load_config, to_dict
from ccfs.context import Run, check_format, write_format
from ccfs.distill.run import distill_stage
from ccfs.errors import ConfigError
from ccfs.evaluate.run import evaluate_stage
from ccfs.export import export_stage
from ccfs.models import MODELS, load_checkpoint
from ccfs.report.run import report_stage, sweep_report
from ccfs.report.tables import summary_table, verdict_lines
from ccfs.scores import COMPUTED, RECORDED
from ccfs.selection import methods
from ccfs.selection.run import select_stage
from ccfs.teacher.run import teacher_stage
from ccfs.teacher.score_files import load_dataset_scores


def preflight(run: Run) -> None:
    """Checks that need the dataset but no training."""
    cfg = run.cfg
    for name in [cfg.teacher.model, *cfg.eval.models] + ([cfg.select.filter_model] if cfg.select.filter_model else []):
        if name not in MODELS:
            raise ConfigError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    api.check_budget(run.data, cfg.select.ipc)
    if cfg.teacher.checkpoint and not (run.teacher_dir / "metrics.json").is_file():
        load_checkpoint(api.new_model(cfg.teacher.model, run.data, 0), cfg.teacher.checkpoint, arch=cfg.teacher.model,
                        normalization=(run.data.mean, run.data.std))
    imported = load_dataset_scores(cfg.teacher.scores, run.data)[0] if cfg.teacher.scores else None
    _check_score_available(run, imported)


def _check_score_available(run: Run, imported: str | None) -> None:
    """Every score a method ranks by (select.score, or a method's own, e.g. forgetting) must
    be recorded by the teacher run, imported with teacher.scores, or computed (logits)."""
    for score in sorted({s for m in run.cfg.select.method if (s := methods.score_of(m, run.cfg.select))}):
        _check_one_score(run, score, imported)


def _check_one_score(run: Run, score: str, imported: str | None) -> None:
    cfg = run.cfg
    if score in COMPUTED:
        return
    if (run.teacher_dir / "metrics.json").is_file():
        run.teacher.hardness(score)  # a finished teacher stage: fails now, naming the scores it holds
    elif score not in RECORDED and imported != score:
        raise ConfigError(f"select.score={score} cannot be recorded while training; import it with "
                          "teacher.scores=FILE")
    elif cfg.teacher.checkpoint and imported != score:
        have = f"teacher.scores holds {imported!r}" if imported else "no teacher.scores file is given"
        raise ConfigError(f"an imported teacher (teacher.checkpoint) brings no training dynamics and {have}: "
                          f"give teacher.scores=FILE with {score!r} scores, or use select.score=logits")


def _stages():
    return {"teacher": teacher_stage, "distill": distill_stage, "select": select_stage,
            "evaluate": evaluate_stage, "export": export_stage, "report": report_stage}


def run_all(run: Run) -> None:
    t0 = time.perf_counter()
    for name, stage in _stages().items():
        _run_one(name, stage, run)
    if distributed.is_main():
        print(f"\n== {run.cfg.data.name}, IPC {run.cfg.select.ipc}: final-epoch test accuracy "
              f"(mean ± std over seeds) ==")
        found = records.current(run.out, run.cfg)
        print(summary_table(found))
        print("\n".join(verdict_lines(found)))
        print(f"total {time.perf_counter() - t0:.0f}s; report: {run.out / 'report.md'}")


ALL_RANKS = ("teacher", "distill", "select", "evaluate")  # the rest: rank 0 while the others wait


def _run_one(name: str, stage, run: Run) -> None:
    """Under torchrun, teacher, distill and select train and infer data-parallel on every
    rank (rank 0 writes), evaluate trains a student per rank; export and report run on
    rank 0 alone."""
    if name in ALL_RANKS:
        distributed.barrier()
        stage(run)
        distributed.barrier()
    else:
        distributed.on_main(lambda: stage(run))


def sweep_points(cfg: Config) -> list[Config]:
    """One config per (IPC, α) of the select.ipc × select.alpha lists, each with its own run
    directory OUT/ipc<I>_a<α>; a config without lists is its own single point (in OUT). A
    list of one is a sweep of one point, so that more methods or seeds for one point of a
    sweep land in that point's directory. Methods that ignore α run at the first α of each
    IPC only, and `full` at the first point only."""
    if not is_sweep(cfg):
        return [cfg]
    ipcs = cfg.select.ipc if isinstance(cfg.select.ipc, list) else [cfg.select.ipc]
    alphas = cfg.select.alpha if isinstance(cfg.select.alpha, list) else [cfg.select.alpha]
    points = []
    for k, (ipc, alpha) in enumerate(product(ipcs, alphas)):
        keep = [m for m in cfg.select.method if (k == 0 or not methods.get(m).full_data)
                and (alpha == alphas[0] or methods.get(m).distilled in ("alpha", "own"))]
        if keep:
            points.append(replace(cfg, out=str(Path(cfg.out) / f"ipc{ipc}_a{alpha:g}"),
                                  select=replace(cfg.select, ipc=ipc, alpha=alpha, method=keep)))
    return points


def is_sweep(cfg: Config) -> bool:
    return isinstance(cfg.select.ipc, list) or isinstance(cfg.select.alpha, list)


def other_points(out: Path, points: list[Config]) -> list[Config]:
    """The configs of the point directories already in a sweep's OUT that `points` does not
    name (from earlier invocations over the same OUT), for the sweep report."""
    named = {Path(p.out).resolve() for p in points}
    found = sorted(p.parent for p in Path(out).glob("ipc*_a*/config.yaml") if p.parent.resolve() not in named)
    return [replace(load_config(str(d / "config.yaml")), out=str(d)) for d in found]


SWEEP_SHARED = ("teacher", "distill")  # stages a sweep runs once, in OUT, for every point


def run_sweep(stage: str, cfg: Config, points: list[Config]) -> None:
    """select.ipc / select.alpha lists: the teacher and the distilled images (as many per
    class as the largest point needs) once in OUT; then the stages asked for, point by point,
    each point in its own run directory over the shared ones, so that a point's results and
    report land before the next point starts; the sweep report in OUT is redrawn after every
    point."""
    top = Run(replace(cfg, select=points[0].select))
    top.data  # noqa: B018  (loaded once, shared by every point)
    runs = [top.sibling(p) for p in points]
    biggest = max(runs, key=lambda r: methods.distilled_needed(r.cfg.select, r.cfg.select.cpc))
    held = contextlib.ExitStack()

    def start() -> None:
        held.enter_context(runlock.hold(top.out))
        print(top.data.summary() + f"; sweep of {len(points)} point{'s' * (len(points) > 1)}")
        _check_same_run(top)  # teacher/ and distill/ are OUT's
        for r in runs:
            _check_same_run(r)
            preflight(r)
            _save(r.cfg, r.out)
        _save(cfg, top.out)

    with held:
        distributed.on_main(start)
        asked = {name: fn for name, fn in _stages().items() if stage in ("run", name)}
        for name in SWEEP_SHARED:
            if name in asked:
                _run_one(name, asked[name], biggest)  # its teacher/ and distill/ are OUT's
        per_point = {name: fn for name, fn in asked.items() if name not in SWEEP_SHARED}
        if per_point:
            shown = sorted(runs + [top.sibling(c) for c in other_points(top.out, points)],
                           key=lambda r: (r.cfg.select.ipc, r.cfg.select.alpha))  # every point in OUT
            for r in runs:
                for name, fn in per_point.items():
                    _run_one(name, fn, r)
                if "report" in per_point:
                    distributed.on_main(lambda: sweep_report(top.out, shown))
        if stage == "run" and distributed.is_main():
            print(f"\n== {cfg.data.name}: final-epoch test accuracy (mean ± std over seeds) ==")
            print(summary_table([x for r in runs for x in records.current(r.out, r.cfg)]))


def run_stage(stage: str, cfg: Config) -> None:
    hard = cfg.eval.hard_labels if isinstance(cfg.eval.hard_labels, list) else []
    for name in [*cfg.select.method, *hard]:
        methods.get(name)  # an unknown method fails before anything is loaded
    points = sweep_points(cfg)
    if is_sweep(cfg):
        return run_sweep(stage, cfg, points)
    cfg = points[0]
    run = Run(cfg)
    held = contextlib.ExitStack()  # rank 0 holds the run directory; the others follow it

    def start() -> None:
        held.enter_context(runlock.hold(run.out))
        _check_same_run(run)
        print(run.data.summary())
        preflight(run)
        _save(cfg, run.out)

    with held:
        distributed.on_main(start)
        if stage == "run":
            run_all(run)
        else:
            _run_one(stage, _stages()[stage], run)


# Sections whose change invalidates finished artifacts in an existing run directory, and
# the artifacts that depend on them ("*": all of them).
PINNED = {"data": "*", "seed": "*", "teacher": "teacher/metrics.json", "distill": "distill/meta.json"}
FINISHED = ("teacher/metrics.json", "distill/meta.json", "select/*/selected_indices.json",
            "select/*/seed*/selected_indices.json", "results.jsonl")


def _finished(out, pattern: str) -> bool:
    return any(any(out.glob(p)) for p in (FINISHED if pattern == "*" else (pattern,)))


def _save(cfg: Config, out: Path) -> None:
    """The resolved config and the run-directory format, next to the artifacts."""
    write_text(Path(out) / "config.yaml", dump_config(cfg))
    write_format(out)


def _check_same_run(run: Run) -> None:
    """A run directory of another format is refused; a changed pinned section only where
    finished artifacts depend on it (a run that failed before finishing anything can be
    retried with other settings)."""
    check_format(run.out)
    path = run.out / "config.yaml"
    if not path.is_file():
        return
    old = yaml.safe_load(path.read_text()) or {}
    new = to_dict(run.cfg)
    changed = [k for k, needs in PINNED.items() if old.get(k) != new.get(k) and _finished(run.out, needs)]
    if changed:
        raise ConfigError(f"{run.out} holds a run made with other {', '.join(changed)} settings; "
                          "use a new out= directory (or delete the old one) so its artifacts are not mixed")
