"""CCFS: curriculum coarse-to-fine selection (docs/method.md §2).

    for round j in 1..J:
        filter_j = fresh model trained (KD) on  distilled ∪ train[selected]
        coarse:  candidates = pool, not selected, misclassified by filter_j
        fine:    per class, the q[j] easiest candidates by the difficulty score

The pure functions below are the algorithm; `ccfs_rounds` strings them together and
takes the filter training as a callable so it can be tested without training anything.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ccfs.scores import true_class_logit


def round_quotas(spc: int, rounds: int) -> list[int]:
    """Split `spc` images per class into `rounds` near-equal parts, remainder first:
    400 over 3 -> [134, 133, 133]."""
    base, extra = divmod(spc, rounds)
    return [base + (1 if j < extra else 0) for j in range(rounds)]


def coarse_candidates(pred: torch.Tensor, labels: torch.Tensor, eligible: torch.Tensor,
                      keep: str = "misclassified") -> torch.Tensor:
    """Coarse stage: [N] bool of eligible samples the filter gets wrong (or right)."""
    wrong = pred != labels
    return eligible & (wrong if keep == "misclassified" else ~wrong)


def rank_order(candidates: torch.Tensor, hardness: torch.Tensor, order: str, *,
               generator: torch.Generator | None) -> torch.Tensor:
    """Indices of the candidates (bool [N]) sorted easiest first ("simple"), hardest first
    ("hard") or at random. `hardness` [N] is "higher = harder"; ties break by train index
    (a stable sort), as in the official code, so the order is deterministic."""
    idx = candidates.nonzero().flatten()
    if order == "random":
        return idx[torch.randperm(len(idx), generator=generator)]
    sign = 1.0 if order == "simple" else -1.0
    return idx[torch.argsort(sign * hardness[idx].double(), stable=True)]


def fine_select(candidates: torch.Tensor, labels: torch.Tensor, quotas: torch.Tensor, *,
                hardness: torch.Tensor, order: str = "simple",
                balance: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fine stage: per class c, the first quotas[c] candidates in `order`; without
    balance, the first quotas.sum() over all classes. Returns indices in selection order
    (class by class)."""
    if not balance:
        return rank_order(candidates, hardness, order, generator=generator)[: int(quotas.sum())]
    chosen = []
    for c in range(len(quotas)):
        ranked = rank_order(candidates & (labels == c), hardness, order, generator=generator)
        chosen.append(ranked[: int(quotas[c])])
    return torch.cat(chosen) if chosen else torch.empty(0, dtype=torch.long)


def remaining(short: torch.Tensor, got: torch.Tensor, labels: torch.Tensor, balance: bool) -> torch.Tensor:
    """Deficit left after `got` was added: per class, or (balance off) the total in slot 0."""
    if balance:
        return short - per_class_counts(got, labels, len(short))
    left = torch.zeros_like(short)
    left[0] = short.sum() - len(got)
    return left


