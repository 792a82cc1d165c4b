"""CCFS selection (docs/method.md §2): round quotas, the coarse and fine stages against hand-computed
orders (ties in the fine-stage score break by train index, as the official code), the shortfall rule
(carry and reference), α = 0, the ablation switches, resume, the lazy coarse pass against a full one,
the settings a selection folder is checked against, and every registered selector through one
hand-built `SelectionInputs`. Filters are fakes whose logits are written by hand, so nothing is trained."""
from __future__ import annotations

import json

import pytest
import torch

from ccfs.config import SelectCfg
from ccfs.selection.methods import METHODS, SelectionInputs
from ccfs.selection.ccfs import (CCFSOptions, Filter, RoundState, ccfs_rounds, coarse_candidates, fine_select,
                                 rank_order, round_quotas, true_class_logit)

# ----------------------------------------------------------------------------- helpers


def make_logits(labels: torch.Tensor, true_logit: torch.Tensor, wrong: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[N, K] logits whose true-class entry is `true_logit` and whose argmax is the true class
    unless `wrong`, where the next class scores one higher."""
    n = len(labels)
    logits = torch.full((n, num_classes), -100.0)
    rows = torch.arange(n)
    logits[rows, labels] = true_logit.float()
    other = (labels + 1) % num_classes
    logits[rows[wrong], other[wrong]] = true_logit[wrong].float() + 1.0
    return logits


class FakeFilters:
    """A `train_filter` callable: round j's filter misclassifies `wrong(j, selected)` and has
    true-class logits `true_logit`. Records every call as (j, selected), and in `rows[j]` the
    train rows filter j was run over.

    By default a filter is inferred as the real ones are: on the rows `ccfs_rounds` asks for up
    front, and on more rows on demand (`infer`, what the lazy coarse pass calls). With
    `full_pass_over=pool` it is a full coarse pass instead: the whole eligible pool (`pool`
    less what is selected) inferred up front and no `infer`, so `ccfs_round` cannot stop early
    and ranks every eligible image."""

    def __init__(self, labels, true_logit, wrong, num_classes, *, full_pass_over: torch.Tensor | None = None):
        self.labels, self.true_logit, self.wrong, self.k = labels, true_logit, wrong, num_classes
        self.pool = full_pass_over
        self.calls: list[tuple[int, list[int]]] = []
        self.masks: dict[int, torch.Tensor] = {}
        self.rows: dict[int, torch.Tensor] = {}
        self.up_front: dict[int, int] = {}  # rows inferred before the coarse stage

    def __call__(self, j: int, selected: list[int], rows: torch.Tensor) -> Filter:
        self.calls.append((j, list(selected)))
        if self.pool is not None:  # a full pass: every eligible row, whatever ccfs_rounds asks for
            rows = self.pool.clone()
            rows[torch.tensor(selected, dtype=torch.long)] = False
        self.rows[j] = rows.clone()
        self.up_front[j] = int(rows.sum())
        mask = self.wrong(j, selected)
        self.masks[j] = mask
        full = make_logits(self.labels, self.true_logit, mask, self.k)
        logits = full.clone()
        logits[~rows] = 0.0  # like the real coarse pass: only the requested rows are inferred
        if self.pool is not None:
            return Filter(logits, eval_acc=50.0 + j, train_seconds=0.0, infer_seconds=0.0, infer=None)

        def infer(idx: torch.Tensor) -> torch.Tensor:  # a lazy pass asks for more rows
            self.rows[j][idx] = True
            return full[idx]
        return Filter(logits, eval_acc=50.0 + j, train_seconds=0.0, infer_seconds=0.0, infer=infer)


def const_wrong(mask: torch.Tensor):
    return lambda j, selected: mask.clone()


def random_problem(n_per_class=40, k=4, seed=0, pool_frac=0.8):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(k).repeat_interleave(n_per_class)[torch.randperm(k * n_per_class, generator=g)]
    hardness = torch.randint(0, 4, (len(labels),), generator=g).float()  # forgetting-like, many ties
    true_logit = torch.rand(len(labels), generator=g)
    pool = torch.rand(len(labels), generator=g) < pool_frac
    teacher = make_logits(labels, torch.rand(len(labels), generator=g), ~pool, k)
    return labels, hardness, true_logit, pool, teacher


def random_wrong(n: int, frac: float):
    """Round filters that misclassify a `frac` share, different each round and for each
    selected set (so a resume that loses `selected` would show)."""
    def wrong(j, selected):
        g = torch.Generator().manual_seed(100 * j + len(selected) + sum(selected))
        return torch.rand(n, generator=g) < frac
    return wrong


def counts(indices, labels, k):
    return torch.bincount(labels[torch.as_tensor(indices, dtype=torch.long)], minlength=k).tolist()


def expected_order(cands: list[int], hardness: torch.Tensor, order: str = "simple") -> list[int]:
    """Independent fine-stage order: lower hardness first ("simple") or higher first ("hard"),
    ties by lower index either way. For score "logits" pass the negated true-class logit."""
    sign = 1.0 if order == "simple" else -1.0
    return sorted(cands, key=lambda i: (sign * float(hardness[i]), i))


# ----------------------------------------------------------------------------- round quotas


@pytest.mark.parametrize("spc, rounds, quotas", [
    (400, 3, [134, 133, 133]), (6, 3, [2, 2, 2]), (7, 3, [3, 2, 2]), (8, 3, [3, 3, 2]),
    (5, 1, [5]), (2, 3, [1, 1, 0]), (0, 2, [0, 0]), (1, 4, [1, 0, 0, 0]),
])
def test_round_quotas_remainder_to_earliest_rounds(spc, rounds, quotas):
    assert round_quotas(spc, rounds) == quotas


def test_round_quotas_sum_and_near_equal():
    for spc in range(0, 60):
        for rounds in range(1, 7):
            q = round_quotas(spc, rounds)
            assert len(q) == rounds and sum(q) == spc
            assert max(q) - min(q) <= 1 and q == sorted(q, reverse=True)


# ----------------------------------------------------------------------------- coarse stage


def test_coarse_candidates_misclassified_and_correct():
    labels = torch.tensor([0, 0, 1, 1, 2])
    pred = torch.tensor([0, 1, 1, 0, 0])
    eligible = torch.tensor([True, True, True, False, True])
    assert coarse_candidates(pred, labels, eligible).tolist() == [False, True, False, False, True]
    assert coarse_candidates(pred, labels, eligible, "correct").tolist() == [True, False, True, False, False]


# ----------------------------------------------------------------------------- fine stage by hand

# two classes of six; forgetting counts with ties, broken by index. LOGIT (the filters' true-class
# logit, higher = easier) would break several of them the other way: a tie-break by it would show.
LABELS = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
FORGET = torch.tensor([2, 0, 1, 0, 2, 1, 3, 1, 1, 0, 1, 3]).float()  # higher = harder
LOGIT = torch.tensor([.5, .1, .9, .3, .7, .2, .4, .8, .6, .1, .8, .2])  # higher = easier
#   class 0 easiest first: f0 {1, 3}; f1 {2, 5}; f2 {0, 4}          -> 1, 3, 2, 5, 0, 4
#   class 1 easiest first: f0 {9}; f1 {7, 8, 10}; f3 {6, 11}       -> 9, 7, 8, 10, 6, 11
#   hardest first (ties still by index): class 0 f2 {0, 4}; f1 {2, 5}; f0 {1, 3} -> 0, 4, 2, 5, 1, 3
#                                        class 1 f3 {6, 11}; f1 {7, 8, 10}; f0 {9} -> 6, 11, 7, 8, 10, 9


def test_rank_order_simple_hard_and_index_ties_by_hand():
    c0, c1 = LABELS == 0, LABELS == 1
    assert rank_order(c0, FORGET, "simple", generator=None).tolist() == [1, 3, 2, 5, 0, 4]
    assert rank_order(c1, FORGET, "simple", generator=None).tolist() == [9, 7, 8, 10, 6, 11]
    assert rank_order(c0, FORGET, "hard", generator=None).tolist() == [0, 4, 2, 5, 1, 3]
    assert rank_order(c1, FORGET, "hard", generator=None).tolist() == [6, 11, 7, 8, 10, 9]
    # both classes at once: f0 {1, 3, 9}; f1 {2, 5, 7, 8, 10}; f2 {0, 4}; f3 {6, 11}
    everyone = torch.ones(12, dtype=torch.bool)
    assert rank_order(everyone, FORGET, "simple", generator=None).tolist() == [1, 3, 9, 2, 5, 7, 8, 10, 0, 4, 6, 11]
    # score "logits" as the fine stage passes it (the negated logit): higher logit first, no ties here
    assert rank_order(c0, -LOGIT, "simple", generator=None).tolist() == [2, 4, 0, 3, 5, 1]


@pytest.mark.parametrize("order", ["simple", "hard"])
def test_rank_order_matches_independent_sort_on_random_ties(order):
    g = torch.Generator().manual_seed(3)
    hardness = torch.randint(0, 3, (50,), generator=g).float()  # three values over 50 rows: ties everywhere
    cand = torch.rand(50, generator=g) < 0.7
    want = expected_order(cand.nonzero().flatten().tolist(), hardness, order)
    assert rank_order(cand, hardness, order, generator=None).tolist() == want


def test_rank_order_random_is_a_seeded_permutation_of_the_candidates():
    cand = torch.tensor([i % 3 != 0 for i in range(30)])
    a = rank_order(cand, torch.zeros(30), "random", generator=torch.Generator().manual_seed(1))
    b = rank_order(cand, torch.zeros(30), "random", generator=torch.Generator().manual_seed(1))
    assert a.tolist() == b.tolist() and sorted(a.tolist()) == cand.nonzero().flatten().tolist()
    assert a.tolist() != sorted(a.tolist())  # actually shuffled


@pytest.mark.parametrize("order, expected", [
    ("simple", [1, 3, 2, 9, 7, 8]),
    ("hard", [0, 4, 2, 6, 11, 7]),
])
def test_fine_select_per_class_quota_by_hand(order, expected):
    all_ = torch.ones(12, dtype=torch.bool)
    assert fine_select(all_, LABELS, torch.tensor([3, 3]), hardness=FORGET, order=order).tolist() == expected


def test_fine_select_unequal_quotas_and_short_class():
    cand = LABELS == 0
    cand[9] = True  # class 1 has one candidate only
    out = fine_select(cand, LABELS, torch.tensor([2, 4]), hardness=FORGET)
    assert out.tolist() == [1, 3, 9]  # class 0: the f0 pair by index; class 1: all it has


def test_fine_select_random_order_is_a_seeded_subset():
    all_ = torch.ones(12, dtype=torch.bool)
    q = torch.tensor([3, 3])
    a = fine_select(all_, LABELS, q, hardness=FORGET, order="random", generator=torch.Generator().manual_seed(0))
    b = fine_select(all_, LABELS, q, hardness=FORGET, order="random", generator=torch.Generator().manual_seed(0))
    assert a.tolist() == b.tolist()
    assert counts(a, LABELS, 2) == [3, 3] and len(set(a.tolist())) == 6
    draws = {tuple(fine_select(all_, LABELS, q, hardness=FORGET, order="random",
                               generator=torch.Generator().manual_seed(s)).tolist()) for s in range(8)}
    assert len(draws) > 1  # the generator is actually used


@pytest.mark.parametrize("hardness, expected", [
    (torch.tensor([1., 1, 1, 1, 1, 1, 5, 5, 5, 5, 5, 5]), [0, 1, 2, 3, 4, 5]),  # class 0 all easier: six of it
    (FORGET, [1, 3, 9, 2, 5, 7]),  # the first six of the overall order above: 4 of class 0, 2 of class 1
])
def test_fine_select_without_balance_takes_top_overall(hardness, expected):
    out = fine_select(torch.ones(12, dtype=torch.bool), LABELS, torch.tensor([3, 3]), hardness=hardness,
                      balance=False)
    assert out.tolist() == expected


# ----------------------------------------------------------------------------- ccfs_rounds: the fine stage in place


def one_round(opts_kw, wrong_idx, hardness=FORGET, has_distilled=True, logit=LOGIT):
    wrong = torch.zeros(12, dtype=torch.bool)
    wrong[wrong_idx] = True
    filters = FakeFilters(LABELS, logit, const_wrong(wrong), 2)
    opts = CCFSOptions(**{"ipc_real": 3, "rounds": 1, **opts_kw})
    state = ccfs_rounds(LABELS, torch.ones(12, dtype=torch.bool), hardness=hardness, opts=opts,
                        has_distilled=has_distilled, train_filter=filters, teacher_logit=torch.zeros(12))
    return state, filters


ALL_BUT_7 = [i for i in range(12) if i != 7]  # the filter gets 7 right: the coarse stage drops it
# LOGIT with ties at the quota's cut: class 0 {1, 3, 5} at .5, class 1 {6, 8} at .6
LOGIT_TIES = torch.tensor([.3, .5, .9, .5, .7, .5, .6, .8, .6, .1, .8, .2])


@pytest.mark.parametrize("opts_kw, hardness, logit, expected", [
    # class 0 as above; class 1 candidates {6, 8, 9, 10, 11}: f0 {9}, f1 {8, 10}, f3 {6, 11}
    ({}, FORGET, LOGIT, [1, 3, 2, 9, 8, 10]),  # ties by index (LOGIT would put 3 before 1, 10 before 8)
    ({"shortfall": "reference"}, FORGET, LOGIT, [1, 3, 2, 9, 8, 10]),  # the official rule: same without a shortfall
    ({"fine": "hard"}, FORGET, LOGIT, [0, 4, 2, 6, 11, 8]),  # hardest first, ties by index
    # score "logits": the filter's true-class logit, highest first. Class 0: .9 (2), .7 (4), .5 (0);
    # class 1: .8 (10), .6 (8), .4 (6)
    ({}, None, LOGIT, [2, 4, 0, 10, 8, 6]),
    # ... with ties at the cut: class 0 .9 (2), .7 (4), then {1, 3, 5} at .5 -> 1; class 1 .8 (10), {6, 8} at .6
    ({}, None, LOGIT_TIES, [2, 4, 1, 10, 6, 8]),
])
def test_round_fine_stage_by_hand(opts_kw, hardness, logit, expected):
    state, filters = one_round(opts_kw, ALL_BUT_7, hardness, logit=logit)
    assert state.selected == expected
    assert filters.calls == [(0, [])]


def test_coarse_correct_variant_keeps_what_the_filter_gets_right():
    state, _ = one_round({"coarse": "correct"}, [0, 1, 2, 3, 6, 7, 8])  # right: 4, 5 | 9, 10, 11
    # class 0: 5 (count 1) before 4 (count 2); one short, so the last (only) round fills the
    # easiest of the remaining pool {0 (2), 1 (0), 2 (1), 3 (0)}: 1 and 3 tie, index decides -> 1
    assert state.selected == [5, 4, 9, 10, 11, 1]
    assert state.log[0]["shortfall_per_class"] == [1, 0] and state.log[0]["filled_from_pool"] == 1


def test_coarse_correct_variant_on_random_problem():
    labels, hardness, logit, pool, teacher = random_problem()
    filters = FakeFilters(labels, logit, random_wrong(len(labels), 0.5), 4)
    opts = CCFSOptions(ipc_real=6, coarse="correct")
    state = ccfs_rounds(labels, pool, hardness=hardness, opts=opts, has_distilled=True,
                        train_filter=filters, teacher_logit=true_class_logit(teacher, labels))
    for j, entry in enumerate(state.log):
        assert not filters.masks[j][entry["indices"]].any()  # all classified right by filter j
    assert counts(state.selected, labels, 4) == [6] * 4


@pytest.mark.parametrize("hardness, expected", [
    (torch.tensor([1., 1, 1, 1, 1, 1, 5, 5, 5, 5, 5, 5]), [0, 1, 2, 3, 4, 5]),  # class 0 all easier
    (FORGET, [1, 3, 9, 2, 5, 7]),  # the overall order's first six: 4 of class 0, 2 of class 1
])
def test_balance_off_takes_top_quota_times_classes_overall(hardness, expected):
    state, _ = one_round({"balance": False}, list(range(12)), hardness)
    assert state.selected == expected


def test_balance_off_carry_mode_still_meets_the_total_budget():
    logits = torch.zeros(12, 2)
    logits[:, 0] = 1.0  # the filter always says class 0: only the six class-1 images are candidates
    flt = Filter(logits, 0.0, 0.0, 0.0, infer=lambda idx: logits[idx])
    opts = CCFSOptions(ipc_real=4, rounds=2, balance=False)  # 2 * 4 = 8 wanted, 4 per round
    state = ccfs_rounds(LABELS, torch.ones(12, dtype=torch.bool), hardness=FORGET, opts=opts, has_distilled=True,
                        train_filter=lambda j, s, rows: flt, teacher_logit=true_class_logit(logits, LABELS))
    assert len(state.selected) == 8  # round 2 finds only 2 candidates: 2 must come from the pool
    assert state.log[1]["filled_from_pool"] == 2


# ----------------------------------------------------------------------------- invariants on a random problem


@pytest.mark.parametrize("fine", ["simple", "hard", "random"])
def test_rounds_meet_budget_exactly_without_duplicates_inside_pool(fine):
    labels, hardness, logit, pool, teacher = random_problem()
    filters = FakeFilters(labels, logit, random_wrong(len(labels), 0.4), 4)
    opts = CCFSOptions(ipc_real=10, rounds=3, fine=fine)
    state = ccfs_rounds(labels, pool, hardness=hardness, opts=opts, has_distilled=True,
                        train_filter=filters, teacher_logit=true_class_logit(teacher, labels), seed=1)
    sel = state.selected
    assert counts(sel, labels, 4) == [10] * 4
    assert len(set(sel)) == len(sel)
    assert pool[sel].all()
    # the filter of round j saw exactly what rounds < j selected, and the log keeps the order
    assert [c[0] for c in filters.calls] == [0, 1, 2]
    done: list[int] = []
    for j, entry in enumerate(state.log):
        assert entry["round"] == j + 1
        assert filters.calls[j][1] == done
        assert entry["chosen"] == len(entry["indices"])
        taken = entry["indices"][: entry["chosen"] - entry["filled_from_pool"] - entry["filled_outside_pool"]]
        assert filters.masks[j][taken].all()  # coarse: misclassified by this round's filter
        assert not set(entry["indices"]) & set(done)
        done += entry["indices"]
    assert done == sel


@pytest.mark.parametrize("score", ["forgetting", "logits"])
@pytest.mark.parametrize("fine", ["simple", "hard"])
def test_every_round_takes_the_first_misclassified_per_class_in_fine_order(score, fine):
    """Each round's picks against an independent sort: by (hardness, index), or for score
    "logits" by (-the filter's true-class logit, index); the logits are coarsened to a few
    values so that ties decide picks there too."""
    labels, hardness, logit, pool, teacher = random_problem(seed=2)
    if score == "logits":
        logit = (logit * 4).floor() / 4
    filters = FakeFilters(labels, logit, random_wrong(len(labels), 0.6), 4)
    opts = CCFSOptions(ipc_real=9, rounds=3, fine=fine, score_name=score)
    state = ccfs_rounds(labels, pool, hardness=hardness if score == "forgetting" else None, opts=opts,
                        has_distilled=True, train_filter=filters, teacher_logit=true_class_logit(teacher, labels))
    key = hardness if score == "forgetting" else -logit
    done: set[int] = set()
    for j, entry in enumerate(state.log):
        assert entry["filled_from_pool"] == 0 and entry["quota_per_class"] == [3] * 4
        want = []
        for c in range(4):
            cands = [i for i in range(len(labels)) if labels[i] == c and pool[i] and filters.masks[j][i]
                     and i not in done]
            want += expected_order(cands, key, fine)[:3]
        assert entry["indices"] == want
        done |= set(want)


@pytest.mark.parametrize("fine", ["simple", "random"])
def test_rounds_are_deterministic_for_a_seed(fine):
    labels, hardness, logit, pool, teacher = random_problem()

    def run(seed):
        filters = FakeFilters(labels, logit, random_wrong(len(labels), 0.5), 4)
        return ccfs_rounds(labels, pool, hardness=hardness, opts=CCFSOptions(ipc_real=8, fine=fine),
                           has_distilled=True, train_filter=filters,
                           teacher_logit=true_class_logit(teacher, labels), seed=seed).selected

    assert run(0) == run(0)
    if fine == "random":
        assert run(0) != run(1)  # the seed reaches the random order


def test_alpha_zero_round_one_skips_coarse_stage_and_takes_easiest_from_pool():
    labels, hardness, logit, pool, teacher = random_problem(seed=4)
    filters = FakeFilters(labels, logit, random_wrong(len(labels), 0.5), 4)
    opts = CCFSOptions(ipc_real=7, rounds=3)  # quotas 3, 2, 2
    state = ccfs_rounds(labels, pool, hardness=hardness, opts=opts, has_distilled=False,
                        train_filter=filters, teacher_logit=true_class_logit(teacher, labels))
    assert [c[0] for c in filters.calls] == [1, 2]  # no filter for the empty S_0
    want = []
    for c in range(4):
        cands = [i for i in range(len(labels)) if labels[i] == c and pool[i]]
        want += expected_order(cands, hardness)[:3]
    assert state.log[0]["indices"] == want
    assert state.log[0]["filter_eval_acc"] is None and state.log[1]["filter_eval_acc"] == 51.0
    assert counts(state.selected, labels, 4) == [7] * 4
    # with distilled images round 1 does train a filter and uses its coarse stage
    with_distilled = FakeFilters(labels, logit, random_wrong(len(labels), 0.5), 4)
    other = ccfs_rounds(labels, pool, hardness=hardness, opts=opts, has_distilled=True,
                        train_filter=with_distilled, teacher_logit=true_class_logit(teacher, labels))
    assert with_distilled.calls[0] == (0, []) and other.log[0]["indices"] != want


def test_alpha_zero_with_logits_score_ranks_round_one_by_teacher_logit():
    labels, hardness, logit, pool, teacher = random_problem(seed=5)
    filters = FakeFilters(labels, logit, random_wrong(len(labels), 0.5), 4)
    state = ccfs_rounds(labels, pool, hardness=None, opts=CCFSOptions(ipc_real=2, rounds=2, score_name="logits"),
                        has_distilled=False, train_filter=filters, teacher_logit=true_class_logit(teacher, labels))
    teacher_logit = true_class_logit(teacher, labels)
    want = []
    for c in range(4):
        cands = [i for i in range(len(labels)) if labels[i] == c and pool[i]]
        want += expected_order(cands, -teacher_logit)[:1]
    assert state.log[0]["indices"] == want


# ----------------------------------------------------------------------------- shortfall

# class 0: 0..7, class 1: 8..15; spc 6 over 3 rounds -> quotas 2, 2, 2
SF_LABELS = torch.tensor([0] * 8 + [1] * 8)
SF_HARD = torch.tensor([0., 0, 0, 0, 0, 2, 1, 1] + [0.] * 8)
SF_LOGIT = torch.tensor([0., 0, 0, 0, 0, 0, .2, .5] + [0.] * 8)  # 6 and 7 tie on the count; the logit favours 7
SF_WRONG = {
    0: [0, 1, 2, 3, 4, 5, 6, 7, 8],  # class 1 has one candidate: short 1
    1: list(range(16)),
    2: [4] + list(range(8, 16)),  # class 0 has one candidate in the last round: short 1
}


def shortfall_run(shortfall: str, pool=None):
    def wrong(j, selected):
        m = torch.zeros(16, dtype=torch.bool)
        m[SF_WRONG[j]] = True
        return m

    filters = FakeFilters(SF_LABELS, SF_LOGIT, wrong, 2)
    pool = torch.ones(16, dtype=torch.bool) if pool is None else pool
    opts = CCFSOptions(ipc_real=6, rounds=3, shortfall=shortfall)
    return ccfs_rounds(SF_LABELS, pool, hardness=SF_HARD, opts=opts, has_distilled=True,
                       train_filter=filters, teacher_logit=torch.zeros(16))


def test_shortfall_carries_deficit_and_fills_last_round_from_pool():
    state = shortfall_run("carry")
    # round 1: class 0 {0..4} at count 0 -> 0, 1; class 1 only 8 (short 1, carried)
    # round 2: quotas 2, 3 -> 2, 3 | 9, 10, 11
    # round 3: class 0 only 4 (short 1), class 1 12, 13; the fill takes the easiest of class 0's
    # rest {5 (2), 6 (1), 7 (1)}: 6 and 7 tie, index decides -> 6
    assert [e["indices"] for e in state.log] == [[0, 1, 8], [2, 3, 9, 10, 11], [4, 12, 13, 6]]
    assert [e["quota_per_class"] for e in state.log] == [[2, 2], [2, 3], [2, 2]]
    assert [e["shortfall_per_class"] for e in state.log] == [[0, 1], [0, 0], [1, 0]]
    assert [e["filled_from_pool"] for e in state.log] == [0, 0, 1]
    assert state.log[2]["unfilled_per_class"] == [0, 0]
    assert counts(state.selected, SF_LABELS, 2) == [6, 6]
    assert state.deficit == [0, 0]


def test_shortfall_reference_mode_under_fills_like_official_code():
    state = shortfall_run("reference")
    assert [e["indices"] for e in state.log] == [[0, 1, 8], [2, 3, 9, 10], [4, 11, 12]]
    assert [e["quota_per_class"] for e in state.log] == [[2, 2]] * 3
    assert [e["shortfall_per_class"] for e in state.log] == [[0, 1], [0, 0], [1, 0]]
    assert [e["filled_from_pool"] for e in state.log] == [0, 0, 0]
    assert counts(state.selected, SF_LABELS, 2) == [5, 5]  # below IPC


def test_shortfall_fill_goes_outside_pool_only_when_the_pool_runs_dry():
    pool = torch.ones(16, dtype=torch.bool)
    pool[[5, 6, 7]] = False  # class 0 holds only 5 teacher-correct images, all taken by round 3
    state = shortfall_run("carry", pool)
    last = state.log[2]
    # the easiest of the class's other images {5 (2), 6 (1), 7 (1)}: 6 and 7 tie on the score, index decides
    assert last["indices"] == [4, 12, 13, 6]
    assert last["shortfall_per_class"] == [1, 0]
    assert (last["filled_from_pool"], last["filled_outside_pool"]) == (0, 1)
    assert last["unfilled_per_class"] == [0, 0] and state.deficit == [0, 0]
    assert counts(state.selected, SF_LABELS, 2) == [6, 6]


def test_shortfall_larger_than_the_class_is_logged_as_unfilled():
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])  # class 0 has 3 images, spc is 4
    all_wrong = torch.ones(8, dtype=torch.bool)
    filters = FakeFilters(labels, torch.zeros(8), const_wrong(all_wrong), 2)
    pool = torch.tensor([True, False, True, True, True, True, True, True])
    state = ccfs_rounds(labels, pool, hardness=torch.zeros(8), opts=CCFSOptions(ipc_real=4, rounds=1),
                        has_distilled=True, train_filter=filters, teacher_logit=torch.zeros(8))
    assert state.selected == [0, 2, 3, 4, 5, 6, 1]  # pool first, then the teacher-wrong 1
    entry = state.log[0]
    assert entry["shortfall_per_class"] == [2, 0] and entry["filled_outside_pool"] == 1
    assert entry["unfilled_per_class"] == [1, 0] and state.deficit == [1, 0]


def test_shortfall_on_random_problem_always_meets_ipc():
    labels, hardness, logit, pool, teacher = random_problem(seed=6)
    filters = FakeFilters(labels, logit, random_wrong(len(labels), 0.05), 4)  # few candidates: shortfalls
    state = ccfs_rounds(labels, pool, hardness=hardness, opts=CCFSOptions(ipc_real=12), has_distilled=True,
                        train_filter=filters, teacher_logit=true_class_logit(teacher, labels))
    assert sum(sum(e["shortfall_per_class"]) for e in state.log[:2]) > 0
    assert state.log[2]["filled_from_pool"] > 0
    assert counts(state.selected, labels, 4) == [12] * 4 and len(set(state.selected)) == 48
    assert pool[state.selected].all()


def test_last_round_fills_easiest_first_by_the_fine_stage_score():
    """A budget larger than the misclassified pool: the last round fills each class's deficit
    from the rest of the pool in (hardness, index) order, wherever the lazy pass stopped."""
    labels, hardness, logit, pool, teacher = random_problem(seed=3)
    filters = FakeFilters(labels, logit, random_wrong(len(labels), 0.15), 4)
    state = ccfs_rounds(labels, pool, hardness=hardness, opts=CCFSOptions(ipc_real=24, rounds=3), has_distilled=True,
                        train_filter=filters, teacher_logit=true_class_logit(teacher, labels))
    last = state.log[-1]
    n_fill = last["filled_from_pool"]
    assert n_fill > 0 and last["filled_outside_pool"] == 0
    taken = last["indices"][: last["chosen"] - n_fill]
    filled = last["indices"][last["chosen"] - n_fill:]
    before = set(state.selected) - set(last["indices"])
    for c in range(4):
        rest = [i for i in range(len(labels)) if pool[i] and labels[i] == c and i not in before and i not in taken]
        got = [i for i in filled if labels[i] == c]
        assert got == expected_order(rest, hardness)[: len(got)]
        assert len(got) == last["shortfall_per_class"][c]
    assert len(state.selected) == 24 * 4


# ----------------------------------------------------------------------------- resume


def strip_timing(log):
    return [{k: v for k, v in e.items() if not k.endswith("seconds")} for e in log]


class Stop(Exception):
    pass


@pytest.mark.parametrize("after", [1, 2])
@pytest.mark.parametrize("fine", ["simple", "random"])
def test_resume_from_json_state_equals_one_run(after, fine):
    labels, hardness, logit, pool, teacher = random_problem(seed=7)
    opts = CCFSOptions(ipc_real=12, rounds=3, fine=fine)

    def fresh():
        return FakeFilters(labels, logit, random_wrong(len(labels), 0.08), 4)  # shortfalls: deficits matter

    whole = ccfs_rounds(labels, pool, hardness=hardness, opts=opts, has_distilled=True,
                        train_filter=fresh(), teacher_logit=true_class_logit(teacher, labels), seed=3)
    assert any(any(e["shortfall_per_class"]) for e in whole.log[:after])

    saved = {}

    def persist(state):
        saved["json"] = json.dumps(state.__dict__)
        if len(state.log) == after:
            raise Stop  # the process dies after round `after`

    with pytest.raises(Stop):
        ccfs_rounds(labels, pool, hardness=hardness, opts=opts, has_distilled=True,
                    train_filter=fresh(), teacher_logit=true_class_logit(teacher, labels), seed=3, on_round=persist)
    state = RoundState(**json.loads(saved["json"]))
    filters = fresh()
    resumed = ccfs_rounds(labels, pool, hardness=hardness, opts=opts, has_distilled=True,
                          train_filter=filters, teacher_logit=true_class_logit(teacher, labels), seed=3, state=state)
    assert [c[0] for c in filters.calls] == list(range(after, 3))  # finished rounds are not redone
    assert resumed.selected == whole.selected
    assert resumed.deficit == whole.deficit
    assert strip_timing(resumed.log) == strip_timing(whole.log)


# ----------------------------------------------------------------------------- every registered selector

N_PER_CLASS, K, IPC, CPC = 12, 3, 5, 2


def selector_inputs(hardness_given: bool, cfg: SelectCfg | None = None, calls: list | None = None,
                    cpc: int = CPC):
    g = torch.Generator().manual_seed(11)
    labels = torch.arange(K).repeat_interleave(N_PER_CLASS)[torch.randperm(K * N_PER_CLASS, generator=g)]
    n = len(labels)
    hardness = torch.randint(0, 3, (n,), generator=g).float() if hardness_given else None
    teacher_correct = torch.rand(n, generator=g) < 0.85
    teacher_logit = true_class_logit(make_logits(labels, torch.rand(n, generator=g), ~teacher_correct, K), labels)
    feats = torch.randn(n, 6, generator=g)
    tie = torch.rand(n, generator=g)
    wrong = random_wrong(n, 0.5)
    calls = [] if calls is None else calls

    def train_filter(j, selected, rows):
        calls.append((j, list(selected)))
        return Filter(make_logits(labels, tie, wrong(j, selected), K), 60.0, 0.0, 0.0)

    cfg = cfg or SelectCfg(ipc=IPC, curricula=2)
    return SelectionInputs(labels=labels, num_classes=K, ipc=IPC, cpc=cpc, hardness=hardness,
                           score_name="forgetting" if hardness_given else "logits",
                           teacher_correct=teacher_correct, teacher_logit=teacher_logit,
                           features=lambda: feats, train_filter=train_filter, cfg=cfg, seed=0, param=0.4)


DISTILLED = {"ccfs": CPC, "self_evolved": 0, "random": 0, "random_distilled": CPC, "forgetting": 0, "window": 0, "selmatch": CPC,
             "herding": 0, "kcenter": 0, "distill_only": IPC, "full": 0}


def test_expected_table_names_are_registered():
    assert set(DISTILLED) <= set(METHODS), set(DISTILLED) - set(METHODS)


@pytest.mark.parametrize("name", sorted(DISTILLED))
def test_table_gives_each_method_its_distilled_part(name):
    assert METHODS[name].distilled_per_class(IPC, CPC) == DISTILLED[name]


@pytest.mark.parametrize("hardness_given", [True, False])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_selector_returns_unique_in_range_balanced_indices(name, hardness_given):
    cpc = METHODS[name].distilled_per_class(IPC, CPC)
    inp = selector_inputs(hardness_given, cpc=cpc)
    sel = METHODS[name].select(inp)
    idx = sel.indices.tolist()
    assert sel.indices.dtype == torch.long
    assert len(set(idx)) == len(idx)
    assert all(0 <= i < len(inp.labels) for i in idx)
    per_class = counts(idx, inp.labels, K)
    if METHODS[name].full_data:
        assert sorted(idx) == list(range(len(inp.labels)))
    else:
        assert per_class == [IPC - cpc] * K  # real + distilled = IPC for every class


@pytest.mark.parametrize("name, first_round", [("ccfs", 0), ("self_evolved", 1)])
def test_ccfs_selectors_train_filters_and_stay_in_teacher_correct_pool(name, first_round):
    calls: list = []
    inp = selector_inputs(True, calls=calls, cpc=METHODS[name].distilled_per_class(IPC, CPC))
    sel = METHODS[name].select(inp)
    assert [j for j, _ in calls] == list(range(first_round, 2))  # α = 0: no filter for the empty S_0
    assert inp.teacher_correct[sel.indices].all()
    assert [i for e in sel.log["rounds"] for i in e["indices"]] == sel.indices.tolist()


def test_ccfs_selector_without_teacher_correct_restriction_may_leave_the_pool():
    inp = selector_inputs(True, cfg=SelectCfg(ipc=IPC, curricula=2, teacher_correct=False))
    inp.train_filter = lambda j, s, rows: Filter(make_logits(inp.labels, torch.zeros(len(inp.labels)),
                                                          torch.ones(len(inp.labels), dtype=torch.bool), K),
                                              0.0, 0.0, 0.0)
    # every image ties on the score: the lowest indices of each class win, teacher-wrong ones included
    inp.hardness = torch.zeros(len(inp.labels))
    sel = METHODS["ccfs"].select(inp)
    want = sorted(i for c in range(K) for i in (inp.labels == c).nonzero().flatten().tolist()[: IPC - CPC])
    assert sorted(sel.indices.tolist()) == want
    assert not inp.teacher_correct[want].all()  # the setup really has teacher-wrong images in there


@pytest.mark.parametrize("score", ["forgetting", "logits"])
def test_filters_are_asked_only_about_the_eligible_pool(score):
    """Score "logits" ranks by the filter's own logit, so every eligible row (not yet selected,
    teacher-correct) is inferred up front. A score fixed before the filter runs takes the lazy
    pass: nothing up front, then eligible rows only, as far as the quotas need. Either way the
    log's pool accuracy and inferred count are over the rows inferred (a pool of about 96 a
    class: more than the lazy pass's first chunk of 32)."""
    labels, hardness, logit, pool, teacher = random_problem(n_per_class=120, seed=8)
    filters = FakeFilters(labels, logit, random_wrong(len(labels), 0.5), 4)
    lazy = score == "forgetting"
    state = ccfs_rounds(labels, pool, hardness=hardness if lazy else None,
                        opts=CCFSOptions(ipc_real=6, score_name=score), has_distilled=True,
                        train_filter=filters, teacher_logit=true_class_logit(teacher, labels))
    done = torch.zeros(len(labels), dtype=torch.bool)
    for j, entry in enumerate(state.log):
        eligible = pool & ~done
        rows = filters.rows[j]
        if lazy:
            assert filters.up_front[j] == 0
            assert not (rows & ~eligible).any() and 0 < int(rows.sum()) < int(eligible.sum())
        else:
            assert filters.up_front[j] == int(eligible.sum()) and torch.equal(rows, eligible)
        assert entry["filter_inferred"] == int(rows.sum())
        pred = make_logits(labels, logit, filters.masks[j], 4).argmax(1)
        want = 100.0 * (pred[rows] == labels[rows]).float().mean().item()
        assert entry["filter_pool_acc"] == pytest.approx(want) and entry["filter_eval_acc"] == 50.0 + j
        done[entry["indices"]] = True


def test_forgetting_baseline_ranks_by_forgetting_whatever_select_score_says():
    from ccfs.selection.methods import score_of

    cfg = SelectCfg(score="aum")
    assert score_of("forgetting", cfg) == "forgetting"
    assert score_of("window", cfg) == "aum" and score_of("ccfs", cfg) == "aum"
    assert score_of("random", cfg) is None


def test_selmatch_keeps_the_window_start_real_and_distils_the_next_easier_images():
    """SelMatch's order: per class the window (hardest first) gives its first IPC - cpc images
    as the real part; the α part starts from the cpc images after them, which are easier."""
    inp = selector_inputs(True, cpc=CPC)
    inp.cfg = SelectCfg(ipc=IPC, selmatch_beta=0.0)
    sel = METHODS["selmatch"].select(inp)
    init = torch.tensor(sel.log["distill_init"])
    for c in range(K):
        rows = (inp.labels == c).nonzero().flatten()
        ranked = rows[torch.argsort(-inp.hardness[rows].double(), stable=True)].tolist()  # hardest first
        real_c = [i for i in sel.indices.tolist() if inp.labels[i] == c]
        init_c = [i for i in init.tolist() if inp.labels[i] == c]
        assert real_c == ranked[: IPC - CPC] and init_c == ranked[IPC - CPC: IPC]
        assert inp.hardness[init_c].max() <= inp.hardness[real_c].min()


# ----------------------------------------------------------------------------- the lazy coarse pass

LOG_KEYS = ("indices", "quota_per_class", "shortfall_per_class", "shortfall_total", "filled_from_pool",
            "filled_outside_pool", "unfilled_per_class")


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kw", [{}, {"balance": False}, {"coarse": "correct"}, {"fine": "hard"},
                                {"shortfall": "reference"}, {"ipc_real": 30}])
