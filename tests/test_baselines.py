"""Baselines (docs/method.md §6): class-balanced random, the hardest-first sliding window by hand,
herding and k-center against brute-force greedy references, per-class coresets."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ccfs.selection.baselines import hardest_window, herding, k_center, per_class_coreset, random_balanced


def shuffled_labels(per_class: list[int], seed: int = 0) -> torch.Tensor:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


def counts(indices, labels, k):
    return torch.bincount(labels[indices], minlength=k).tolist()


# ----------------------------------------------------------------------------- random


def test_random_balanced_counts_and_uniqueness():
    labels = shuffled_labels([10, 7, 12])
    out = random_balanced(labels, 5, torch.Generator().manual_seed(0))
    assert counts(out, labels, 3) == [5, 5, 5]
    assert len(set(out.tolist())) == 15
    assert labels[out].tolist() == [0] * 5 + [1] * 5 + [2] * 5  # class by class


def test_random_balanced_deterministic_for_a_seed_and_varies_across_seeds():
    labels = shuffled_labels([20, 20])

    def draw(seed):
        return random_balanced(labels, 4, torch.Generator().manual_seed(seed)).tolist()

    assert draw(1) == draw(1)
    assert len({tuple(draw(s)) for s in range(6)}) > 1


def test_random_balanced_stays_in_pool_and_takes_all_of_a_small_class():
    labels = shuffled_labels([10, 10], seed=1)
    pool = torch.ones(20, dtype=torch.bool)
    class1 = (labels == 1).nonzero().flatten()
    pool[class1[:8]] = False  # class 1 keeps two eligible images
    out = random_balanced(labels, 4, torch.Generator().manual_seed(0), pool)
    assert pool[out].all()
    assert counts(out, labels, 2) == [4, 2]
    assert sorted(out[labels[out] == 1].tolist()) == sorted(class1[8:].tolist())


# ----------------------------------------------------------------------------- sliding window

# class 0 = 0..9, class 1 = 10..19 (shuffled below to show indices, not positions, matter)
WIN_LABELS = torch.tensor([0] * 10 + [1] * 10)
WIN_HARD = torch.tensor([5., 9, 1, 9, 3, 0, 7, 2, 4, 6] + [1., 2, 3, 4, 5, 6, 7, 8, 9, 10])
#   class 0 hardest first (ties by index): 1, 3, 6, 9, 0, 8, 4, 7, 2, 5
#   class 1 hardest first: 19, 18, 17, 16, 15, 14, 13, 12, 11, 10


@pytest.mark.parametrize("beta, unit, expected", [
    (0.0, "ipc", [1, 3, 6, 9, 19, 18, 17, 16]),  # the "forgetting" baseline: hardest per class
    (0.5, "ipc", [6, 9, 0, 8, 17, 16, 15, 14]),  # skip int(4 * 0.5) = 2
    (0.3, "ipc", [3, 6, 9, 0, 18, 17, 16, 15]),  # skip int(4 * 0.3) = 1
    (0.5, "class", [8, 4, 7, 2, 14, 13, 12, 11]),  # skip int(10 * 0.5) = 5
    (0.9, "class", [4, 7, 2, 5, 13, 12, 11, 10]),  # skip int(10 * 0.9) = 9, clipped to 10 - 4 = 6
    (0.9, "ipc", [9, 0, 8, 4, 16, 15, 14, 13]),  # skip int(4 * 0.9) = 3
])
def test_hardest_window_by_hand(beta, unit, expected):
    assert hardest_window(WIN_LABELS, WIN_HARD, 4, beta, unit=unit).tolist() == expected


def test_hardest_window_follows_indices_not_positions():
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    hard = WIN_HARD.clone()
    hard[3] = 8.5  # no ties here: a tie would break by the shuffled index
    labels, hard = WIN_LABELS[perm], hard[perm]
    out = hardest_window(labels, hard, 4, 0.0)
    assert perm[out].tolist() == [1, 3, 6, 9, 19, 18, 17, 16]


@pytest.mark.parametrize("beta, unit", [(0.0, "ipc"), (0.4, "ipc"), (0.25, "class")])
def test_hardest_window_matches_independent_sort_with_many_ties(beta, unit):
    labels = shuffled_labels([30, 25, 40], seed=2)
    hard = torch.randint(0, 3, (len(labels),), generator=torch.Generator().manual_seed(3)).float()
    want = []
    for c in range(3):
        members = [i for i in range(len(labels)) if labels[i] == c]
        ranked = sorted(members, key=lambda i: (-float(hard[i]), i))  # hardest first, ties by index
        skip = min(int((6 if unit == "ipc" else len(members)) * beta), len(members) - 6)
        want += ranked[skip: skip + 6]
    assert hardest_window(labels, hard, 6, beta, unit=unit).tolist() == want


# ----------------------------------------------------------------------------- herding / k-center references


def brute_herding(x: np.ndarray, k: int) -> list[int]:
    """Greedy mean matching, one candidate at a time in float64."""
    mu = x.mean(0)
    chosen: list[int] = []
    for t in range(min(k, len(x))):
        best, best_d = -1, np.inf
        for i in range(len(x)):
            if i in chosen:
                continue
            d = np.linalg.norm((x[chosen].sum(0) + x[i]) / (t + 1) - mu)
            if d < best_d:
                best, best_d = i, d
        chosen.append(best)
    return chosen


def brute_k_center(x: np.ndarray, k: int) -> list[int]:
    """Start nearest the mean; then the point whose nearest chosen point is farthest."""
    chosen = [int(np.argmin(np.linalg.norm(x - x.mean(0), axis=1)))]
    while len(chosen) < min(k, len(x)):
        best, best_d = -1, -np.inf
        for i in range(len(x)):
            if i in chosen:
                continue
            d = min(np.linalg.norm(x[i] - x[j]) for j in chosen)
            if d > best_d:
                best, best_d = i, d
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("seed, n, d, k", [(0, 12, 3, 5), (1, 20, 5, 8), (2, 9, 2, 9), (3, 6, 4, 10)])
def test_herding_matches_brute_force(seed, n, d, k):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert herding(x, k).tolist() == brute_herding(x.numpy(), k)


@pytest.mark.parametrize("seed, n, d, k", [(0, 12, 3, 5), (1, 20, 5, 8), (2, 9, 2, 9), (3, 6, 4, 10)])
def test_k_center_matches_brute_force(seed, n, d, k):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert k_center(x, k).tolist() == brute_k_center(x.numpy(), k)


def test_herding_first_pick_is_nearest_the_mean():
    x = torch.tensor([[0.0, 0.0], [4.0, 0.0], [1.0, 1.0], [-1.0, 0.5]])  # mean (1, 0.375)
    assert herding(x, 1).tolist() == [2]


@pytest.mark.parametrize("fn", [herding, k_center])
def test_coresets_never_repeat_a_sample_even_with_duplicate_features(fn):
    # three distinct points, six samples: once every distinct point is taken all remaining
    # distances are zero, and the next pick must still be a new sample
    x = torch.tensor([[0.0], [0.0], [1.0], [1.0], [5.0], [5.0]])
    out = fn(x, 6).tolist()
    assert sorted(out) == list(range(6))
    assert fn(x, 6).tolist() == out  # and deterministic


@pytest.mark.parametrize("fn, brute", [(herding, brute_herding), (k_center, brute_k_center)])
def test_per_class_coreset_stays_within_classes(fn, brute):
    labels = shuffled_labels([8, 11, 9], seed=4)
    feats = torch.randn(len(labels), 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    out = per_class_coreset(labels, feats, 3, fn)
    assert labels[out].tolist() == [0] * 3 + [1] * 3 + [2] * 3
    assert len(set(out.tolist())) == 9
    for c in range(3):
        members = (labels == c).nonzero().flatten()  # positions within the class -> train indices
        assert out[3 * c: 3 * c + 3].tolist() == members[brute(feats[members].numpy(), 3)].tolist()
