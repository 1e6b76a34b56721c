"""Distillation loss suite: a weighted sum of small loss terms chosen by config.

Terms (config weight name -> module): margin -> CombinedMarginHead, fcd -> FeatureConsistency,
hard_fcd -> HardnessAwareFeatureConsistency, exclusivity -> WeightExclusivity,
rad -> RelationAwareDistillation, logit_kd -> LogitDistillation, sp -> SimilarityPreserving,
rkd -> RelationalDistance, hint -> FeatureHint (derived students). Each term's formula is in its docstring.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

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
    "LossConfig", "LossConfigError", "LossInputError", "LossInputs", "LossSuite", "LossTerm", "TERMS", "register_term",
    "MARGIN_TYPES", "RelationAwareDistillation", "RelationalDistance", "SimilarityPreserving", "TEACHER_TERMS", "TERM_NAMES",
    "WeightExclusivity",
]


@dataclass(frozen=True)
class TermContext:
    """What a term's builder may read: the loss config, the run's dimensions and the terms built before it."""

    config: LossConfig
    num_classes: int
    student_dim: int
    teacher_dim: int | None
    class_centres: Tensor | None
    hint_channels: list[tuple[int, int]]
    built: dict[str, LossTerm]

    def teacher(self, name: str) -> int:
        """The teacher's embedding size, which every teacher term needs."""
        if self.teacher_dim is None:
            raise LossConfigError(f"loss term {name} needs teacher embeddings: give teacher_dim or set {name}: 0")
        return self.teacher_dim


TermBuilder = Callable[[TermContext], LossTerm]
TERMS: dict[str, TermBuilder] = {}  # config weight name -> builder of its term


def register_term(name: str) -> Callable[[TermBuilder], TermBuilder]:
    """Decorator: ``builder`` makes the term weighted by ``loss.<name>``."""
    def add(builder: TermBuilder) -> TermBuilder:
        TERMS[name] = builder
        return builder
    return add


def build_term(name: str, context: TermContext) -> LossTerm:
    if name not in TERMS:
        near = difflib.get_close_matches(name, TERMS, n=1)
        raise LossConfigError(f"unknown loss term {name!r}" + (f"; did you mean {near[0]}?" if near else
                                                              f" (known: {', '.join(TERMS)})"))
    return TERMS[name](context)


@register_term("margin")
def _margin(c: TermContext) -> LossTerm:
    arcface = c.config.margin_type == "arcface"
    return CombinedMarginHead(c.num_classes, c.student_dim, c.config.margin_scale,
                              angular_margin=c.config.arc_margin if arcface else 0.0,
                              cosine_margin=0.0 if arcface else c.config.cos_margin)


@register_term("exclusivity")
def _exclusivity(c: TermContext) -> LossTerm:
    return WeightExclusivity(c.config.exclusivity_depthwise, c.config.exclusivity_normalize_filters)


@register_term("hint")
def _hint(c: TermContext) -> LossTerm:
    if not c.hint_channels:
        raise LossConfigError("loss.hint needs tapped feature maps: a teacher_derived student "
                              "(student.family) and the teacher's ONNX, or set hint: 0")
    return FeatureHint(c.hint_channels)


@register_term("fcd")
def _fcd(c: TermContext) -> LossTerm:
    return FeatureConsistency(c.student_dim, c.teacher("fcd"))


@register_term("hard_fcd")
def _hard_fcd(c: TermContext) -> LossTerm:
    return HardnessAwareFeatureConsistency(c.student_dim, c.teacher("hard_fcd"), c.config.hard_fcd_scale)


@register_term("rad")
def _rad(c: TermContext) -> LossTerm:
    return RelationAwareDistillation(c.student_dim, c.teacher("rad"), c.config.rad_form, c.config.rad_top_k,
                                     c.config.rad_temperature)


@register_term("logit_kd")
def _logit_kd(c: TermContext) -> LossTerm:
    teacher_dim = c.teacher("logit_kd")
    if c.class_centres is None or tuple(c.class_centres.shape) != (c.num_classes, teacher_dim):
        got = None if c.class_centres is None else tuple(c.class_centres.shape)
        raise LossConfigError(f"logit_kd needs teacher class centres of shape ({c.num_classes}, {teacher_dim}), "
                              f"got {got}; pass class_centres or set logit_kd: 0")
    head = c.built.get("margin")
    return LogitDistillation(c.class_centres, c.student_dim, c.config.logit_kd_scale, c.config.logit_kd_temperature,
                             class_weight=head.weight if isinstance(head, CombinedMarginHead) else None)


@register_term("sp")
def _sp(c: TermContext) -> LossTerm:
    c.teacher("sp")
    return SimilarityPreserving()


@register_term("rkd")
def _rkd(c: TermContext) -> LossTerm:
    c.teacher("rkd")
    return RelationalDistance()


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
            context = TermContext(config, num_classes, student_dim, teacher_dim, class_centres, self.hint_channels, terms)
            try:
                terms[name] = build_term(name, context)
            except LossConfigError:
                raise
            except ValueError as error:
                raise LossConfigError(f"loss term {name}: {error}") from None
        self.terms = nn.ModuleDict(terms)
        self.needs: frozenset[str] = frozenset().union(*(term.needs for term in self.terms.values()))

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
