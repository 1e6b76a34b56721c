"""Combined-margin softmax classification head (ArcFace / CosFace)."""
from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from facekd.training.losses.base import UNLABELLED, LossInputError, LossInputs, LossTerm, normalized, zero_like_graph
from facekd.core.errors import InputError


class CombinedMarginHead(LossTerm):
    """Cross-entropy on margin-penalised cosine logits, with learnable class centres W ∈ R^{C×Ds}.

        cos θ_ij = ⟨f̂s_i, Ŵ_j⟩
        logit_ij = S·cos θ_ij                      for j ≠ y_i
        logit_iy = S·(cos(θ_iy + m2) − m3)         for the target class y_i
        L = mean_i CE(logit_i, y_i)      over labelled samples (unlabelled ones are skipped)

    ArcFace is (m2, m3) = (m, 0), CosFace is (0, m); both may be combined. SphereFace's multiplicative
    m1 (cos(m1·θ)) is not offered: it needs acos, whose gradient is unbounded at θ = 0.
    Numerics: no acos. cos(θ+m2) = cosθ·cos m2 − sinθ·sin m2 with sinθ = √max(1 − cos²θ, 1e-6)
    (bounded gradient). Where θ + m2 > π, cos(θ+m2) would rise again with θ, so there the target
    uses the standard (non-easy-margin) fallback cosθ − m2·sin m2, which keeps it decreasing.
    """

    needs = frozenset()

    def __init__(self, num_classes: int, embedding_dim: int, scale: float = 64.0,
                 angular_margin: float = 0.5, cosine_margin: float = 0.0):
        super().__init__()
        if num_classes < 2:
            raise InputError(f"the margin head needs at least 2 classes, got {num_classes}")
        if not 0.0 <= angular_margin < math.pi:
            raise InputError(f"angular margin must be in [0, π), got {angular_margin}")
        if cosine_margin < 0.0 or scale <= 0.0:
            raise InputError(f"need cosine margin >= 0 and scale > 0, got {cosine_margin}, {scale}")
        self.scale = scale
        self.angular_margin = angular_margin
        self.cosine_margin = cosine_margin
        self.weight = nn.Parameter(torch.randn(num_classes, embedding_dim) * 0.01)

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    def target_cosine(self, cosine: Tensor) -> Tensor:
        """cos(θ + m2) − m3 for target cosines, with the θ + m2 > π fallback."""
        m2 = self.angular_margin
        sine = torch.sqrt((1.0 - cosine * cosine).clamp(min=1e-6))
        shifted = cosine * math.cos(m2) - sine * math.sin(m2)
        fallback = cosine - m2 * math.sin(m2)
        in_range = cosine > math.cos(math.pi - m2)
        return torch.where(in_range, shifted, fallback) - self.cosine_margin

    def forward(self, inputs: LossInputs) -> Tensor:
        labels = inputs.labels
        if labels.numel() and (int(labels.min()) < UNLABELLED or int(labels.max()) >= self.num_classes):
            raise LossInputError(f"labels must lie in [0, {self.num_classes}) or be UNLABELLED; "
                                 "check num_classes of the loss suite")
        labelled = labels != UNLABELLED
        if not bool(labelled.all()):
            if not bool(labelled.any()):
                return zero_like_graph(inputs.student)
            labels = labels[labelled]
            inputs = replace(inputs, student=inputs.student[labelled])
        cosine = normalized(inputs.student) @ normalized(self.weight).T
        target = self.target_cosine(cosine.gather(1, labels[:, None]))
        logits = cosine.scatter(1, labels[:, None], target)
        return F.cross_entropy(self.scale * logits, labels)