def test_lazy_coarse_pass_selects_what_the_full_pass_selects(seed, kw):
    """Stopping the pass once the quotas have their candidates gives the same selection,
    round by round, as filters inferred over the whole eligible pool up front (no `infer`:
    ccfs_round then ranks every eligible image), while the filters infer fewer rows (many
    ties in the score, filters that misclassify 10-40 %, a small pool, and a budget that
    runs the pool dry)."""
    labels, hardness, logit, pool, teacher = random_problem(seed=seed)
    frac = 0.1 + 0.06 * seed
    opts = CCFSOptions(**{"ipc_real": 9, "rounds": 3, **kw})
    assert opts.lazy(hardness)

    def run(full: bool):
        filters = FakeFilters(labels, logit, random_wrong(len(labels), frac), 4,
                              full_pass_over=pool if full else None)
        state = ccfs_rounds(labels, pool, hardness=hardness, opts=opts, has_distilled=True,
                            train_filter=filters, teacher_logit=true_class_logit(teacher, labels))
        return state, filters

    (full, ff), (lazy, lf) = run(True), run(False)
    assert lazy.selected == full.selected and lazy.deficit == full.deficit
    assert [{k: e[k] for k in LOG_KEYS} for e in lazy.log] == [{k: e[k] for k in LOG_KEYS} for e in full.log]
    done = torch.zeros(len(labels), dtype=torch.bool)
    for j, (le, fe) in enumerate(zip(lazy.log, full.log)):
        eligible = pool & ~done
        assert torch.equal(ff.rows[j], eligible) and fe["filter_inferred"] == int(eligible.sum())  # really full
        assert not (lf.rows[j] & ~eligible).any()  # never outside the eligible pool
        assert le["filter_inferred"] == int(lf.rows[j].sum()) <= fe["filter_inferred"]
        done[le["indices"]] = True
    if kw == {}:
        assert sum(int(lf.rows[j].sum()) for j in lf.rows) < sum(int(ff.rows[j].sum()) for j in ff.rows)


