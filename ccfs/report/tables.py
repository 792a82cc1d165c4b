"""Result tables as pure functions of the records in results.jsonl (no training here)."""
from __future__ import annotations

import math
import statistics
from collections import defaultdict

from ccfs.selection import methods
from ccfs.records import (choice_field, is_swept, main_protocol, method_entry, objective_of,  # noqa: F401 (re-exported)
                          oracle_picks, oracle_window)


def mean_std(values: list[float]) -> tuple[float, float, int]:
    n = len(values)
    return (statistics.fmean(values), statistics.stdev(values) if n > 1 else 0.0, n)


def fmt(values: list[float], note: str = "") -> str:
    """mean ± std (n, note); one value has no spread: 'mean (n=1)'."""
    if not values:
        return "–"
    m, s, n = mean_std(values)
    return f"{m:.2f} (n=1{note})" if n == 1 else f"{m:.2f} ± {s:.2f} (n={n}{note})"


def group(records: list[dict], field: str = "final_acc") -> dict[tuple, list[float]]:
    """(method, model, ipc, alpha) -> values of `field` over seeds, of one objective: the KD
    students, never mixed with the hard-label ones of eval.hard_labels (`main_protocol`)."""
    out: dict[tuple, list[float]] = defaultdict(list)
    for r in main_protocol(records):
        if r.get(field) is not None:  # best_last20_acc is None where only the final epoch was tested
            out[(r["method"], r["model"], r["ipc"], round(r["alpha"], 4))].append(r[field])
    return out


def _rank(run_name: str) -> tuple:
    """Report order: the order of the method table (unknown names last), then the run name."""
    order = list(methods.METHODS)
    base = run_name.rpartition("_b")[0] if run_name not in order else run_name
    return (order.index(base) if base in order else len(order), run_name)


def results_table(records: list[dict]) -> str:
    """Markdown table: one row per (method, model, ipc, alpha); final-epoch test accuracy
    (the reported figure) beside the validation accuracy (where choices are made)."""
    finals, bests, vals = group(records, "final_acc"), group(records, "best_last20_acc"), group(records, "val_acc")
    picks = oracle_picks(records)
    oracle = {(k, v[0]) for k, v in picks.items()}
    on = "validation" if choice_field(records) == "val_acc" else "TEST acc (no validation split)"
    lines = ["| method | model | IPC | α | final-epoch test acc % (primary) | validation acc % (choices) "
             "| best of last 20 % epochs (test), paper's metric |",
             "|---|---|---|---|---|---|---|"]
    for key in sorted(finals, key=lambda k: (_rank(k[0]), k[1], k[2])):
        method, model, ipc, alpha = key
        label = method + (f" ← oracle window (β picked on {on}{_seeds_note(picks[(model, ipc)][1], finals[key])})"
                          if ((model, ipc), method) in oracle else "")
        lines.append(f"| {label} | {model} | {ipc} | {alpha:g} | {fmt(finals[key])} | {fmt(vals.get(key, []))} "
                     f"| {fmt(bests.get(key, []))} |")
    return "\n".join(lines)


def _seeds_note(compared: list[int], picked: list[float]) -> str:
    """", seed 0" where the values were compared on fewer seeds than the pick reports."""
    if len(compared) >= len(picked):
        return ""
    return f", seed{'s' * (len(compared) > 1)} {', '.join(map(str, compared))}"


def _pairs_with(run_name: str, ipc: int, alpha: float, other: tuple) -> bool:
    """Whether a record group `other` = (method, model, ipc, α) is compared with the
    reference at (ipc, α): the same IPC, or the full-data student (it has no IPC); a method
    with an α part only at the reference's α."""
    method, _, o_ipc, o_alpha = other
    entry = method_entry(method)
    if is_full(method):
        return True
    if o_ipc != ipc:
        return False
    return entry is None or entry.distilled not in ("alpha", "own") or o_alpha == alpha


