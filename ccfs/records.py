"""Evaluation records: one JSON line per student in OUT/results.jsonl.

A record's key is (method, model, IPC, α, seed, objective, settings), where `settings` is a
hash of everything a selection or a student depends on besides the pinned data / teacher /
distill sections of the run (those cannot change within a run directory), and `objective`
the student's loss: the run's eval.objective, or "ce" for the hard-label students that
eval.hard_labels adds beside the KD ones (same settings hash: adding them changes no KD
record). Records made with other settings stay in the file but are never mixed with the
current ones, and the tables compare one objective only (`main_protocol`). Each selection
folder keeps the settings it was made with (`settings.json`) and the hashes of the teacher
and the distilled images it was made over (`inputs.json`), both checked before it is reused;
a record whose student trained over other inputs than its selection's present ones (a
selection made again) is set aside in OUT/results.stale.jsonl and trained again.
"""
from __future__ import annotations

import hashlib
import json
import statistics
from collections import defaultdict
from pathlib import Path

from ccfs.selection import methods
from ccfs.artifacts import append_jsonl, read_json, write_json, write_text
from ccfs.distributed import is_main
from ccfs.config import Config, filter_recipe, to_dict
from ccfs.errors import ConfigError

FILE = "results.jsonl"
STALE = "results.stale.jsonl"  # records set aside (`set_aside`)


# Recipe fields a selection never depends on: when models are tested (filters are not
# tested by the recipe) and `compile` (filters always train eager, ccfs.api.filter_trainer).
NOT_FOR_FILTERS = ("eval_last", "compile")


def selection_settings(cfg: Config, run_name: str | None = None) -> dict:
    """What a selection of `run_name` depends on besides the run directory's pinned data,
    teacher and distilled images: the select.* options, and for a method that trains
    filters, the filters' resolved recipe, objective and architecture. With run_name None,
    what an evaluation record depends on: every select.* option and the students' recipe
    (not eval.hard_labels: its students are told apart by their objective, so a run's KD
    records are the same records with and without it)."""
    select = {k: v for k, v in to_dict(cfg.select).items() if k != "method"}
    filter_model = cfg.select.filter_model or cfg.eval.models[0]
    if run_name is None:
        return {"select": select, "train": to_dict(cfg.train), "objective": cfg.eval.objective,
                "filter_model": filter_model, "full_epochs": cfg.eval.full_epochs}
    select = {k: v for k, v in select.items() if k not in ("filter_steps", "filter_model")}  # in the recipe below
    if not methods.parse(run_name)[1].trains_filters:
        return {"select": select}
    train = {k: v for k, v in to_dict(filter_recipe(cfg)).items() if k not in NOT_FOR_FILTERS}
    return {"select": select, "train": train, "objective": cfg.eval.objective, "filter_model": filter_model}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def selection_changes(saved: dict, now: dict) -> list[str]:
    """What differs between a selection's saved settings and the present ones, as
    `key: saved -> now` lines (dotted keys); empty when they are the same."""
    a, b = _flat(saved), _flat(now)
    pairs = {k: (a.get(k, "(none)"), b.get(k, "(none)")) for k in a.keys() | b.keys()}
    return [f"{k}: {x} -> {y}" for k, (x, y) in sorted(pairs.items()) if x != y]


def settings_mismatch(folder: Path, saved: dict, now: dict) -> str:
    """The one-line error for a selection folder made with other settings: what differs,
    and how to go on."""
    changes = selection_changes(saved, now)
    hint = ("; to select at several IPCs over one directory give a list, e.g. select.ipc=[55,275], "
            "which gives each its own folder" if any(c.startswith("select.ipc:") for c in changes)
            else "; use a new out= directory or delete the folder to redo it")
    return f"{folder} was made with other select/train settings ({'; '.join(changes)}){hint}"


def check_selection_settings(folder: Path, cfg: Config, run_name: str, *, write: bool = False) -> None:
    """A selection folder made with other settings is never silently reused: a one-line
    error saying what differs. `write`: record the present settings where none are saved."""
    path = Path(folder) / "settings.json"
    now = json.loads(json.dumps(selection_settings(cfg, run_name)))  # as saved: tuples become lists
    if path.is_file():
        saved = read_json(path)
        if saved != now:
            raise ConfigError(settings_mismatch(Path(folder), saved, now))
    elif write:
        write_json(path, now)


# What a selection is made over besides its settings, by hash: a selection folder keeps them
# (inputs.json, written when it starts) and is reused only over the same ones.
INPUTS = {"teacher_sha1": "teacher", "distilled_sha1": "distilled images"}


