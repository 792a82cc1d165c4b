"""Per-sample difficulty scores recorded during teacher training (docs/method.md §4).

Pure tensor functions (`forgetting_from_history`, `el2n`, `ce_loss`, `margin`) and
one class at the edge, `DynamicsRecorder`, the training loop's per-batch hook. The recorder
keeps O(N) streaming state (never an epochs × N history), updates it with a few vectorised
ops per batch on the logits' device and never synchronises with the host while recording.

Every score is a float32 `[N]` array indexed by the row of the cached train tensor. Scores
keep their natural sign (forgetting: higher = harder, margin: higher = easier);
`ccfs.scores` records which and converts them to hardness (higher = harder).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ccfs.errors import CheckpointError, ConfigError, DataError

# EL2N is an early-training score (Paul et al. compute it at epoch 20 of 200). Without
# their 10 independent runs, averaging a few early epochs of the one run lowers the noise.
EL2N_EPOCH_FRACTIONS = (0.1, 0.2)  # fractions of training


# ----------------------------------------------------------------------------- forgetting


def _forgetting_with_never_learned(events: torch.Tensor, learned: torch.Tensor, presentations: int) -> torch.Tensor:
    """Float32 counts; never-learned samples get max(max learned count + 1, presentations)."""
    max_learned = int(events[learned].max()) if bool(learned.any()) else -1
    never = max(max_learned + 1, presentations)
    return torch.where(learned, events, torch.full_like(events, never)).float()


def forgetting_from_history(correct: torch.Tensor) -> torch.Tensor:
    """Forgetting events from a full history `correct` [P, N] (row p = p-th presentation).

    An event is a correct → incorrect transition between consecutive presentations. Samples
    never classified correctly rank harder than every learned one. Returns float32 [N],
    higher = harder (the official file format). The brute-force reference for the recorder.
    """
    if correct.dtype != torch.bool or correct.ndim != 2 or correct.shape[0] == 0:
        raise ValueError(f"expected a non-empty bool [P, N] history, got {correct.dtype} {tuple(correct.shape)}")
    events = (correct[:-1] & ~correct[1:]).sum(0)  # [N]
    return _forgetting_with_never_learned(events, correct.any(0), correct.shape[0])


# ----------------------------------------------------------------------------- per-batch scores


def el2n(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B] L2 norm of softmax(logits) − one_hot(labels) (Paul et al. 2021)."""
    probs = logits.float().softmax(1)  # [B, K]
    y = labels[:, None]  # [B, 1]; scatter, not F.one_hot, which checks labels on the host
    return probs.scatter(1, y, probs.gather(1, y) - 1).norm(dim=1)


def ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B] per-sample cross-entropy."""
    return F.cross_entropy(logits.float(), labels, reduction="none")


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B] true-class logit minus the largest other logit (AUM's margin, Pleiss et al. 2020)."""
    logits = logits.float()
    true = logits.gather(1, labels[:, None])  # [B, 1]
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(1)  # [B]
    return true[:, 0] - other


# ----------------------------------------------------------------------------- recorder


def default_el2n_epochs(num_epochs: int) -> list[int]:
    """Epochs (from 0) at EL2N_EPOCH_FRACTIONS of training: 200 → [20, 40], 10 → [1, 2], 1 → [0]."""
    return sorted({min(int(f * num_epochs), num_epochs - 1) for f in EL2N_EPOCH_FRACTIONS})


# name → (dtype, fill value) of each per-sample state tensor [N]
_STATE = {
    "last_correct": (torch.int8, -1),  # 1 / 0 at the previous presentation, -1 = none yet
    "events": (torch.int32, 0),  # forgetting events so far
    "learned": (torch.bool, False),  # classified correctly at least once
    "count": (torch.int32, 0),  # presentations so far
    "margin_sum": (torch.float32, 0.0),  # over all presentations, for AUM
    "el2n_sum": (torch.float32, 0.0),  # over presentations in the el2n epochs
    "loss_sum": (torch.float32, 0.0),  # over presentations in the el2n epochs
    "el2n_count": (torch.int32, 0),  # presentations in the el2n epochs
    "el2n_early": (torch.float32, float("nan")),  # EL2N at the first el2n epoch
    "last_margin": (torch.float32, float("nan")),
    "last_loss": (torch.float32, float("nan")),
}