def test_lazy_pass_is_on_only_where_the_order_is_fixed_before_the_filter_runs():
    assert CCFSOptions(ipc_real=1).lazy(torch.zeros(3))
    assert CCFSOptions(ipc_real=1, fine="hard").lazy(torch.zeros(3))
    assert not CCFSOptions(ipc_real=1).lazy(None)  # score "logits": the order is the filter's own
    assert not CCFSOptions(ipc_real=1, fine="random").lazy(torch.zeros(3))


# ----------------------------------------------------------------------------- what a selection depends on


def cfg_of(*overrides):
    from ccfs.config import load_config

    return load_config(None, list(overrides))


def sel(method, *overrides):
    from ccfs.records import selection_settings

    return selection_settings(cfg_of(*overrides), method)


def test_filter_recipe_follows_the_students_unless_told():
    from ccfs.config import filter_recipe

    base = ("train.steps=9600", "train.batch_size=0")  # the paper's batch rule: 32 a batch on 500 images
    students = cfg_of(*base).train
    assert filter_recipe(cfg_of(*base, "select.filter_steps=null")) == students
    by_steps = filter_recipe(cfg_of(*base, "select.filter_steps=4800"))
    assert by_steps.steps == 4800 and by_steps.epochs_for(500) == 4800 // 16 and students.epochs_for(500) == 9600 // 16
    assert {k: v for k, v in vars(by_steps).items() if k != "steps"} == \
        {k: v for k, v in vars(students).items() if k != "steps"}


