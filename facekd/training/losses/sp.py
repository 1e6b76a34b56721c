"""Similarity-preserving knowledge distillation (Tung & Mori, ICCV 2019)."""
from __future__ import annotations

from torch import Tensor

from facekd.training.losses.base import LossInputs, LossTerm, normalized, require


def similarity_matrix(features: Tensor) -> Tensor:
    """G = row-L2-normalised (f̂ f̂ᵀ), [B, B]."""
    unit = normalized(features)
    return normalized(unit @ unit.T)


class SimilarityPreserving(LossTerm):
    """Match the batch similarity structure of student and teacher.

        G^x = row_normalise(f̂x f̂xᵀ)   (x = s, t; f̂ L2-normalised embeddings)
        L   = ‖G^s − G^t‖²_F / B²

    Tung & Mori apply this to raw activation maps; on face embeddings, which are compared as unit
    vectors, the embeddings are L2-normalised first. Works with Ds ≠ Dt (G is B×B).
    """

    needs = frozenset({"teacher"})

    def forward(self, inputs: LossInputs) -> Tensor:
        teacher = require(inputs.teacher, "teacher", type(self).__name__)
        gap = similarity_matrix(inputs.student) - similarity_matrix(teacher)
        return gap.pow(2).sum() / inputs.student.shape[0] ** 2