def _seed_pairs(records: list[dict], reference: str, field: str):
    """(other's key, reference's (model, ipc, α), the seeds that pair, the seeds refused) for
    every comparison of `reference` with another record group (see `paired_differences`)."""
    by: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for r in main_protocol(records):
        if r.get(field) is not None:
            by[(r["method"], r["model"], r["ipc"], round(r["alpha"], 4))][r["seed"]] = r
    for (_, model, ipc, alpha), ref in sorted(((k, v) for k, v in by.items() if k[0] == reference),
                                              key=lambda kv: kv[0]):
        for key, other in sorted(by.items(), key=lambda kv: (_rank(kv[0][0]), *kv[0][1:])):
            if key[0] == reference or key[1] != model or not _pairs_with(key[0], ipc, alpha, key):
                continue
            shared = sorted(set(ref) & set(other))
            same = [s for s in shared if pair_over(ref[s], other[s])]
            yield key, (model, ipc, alpha), [(ref[s][field], other[s][field]) for s in same], \
                [s for s in shared if s not in same]


def pair_over(a: dict, b: dict) -> bool:
    """Two students pair only over one teacher and one distilled set: the same `teacher_sha1`
    and, where both hold distilled images, the same `distilled_sha1`. A record without a hash
    (a set without distilled images, or one recorded before the hash) pairs with either."""
    return all(a.get(k) is None or b.get(k) is None or a[k] == b[k] for k in ("teacher_sha1", "distilled_sha1"))


def paired_differences(records: list[dict], reference: str = "ccfs",
                       field: str = "final_acc") -> list[tuple[str, str, int, float, float, float, int]]:
    """(method, model, ipc, α, mean, std, n) of `reference` minus each other method, paired
    by seed: the same student seed and model, the same IPC (the full-data student pairs
    with every IPC), and for methods with a distilled part the same α; the reference at
    several α (an α sweep) gets rows for each. Only seeds both have count, and only over one
    teacher and distilled set (`pair_over`; `unpaired` lists what is refused). KD students only
    where there are any (`main_protocol`): a hard-label student never pairs with a KD one."""
    out = []
    for key, (model, ipc, alpha), pairs, _ in _seed_pairs(records, reference, field):
        if pairs:
            out.append((key[0], model, ipc, alpha, *mean_std([a - b for a, b in pairs])))
    return out


def unpaired(records: list[dict], reference: str = "ccfs") -> list[str]:
    """One line per comparison whose seeds were refused as pairs: the two students of a seed
    were made over different teachers, or over different distilled images."""
    return [f"{reference} − {key[0]} ({model}, IPC {ipc}): seed{'s' * (len(refused) > 1)} "
            f"{', '.join(map(str, refused))} not paired: the two students had different teachers or distilled images"
            for key, (model, ipc, _), _, refused in _seed_pairs(records, reference, "final_acc") if refused]


def paired_table(records: list[dict], reference: str = "ccfs") -> str:
    """Markdown table of `paired_differences` on test and on validation: each the mean with
    its 95 % interval and the verdict (`lead`), and about how many seeds would resolve the
    test difference at its spread; "" without pairs."""
    test = paired_differences(records, reference)
    if not test:
        return ""
    val = {row[:4]: row[4:] for row in paired_differences(records, reference, "val_acc")}
    lines = [f"| {reference} minus | model | IPC | {reference} α | test, paired (95 % interval) | "
             "validation, paired (95 % interval) | seeds | seeds to resolve the test difference |",
             "|---|---|---|---|---|---|---|---|"]
    for m, model, ipc, alpha, mean, std, n in test:
        v = val.get((m, model, ipc, alpha))
        lines.append(f"| {m} | {model} | {ipc} | {alpha:g} | {lead(mean, std, n)} | "
                     f"{lead(*v) if v else '–'} | {n} | {seeds_to_resolve(mean, std, n)} |")
    return "\n".join(lines)


