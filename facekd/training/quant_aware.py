"""Quantisation-aware distillation: fine-tune a copy of a student under simulated int8 so that the
exporters' post-training quantisers (onnxruntime QDQ, PT2E for TFLite/ExecuTorch, NNCF) keep its
embeddings, in the worst case and not only on average.

Simulated int8, what every int8 exporter of the project does to a Conv2d/Linear layer:

    weights  (per output channel c, symmetric):  ŵ_c = s_c · clamp(round(w_c / s_c), −Q_w, Q_w),  s_c = max|w_c| / Q_w
    input x  (per tensor, symmetric):            x̂   = s · clamp(round(x / s), −127, 127),        s   = m / 127

with Q_w = 127 (63 for 7-bit ``reduce_range`` weights) and m a running maximum of |x| over the
fine-tuning batches (momentum 0.1). Rounding passes gradients straight through. Per-channel
symmetric weights are unchanged by folding the following BatchNorm into the conv (each channel's
scale moves with its weights), so the simulation holds for the folded graphs the exporters make;
BatchNorm statistics stay frozen.

The copy is distilled from the float student itself on augmented training faces with the
hardness-aware feature-consistency term (EC-KD), which weights the faces the quantised copy
embeds worst the most:

    L = (1/B) Σ_i w_i · ‖ĝ_i − f̂_i‖²,   w = B · softmax(s · ‖ĝ − f̂‖² / 2)  (no gradient)

(ĝ: the quantised copy's normalised embedding, f̂: the float student's, same view). The result is
a float model; the exporters quantise it as they quantise any student, and their parity gate
measures the artifact against the original float student.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize
from tqdm import tqdm

from facekd.training.losses.fcd import HardnessAwareFeatureConsistency
from facekd.training.losses.base import LossInputs
from facekd.core.preprocess import PreprocessSpec
from facekd.training.views import ViewSpec, make_view
from facekd.core.errors import InputError

ACTIVATION_LEVELS = 127


@dataclass(frozen=True)
class QuantAwareConfig:
    """Schedule of the quantisation-aware fine-tune."""

    steps: int = 150
    batch_size: int = 32
    lr: float = 2e-5  # Adam; the student is already converged, only its rounding is learnt around
    hardness_scale: float = 8.0
    reduce_range: bool = False  # simulate 7-bit weights (the int8 artifact for non-VNNI x86)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2 or self.lr <= 0:
            raise InputError(f"quantisation-aware fine-tune needs steps >= 1, batch_size >= 2 and lr > 0, got {self}")


class _WeightFakeQuant(nn.Module):
    """Parametrisation: symmetric per-output-channel int8 rounding of a weight (straight-through)."""

    def __init__(self, levels: int):
        super().__init__()
        self.levels = levels

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        per_channel = weight.detach().abs().flatten(1).amax(dim=1).clamp_min(1e-8) / self.levels
        zero = torch.zeros_like(per_channel, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, per_channel, zero, 0, -self.levels, self.levels)


class _InputFakeQuant(nn.Module):
    """Symmetric per-tensor int8 rounding of a layer's input, scale from a running max of |x|."""

    def __init__(self, momentum: float = 0.1):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("absmax", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not bool(self.absmax):
            seen = x.detach().abs().amax()
            self.absmax = seen if not bool(self.absmax) else (1 - self.momentum) * self.absmax + self.momentum * seen
        scale = float(self.absmax.clamp_min(1e-8)) / ACTIVATION_LEVELS
        return torch.fake_quantize_per_tensor_affine(x, scale, 0, -ACTIVATION_LEVELS, ACTIVATION_LEVELS)


def quantised_layers(model: nn.Module) -> list[nn.Module]:
    """The layers int8 exporters quantise: every Conv2d and Linear."""
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


class SimulatedInt8:
    """Context: ``model``'s Conv2d/Linear layers (or only ``layers`` of them) compute with simulated
    int8 weights and inputs (in place); on exit the parametrisations and hooks are removed and the
    float weights, as trained meanwhile, stay."""

    def __init__(self, model: nn.Module, reduce_range: bool = False, layers: Sequence[nn.Module] | None = None):
        self.model = model
        self.levels = 63 if reduce_range else 127
        self.layers = list(quantised_layers(model) if layers is None else layers)
        self._handles: list = []
        self.input_quantisers: list[_InputFakeQuant] = []

    def __enter__(self) -> "SimulatedInt8":
        for layer in self.layers:
            parametrize.register_parametrization(layer, "weight", _WeightFakeQuant(self.levels))
            quantiser = _InputFakeQuant()  # a new module trains: its range follows the data until train_ranges(False)
            self.input_quantisers.append(quantiser)
            self._handles.append(layer.register_forward_pre_hook(lambda _, args, q=quantiser: (q(args[0]), *args[1:])))
        return self

    def train_ranges(self, mode: bool) -> None:
        """Whether the input ranges keep following the data (True) or stay fixed (False)."""
        for quantiser in self.input_quantisers:
            quantiser.train(mode)

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        for layer in self.layers:
            if parametrize.is_parametrized(layer, "weight"):
                parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)


def _views(faces: Sequence[np.ndarray], indices: np.ndarray, view_ids: np.ndarray, spec: ViewSpec,
           preprocess: PreprocessSpec) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([preprocess.apply(make_view(faces[i], spec, int(i), int(v)))
                                            for i, v in zip(indices, view_ids)]))


def quant_aware_finetune(model: nn.Module, faces: Sequence[np.ndarray], preprocess: PreprocessSpec,
                         config: QuantAwareConfig = QuantAwareConfig(), progress: bool = False) -> tuple[nn.Module, dict]:
    """A copy of ``model`` fine-tuned under simulated int8 against ``model``'s own float embeddings
    of augmented views of ``faces`` (uint8 RGB, aligned); returns it and what the fine-tune did."""
    if len(faces) < 2:
        raise InputError(f"quantisation-aware fine-tune needs at least 2 faces, got {len(faces)}")
    rng = np.random.default_rng(config.seed)
    spec = ViewSpec(seed=config.seed)
    teacher = model.eval()
    student = copy.deepcopy(model).eval()  # BatchNorm statistics frozen: the exporters fold them
    loss_term = HardnessAwareFeatureConsistency(student.embedding_size, student.embedding_size, config.hardness_scale)
    optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=config.lr)
    losses = []
    with SimulatedInt8(student, config.reduce_range):
        for _ in tqdm(range(config.steps), desc="int8-aware fine-tune", unit="step", disable=not progress):
            indices = rng.choice(len(faces), size=min(config.batch_size, len(faces)), replace=False)
            inputs = _views(faces, indices, rng.integers(0, 1 << 30, size=len(indices)), spec, preprocess)
            with torch.no_grad():
                target = nn.functional.normalize(teacher(inputs), dim=1)
            loss = loss_term(LossInputs(student=student(inputs), labels=torch.zeros(len(inputs), dtype=torch.int64), teacher=target))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    optimizer.zero_grad(set_to_none=True)  # the copy leaves without gradients
    facts = {**asdict(config), "faces": len(faces), "loss_first": losses[0],
             "loss_last_10": float(np.mean(losses[-10:]))}
    return student, facts