def test_filter_steps_must_be_at_least_one():
    from ccfs.errors import ConfigError

    with pytest.raises(ConfigError, match="at least 1"):
        cfg_of("select.filter_steps=0")


def test_a_selection_depends_on_the_filters_length_not_the_students():
    own = sel("ccfs", "select.filter_steps=4800", "train.steps=9600")
    assert own["train"]["steps"] == 4800 and "filter_steps" not in own["select"]  # in the filters' recipe
    assert own == sel("ccfs", "select.filter_steps=4800", "train.steps=19200")
    assert own != sel("ccfs", "select.filter_steps=2400", "train.steps=9600")
    as_students = sel("ccfs", "select.filter_steps=null", "train.steps=9600")  # filters as long as the students
    assert as_students["train"]["steps"] == 9600 and own != as_students
    # methods without filters depend on neither length, but on the other select.* options
    assert "train" not in sel("random")
    assert sel("random", "select.filter_steps=4800", "train.steps=9600") == sel("random", "train.steps=19200")
    assert sel("random", "select.ipc=20") != sel("random", "select.ipc=30")


def test_a_settings_mismatch_names_what_differs_and_how_to_go_on():
    from ccfs.records import selection_changes, settings_mismatch

    base = sel("ccfs", "select.filter_steps=1600", "select.curricula=3")
    assert selection_changes(base, sel("ccfs", "select.filter_steps=1600", "select.curricula=3",
                                       "train.steps=9999")) == []
    assert selection_changes(base, sel("ccfs", "select.filter_steps=2400", "select.curricula=3")) == \
        ["train.steps: 1600 -> 2400"]
    assert selection_changes(base, sel("ccfs", "select.filter_steps=1600", "select.curricula=2")) == \
        ["select.curricula: 3 -> 2"]
    msg = settings_mismatch("OUT/select/random/seed0", sel("random", "select.ipc=550"), sel("random", "select.ipc=275"))
    assert "select.ipc: 550 -> 275" in msg and "select.ipc=[55,275]" in msg and "\n" not in msg
    msg = settings_mismatch("OUT/select/ccfs/seed0", base, sel("ccfs", "train.lr=0.5", "select.filter_steps=1600",
                                                               "select.curricula=3"))
    assert msg.startswith("OUT/select/ccfs/seed0 ")
    assert "train.lr: " in msg and "-> 0.5" in msg and "new out=" in msg and "select.ipc=[" not in msg


