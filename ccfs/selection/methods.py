"""Every selection method in one table: `METHODS[name]` says how the method selects and
what it needs, so the stages ask the table instead of checking names.

A selector is a function `SelectionInputs -> Selection`: it sees the train labels, the
difficulty as hardness (higher = harder), the teacher's outputs, the budget and a seed,
and returns the chosen train indices. Adding a method means adding its function and its
`Method` entry here (plus tests); nothing else in ccfs names a method.

Run names: a method with a `sweep` runs once per value of that `select.*` list, named
`<name>_b<value>` (e.g. `window_b0.7`); `parse` turns a run name back into its entry.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Optional

import torch

from ccfs.errors import ConfigError
from ccfs.selection import baselines
from ccfs.selection.ccfs import CCFSOptions, Filter, RoundState, ccfs_rounds


@dataclass
class SelectionInputs:
    labels: torch.Tensor  # [N] int64
    num_classes: int
    ipc: int  # images per class of the synthetic set (distilled + real)
    cpc: int  # distilled images per class in this method's set; real per class = ipc - cpc
    hardness: Optional[torch.Tensor]  # [N] the chosen score, higher = harder (None: score "logits")
    score_name: str
    teacher_correct: torch.Tensor  # [N] bool
    teacher_logit: torch.Tensor  # [N] the teacher's true-class logit on un-augmented train images
    features: Callable[[], torch.Tensor]  # teacher features [N, D], computed on demand
    train_filter: Callable[[int, list[int], torch.Tensor], Filter]  # (round, selected, rows) -> filter
    cfg: object  # SelectCfg
    seed: int
    param: float = 0.0  # the swept value of this run (window: beta, the fraction skipped)
    state: Optional[RoundState] = None  # CCFS: resume after the last finished round
    on_round: Optional[Callable[[RoundState], None]] = None

    @property
    def real(self) -> int:
        """Real images per class to select."""
        return self.ipc - self.cpc

    def hardness_or_teacher(self) -> torch.Tensor:
        """The score as hardness; for score "logits", the teacher's true-class logit negated."""
        if self.hardness is not None:
            return self.hardness
        return -self.teacher_logit


@dataclass
class Selection:
    indices: torch.Tensor  # [M] train indices in selection order
    scores: Optional[torch.Tensor] = None  # [N] hardness the selector ranked by, if any
    log: dict = field(default_factory=dict)  # "rounds": CCFS round log; "distill_init": see selmatch
    distilled: Optional[object] = None  # set by ccfs.api.select: the distilled Split that joins these images
    distilled_per_class: int = 0  # set by ccfs.api.select: distilled images per class in the set


# ----------------------------------------------------------------------------- selectors

def select_ccfs(inp: SelectionInputs) -> Selection:
    """Curriculum coarse-to-fine selection around the method's distilled images (α = 0:
    the paper's self-evolved selection)."""
    c = inp.cfg
    opts = CCFSOptions(ipc_real=inp.real, rounds=c.curricula, coarse=c.coarse, fine=c.fine,
                       balance=c.balance, shortfall=c.shortfall, score_name=inp.score_name)
    pool = inp.teacher_correct if c.teacher_correct else torch.ones_like(inp.labels, dtype=torch.bool)
    state = ccfs_rounds(inp.labels, pool, hardness=inp.hardness, opts=opts, has_distilled=inp.cpc > 0,
                        train_filter=inp.train_filter, teacher_logit=inp.teacher_logit,
                        seed=inp.seed, state=inp.state, on_round=inp.on_round)
    return Selection(torch.tensor(state.selected, dtype=torch.long), inp.hardness, {"rounds": state.log})


def select_random(inp: SelectionInputs) -> Selection:
    gen = torch.Generator().manual_seed(inp.seed)
    return Selection(baselines.random_balanced(inp.labels, inp.real, gen))


def select_window(inp: SelectionInputs) -> Selection:
    """SelMatch's sliding window at one beta (`param`); beta 0 is the forgetting baseline."""
    h = inp.hardness_or_teacher()
    return Selection(baselines.hardest_window(inp.labels, h, inp.real, inp.param, unit=inp.cfg.window_unit), h)


def select_selmatch(inp: SelectionInputs) -> Selection:
    """SelMatch's order: per class a window of IPC images (beta = select.selmatch_beta), hardest
    first; its real part is the first IPC - cpc images from the window's start, and the α part
    is distilled starting from the next cpc, easier images after them. Returns the real part;
    `log["distill_init"]` holds those cpc per class (by class) that the select stage distils."""
    h = inp.hardness_or_teacher()
    window = baselines.hardest_window(inp.labels, h, inp.ipc, inp.cfg.selmatch_beta, unit=inp.cfg.window_unit)
    per_class = window.view(inp.num_classes, inp.ipc)  # class blocks, hardest first
    real, init = per_class[:, : inp.real].flatten(), per_class[:, inp.real:].flatten()
    return Selection(real, h, {"distill_init": init.tolist()})


