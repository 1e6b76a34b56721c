"""Classic logit distillation (Hinton et al. 2015) on cosine logits against class centres."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from facekd.training.losses.base import LossInputs, LossTerm, normalized, require
from facekd.core.errors import InputError


class LogitDistillation(LossTerm):
    """KL between temperature-softened teacher and student class distributions.

        z^t_i = S·⟨f̂t_i, ĉ_c⟩_c     c_c = fixed teacher class centre (mean teacher embedding of class c)
        z^s_i = S·⟨f̂s_i, Ŵ_c⟩_c     W = the margin head's class weights when given, else this term's own
        L     = τ² · (1/B) Σ_i KL(softmax(z^t_i/τ) ‖ softmax(z^s_i/τ))

    The teacher has no classifier, so its logits come from its own class centres ([C, Dt], passed in,
    stored as a buffer, never trained). The student's logits use the margin head's weights (shared
    Parameter, so KD also shapes them) or, without a margin head, learnable weights [C, Ds] of its own.
    Logits carry no margin. τ² keeps gradient size independent of τ (Hinton et al.).
    """

    needs = frozenset({"teacher"})

    def __init__(self, class_centres: Tensor, student_dim: int, scale: float = 64.0, temperature: float = 4.0,
                 class_weight: nn.Parameter | None = None):
        super().__init__()
        if scale <= 0.0 or temperature <= 0.0:
            raise InputError(f"logit KD needs scale > 0 and temperature > 0, got {scale}, {temperature}")
        num_classes = class_centres.shape[0]
        if class_weight is None:
            class_weight = nn.Parameter(torch.randn(num_classes, student_dim) * 0.01)
        if class_weight.shape != (num_classes, student_dim):
            raise InputError(f"class weights {tuple(class_weight.shape)} do not match ({num_classes}, {student_dim})")
        self.scale = scale
        self.temperature = temperature
        self.register_buffer("class_centres", normalized(class_centres.detach().float()))
        self.class_weight = class_weight

    def forward(self, inputs: LossInputs) -> Tensor:
        teacher = require(inputs.teacher, "teacher", type(self).__name__)
        with torch.no_grad():
            teacher_logits = self.scale * normalized(teacher) @ self.class_centres.T.to(teacher.dtype)
        student_logits = self.scale * normalized(inputs.student) @ normalized(self.class_weight).T
        tau = self.temperature
        teacher_log_p = F.log_softmax(teacher_logits / tau, dim=1)
        student_log_p = F.log_softmax(student_logits / tau, dim=1)
        return F.kl_div(student_log_p, teacher_log_p, reduction="batchmean", log_target=True) * tau**2