def verdict_lines(records: list[dict], reference: str = "ccfs") -> list[str]:
    """One line per comparison of `reference` with another method, paired by seed, on test:
    what `ccfs run` prints under its table."""
    return [f"{reference} − {m} ({model}, IPC {ipc}): {lead(mean, std, n)} (test, 95 % interval)"
            for m, model, ipc, _, mean, std, n in paired_differences(oracle_only(records), reference)]


def seeds_to_resolve(mean: float, std: float, n: int) -> str:
    """About how many paired seeds would put a difference of `mean` with spread `std` clear
    of zero at 95 % (a hint: the spread itself is estimated from n seeds)."""
    half = interval95(mean, std, n)
    if n >= 2 and (mean - half > 0 or mean + half < 0):
        return f"{n} (resolved)"
    if mean == 0 or std == 0:
        return "–"
    for k in range(2, 201):
        if t975(k - 1) * std / k ** 0.5 < abs(mean):
            return f"about {k}"
    return "over 200"


def is_full(run_name: str) -> bool:
    """The full-data student: it has no IPC, so it pairs with and fills every one."""
    entry = method_entry(run_name)
    return entry is not None and entry.full_data


def _group_by_asked_alpha(records: list[dict]) -> dict[tuple, list[float]]:
    """`group` with α as asked for (`alpha_set`, where the caller knows it), not as realised."""
    return group([{**r, "alpha": r.get("alpha_set", r["alpha"])} for r in records])


def oracle_only(records: list[dict]) -> list[dict]:
    """Swept methods (window_b0.3, ...) reduced to the oracle's pick at each (model, IPC),
    named `oracle <method>` with the picked value in `picked`: one row or curve for SelMatch's
    oracle window, as the paper compares, instead of one per β."""
    pick, out = oracle_window(records), []
    for r in records:
        if is_swept(r["method"]):
            if pick.get((r["model"], r["ipc"])) != r["method"]:
                continue
            base, _, value = methods.parse(r["method"])
            r = {**r, "method": f"oracle {base}", "picked": value}
        out.append(r)
    return out


def ratio_table(records: list[dict], ratio: dict[int, float]) -> str:
    """A sweep's headline table: one row per (method, model, α), one column per IPC (its
    share of the train pool), mean ± std final-epoch test accuracy; the full-data student,
    which has no IPC, fills every column of its row, and the oracle window one row with the
    β picked at each IPC. Rows are labelled by the α asked for (`alpha_set`, where the caller
    knows it; else the α realised, int(IPC·α)/IPC)."""
    records = oracle_only(records)
    finals = _group_by_asked_alpha(records)
    picked = {(r["method"], r["model"], r["ipc"]): r["picked"] for r in records if "picked" in r}
    ipcs = sorted(ratio)
    rows: dict[tuple, dict[int, list[float]]] = defaultdict(dict)
    for (method, model, ipc, alpha), vals in finals.items():
        full = is_full(method)
        label = (method, model, "" if full or not alpha else f"{alpha:g}")
        for i in (ipcs if full else [ipc]):
            rows[label][i] = vals
    lines = ["| method | model | α | " + " | ".join(f"IPC {i} ({ratio[i]:.1f} %)" for i in ipcs) + " |",
             "|---|---|---|" + "---|" * len(ipcs)]

    def cell(method, model, alpha, i):
        v = rows[(method, model, alpha)].get(i)
        if not v:
            return "–"
        beta = f", β {picked[(method, model, i)]:g}" if (method, model, i) in picked else ""
        return fmt(v, beta)

    for (method, model, alpha) in sorted(rows, key=lambda k: (_rank(k[0].removeprefix("oracle ")), k[1], k[2])):
        lines.append(f"| {method} | {model} | {alpha} | " + " | ".join(cell(method, model, alpha, i) for i in ipcs) + " |")
    return "\n".join(lines)