def fill_shortfall(short: torch.Tensor, *, eligible: torch.Tensor, selected: torch.Tensor,
                   taken: torch.Tensor, labels: torch.Tensor, hardness: torch.Tensor,
                   balance: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Last-round shortfall: fill the deficit `short` easiest-first from the remaining pool
    (per class, or overall when balance is off); if the pool itself runs dry (few
    teacher-correct images), from the other unselected images. Returns (from the pool,
    from outside the pool)."""
    rank = {"labels": labels, "hardness": hardness, "order": "simple", "balance": balance}
    rest = eligible.clone()
    rest[taken] = False
    filled = fine_select(rest, quotas=short, **rank)
    still = remaining(short, filled, labels, balance)
    if still.sum() == 0:
        return filled, torch.empty(0, dtype=torch.long)
    other = torch.ones_like(eligible)
    other[torch.cat([selected, taken, filled])] = False
    other &= ~eligible
    return filled, fine_select(other, quotas=still, **rank)


def per_class_counts(indices: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.bincount(labels[indices], minlength=num_classes)


@dataclass
class Filter:
    """What a trained filter tells the selection: its logits on the un-augmented train
    images it was asked about (the eligible pool; other rows are zero) and its accuracy
    on a fixed evaluation sample, for the round log."""
    train_logits: torch.Tensor  # [N, K]
    eval_acc: float | None  # percent, on the fixed sample (None: no sample configured)
    train_seconds: float
    infer_seconds: float
    # rows [M] -> logits [M, K], on demand; a filter asked for no rows up front (the lazy pass)
    # must give it, or logits over the whole eligible pool
    infer: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass
class CCFSOptions:
    ipc_real: int  # spc: real images per class to select
    rounds: int = 3
    coarse: str = "misclassified"
    fine: str = "simple"
    balance: bool = True
    shortfall: str = "carry"  # carry | reference
    score_name: str = "forgetting"

    def lazy(self, hardness: torch.Tensor | None) -> bool:
        """Whether the coarse pass can stop early and still give the full pass's selection:
        the fine stage must rank by a score fixed before the filter runs (not its logit, not
        at random)."""
        return hardness is not None and self.fine != "random"


@dataclass
class RoundState:
    """Everything needed to resume after a finished round."""
    selected: list[int] = field(default_factory=list)
    deficit: list[int] = field(default_factory=list)
    log: list[dict] = field(default_factory=list)


def _stats(values: torch.Tensor) -> dict:
    if len(values) == 0:
        return {"n": 0}
    v = values.double()
    return {"n": len(v), "mean": v.mean().item(), "median": v.median().item(),
            "min": v.min().item(), "max": v.max().item()}


def shortfall(quota: torch.Tensor, taken: torch.Tensor, labels: torch.Tensor, balance: bool) -> torch.Tensor:
    """Per-class deficit of a round; with balance off, the total deficit in slot 0."""
    if balance:
        return (quota - per_class_counts(taken, labels, len(quota))).clamp(min=0)
    short = torch.zeros_like(quota)
    short[0] = max(0, int(quota.sum()) - len(taken))
    return short


def lazy_pass(flt: Filter, *, eligible: torch.Tensor, labels: torch.Tensor, quota: torch.Tensor,
              hardness: torch.Tensor, opts: CCFSOptions, first: int = 32) -> torch.Tensor:
    """The coarse pass, only as far as the fine stage looks: walk the eligible pool in the
    fine stage's order (per class, or over all classes with balance off), infer the next
    rows of every queue that still lacks candidates (the chunk doubling each time), and
    stop once every queue has its quota of candidates or has run out. The first quota
    candidates of a queue lie in what was walked, so the fine stage picks what a full pass
    would pick. Fills `flt.train_logits` for the walked rows; returns them as bool [N]."""
    if opts.balance:
        queues = [rank_order(eligible & (labels == c), hardness, opts.fine, generator=None)
                  for c in range(len(quota))]
        need = quota.clone()
    else:
        queues = [rank_order(eligible, hardness, opts.fine, generator=None)]
        need = quota.sum().view(1)
    pos, chunk = [0] * len(queues), [first] * len(queues)
    walked = torch.zeros(len(labels), dtype=torch.bool)
    while True:
        parts = []
        for q, queue in enumerate(queues):
            if need[q] > 0 and pos[q] < len(queue):
                parts.append(queue[pos[q]: pos[q] + chunk[q]])
                pos[q] += chunk[q]
                chunk[q] *= 2
        if not parts:
            return walked
        idx = torch.cat(parts)
        logits = flt.infer(idx)
        flt.train_logits[idx] = logits
        walked[idx] = True
        keep = torch.ones(len(idx), dtype=torch.bool)
        found = idx[coarse_candidates(logits.argmax(1), labels[idx], keep, opts.coarse)]
        need -= torch.bincount(labels[found], minlength=len(quota)) if opts.balance else len(found)


def filter_log(flt: Filter | None, labels: torch.Tensor, eligible: torch.Tensor) -> dict:
    """The filter's part of a round's log entry (None where round 1 has no filter):
    accuracy on the fixed evaluation sample and on the eligible pool it was run over."""
    if flt is None:
        return dict.fromkeys(("filter_eval_acc", "filter_pool_acc", "filter_train_seconds",
                              "filter_infer_seconds"))
    rows = eligible.nonzero().flatten()
    pool_acc = 100.0 * (flt.train_logits[rows].argmax(1) == labels[rows]).float().mean().item() if len(rows) else None
    return {"filter_eval_acc": flt.eval_acc, "filter_pool_acc": pool_acc,
            "filter_train_seconds": flt.train_seconds, "filter_infer_seconds": flt.infer_seconds}


def ccfs_round(j: int, state: RoundState, *, labels: torch.Tensor, pool: torch.Tensor,
               hardness: torch.Tensor | None, quotas: list[int], opts: CCFSOptions,
               flt: Filter | None, teacher_logit: torch.Tensor,
               generator: torch.Generator) -> RoundState:
    """One coarse-to-fine round. `hardness` [N] is the fine-stage score, higher = harder
    (None: score "logits", the filter's true-class logit, negated). `flt` is None when the
    current synthetic set is empty (α = 0, round 1): then the coarse stage is skipped and
    `teacher_logit` [N] (the teacher's true-class logit) stands in for the filter's.
    The filter's logits cover the eligible pool only; where the last round must fill from
    outside the pool, those images tie on the logit and break ties by index."""
    t0 = time.perf_counter()
    num_classes = int(labels.max()) + 1
    carry_mode, last = opts.shortfall == "carry", j == opts.rounds - 1
    selected = torch.tensor(state.selected, dtype=torch.long)
    eligible = pool.clone()
    eligible[selected] = False
    # fine: the easiest q[j] (+ carried deficit) per class
    quota = torch.full((num_classes,), quotas[j], dtype=torch.long)
    if carry_mode and state.deficit:
        quota = quota + torch.tensor(state.deficit)
    asked = eligible  # the rows the filter was run over
    if flt is not None and flt.infer is not None and opts.lazy(hardness):
        t1 = time.perf_counter()
        asked = lazy_pass(flt, eligible=eligible, labels=labels, quota=quota, hardness=hardness, opts=opts)
        flt.infer_seconds += time.perf_counter() - t1
    logit = true_class_logit(flt.train_logits, labels) if flt is not None else teacher_logit
    key = -logit.float() if hardness is None else hardness  # score "logits": the true-class logit as hardness
    # coarse: what the filter gets wrong (skipped while there is no filter)
    cand = eligible if flt is None else coarse_candidates(flt.train_logits.argmax(1), labels, asked, opts.coarse)
    taken = fine_select(cand, labels, quota, hardness=key, order=opts.fine, balance=opts.balance,
                        generator=generator)
    short = shortfall(quota, taken, labels, opts.balance)
    filled = outside = torch.empty(0, dtype=torch.long)
    if carry_mode and last and short.sum() > 0:
        filled, outside = fill_shortfall(short, eligible=eligible, selected=selected, taken=taken,
                                         labels=labels, hardness=key, balance=opts.balance)
    new = torch.cat([taken, filled, outside])
    left = remaining(short, torch.cat([filled, outside]), labels, opts.balance)
    entry = {
        "round": j + 1,
        "quota_per_class": quota.tolist(),
        "candidates_per_class": torch.bincount(labels[cand], minlength=num_classes).tolist(),
        "chosen": len(new),
        "shortfall_per_class": short.tolist(),  # balance off: the total, in slot 0
        "shortfall_total": int(short.sum()),
        "balance": opts.balance,
        "filled_from_pool": len(filled),
        "filled_outside_pool": len(outside),
        "unfilled_per_class": left.tolist() if last and carry_mode else None,
        **filter_log(flt, labels, asked),
        "filter_inferred": int(asked.sum()) if flt is not None else 0,  # a lazy pass: the walked part only
        "select_seconds": time.perf_counter() - t0,
        "score": opts.score_name,
        "score_stats": _stats(hardness[new]) if hardness is not None and len(new) else {"n": len(new)},
        "indices": new.tolist(),
    }
    deficit = (left if last else short) if carry_mode else torch.zeros_like(short)
    return RoundState(selected=state.selected + new.tolist(), deficit=deficit.tolist(), log=state.log + [entry])


def ccfs_rounds(labels: torch.Tensor, pool: torch.Tensor, *, hardness: torch.Tensor | None,
                opts: CCFSOptions, has_distilled: bool,
                train_filter: Callable[[int, list[int], torch.Tensor], Filter], teacher_logit: torch.Tensor,
                seed: int = 0, state: RoundState | None = None,
                on_round: Callable[[RoundState], None] | None = None) -> RoundState:
    """All J rounds. `hardness` [N]: the fine-stage score, higher = harder (None: the
    filter's logit). `train_filter(j, selected, rows)` trains the round-j filter on
    distilled ∪ train[selected] and returns its logits on the train rows `rows` (bool [N],
    the eligible pool). `teacher_logit` [N]: the teacher's true-class logit (round 1 at
    α = 0). `state` resumes after its last finished round; `on_round` persists it."""
    quotas = round_quotas(opts.ipc_real, opts.rounds)
    state = state or RoundState()
    for j in range(len(state.log), opts.rounds):
        empty = not has_distilled and not state.selected
        eligible = pool.clone()
        eligible[torch.tensor(state.selected, dtype=torch.long)] = False
        rows = torch.zeros_like(eligible) if opts.lazy(hardness) else eligible  # lazy: rows asked on demand
        flt = None if empty else train_filter(j, state.selected, rows)
        gen = torch.Generator().manual_seed(seed * 1000 + j)  # per round: resumes reproduce
        state = ccfs_round(j, state, labels=labels, pool=pool, hardness=hardness, quotas=quotas, opts=opts,
                           flt=flt, teacher_logit=teacher_logit, generator=gen)
        if on_round is not None:
            on_round(state)
    return state
