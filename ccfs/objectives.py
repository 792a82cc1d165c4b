"""Training objectives: a callable `(model, x, y) -> (loss, logits)`.

The same training loop trains the teacher (cross-entropy), the CCFS filters and the
final students (knowledge distillation), so they cannot drift apart (docs/method.md §3).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CrossEntropy:
    """Hard-label cross-entropy."""

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        logits = model(x)  # [B, K]
        return F.cross_entropy(logits, y), logits

    def members(self, forward, x: torch.Tensor, y: torch.Tensor):
        """A group's step: x [G, B, C, H, W], y [G, B] -> each member's loss [G] and logits
        [G, B, K], `forward` mapping the G batches through the G members."""
        logits = forward(x)
        g, b = y.shape
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(g, b).mean(1), logits


class KD:
    """Pure knowledge distillation: KL(softmax(t/T) || softmax(s/T)) * T^2, with the
    teacher's logits computed on the same augmented batch; no hard-label term."""

    def __init__(self, teacher: nn.Module, temperature: float = 20.0):
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature = temperature

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        with torch.no_grad():
            t_logits = self.teacher(x)  # [B, K]
        logits = model(x)
        return kd_loss(logits, t_logits, self.temperature), logits

    def members(self, forward, x: torch.Tensor, y: torch.Tensor):
        """A group's step: x [G, B, C, H, W] -> each member's loss [G] and logits [G, B, K];
        the teacher labels the G·B images in one call."""
        g, b = x.shape[:2]
        with torch.no_grad():
            t_logits = self.teacher(x.flatten(0, 1)).view(g, b, -1)
        logits = forward(x)
        t = self.temperature
        log_p = F.log_softmax(logits.float() / t, dim=2)
        log_q = F.log_softmax(t_logits.float() / t, dim=2)
        return F.kl_div(log_p, log_q, reduction="none", log_target=True).sum((1, 2)) / b * (t * t), logits


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    t = temperature
    log_p = F.log_softmax(student_logits.float() / t, dim=1)
    log_q = F.log_softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_p, log_q, reduction="batchmean", log_target=True) * (t * t)


def make_objective(kind: str, teacher: nn.Module | None = None, temperature: float = 20.0):
    """The objective of filters and students: "kd" (from `teacher`) or "ce"."""
    if kind == "kd":
        if teacher is None:
            raise ValueError("the kd objective needs a teacher")
        return KD(teacher, temperature)
    if kind == "ce":
        return CrossEntropy()
    raise ValueError(f"unknown objective {kind!r}; valid: kd, ce")