def ratio_curves(records: list[dict], ratio: dict[int, float]) -> tuple[dict[str, list], float | None]:
    """The sweep plot's data: {curve name: [(data %, mean, half-width of the mean's 95 %
    interval (0 for one seed)), ...]} per (method, model, α asked for, `alpha_set`), α in the
    name only where several are asked for; and the full-data student's mean (None without one)."""
    finals = _group_by_asked_alpha(oracle_only(records))
    full = next((mean_std(v)[0] for (m, *_), v in finals.items() if is_full(m)), None)
    asked = {k[3] for k in finals if 0 < k[3] < 1}
    curves: dict[str, list] = {}
    for (method, model, ipc, alpha), vals in sorted(finals.items()):
        if not is_full(method):
            name = f"{method} {model}" + (f" α {alpha:g}" if len(asked) > 1 and 0 < alpha < 1 else "")
            mean, std, n = mean_std(vals)
            curves.setdefault(name, []).append((ratio[ipc], mean, interval95(mean, std, n) if n > 1 else 0.0))
    return curves, full


def summary_table(records: list[dict]) -> str:
    """The short table printed at the end of `ccfs run`: mean ± std final accuracy."""
    finals, vals = group(records), group(records, "val_acc")
    oracle = set(oracle_window(records).items())
    rows = []
    for key in sorted(finals, key=lambda k: (_rank(k[0]), k[1], k[2])):
        method, model, ipc, alpha = key
        if is_swept(method) and ((model, ipc), method) not in oracle:
            continue
        name = f"oracle {method}" if is_swept(method) else method
        val = f"  (val {mean_std(vals[key])[0]:.2f})" if vals.get(key) else ""
        rows.append(f"{name:<22} {model:<16} ipc {ipc:<5} α {alpha:<5g} final acc {fmt(finals[key])}{val}")
    return "\n".join(rows)


