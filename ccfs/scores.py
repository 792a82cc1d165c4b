"""Difficulty scores: the one table of names and the one direction used inside ccfs.

Score files and the teacher's recorder keep each score's natural sign (forgetting: higher
= harder; AUM, margin, C-score: higher = easier). Everything past the score-file boundary
works with **hardness: higher = harder**; `to_hardness` is the only place that converts
(docs/method.md §4). Torch-free, so the config can list the names without importing torch.
"""
from __future__ import annotations

from ccfs.errors import ConfigError

# name -> True where the raw value is higher for easier samples. Every score ccfs knows.
HIGHER_IS_EASIER: dict[str, bool] = {
    "forgetting": False,  # forgetting events (Toneva et al. 2019); never-learned samples hardest
    "cscore": True,  # C-score (Jiang et al.), imported from a file
    "logits": True,  # the filter's true-class logit (computed during selection, never stored)
    "el2n": False,  # EL2N (Paul et al. 2021), mean over the early el2n epochs
    "el2n_early": False,  # EL2N at the first el2n epoch
    "loss": False,  # cross-entropy, mean over the el2n epochs
    "loss_last": False,  # cross-entropy at the last presentation
    "margin": True,  # true-class logit minus the largest other logit, last presentation
    "aum": True,  # area under the margin (Pleiss et al. 2020): mean margin over training
}

SCORE_NAMES = tuple(HIGHER_IS_EASIER)
RECORDED = ("forgetting", "el2n", "el2n_early", "loss", "loss_last", "margin", "aum")  # by the teacher run
COMPUTED = ("logits",)  # needs no file: taken from the filter (or teacher) logits


def check_name(name: str) -> None:
    if name not in HIGHER_IS_EASIER:
        raise ConfigError(f"unknown difficulty score {name!r}; valid: {', '.join(SCORE_NAMES)}")


def to_hardness(raw, name: str):
    """A raw score array (torch or numpy) as hardness, higher = harder."""
    check_name(name)
    return -raw if HIGHER_IS_EASIER[name] else raw


def hardness_label(name: str) -> str:
    """How a plot or table names the hardness of score `name` ("−aum", "forgetting")."""
    return f"−{name}" if HIGHER_IS_EASIER[name] else name


def true_class_logit(logits, labels):
    """[N] the logit of each sample's own class, from logits [N, K] and labels [N] (the
    score `logits`, higher = easier)."""
    return logits.gather(1, labels[:, None])[:, 0]
