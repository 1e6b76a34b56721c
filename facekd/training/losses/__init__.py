"""Distillation loss suite: a weighted sum of small loss terms chosen by config.

Terms (config weight name -> module): margin -> CombinedMarginHead, fcd -> FeatureConsistency,
hard_fcd -> HardnessAwareFeatureConsistency, exclusivity -> WeightExclusivity,
rad -> RelationAwareDistillation, logit_kd -> LogitDistillation, sp -> SimilarityPreserving,
rkd -> RelationalDistance, hint -> FeatureHint (derived students). Each term's formula is in its docstring.
"""
from __future__ import annotations

from torch import Tensor, nn

from facekd.training.losses.base import LossInputError, LossInputs, LossTerm
from facekd.training.losses.exclusivity import WeightExclusivity
from facekd.training.losses.fcd import FeatureConsistency, HardnessAwareFeatureConsistency
from facekd.training.losses.hint import FeatureHint
from facekd.training.losses.logit_kd import LogitDistillation
from facekd.training.losses.margin import CombinedMarginHead
from facekd.training.losses.rad import RelationAwareDistillation
from facekd.training.losses.rkd import RelationalDistance
from facekd.training.losses.sp import SimilarityPreserving
from facekd.training.loss_config import MARGIN_TYPES, TEACHER_TERMS, TERM_NAMES, LossConfig, LossConfigError

__all__ = [
    "CombinedMarginHead", "FeatureConsistency", "FeatureHint", "HardnessAwareFeatureConsistency", "LogitDistillation",
    "LossConfig", "LossConfigError", "LossInputError", "LossInputs", "LossSuite", "LossTerm",
    "MARGIN_TYPES", "RelationAwareDistillation", "RelationalDistance", "SimilarityPreserving", "TEACHER_TERMS", "TERM_NAMES",
    "WeightExclusivity",
]


class LossSuite(nn.Module):
    """total = Σ_{terms with weight > 0} weight · term(inputs).

    Terms with weight 0 are never built (no parameters, no compute). The suite owns learnable
    parameters (margin-head class centres, student->teacher projections of fcd/hard_fcd/rad,
    logit-KD class weights without a margin head): optimise ``suite.parameters()`` with the student.
    ``needs`` is the union of the live terms' needs; "queue" is optional at call time (None = batch
    only). ``class_centres`` ([num_classes, teacher_dim], fixed) is required by logit_kd only.
    """

    def __init__(self, config: LossConfig, num_classes: int, student_dim: int, teacher_dim: int | None,
                 class_centres: Tensor | None = None, hint_channels: list[tuple[int, int]] | None = None):
        super().__init__()
        self.config = config
        self.weights = config.weights()
        self.teacher_dim = teacher_dim
        self.hint_channels = hint_channels or []
        terms: dict[str, LossTerm] = {}
        for name in self.weights:
            try:
                terms[name] = self._build(name, terms, num_classes, student_dim, teacher_dim, class_centres)
            except LossConfigError:
                raise
            except ValueError as error:
                raise LossConfigError(f"loss term {name}: {error}") from None
        self.terms = nn.ModuleDict(terms)
        self.needs: frozenset[str] = frozenset().union(*(term.needs for term in self.terms.values()))

    def _build(self, name: str, built: dict[str, LossTerm], num_classes: int, student_dim: int,
               teacher_dim: int | None, class_centres: Tensor | None) -> LossTerm:
        config = self.config
        if name == "margin":
            arcface = config.margin_type == "arcface"
            return CombinedMarginHead(num_classes, student_dim, config.margin_scale,
                                      angular_margin=config.arc_margin if arcface else 0.0,
                                      cosine_margin=0.0 if arcface else config.cos_margin)
        if name == "exclusivity":
            return WeightExclusivity(config.exclusivity_depthwise, config.exclusivity_normalize_filters)
        if name == "hint":
            if not self.hint_channels:
                raise LossConfigError("loss.hint needs tapped feature maps: a teacher_derived student "
                                      "(student.family) and the teacher's ONNX, or set hint: 0")
            return FeatureHint(self.hint_channels)
        if teacher_dim is None:
            raise LossConfigError(f"loss term {name} needs teacher embeddings: give teacher_dim or set {name}: 0")
        if name == "fcd":
            return FeatureConsistency(student_dim, teacher_dim)
        if name == "hard_fcd":
            return HardnessAwareFeatureConsistency(student_dim, teacher_dim, config.hard_fcd_scale)
        if name == "rad":
            return RelationAwareDistillation(student_dim, teacher_dim, config.rad_form, config.rad_top_k,
                                             config.rad_temperature)
        if name == "logit_kd":
            if class_centres is None or tuple(class_centres.shape) != (num_classes, teacher_dim):
                got = None if class_centres is None else tuple(class_centres.shape)
                raise LossConfigError(f"logit_kd needs teacher class centres of shape ({num_classes}, {teacher_dim}), "
                                      f"got {got}; pass class_centres or set logit_kd: 0")
            head = built.get("margin")
            return LogitDistillation(class_centres, student_dim, config.logit_kd_scale, config.logit_kd_temperature,
                                     class_weight=head.weight if isinstance(head, CombinedMarginHead) else None)
        if name == "sp":
            return SimilarityPreserving()
        return RelationalDistance()

    def check_inputs(self, inputs: LossInputs) -> None:
        """Raise LossInputError when an input the live terms need is absent or mis-shaped."""
        if "teacher" in self.needs:
            if inputs.teacher is None:
                raise LossInputError(f"loss terms {sorted(self.weights)} need LossInputs.teacher")
            if inputs.teacher.shape != (inputs.student.shape[0], self.teacher_dim):
                raise LossInputError(f"teacher embeddings {tuple(inputs.teacher.shape)} do not match "
                                     f"(batch {inputs.student.shape[0]}, teacher_dim {self.teacher_dim})")
        if "teacher_maps" in self.needs and (inputs.teacher_maps is None or inputs.student_maps is None):
            raise LossInputError("the hint term needs LossInputs.student_maps and teacher_maps")
        if "model" in self.needs and inputs.model is None:
            raise LossInputError("the exclusivity term needs LossInputs.model (the student)")

    def forward(self, inputs: LossInputs) -> tuple[Tensor, dict[str, float]]:
        """(total loss, {term name: weighted value})."""
        self.check_inputs(inputs)
        total: Tensor | None = None
        values: dict[str, float] = {}
        for name, term in self.terms.items():
            weighted = self.weights[name] * term(inputs)
            values[name] = float(weighted.detach())
            total = weighted if total is None else total + weighted
        return total, values
