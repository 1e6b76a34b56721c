"""The loss section of the training config: which terms are live, with what weight and settings.

Kept apart from the terms themselves (``facekd.training.losses``, torch modules) so that reading a
config imports no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from facekd.core.errors import FacekdError

TERM_NAMES = ("margin", "fcd", "hard_fcd", "exclusivity", "rad", "logit_kd", "sp", "rkd", "hint")
TEACHER_TERMS = ("fcd", "hard_fcd", "rad", "logit_kd", "sp", "rkd", "hint")  # the terms that read the teacher
MARGIN_TYPES = ("arcface", "cosface")
RAD_FORMS = ("mse", "l1", "kl")


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