def test_compile_and_eval_last_keep_a_selection_but_keep_records_apart():
    from ccfs.records import selection_settings, settings_hash

    pinned = ("train.compile=false", "train.eval_last=1", "select.filter_steps=1600", "train.steps=4800")
    cfg = cfg_of(*pinned)
    assert not {"compile", "eval_last"} & set(selection_settings(cfg, "ccfs")["train"])
    for change in ("train.compile=true", "train.eval_last=3"):
        other = cfg_of(*pinned, change)
        # filters never compile and are not tested by the recipe: a selection made for one serves the other
        assert selection_settings(other, "ccfs") == selection_settings(cfg, "ccfs")
        assert settings_hash(other) != settings_hash(cfg)  # the students differ: their records are kept apart
    assert selection_settings(cfg_of(*pinned, "train.compile=true"))["train"]["compile"] is True
    # the students' length changes records but not the selection of filters with their own length
    longer = cfg_of(*pinned, "train.steps=9600")
    assert selection_settings(longer, "ccfs") == selection_settings(cfg, "ccfs")
    assert settings_hash(longer) != settings_hash(cfg)
    # what neither a selection nor a student depends on leaves the hash alone
    assert settings_hash(cfg_of(*pinned, "out=elsewhere", "eval.seeds=[5]")) == settings_hash(cfg)