def images_sha1(part) -> str | None:
    """A hash of a Split's images and labels (12 hex digits); None for no images. The
    `distilled_sha1` of selections and records: the distilled part a set uses."""
    if part is None or len(part) == 0:
        return None
    data = part.images.contiguous().cpu().numpy().tobytes() + part.labels.contiguous().cpu().numpy().tobytes()
    return hashlib.sha1(data).hexdigest()[:12]


def check_selection_inputs(folder: Path, now: dict, *, write: bool = False) -> None:
    """A selection folder made over another teacher or other distilled images than `now`
    ({"teacher_sha1", "distilled_sha1"}) is never reused: a one-line error saying which and
    how to go on. `write`: record `now` where nothing is saved (a selection that starts). A
    folder from before ccfs recorded its inputs is not checked."""
    path = Path(folder) / "inputs.json"
    if path.is_file():
        saved = read_json(path)
        changed = [f"{what} {saved.get(k)} -> {now.get(k)}" for k, what in INPUTS.items() if saved.get(k) != now.get(k)]
        if changed:
            raise ConfigError(f"{folder} was made over other inputs than this run's ({'; '.join(changed)}, by "
                              "sha1): delete the folder to make it again over the present ones (its students "
                              "then train again), or use a new out= directory")
    elif write:
        write_json(path, now)


def stale(found: list[dict], present: dict[tuple, dict]) -> list[dict]:
    """The records of `found` whose student trained on another selection than the present
    one: `present` maps (method, seed) to that selection's inputs.json and the sha1 of its
    selected_indices.json (`selection_sha1`); a record differing in any of these (a selection
    made again) is stale. Only what both sides hold is compared (records and selections
    from before the hashes pass)."""
    keys = (*INPUTS, "selection_sha1")
    out = []
    for r in found:
        now = present.get((r["method"], r["seed"])) or {}
        if any(r.get(k) is not None and now.get(k) is not None and r[k] != now[k] for k in keys):
            out.append(r)
    return out


def set_aside(out: Path, gone: list[dict]) -> None:
    """Move records `gone` from OUT/results.jsonl to OUT/results.stale.jsonl (kept, never
    read by a table): appended there first, then results.jsonl rewritten without them."""
    if not gone or not is_main():
        return
    drop = {json.dumps(r, sort_keys=True) for r in gone}
    kept_before = {json.dumps(r, sort_keys=True) for r in load(Path(out) / STALE)}  # a rewrite cut short
    for r in gone:
        if json.dumps(r, sort_keys=True) not in kept_before:
            append_jsonl(Path(out) / STALE, r)
    path = Path(out) / FILE
    kept = [line for line in path.read_text().splitlines()
            if line.strip() and _canonical(line) not in drop]
    write_text(path, "".join(line + "\n" for line in kept))


def _canonical(line: str) -> str | None:
    try:
        return json.dumps(json.loads(line), sort_keys=True)
    except json.JSONDecodeError:
        return None


def settings_hash(cfg: Config) -> str:
    return hashlib.sha1(json.dumps(selection_settings(cfg), sort_keys=True).encode()).hexdigest()[:12]


def key(method: str, model: str, ipc: int, alpha: float, *, seed: int, settings: str | None,
        objective: str = "kd") -> tuple:
    return (method, model, ipc, round(float(alpha), 4), seed, objective, settings)


def record_key(r: dict) -> tuple:
    return key(r["method"], r["model"], r["ipc"], r["alpha"], seed=r["seed"], settings=r.get("settings"),
               objective=objective_of(r))


def objective_of(r: dict) -> str:
    """A record's student loss, "kd" or "ce": its `objective` field; a record from before the
    field, its run's eval.objective (from its `config`), and KD where it holds neither (the
    committed records under docs/records/ are all KD students)."""
    return r.get("objective") or ((r.get("config") or {}).get("eval") or {}).get("objective") or "kd"


def main_protocol(found: list[dict]) -> list[dict]:
    """The records every table and choice compares: the KD students where any record is one,
    so that the hard-label students of eval.hard_labels never mix into a KD mean, pair or
    pick; all of them where none is (a run with eval.objective ce). Only the label-robust
    table (`ccfs.report.tables.label_robust_rows`) reads both."""
    kd = [r for r in found if objective_of(r) == "kd"]
    return kd if kd else list(found)