class DynamicsRecorder:
    """Per-batch training hook that streams forgetting, EL2N, loss, margin and AUM.

    Call as `hook(epoch, indices [B], logits [B, K], labels [B])` with the detached logits
    of the augmented view trained on in this step; every sample once per epoch, indices
    distinct within a call. State lives on the device of the first logits seen.
    `el2n_epochs` defaults to `default_el2n_epochs(num_epochs)`.
    """

    def __init__(self, num_samples: int, num_epochs: int, el2n_epochs: Sequence[int] | None = None):
        if num_samples < 1 or num_epochs < 1:
            raise ConfigError(f"recorder needs num_samples ≥ 1 and num_epochs ≥ 1, got {num_samples}, {num_epochs}")
        epochs = default_el2n_epochs(num_epochs) if el2n_epochs is None else sorted({int(e) for e in el2n_epochs})
        if not epochs or epochs[0] < 0 or epochs[-1] >= num_epochs:
            raise ConfigError(f"el2n_epochs {list(el2n_epochs or [])} must be a non-empty list of epochs "
                              f"in 0..{num_epochs - 1}")
        self.num_samples, self.num_epochs = num_samples, num_epochs
        self.el2n_epochs = epochs
        self._el2n_set = set(epochs)
        self._state: dict[str, torch.Tensor] | None = None

    def _ensure_state(self, device: torch.device) -> dict[str, torch.Tensor]:
        if self._state is None:
            self._state = {k: torch.full((self.num_samples,), fill, dtype=dt, device=device)
                           for k, (dt, fill) in _STATE.items()}
        elif self._state["count"].device != device:
            self._state = {k: v.to(device) for k, v in self._state.items()}
        return self._state

    def __call__(self, epoch: int, indices: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        if not 0 <= epoch < self.num_epochs:
            raise ConfigError(f"recorder got epoch {epoch}, it was built for epochs 0..{self.num_epochs - 1}")
        s = self._ensure_state(logits.device)
        logits = logits.detach()  # state must never join the autograd graph
        idx, labels = indices.to(logits.device), labels.to(logits.device)
        correct = logits.argmax(1) == labels  # [B]
        m = margin(logits, labels)  # [B]
        loss = ce_loss(logits, labels)  # [B]
        s["events"][idx] += (s["last_correct"][idx] == 1) & ~correct  # correct → incorrect
        s["last_correct"][idx] = correct.to(torch.int8)
        s["learned"][idx] |= correct
        s["count"][idx] += 1
        s["margin_sum"].index_add_(0, idx, m)
        s["last_margin"][idx] = m
        s["last_loss"][idx] = loss
        if epoch in self._el2n_set:
            self._record_el2n(s, epoch, idx, el2n(logits, labels), loss=loss)

    def _record_el2n(self, s: dict, epoch: int, idx: torch.Tensor, e: torch.Tensor, *, loss: torch.Tensor) -> None:
        s["el2n_sum"].index_add_(0, idx, e)
        s["loss_sum"].index_add_(0, idx, loss)
        s["el2n_count"][idx] += 1
        if epoch == self.el2n_epochs[0]:
            s["el2n_early"][idx] = e

    def _check_complete(self, s: dict[str, torch.Tensor]) -> None:
        for key, what in (("count", "in any epoch"), ("el2n_count", f"in el2n epochs {self.el2n_epochs}")):
            missing = (s[key] == 0).nonzero()
            if len(missing):
                raise DataError(f"{len(missing)} of {self.num_samples} samples (first: index {int(missing[0])}) "
                                f"were never presented {what}; record a full training run (every sample "
                                "once per epoch) before asking for scores")
        if bool(s["el2n_early"].isnan().any()):
            raise DataError(f"some samples were not presented in epoch {self.el2n_epochs[0]} (the first el2n "
                            "epoch); record a full training run before asking for scores")

    def scores(self) -> dict[str, np.ndarray]:
        """Float32 [N] arrays keyed by score name (raw signs: see ccfs.scores.HIGHER_IS_EASIER)."""
        if self._state is None:
            raise DataError("the recorder saw no batch; record a training run before asking for scores")
        s = self._state
        self._check_complete(s)
        el2n_count = s["el2n_count"].float()
        out = {
            "forgetting": _forgetting_with_never_learned(s["events"], s["learned"], int(s["count"].max())),
            "el2n_early": s["el2n_early"],
            "el2n": s["el2n_sum"] / el2n_count,
            "loss": s["loss_sum"] / el2n_count,
            "loss_last": s["last_loss"],
            "margin": s["last_margin"],
            "aum": s["margin_sum"] / s["count"].float(),
        }
        return {k: v.float().cpu().numpy() for k, v in out.items()}

    def state_dict(self) -> dict:
        """CPU copy of the streaming state plus the settings it was built with."""
        state = self._ensure_state(self._state["count"].device if self._state else torch.device("cpu"))
        return {"num_samples": self.num_samples, "num_epochs": self.num_epochs,
                "el2n_epochs": list(self.el2n_epochs),
                "state": {k: v.detach().cpu().clone() for k, v in state.items()}}

    def load_state_dict(self, sd: dict) -> None:
        """Resume from `state_dict()`; the settings must match this recorder's."""
        mine = (self.num_samples, self.num_epochs, self.el2n_epochs)
        theirs = (sd.get("num_samples"), sd.get("num_epochs"), sd.get("el2n_epochs"))
        if mine != theirs:
            raise CheckpointError(f"recorder state is for (samples, epochs, el2n_epochs) = {theirs}, this run has "
                                  f"{mine}; resume with the settings of the original run")
        state = sd["state"]
        if set(state) != set(_STATE) or any(v.shape != (self.num_samples,) for v in state.values()):
            raise CheckpointError(f"recorder state has keys {sorted(state)}, expected {sorted(_STATE)} "
                                  f"each of shape [{self.num_samples}]; the checkpoint is corrupt")
        self._state = {k: state[k].to(_STATE[k][0]).clone() for k in _STATE}
