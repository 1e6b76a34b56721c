"""Relational knowledge distillation, distance-wise term (Park et al., CVPR 2019)."""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from facekd.training.losses.base import LossInputs, LossTerm, normalized, pairwise_mask, require, zero_like_graph


def normalized_distances(features: Tensor) -> Tensor:
    """Pairwise distances over pairs i ≠ j (row-major), divided by their mean: ψ_ij = ‖f̂_i − f̂_j‖₂ / μ."""
    unit = normalized(features)
    squared = (unit[:, None, :] - unit[None, :, :]).pow(2).sum(dim=2)
    distances = squared[pairwise_mask(unit.shape[0], unit.device)].clamp(min=1e-12).sqrt()
    return distances / distances.mean().clamp(min=1e-12)


class RelationalDistance(LossTerm):
    """RKD distance loss: Huber between mean-normalised pairwise distances.

        ψ^x_ij = ‖f̂x_i − f̂x_j‖₂ / μ^x,   μ^x = mean_{i≠j} ‖f̂x_i − f̂x_j‖₂   (x = s, t)
        L      = mean_{i≠j} huber(ψ^s_ij − ψ^t_ij),   huber(a) = a²/2 if |a| < 1 else |a| − 1/2

    Embeddings are L2-normalised first (face embeddings are compared as unit vectors). The mean
    normalisation makes the term independent of the two spaces' scales and of Ds vs Dt.
    Batches of one have no pair and give 0.
    """

    needs = frozenset({"teacher"})

    def forward(self, inputs: LossInputs) -> Tensor:
        teacher = require(inputs.teacher, "teacher", type(self).__name__)
        if inputs.student.shape[0] < 2:
            return zero_like_graph(inputs.student)
        with torch.no_grad():
            teacher_distances = normalized_distances(teacher)
        return F.smooth_l1_loss(normalized_distances(inputs.student), teacher_distances.to(inputs.student.dtype))
