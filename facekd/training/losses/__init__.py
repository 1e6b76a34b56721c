"""Distillation loss suite: a weighted sum of small loss terms chosen by config.

Terms (config weight name -> module): margin -> CombinedMarginHead, fcd -> FeatureConsistency,
hard_fcd -> HardnessAwareFeatureConsistency, exclusivity -> WeightExclusivity,
rad -> RelationAwareDistillation, logit_kd -> LogitDistillation, sp -> SimilarityPreserving,
rkd -> RelationalDistance, hint -> FeatureHint (derived students). Each term's formula is in its docstring.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from facekd.training.losses.base import LossInputError, LossInputs, LossTerm
from facekd.training.losses.exclusivity import WeightExclusivity
from facekd.training.losses.fcd import FeatureConsistency, HardnessAwareFeatureConsistency
from facekd.training.losses.hint import FeatureHint
from facekd.training.losses.logit_kd import LogitDistillation
from facekd.training.losses.margin import CombinedMarginHead
from facekd.training.losses.rad import RAD_FORMS, RelationAwareDistillation
from facekd.training.losses.rkd import RelationalDistance
from facekd.training.losses.sp import SimilarityPreserving
from facekd.core.errors import FacekdError

TERM_NAMES = ("margin", "fcd", "hard_fcd", "exclusivity", "rad", "logit_kd", "sp", "rkd", "hint")
TEACHER_TERMS = ("fcd", "hard_fcd", "rad", "logit_kd", "sp", "rkd", "hint")  # the terms that read the teacher
MARGIN_TYPES = ("arcface", "cosface")

__all__ = [
    "CombinedMarginHead", "FeatureConsistency", "FeatureHint", "HardnessAwareFeatureConsistency", "LogitDistillation",
    "LossConfig", "LossConfigError", "LossInputError", "LossInputs", "LossSuite", "LossTerm",
    "RelationAwareDistillation", "RelationalDistance", "SimilarityPreserving", "TERM_NAMES", "WeightExclusivity",
]


class LossConfigError(FacekdError, ValueError):
    """The loss configuration is invalid or does not fit the run (dims, class centres)."""


@dataclass
class LossConfig:
    """Weight of each term (0 = term not built, not computed) and the terms' hyper-parameters.

    Enumerations and weights are checked here; numeric hyper-parameters of a term are checked when
    the term is built (only live terms are).
    """

    margin: float = 1.0
    fcd: float = 0.0
    hard_fcd: float = 0.0
    exclusivity: float = 0.0
    rad: float = 0.0
    logit_kd: float = 0.0
    sp: float = 0.0
    rkd: float = 0.0
    hint: float = 0.0  # feature-map hints at the stage ends (student.family teacher_derived only)
    # margin head: arcface -> cos(θ + arc_margin), cosface -> cos θ − cos_margin; logits × margin_scale
    margin_type: str = "arcface"
    margin_scale: float = 64.0
    arc_margin: float = 0.5
    cos_margin: float = 0.35
    # hard_fcd: per-sample weight ∝ exp(hard_fcd_scale · (1 − cos(student, teacher))), mean 1
    hard_fcd_scale: float = 2.0
    # exclusivity: also regularise depthwise/grouped convs; L2-normalise filters first
    exclusivity_depthwise: bool = False
    exclusivity_normalize_filters: bool = True
    # rad: mse | l1 | kl; hardest negatives kept per anchor; softmax temperature of "kl"
    rad_form: str = "mse"
    rad_top_k: int = 32
    rad_temperature: float = 0.1
    # logit_kd: cosine logits × logit_kd_scale, softened by logit_kd_temperature
    logit_kd_scale: float = 64.0
    logit_kd_temperature: float = 4.0

    @property
    def distils(self) -> bool:
        """Whether any term learns from the teacher."""
        return any(getattr(self, name) > 0 for name in TEACHER_TERMS)

    def __post_init__(self) -> None:
        for name in TERM_NAMES:
            weight = getattr(self, name)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
                raise LossConfigError(f"loss weight {name}={weight!r} must be a finite number >= 0 (0 disables the term)")
        if not any(getattr(self, name) > 0 for name in TERM_NAMES):
            raise LossConfigError(f"all loss weights are 0; give at least one of {', '.join(TERM_NAMES)} a weight > 0")
        if self.margin_type not in MARGIN_TYPES:
            raise LossConfigError(f"unknown margin_type {self.margin_type!r} (use {' or '.join(MARGIN_TYPES)})")
        if self.rad_form not in RAD_FORMS:
            raise LossConfigError(f"unknown rad_form {self.rad_form!r} (use one of {', '.join(RAD_FORMS)})")

    def weights(self) -> dict[str, float]:
        """Live terms and their weights, in TERM_NAMES order."""
        return {name: float(getattr(self, name)) for name in TERM_NAMES if getattr(self, name) > 0}


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