def load(path: Path) -> list[dict]:
    """Every readable record of a results file; a line cut by an interruption is skipped
    (its student is trained again)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def unique(found: list[dict]) -> list[dict]:
    """The first record of every key: a student recorded twice (two processes that raced on
    one run directory before it was locked) is counted once."""
    seen, out = set(), []
    for r in found:
        k = record_key(r)
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def current(out: Path, cfg: Config, objectives: tuple[str, ...] | None = None) -> list[dict]:
    """The records of the run directory made with the config's present settings, one per key,
    of the run's own objective (eval.objective), or of each of `objectives` (("kd", "ce"):
    with the hard-label students of eval.hard_labels)."""
    h, keep = settings_hash(cfg), objectives or (cfg.eval.objective,)
    return unique([r for r in load(Path(out) / FILE) if r.get("settings") == h and objective_of(r) in keep])


def done_keys(out: Path) -> set[tuple]:
    return {record_key(r) for r in load(Path(out) / FILE)}


def append(out: Path, record: dict) -> None:
    append_jsonl(Path(out) / FILE, record)


# ----------------------------------------------------------------------------- choices made on records

def choice_field(records: list[dict]) -> str:
    """The accuracy choices are made on: validation where every record has it, else test
    (a run without data.val_size; the report labels such choices as made on test)."""
    return "val_acc" if records and all(r.get("val_acc") is not None for r in records) else "final_acc"


def oracle_picks(records: list[dict]) -> dict[tuple, tuple[str, list[int]]]:
    """(model, ipc) -> (the window run with the best mean accuracy on the validation split,
    the seeds it was compared on). Values are compared on the seeds every value has (all of
    them unless eval.sweep_seeds trained the others on fewer); on the test set, as SelMatch's
    oracle, for runs without a validation split (the report says which). Ties: the first in
    record order."""
    records = main_protocol(records)  # a pick of the KD students, never of the hard-label ones
    field = choice_field(records)
    runs: dict[tuple, dict[str, dict[int, float]]] = defaultdict(dict)
    for r in records:
        if is_swept(r["method"]) and r.get(field) is not None:
            runs[(r["model"], r["ipc"])].setdefault(r["method"], {})[r["seed"]] = r[field]
    out = {}
    for key, by_run in runs.items():
        shared = sorted(set.intersection(*(set(v) for v in by_run.values())))

        def score(name: str) -> float:
            return statistics.fmean(by_run[name][s] for s in (shared or by_run[name]))
        best = max(by_run, key=score)
        out[key] = (best, shared or sorted(by_run[best]))
    return out


def oracle_window(records: list[dict]) -> dict[tuple, str]:
    """(model, ipc) -> the oracle's window run (`oracle_picks` without the seeds)."""
    return {k: v[0] for k, v in oracle_picks(records).items()}


def sweep_picks(recs: list[dict], run_names: list[str], first: list[int]) -> dict[tuple, str]:
    """(swept method, model) -> the value's run picked on validation over the seeds
    `first`, once every value of that method has a record on each of them (none before).
    Picked on the KD students (`records.main_protocol`): a hard-label student neither counts
    as a value's record nor takes part in the pick."""
    out, recs = {}, main_protocol(recs)
    for base in {methods.parse(n)[0] for n in run_names if methods.is_sweep(n)}:
        values = {n for n in run_names if methods.is_sweep(n) and methods.parse(n)[0] == base}
        mine = [r for r in recs if r["method"] in values and r["seed"] in first]
        for model in {r["model"] for r in mine}:
            have = {(r["method"], r["seed"]) for r in mine if r["model"] == model}
            if all((n, s) in have for n in values for s in first):
                (pick,) = oracle_window([r for r in mine if r["model"] == model]).values()  # one IPC
                out[(base, model)] = pick
    return out


def settled(recs: list[dict], cfg: Config) -> list[dict]:
    """The records less a swept method's whose pick is not settled yet (`sweep_picks`: not every
    value has trained on the seeds the pick is made on, eval.sweep_seeds' first or all of them):
    a pick over some of the values would be another method."""
    ev = cfg.eval
    first = list(ev.seeds[:ev.sweep_seeds]) if 0 < ev.sweep_seeds < len(ev.seeds) else list(ev.seeds)
    picks = sweep_picks(recs, methods.run_names(cfg.select), first)
    return [r for r in recs if not is_swept(r["method"]) or (methods.parse(r["method"])[0], r["model"]) in picks]


def method_entry(run_name: str):
    """The method table's entry of a run name (None: a name this version lacks)."""
    try:
        return methods.parse(run_name)[1]
    except ConfigError:
        return None


def is_swept(run_name: str) -> bool:
    """A run of a swept method (window_b0.3); records may hold names this version lacks."""
    entry = method_entry(run_name)
    return entry is not None and entry.sweep is not None