def _coreset(inp: SelectionInputs, fn) -> Selection:
    feats = torch.nn.functional.normalize(inp.features().float(), dim=1)
    return Selection(baselines.per_class_coreset(inp.labels, feats, inp.real, fn))


def select_herding(inp: SelectionInputs) -> Selection:
    return _coreset(inp, baselines.herding)


def select_kcenter(inp: SelectionInputs) -> Selection:
    return _coreset(inp, baselines.k_center)


def select_nothing(inp: SelectionInputs) -> Selection:
    """No real images: the synthetic set is the distilled part alone."""
    return Selection(torch.empty(0, dtype=torch.long))


def select_everything(inp: SelectionInputs) -> Selection:
    return Selection(torch.arange(len(inp.labels)))


# ----------------------------------------------------------------------------- the table

Distilled = Literal["none", "alpha", "ipc", "own"]


@dataclass(frozen=True)
class Method:
    select: Callable[[SelectionInputs], Selection]
    description: str  # one line, for --help listings and the report
    distilled: Distilled = "none"  # distilled images per class: none, the α part (cpc), all of
    #                                IPC, or its own α part distilled from its selection
    needs_scores: bool = False  # ranks by a difficulty score: `score`, or else select.score
    score: Optional[str] = None  # a fixed score whatever select.score says (forgetting: forgetting)
    trains_filters: bool = False  # trains models on the synthetic set while selecting
    full_data: bool = False  # the whole train set, not a synthetic set (not exported)
    seeded: bool = False  # its choice depends on a seed: one selection per evaluation seed
    sweep: Optional[str] = None  # a select.* list; one run per value, named <name>_b<value>

    def distilled_per_class(self, ipc: int, cpc: int) -> int:
        return {"none": 0, "alpha": cpc, "ipc": ipc, "own": cpc}[self.distilled]


METHODS: dict[str, Method] = {  # also the order of report rows
    "full": Method(select_everything, "the whole train set (the reference every method is measured against)",
                   full_data=True),
    "ccfs": Method(select_ccfs, "curriculum coarse-to-fine selection around the α distilled part",
                   distilled="alpha", needs_scores=True, trains_filters=True, seeded=True),
    "self_evolved": Method(select_ccfs, "CCFS with α = 0: real images only, first round without a filter",
                           needs_scores=True, trains_filters=True, seeded=True),
    "random": Method(select_random, "class-balanced uniform real images", seeded=True),
    "random_distilled": Method(select_random, "random real images + the same α distilled part as CCFS (a control)",
                               distilled="alpha", seeded=True),
    "distill_only": Method(select_nothing, "distilled images alone at the full IPC", distilled="ipc"),
    "herding": Method(select_herding, "per-class herding on the teacher's features"),
    "kcenter": Method(select_kcenter, "per-class greedy k-center on the teacher's features"),
    "forgetting": Method(select_window, "per class, the images with the most forgetting events (window at β = 0)",
                         needs_scores=True, score="forgetting"),
    "window": Method(select_window, "SelMatch's sliding window: skip the hardest β part, take the next IPC",
                     needs_scores=True, sweep="window_betas"),
    "selmatch": Method(select_selmatch, "SelMatch's order: a window first, then its α part distilled",
                       distilled="own", needs_scores=True),
}


def get(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"unknown select.method {name!r}; valid: {', '.join(METHODS)}")
    return METHODS[name]


def run_names(select_cfg) -> list[str]:
    """The runs of select.method, sweeps expanded: [ccfs, window_b0.1, window_b0.3, ...]."""
    names = []
    for name in select_cfg.method:
        m = get(name)
        names += [f"{name}_b{v:g}" for v in getattr(select_cfg, m.sweep)] if m.sweep else [name]
    return names


def parse(run_name: str) -> tuple[str, Method, float]:
    """A run name -> (method name, its entry, the swept value or 0.0)."""
    if run_name in METHODS:
        return run_name, METHODS[run_name], 0.0
    base, sep, value = run_name.rpartition("_b")
    if sep and METHODS.get(base) is not None and METHODS[base].sweep:
        try:
            return base, METHODS[base], float(value)
        except ValueError:
            pass
    raise ConfigError(f"unknown select.method {run_name!r}; valid: {', '.join(METHODS)} (a swept method's run: "
                      "<name>_b<value>, e.g. window_b0.3)")


def is_sweep(run_name: str) -> bool:
    return parse(run_name)[1].sweep is not None


def score_of(name: str, select_cfg) -> str | None:
    """The difficulty score a method ranks by (None: it needs none)."""
    m = get(name)
    return (m.score or select_cfg.score) if m.needs_scores else None


def distilled_needed(select_cfg, cpc: int) -> int:
    """Distilled images per class the distill stage must make for these methods."""
    return max([get(n).distilled_per_class(select_cfg.ipc, cpc) for n in select_cfg.method
                if get(n).distilled != "own"], default=0)
