"""Selectors behind one interface: `SELECTORS[name](inputs) -> Selection`.

A selector sees a `SelectionInputs` (labels, scores, teacher outputs, budget, seed, a
filter-training callable) and returns the chosen train indices plus per-sample scores.
`distilled` says how many distilled images per class join the selected real ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from ccfs.selection import baselines
from ccfs.selection.ccfs import CCFSOptions, Filter, RoundState, ccfs_rounds


@dataclass
class SelectionInputs:
    labels: torch.Tensor  # [N] int64
    num_classes: int
    ipc: int  # images per class of the synthetic set
    cpc: int  # distilled images per class available for methods that use them
    hardness: Optional[torch.Tensor]  # [N] the chosen score, higher = harder (None: score "logits")
    score_name: str
    teacher_correct: torch.Tensor  # [N] bool
    teacher_logits: torch.Tensor  # [N, K] un-augmented train logits
    features: Callable[[], torch.Tensor]  # teacher features [N, D], computed on demand
    train_filter: Callable[[int, list[int], int], Filter]  # (round, selected, distilled per class)
    cfg: object  # SelectCfg
    seed: int
    beta: float = 0.0  # window: the fraction of hardest images skipped
    state: Optional[RoundState] = None  # CCFS: resume after the last finished round
    on_round: Optional[Callable[[RoundState], None]] = None


@dataclass
class Selection:
    indices: torch.Tensor  # [M] train indices in selection order
    distilled: int  # distilled images per class in the synthetic set
    scores: Optional[torch.Tensor] = None  # [N] per-sample scores the selector ranked by
    log: dict = field(default_factory=dict)


def _hardness(inp: SelectionInputs) -> torch.Tensor:
    if inp.hardness is not None:
        return inp.hardness
    from ccfs.selection.ccfs import true_class_logit

    return -true_class_logit(inp.teacher_logits, inp.labels)  # score "logits": the teacher's


def _ccfs(inp: SelectionInputs, cpc: int) -> Selection:
    c = inp.cfg
    opts = CCFSOptions(ipc_real=inp.ipc - cpc, rounds=c.curricula, coarse=c.coarse, fine=c.fine,
                       balance=c.balance, shortfall=c.shortfall, score_name=inp.score_name)
    pool = inp.teacher_correct if c.teacher_correct else torch.ones_like(inp.labels, dtype=torch.bool)
    ease = None if inp.hardness is None else -inp.hardness
    state = ccfs_rounds(inp.labels, pool, ease, inp.hardness, opts, cpc > 0,
                        lambda j, sel: inp.train_filter(j, sel, cpc), inp.teacher_logits,
                        seed=inp.seed, state=inp.state, on_round=inp.on_round)
    return Selection(torch.tensor(state.selected, dtype=torch.long), cpc, inp.hardness,
                     {"rounds": state.log})


def select_ccfs(inp: SelectionInputs) -> Selection:
    return _ccfs(inp, inp.cpc)


def select_self_evolved(inp: SelectionInputs) -> Selection:
    """CCFS with alpha = 0: real images only."""
    return _ccfs(inp, 0)


def select_random(inp: SelectionInputs) -> Selection:
    gen = torch.Generator().manual_seed(inp.seed)
    return Selection(baselines.random_balanced(inp.labels, inp.ipc, gen), 0)


def select_forgetting(inp: SelectionInputs) -> Selection:
    h = _hardness(inp)
    return Selection(baselines.hardest_window(inp.labels, h, inp.ipc, 0.0), 0, h)


def select_window(inp: SelectionInputs) -> Selection:
    """SelMatch's sliding window at one beta; the stage runs one per beta in
    select.window_betas (methods `window_b0.3`, ...) and the report keeps every beta."""
    h = _hardness(inp)
    idx = baselines.hardest_window(inp.labels, h, inp.ipc, inp.beta, inp.cfg.window_unit)
    return Selection(idx, 0, h, {"beta": inp.beta})


def select_selmatch(inp: SelectionInputs) -> Selection:
    """SelMatch's order: select a window first (beta = select.selmatch_beta), then distil
    the α part from it. Returns the real part; `log["distill_init"]` holds the window
    images the stage distils (cpc per class) into the distilled part."""
    h = _hardness(inp)
    window = baselines.hardest_window(inp.labels, h, inp.ipc, inp.cfg.selmatch_beta, inp.cfg.window_unit)
    per_class = window.view(inp.num_classes, inp.ipc)  # hardest_window returns class blocks
    init, real = per_class[:, : inp.cpc].flatten(), per_class[:, inp.cpc:].flatten()
    return Selection(real, inp.cpc, h, {"distill_init": init.tolist()})


def _coreset(inp: SelectionInputs, fn) -> Selection:
    feats = torch.nn.functional.normalize(inp.features().float(), dim=1)
    return Selection(baselines.per_class_coreset(inp.labels, feats, inp.ipc, fn), 0)


def select_herding(inp: SelectionInputs) -> Selection:
    return _coreset(inp, baselines.herding)


def select_kcenter(inp: SelectionInputs) -> Selection:
    return _coreset(inp, baselines.k_center)


def select_distill_only(inp: SelectionInputs) -> Selection:
    return Selection(torch.empty(0, dtype=torch.long), inp.ipc)


def select_full(inp: SelectionInputs) -> Selection:
    return Selection(torch.arange(len(inp.labels)), 0)


SELECTORS: dict[str, Callable[[SelectionInputs], Selection]] = {
    "ccfs": select_ccfs,
    "self_evolved": select_self_evolved,
    "random": select_random,
    "forgetting": select_forgetting,
    "window": select_window,
    "selmatch": select_selmatch,
    "herding": select_herding,
    "kcenter": select_kcenter,
    "distill_only": select_distill_only,
    "full": select_full,
}
