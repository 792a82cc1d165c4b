"""Evaluation records: one JSON line per student in OUT/results.jsonl.

A record's key is (method, model, IPC, α, seed, settings), where `settings` is a hash of
everything a selection or a student depends on besides the pinned data / teacher / distill
sections of the run (those cannot change within a run directory). Records made with other
settings stay in the file but are never mixed with the current ones.
"""
from __future__ import annotations

import hashlib
import json
import statistics
from collections import defaultdict
from pathlib import Path

from ccfs import methods
from ccfs.artifacts import append_jsonl
from ccfs.config import Config, to_dict
from ccfs.errors import ConfigError

FILE = "results.jsonl"


# Recipe fields that only decide when a model is tested: they change evaluation records,
# never a selection (filters are not tested by the recipe).
TEST_ONLY = ("eval_every", "eval_last")
# Recipe fields a selection never depends on: the test-only ones, and `compile` (filters
# always train eager, ccfs.api.filter_trainer).
NOT_FOR_FILTERS = (*TEST_ONLY, "compile")


# Settings added after run directories existed, at the value that keeps the earlier
# behaviour: left out while they hold it, so older selections, records and run
# directories still match (and keep their hash); any other value is part of the settings.
# "recipe" holds the fields of every training recipe (train, teacher.train).
ADDED_LATER = {"select": {"quota": "equal", "filter_steps": None}, "recipe": {"compile": False}}


def without_added_later(d: dict, section: str) -> dict:
    """A config section's dict without the ADDED_LATER keys that hold their earlier value."""
    same = ADDED_LATER[section]
    return {k: v for k, v in d.items() if not (k in same and v == same[k])}


# The filters' own length (select.*): a selection made without filters never depends on it.
FILTER_LENGTH = ("filter_steps", "filter_epochs")


def selection_settings(cfg: Config, run_name: str | None = None) -> dict:
    """What a selection (or, with run_name None, an evaluation record) depends on. A
    selection that trains filters depends on the filters' recipe, not on the students'
    length once `select.filter_steps` / `filter_epochs` set the filters' own."""
    out = {"select": {k: v for k, v in without_added_later(to_dict(cfg.select), "select").items()
                      if k != "method"}}
    if run_name is None or methods.parse(run_name)[1].trains_filters:
        train = without_added_later(to_dict(cfg.train), "recipe")
        if run_name is not None:
            train = {k: v for k, v in train.items() if k not in NOT_FOR_FILTERS}
        out.update({"train": train, "objective": cfg.eval.objective,
                    "filter_model": cfg.select.filter_model or cfg.eval.models[0]})
    if run_name is None:
        out["full_epochs"] = cfg.eval.full_epochs
        return out
    return _as_selection_sees(out)


def _as_selection_sees(d: dict) -> dict:
    """Selection settings reduced to what the selection uses: NOT_FOR_FILTERS recipe keys
    dropped (files written before they were split off carry them), the filters' length applied to
    the recipe, and that length dropped where no filters train. Idempotent, so saved and
    present settings compare after it."""
    select = dict(d["select"])
    if "train" not in d:
        return {**d, "select": {k: v for k, v in select.items() if k not in FILTER_LENGTH}}
    train = {k: v for k, v in d["train"].items() if k not in NOT_FOR_FILTERS}
    if select.get("filter_epochs") is not None:
        train.update(epochs=select["filter_epochs"], steps=0)
    elif select.get("filter_steps") is not None:
        train.update(steps=select["filter_steps"])
    return {**d, "select": select, "train": train}


def same_selection_settings(saved: dict, now: dict) -> bool:
    """A selection's saved settings.json against the present ones, both reduced to what the
    selection uses."""
    return _as_selection_sees(saved) == _as_selection_sees(now)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def selection_changes(saved: dict, now: dict) -> list[str]:
    """What differs between a selection's saved settings and the present ones, as
    `key: saved -> now` lines (dotted config keys), after both are reduced to what the
    selection uses; empty when they are the same."""
    a, b = _flat(_as_selection_sees(saved)), _flat(_as_selection_sees(now))
    pairs = {k: (a.get(k, "(default)"), b.get(k, "(default)")) for k in a.keys() | b.keys()}
    return [f"{k}: {x} -> {y}" for k, (x, y) in sorted(pairs.items()) if x != y]


def settings_mismatch(folder: Path, saved: dict, now: dict) -> str:
    """The one-line error for a selection folder made with other settings: what differs,
    and how to go on."""
    changes = selection_changes(saved, now)
    hint = ("; to select at several IPCs over one directory give a list, e.g. select.ipc=[55,275], "
            "which gives each its own folder" if any(c.startswith("select.ipc:") for c in changes)
            else "; use a new out= directory or delete the folder to redo it")
    return f"{folder} was made with other select/train settings ({'; '.join(changes)}){hint}"


def settings_hash(cfg: Config) -> str:
    return hashlib.sha1(json.dumps(selection_settings(cfg), sort_keys=True).encode()).hexdigest()[:12]


def key(method: str, model: str, ipc: int, alpha: float, *, seed: int, settings: str | None) -> tuple:
    return (method, model, ipc, round(float(alpha), 4), seed, settings)


def record_key(r: dict) -> tuple:
    return key(r["method"], r["model"], r["ipc"], r["alpha"], seed=r["seed"], settings=r.get("settings"))


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


def current(out: Path, cfg: Config) -> list[dict]:
    """The records of the run directory made with the config's present settings, one per key."""
    h = settings_hash(cfg)
    return unique([r for r in load(Path(out) / FILE) if r.get("settings") == h])


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
