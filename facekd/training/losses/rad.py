"""Relation-aware distillation with informative relation mining (CoupleFace, Liu et al. 2022)."""
from __future__ import annotations

import torch
from torch import Tensor

from facekd.training.losses.base import (
    UNLABELLED, LossInputError, LossInputs, LossTerm, normalized, require, student_projection, zero_like_graph,
)
from facekd.core.errors import InputError
from facekd.training.loss_config import RAD_FORMS


# A candidate this close to the anchor's own teacher embedding is the anchor's own image (the queue
# may hold embeddings of images in the current batch), not a relation.
SAME_IMAGE_COSINE = 1.0 - 1e-6


class RelationAwareDistillation(LossTerm):
    """Match the student's mutual relations to the teacher's on mined informative pairs.

    Candidates j: the batch's teacher embeddings followed by the queue (batch only when the queue is
    None). For anchor i (a batch sample):
        r^s_ij = cos(g_i, ft_j),  g_i = P·fs_i (P learnable when Ds ≠ Dt, identity otherwise)
        r^t_ij = cos(ft_i, ft_j)
    Mining (all from the teacher, no gradient): drop j = i and any candidate with r^t_ij ≥ 1 − 1e-6
    (the anchor's own image again); M_i = positives {j : y_j = y_i, y_i labelled} ∪ the top_k negatives
    {j : y_j ≠ y_i} with the largest r^t_ij (the hardest for the teacher). Anchors with an empty
    M_i (batch of one, no queue) are skipped; a row without positives keeps its negatives.
    Loss, averaged over anchors with non-empty M_i:
        mse: (1/|M_i|) Σ_{j∈M_i} (r^s_ij − r^t_ij)²
        l1 : (1/|M_i|) Σ_{j∈M_i} |r^s_ij − r^t_ij|
        kl : KL(p^t_i ‖ p^s_i),  p^x_i = softmax_{j∈M_i}(r^x_ij / τ)
    "kl" matches relation distributions and ignores a constant shift of a row; "mse" (default)
    also matches absolute cosine levels, which verification thresholds depend on. Relation
    differences are small (~0.1), so mse/l1 want a larger config weight than FCD.
    """

    needs = frozenset({"teacher", "queue"})

    def __init__(self, student_dim: int, teacher_dim: int, form: str = "mse", top_k: int = 32,
                 temperature: float = 0.1):
        super().__init__()
        if form not in RAD_FORMS:
            raise InputError(f"unknown RAD form {form!r} (use one of {', '.join(RAD_FORMS)})")
        if top_k < 0 or temperature <= 0.0:
            raise InputError(f"RAD needs top_k >= 0 and temperature > 0, got {top_k}, {temperature}")
        self.form = form
        self.top_k = top_k
        self.temperature = temperature
        self.projection = student_projection(student_dim, teacher_dim)

    def candidates(self, inputs: LossInputs) -> tuple[Tensor, Tensor]:
        """Teacher embeddings [N, Dt] and labels [N] of the batch followed by the queue."""
        teacher = require(inputs.teacher, "teacher", type(self).__name__)
        if inputs.queue is None:
            return teacher, inputs.labels
        if inputs.queue_labels is None or inputs.queue_labels.shape[0] != inputs.queue.shape[0]:
            raise LossInputError("RAD needs queue_labels with one label per queue row")
        return torch.cat([teacher, inputs.queue.to(teacher.dtype)]), torch.cat([inputs.labels, inputs.queue_labels])

    def mined_mask(self, teacher_relations: Tensor, labels: Tensor, candidate_labels: Tensor) -> Tensor:
        """[B, N] bool: positives plus the top_k hardest negatives of each anchor."""
        batch = labels.shape[0]
        valid = teacher_relations < SAME_IMAGE_COSINE
        valid[:, :batch] &= ~torch.eye(batch, dtype=torch.bool, device=labels.device)
        same_label = (labels[:, None] == candidate_labels[None, :]) & (labels != UNLABELLED)[:, None]
        negatives = valid & ~same_label
        mined = valid & same_label
        k = min(self.top_k, teacher_relations.shape[1])
        if k > 0:
            scores = teacher_relations.masked_fill(~negatives, float("-inf"))
            top_scores, top_index = scores.topk(k, dim=1)
            mined |= torch.zeros_like(mined).scatter(1, top_index, top_scores > float("-inf"))
        return mined

    def forward(self, inputs: LossInputs) -> Tensor:
        candidates, candidate_labels = self.candidates(inputs)
        candidates = normalized(candidates)
        teacher = candidates[: inputs.labels.shape[0]]
        student = normalized(self.projection(inputs.student))
        student_relations = student @ candidates.T
        with torch.no_grad():
            teacher_relations = teacher @ candidates.T
            mined = self.mined_mask(teacher_relations, inputs.labels, candidate_labels)
        rows = mined.any(dim=1)
        if not bool(rows.any()):
            return zero_like_graph(student_relations)
        student_relations, teacher_relations, mined = student_relations[rows], teacher_relations[rows], mined[rows]
        if self.form == "kl":
            per_anchor = self._kl(student_relations, teacher_relations, mined)
        else:
            gap = student_relations - teacher_relations
            elementwise = gap.pow(2) if self.form == "mse" else gap.abs()
            per_anchor = (elementwise * mined).sum(dim=1) / mined.sum(dim=1)
        return per_anchor.mean()

    def _kl(self, student_relations: Tensor, teacher_relations: Tensor, mined: Tensor) -> Tensor:
        """Per-anchor KL(p^t ‖ p^s) with softmax restricted to the mined set."""
        hidden = float("-inf")
        teacher_log_p = torch.log_softmax((teacher_relations / self.temperature).masked_fill(~mined, hidden), dim=1)
        student_log_p = torch.log_softmax((student_relations / self.temperature).masked_fill(~mined, hidden), dim=1)
        terms = teacher_log_p.exp() * (teacher_log_p - student_log_p)
        return terms.masked_fill(~mined, 0.0).sum(dim=1)