def test_check_selection_settings_writes_when_asked_and_refuses_other_settings(tmp_path):
    from ccfs.errors import ConfigError
    from ccfs.records import check_selection_settings, selection_settings

    pinned = ("select.filter_steps=1600", "select.curricula=3", "train.compile=false")
    cfg = cfg_of(*pinned)
    folder = tmp_path / "select" / "ccfs" / "seed0"
    folder.mkdir(parents=True)
    saved_path = folder / "settings.json"
    check_selection_settings(folder, cfg, "ccfs")  # nothing saved, not asked to write: nothing written
    assert not saved_path.exists()
    check_selection_settings(folder, cfg, "ccfs", write=True)
    saved = json.loads(saved_path.read_text())
    assert saved == json.loads(json.dumps(selection_settings(cfg, "ccfs")))
    # the same selection settings are accepted (compiled, longer students included) and the file is kept
    check_selection_settings(folder, cfg, "ccfs")
    check_selection_settings(folder, cfg_of(*pinned, "train.compile=true", "train.steps=9999"), "ccfs", write=True)
    assert json.loads(saved_path.read_text()) == saved
    with pytest.raises(ConfigError, match=r"select\.curricula: 3 -> 2") as err:
        check_selection_settings(folder, cfg_of(*pinned, "select.curricula=2"), "ccfs", write=True)
    assert str(folder) in str(err.value) and "new out=" in str(err.value)
    with pytest.raises(ConfigError, match=r"train\.steps: 1600 -> 2400"):
        check_selection_settings(folder, cfg_of(*pinned, "select.filter_steps=2400"), "ccfs")
    assert json.loads(saved_path.read_text()) == saved  # a refused folder keeps its settings
    # an IPC change: the hint to give a list of IPCs
    other = tmp_path / "select" / "random" / "seed0"
    other.mkdir(parents=True)
    check_selection_settings(other, cfg_of("select.ipc=550"), "random", write=True)
    with pytest.raises(ConfigError, match=r"select\.ipc: 550 -> 275.*select\.ipc=\[55,275\]"):
        check_selection_settings(other, cfg_of("select.ipc=275"), "random")


def test_filters_train_eager_whatever_train_compile_says(monkeypatch):
    import ccfs.api as api
    from ccfs.config import Recipe
    from ccfs.data.datasets import Dataset, Split

    seen = []
    monkeypatch.setattr(api, "fit", lambda model, data, recipe, *a, **kw: seen.append(recipe.compile))
    imgs = torch.zeros(6, 1, 28, 28, dtype=torch.uint8)
    split = Split(imgs, torch.arange(6) % 3)
    data = Dataset("tiny", split, split, ["a", "b", "c"], (0.5,), (0.25,))
    train = api.filter_trainer(data, None, None, arch="convnet_w32", recipe=Recipe(compile=True), seed=0,
                               device="cpu")
    f = train(0, [0, 1, 2], torch.ones(6, dtype=torch.bool))
    assert seen == [False] and f.train_logits.shape == (6, 3)
