"""The baselines of the paper's table as pure tensor functions (docs/method.md §6).

Each returns train-set indices, class by class. `per_class` is the number of real
images per class. Hardness arrays are "higher = harder".
"""
from __future__ import annotations

import torch


def _by_class(labels: torch.Tensor, num_classes: int):
    return [(labels == c).nonzero().flatten() for c in range(num_classes)]


def random_balanced(labels: torch.Tensor, per_class: int, generator: torch.Generator,
                    pool: torch.Tensor | None = None) -> torch.Tensor:
    """Class-balanced uniform choice (optionally within a bool `pool`)."""
    num_classes = int(labels.max()) + 1
    keep = pool if pool is not None else torch.ones_like(labels, dtype=torch.bool)
    out = []
    for idx in _by_class(labels, num_classes):
        idx = idx[keep[idx]]
        out.append(idx[torch.randperm(len(idx), generator=generator)[:per_class]])
    return torch.cat(out)


def hardest_window(labels: torch.Tensor, hardness: torch.Tensor, per_class: int, beta: float,
                   *, unit: str = "ipc") -> torch.Tensor:
    """SelMatch's sliding window: per class sort hardest -> easiest (ties by index), skip
    int(per_class * beta) (unit "ipc", docs/method.md §6) or int(class_size * beta) (unit "class")
    of the hardest, take the next `per_class`. beta=0 is the "forgetting" baseline."""
    num_classes = int(labels.max()) + 1
    out = []
    for idx in _by_class(labels, num_classes):
        ranked = idx[torch.argsort(-hardness[idx].double(), stable=True)]
        skip = int(round((per_class if unit == "ipc" else len(idx)) * beta, 9))  # 0.29 * 100 is 28.99…
        skip = min(skip, max(0, len(idx) - per_class))
        out.append(ranked[skip: skip + per_class])
    return torch.cat(out)


def herding(features: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy herding (Welling 2009): repeatedly add the sample that brings the mean of
    the chosen features closest to the mean of all. features [n, D] -> [k] positions."""
    mu = features.mean(0)
    chosen: list[int] = []
    total = torch.zeros_like(mu)
    avail = torch.ones(len(features), dtype=torch.bool)
    for t in range(min(k, len(features))):
        cand_mean = (total[None] + features) / (t + 1)  # [n, D]
        dist = (cand_mean - mu).norm(dim=1)
        dist[~avail] = float("inf")
        i = int(dist.argmin())
        chosen.append(i)
        avail[i] = False
        total += features[i]
    return torch.tensor(chosen, dtype=torch.long)


def k_center(features: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy k-center (Sener & Savarese 2018): start from the sample nearest the mean,
    then repeatedly add the sample farthest from the chosen set. [n, D] -> [k] positions."""
    first = int((features - features.mean(0)).norm(dim=1).argmin())
    chosen = [first]
    dist = (features - features[first]).norm(dim=1)
    dist[first] = -float("inf")  # chosen: never again, even when every other sample is a duplicate
    for _ in range(min(k, len(features)) - 1):
        i = int(dist.argmax())
        chosen.append(i)
        dist = torch.minimum(dist, (features - features[i]).norm(dim=1))
        dist[i] = -float("inf")
    return torch.tensor(chosen, dtype=torch.long)


def per_class_coreset(labels: torch.Tensor, features: torch.Tensor, per_class: int, fn) -> torch.Tensor:
    """Apply a feature coreset function (herding, k_center) within each class."""
    num_classes = int(labels.max()) + 1
    return torch.cat([idx[fn(features[idx], per_class)] for idx in _by_class(labels, num_classes)])
