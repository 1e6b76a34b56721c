"""Feature-map hints: the student's intermediate maps regress the teacher's (FitNets), for a
student derived from the teacher, tapped at the same layers of the same chain.

    L = (1/T) Σ_t (1/B) Σ_i ‖P_t(s_{t,i}) − t_{t,i}‖²₂ / ‖t_{t,i}‖²₂

``s_t`` [B, Cs, H, W] and ``t_t`` [B, Ct, H, W] are the maps at tap ``t`` (same spatial size);
``P_t`` is a learnable 1×1 convolution Cs -> Ct (dropped at export). Dividing by the teacher map's
energy makes every tap and every image count alike, whatever the activation scale of its layer.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from facekd.training.losses.base import LossInputs, LossTerm, require
from facekd.core.errors import InputError


class FeatureHint(LossTerm):
    needs = frozenset({"teacher_maps"})

    def __init__(self, channels: list[tuple[int, int]]):
        super().__init__()
        if not channels:
            raise InputError("feature hints need at least one tap (student channels, teacher channels)")
        self.projections = nn.ModuleList(nn.Conv2d(cs, ct, kernel_size=1, bias=False) for cs, ct in channels)

    def forward(self, inputs: LossInputs) -> Tensor:
        students = require(inputs.student_maps, "student_maps", type(self).__name__)
        teachers = require(inputs.teacher_maps, "teacher_maps", type(self).__name__)
        if len(students) != len(self.projections) or len(teachers) != len(self.projections):
            raise InputError(f"{len(self.projections)} taps configured, got {len(students)} student and "
                             f"{len(teachers)} teacher maps")
        total = torch.zeros((), device=students[0].device)
        for projection, student, teacher in zip(self.projections, students, teachers):
            error = (projection(student) - teacher).pow(2).flatten(1).sum(1)
            energy = teacher.pow(2).flatten(1).sum(1).clamp_min(1e-12)
            total = total + (error / energy).mean()
        return total / len(self.projections)
