"""Feature consistency distillation (FCD) and its hardness-aware variant (EC-KD, Wang et al. 2020)."""
from __future__ import annotations

import torch
from torch import Tensor

from facekd.training.losses.base import LossInputs, LossTerm, normalized, require, student_projection
from facekd.core.errors import InputError


class FeatureConsistency(LossTerm):
    """Squared distance between L2-normalised student and teacher embeddings of the same image.

        d_i = ‖ĝ_i − f̂t_i‖²₂ = 2 − 2·cos(g_i, ft_i),   g_i = P·fs_i
        L   = (1/B) Σ_i d_i

    P is a learnable linear projection R^Ds -> R^Dt when Ds ≠ Dt, the identity otherwise.
    """

    needs = frozenset({"teacher"})

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        self.projection = student_projection(student_dim, teacher_dim)

    def distances(self, inputs: LossInputs) -> Tensor:
        """[B] per-sample d_i."""
        teacher = normalized(require(inputs.teacher, "teacher", type(self).__name__))
        student = normalized(self.projection(inputs.student))
        return (student - teacher).pow(2).sum(dim=1)

    def forward(self, inputs: LossInputs) -> Tensor:
        return self.distances(inputs).mean()


class HardnessAwareFeatureConsistency(FeatureConsistency):
    """FCD with each sample weighted by how far the student still is from the teacher (EC-KD).

        d_i = ‖ĝ_i − f̂t_i‖²₂ = 2·(1 − cos_i)
        w_i = B · softmax_i(s·(1 − cos_i))  = B · e^{s·d_i/2} / Σ_k e^{s·d_k/2}     (gradient stopped)
        L   = (1/B) Σ_i w_i · d_i

    EC-KD weights each sample by the exponential of its teacher–student cosine gap, e^{s(1 − cos)},
    and does not back-propagate through the weight. Here the weights are additionally normalised to
    mean 1 over the batch (the B·softmax form), so the term keeps the scale of plain FCD and its
    config weight stays comparable; s = 0 gives plain FCD exactly. Larger s focuses on hard samples.
    """

    def __init__(self, student_dim: int, teacher_dim: int, hardness_scale: float = 2.0):
        super().__init__(student_dim, teacher_dim)
        if hardness_scale < 0.0:
            raise InputError(f"hardness scale must be >= 0, got {hardness_scale}")
        self.hardness_scale = hardness_scale

    def forward(self, inputs: LossInputs) -> Tensor:
        distances = self.distances(inputs)
        weights = distances.numel() * torch.softmax(self.hardness_scale * distances.detach() / 2.0, dim=0)
        return (weights * distances).mean()