def rounds_table(rounds: list[dict], classes: list[str]) -> str:
    # the lazy coarse pass (the default) runs the filter only over the pool's rows the fine stage
    # reaches, easiest first: at low IPC a small and easy part, so the accuracy names its rows
    lines = ["| round | filter acc % on the held-out sample | filter acc % on the pool rows it inferred (rows) | "
             "candidates (min/median/max per class) | "
             "chosen | shortfall | filled from pool | chosen hardness mean (higher = harder) | filter train s | inference s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rounds:
        cand = sorted(r["candidates_per_class"])
        f = (lambda v, p=1: "–" if v is None else f"{v:.{p}f}")
        stats = r["score_stats"]
        rows = f" ({r['filter_inferred']:,})".replace(",", " ") if r.get("filter_inferred") else ""
        lines.append(f"| {r['round']} | {f(r['filter_eval_acc'], 2)} | {f(r['filter_pool_acc'], 2)}{rows} | "
                     f"{cand[0]} / {cand[len(cand) // 2]} / {cand[-1]} | {r['chosen']} | "
                     f"{sum(r['shortfall_per_class'])} | {r['filled_from_pool']} | "
                     f"{f(stats.get('mean'), 3)} | {f(r['filter_train_seconds'])} | {f(r['filter_infer_seconds'], 2)} |")
    # select.balance=false keeps one deficit over all classes, in slot 0 (ccfs.selection.ccfs)
    short = [(r["round"], classes[c] if r.get("balance", True) else "all classes together", s)
             for r in rounds for c, s in enumerate(r["shortfall_per_class"]) if s]
    if short:
        lines.append("")
        lines.append("Shortfalls (class ran out of candidates): " +
                     "; ".join(f"round {j}: {name} short by {s}" for j, name, s in short))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- 95 % intervals of paired differences

# Student's t, 0.975 quantile (a two-sided 95 % interval), by degrees of freedom; from the
# standard table, so that no statistics package is needed at run time.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
        10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
        18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060,
        26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t975(df: int) -> float:
    """Student's t 0.975 quantile for `df` degrees of freedom. Between the table's entries, the
    next smaller entry's (a slightly wider interval); beyond 120, the normal 1.960."""
    if df < 1:
        raise ValueError(f"a t quantile needs at least 1 degree of freedom, not {df}")
    return 1.960 if df > 120 else T975[max(k for k in T975 if k <= df)]


def interval95(mean: float, std: float, n: int) -> float:
    """Half-width of the 95 % confidence interval of a mean of n values with sample standard
    deviation `std`: t·std/√n, t for n − 1 degrees of freedom (infinite for one value)."""
    return float("inf") if n < 2 else t975(n - 1) * std / n ** 0.5


def verdict(mean: float, half: float, n: int, unit: str = "seed") -> str:
    """'ahead' / 'behind' where the interval mean ± half excludes zero, else 'not resolved
    with n seeds' (or n of another `unit`: teachers)."""
    if mean - half > 0:
        return "ahead"
    if mean + half < 0:
        return "behind"
    return f"not resolved with {n} {unit}{'s' * (n != 1)}"


def lead(mean: float, std: float, n: int, unit: str = "seed") -> str:
    """A paired difference as `+0.59 ± 1.79, not resolved with 3 seeds`: its mean, the
    half-width of its 95 % interval, and the verdict; of one pair, the mean alone (no interval)."""
    if n < 2:
        return f"{mean:+.2f}, one {unit}: no interval"
    half = interval95(mean, std, n)
    return f"{mean:+.2f} ± {half:.2f}, {verdict(mean, half, n, unit)}"


# ----------------------------------------------------------------------------- over several teachers

def across_teachers(records: list[dict], a: str, b: str, field: str = "final_acc") -> list[dict]:
    """`a` minus `b` at each (model, IPC) over several teachers, pooled where this says so:
    students pair by teacher (`teacher_sha1`) and seed; each teacher's mean difference over
    its pairs (named "seed S" by its `teacher_seed` where recorded, else None, in seed order);
    the mean of the teacher means with its 95 % interval over them (n = teachers:
    the teacher is the unit that repeats) and the verdict; and, for reference only, every
    pair pooled as if independent (which ignores that a teacher's pairs share it). KD
    students only where there are any (`main_protocol`)."""
    by: dict[tuple, dict[tuple, float]] = defaultdict(dict)
    teacher_seed: dict[str, int] = {}
    for r in main_protocol(records):
        if r["method"] in (a, b) and r.get(field) is not None and r.get("teacher_sha1"):
            by[(r["model"], r["ipc"], r["method"])][(r["teacher_sha1"], r["seed"])] = r[field]
            if r.get("teacher_seed") is not None:
                teacher_seed[r["teacher_sha1"]] = r["teacher_seed"]
    order = lambda t: (teacher_seed.get(t, math.inf), t)  # noqa: E731 - by the teacher's seed where recorded
    rows = []
    for model, ipc in sorted({(m, i) for m, i, _ in by}):
        x, y = by.get((model, ipc, a), {}), by.get((model, ipc, b), {})
        pairs = sorted(set(x) & set(y))
        if not pairs:
            continue
        per: dict[str, list[float]] = defaultdict(list)
        for teacher, seed in pairs:
            per[teacher].append(x[(teacher, seed)] - y[(teacher, seed)])
        means = [statistics.fmean(v) for v in per.values()]
        rows.append({"model": model, "ipc": ipc, "teachers": len(per), "pairs": len(pairs),
                     "per_teacher": [(f"seed {teacher_seed[t]}" if t in teacher_seed else None, statistics.fmean(v), len(v))
                                     for t, v in sorted(per.items(), key=lambda kv: order(kv[0]))],
                     "over_teachers": mean_std(means),
                     "pooled": mean_std([x[k] - y[k] for k in pairs])})
    return rows


def teacher_table(records: list[dict], a: str, b: str, ratio: dict[int, float] | None = None) -> str:
    """Markdown table of `across_teachers` on test and validation: each teacher's mean
    difference, the mean over teachers with its interval and verdict (the answer), and the
    pairs pooled as if independent (for reference); "" without pairs. Teachers in the order of
    their seeds, named by them where the records say."""
    test = across_teachers(records, a, b)
    if not test:
        return ""
    val = {(r["model"], r["ipc"]): r for r in across_teachers(records, a, b, "val_acc")}
    lines = [f"| model | IPC | {a} − {b}, per teacher (test) | over teachers, test (95 % interval) | "
             "over teachers, validation | all pairs pooled as if independent, test |",
             "|---|---|---|---|---|---|"]
    for r in test:
        share = f" ({ratio[r['ipc']]:.0f} %)" if ratio and r["ipc"] in ratio else ""
        per = ", ".join(f"{t + ': ' if t else ''}{d:+.2f} (n={n})" for t, d, n in r["per_teacher"])
        v = val.get((r["model"], r["ipc"]))
        lines.append(f"| {r['model']} | {r['ipc']}{share} | {per} | {lead(*r['over_teachers'], unit='teacher')} | "
                     f"{lead(*v['over_teachers'], unit='teacher') if v else '–'} | "
                     f"{lead(*r['pooled'], unit='pair')} |")
    return "\n".join(lines)


def lead_table(records: list[dict], ratio: dict[int, float], reference: str = "ccfs") -> str:
    """`reference` minus each other method, paired by seed (`paired_differences`, test
    accuracy), one row per (method, model), one column per IPC (its share of the train pool),
    each cell the mean with its 95 % interval and the verdict (`lead`). Swept methods are
    reduced to the oracle's pick (`oracle_only`); the full-data student pairs with every IPC."""
    cells: dict[tuple, dict[int, str]] = defaultdict(dict)
    for method, model, ipc, _, mean, std, n in paired_differences(oracle_only(records), reference):
        if ipc in ratio:
            cells[(method, model)][ipc] = lead(mean, std, n)
    ipcs = sorted(ratio)
    lines = [f"| {reference} minus | model | " + " | ".join(f"IPC {i} ({ratio[i]:.1f} %)" for i in ipcs) + " |",
             "|---|---|" + "---|" * len(ipcs)]
    for method, model in sorted(cells, key=lambda k: (_rank(k[0].removeprefix("oracle ")), k[1])):
        lines.append(f"| {method} | {model} | " + " | ".join(cells[(method, model)].get(i, "–") for i in ipcs) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- set against teacher (DD-Ranking)

def lrs(ior: float, hlr: float, w: float = 0.5) -> float:
    """DD-Ranking's label-robust score of one evaluation from IOR and HLR as fractions (not
    percent): a = w·IOR − (1 − w)·HLR, LRS = (e^a − e^−1) / (e − e^−1), in [0, 1] for
    a in [−1, 1]; w = ½ as on DD-Ranking's leaderboard."""
    a = w * ior - (1 - w) * hlr
    return (math.exp(a) - math.exp(-1)) / (math.e - math.exp(-1))


def _stats(values: list[float]) -> tuple[float, float, int] | None:
    return mean_std(values) if values else None


def label_robust_rows(records: list[dict], field: str = "final_acc") -> list[dict]:
    """How much of a set's accuracy comes from the set and how much from the teacher, after
    DD-Ranking (2025), one row per (model, IPC, α, method) of the sets (not the full data):
    `kd`, `ce`: the KD and hard-label (cross-entropy) students' accuracies (lists over seeds,
    %); `ior_kd`, `ior_ce`: IOR, the set's accuracy minus random real images' at the same IPC
    under the same protocol, paired by seed (mean, std, n; points); `hlr`: HLR, the full-data
    hard-label student's accuracy minus the set's, paired by seed; `lrs`: the label-robust
    score per seed from IOR under the set's own protocol (KD) and HLR as fractions, then
    averaged, as DD-Ranking does (mean, std, n; a fraction in [0, 1]). Each is None where a
    side is missing; random's own IOR is 0 by definition (None here, 0 in its LRS). Swept
    methods are reduced to the KD oracle's pick (`oracle_only`); the full-data student (it
    has no IPC) pairs with every IPC."""
    by: dict[tuple, dict[int, float]] = defaultdict(dict)  # (objective, method, model, ipc, α) -> seed -> acc
    full: dict[tuple, dict[int, float]] = defaultdict(dict)  # (objective, model) -> seed -> acc
    for r in oracle_only(records):
        if r.get(field) is None:
            continue
        obj = objective_of(r)
        if is_full(r["method"]):
            full[(obj, r["model"])][r["seed"]] = r[field]
        else:
            by[(obj, r["method"], r["model"], r["ipc"], round(r["alpha"], 4))][r["seed"]] = r[field]
    random = {(obj, model, ipc): accs for (obj, m, model, ipc, _), accs in by.items() if m == "random"}

    def paired(a: dict[int, float], b: dict[int, float] | None) -> dict[int, float]:
        return {s: a[s] - b[s] for s in sorted(set(a) & set(b or {}))}

    rows = []
    sets = sorted({k[1:] for k in by}, key=lambda k: (k[1], k[2], _rank(k[0].removeprefix("oracle ")), k[3]))
    for method, model, ipc, alpha in sets:
        kd, ce = by.get(("kd", method, model, ipc, alpha), {}), by.get(("ce", method, model, ipc, alpha), {})
        is_random = method == "random"
        ior_kd = {s: 0.0 for s in kd} if is_random else paired(kd, random.get(("kd", model, ipc)))
        ior_ce = {} if is_random else paired(ce, random.get(("ce", model, ipc)))
        hlr = paired(full.get(("ce", model), {}), ce)
        score = [lrs(ior_kd[s] / 100, hlr[s] / 100) for s in sorted(set(ior_kd) & set(hlr))]
        rows.append({"method": method, "model": model, "ipc": ipc, "alpha": alpha,
                     "kd": list(kd.values()), "ce": list(ce.values()),
                     "ior_kd": None if is_random else _stats(list(ior_kd.values())),
                     "ior_ce": _stats(list(ior_ce.values())), "hlr": _stats(list(hlr.values())),
                     "lrs": _stats(score)})
    return rows


def _spread(stats: tuple[float, float, int] | None, *, percent: bool = False) -> str:
    """mean ± half-width of its 95 % interval (n), no verdict: HLR in points (signed), or a
    fraction such as LRS in % (`percent`)."""
    if stats is None:
        return "–"
    mean, std, n = stats
    if n < 2:  # no interval from one value
        return f"{100 * mean:.2f} (n=1)" if percent else f"{mean:+.2f} (n=1)"
    half = interval95(mean, std, n)
    if percent:
        return f"{100 * mean:.2f} ± {100 * half:.2f} (n={n})"
    return f"{mean:+.2f} ± {half:.2f} (n={n})"


def label_robust_table(records: list[dict], field: str = "final_acc") -> str:
    """Markdown table of `label_robust_rows`: accuracies in %, IOR and HLR in points with
    their 95 % intervals (IOR with its verdict against random), LRS in % as DD-Ranking
    reports it; "" where no set has both a KD and a hard-label student."""
    rows = label_robust_rows(records, field)
    if not any(r["kd"] and r["ce"] for r in rows):
        return ""
    lines = ["| method | model | IPC | α | KD acc % | hard-label acc % | IOR, KD (95 % interval) | "
             "IOR, hard labels (95 % interval) | HLR (95 % interval) | LRS % (95 % interval) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = "0 (the reference)"
        ior_kd = ref if r["method"] == "random" else (lead(*r["ior_kd"]) if r["ior_kd"] else "–")
        ior_ce = ref if r["method"] == "random" and r["ce"] else (lead(*r["ior_ce"]) if r["ior_ce"] else "–")
        lines.append(f"| {r['method']} | {r['model']} | {r['ipc']} | {r['alpha']:g} | {fmt(r['kd'])} | {fmt(r['ce'])} "
                     f"| {ior_kd} | {ior_ce} | {_spread(r['hlr'])} | {_spread(r['lrs'], percent=True)} |")
    return "\n".join(lines)
