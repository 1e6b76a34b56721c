"""Simulated int8 for training and for ranking layers: the student computes what an int8
converter will make it compute, so that training learns weights int8 keeps.

Two simulations of the same arithmetic, per Conv2d/Linear layer:

    weights  (per output channel c, symmetric):  ŵ_c = s_c · clamp(round(w_c / s_c), −Q_w, Q_w),  s_c = max|w_c| / Q_w
    input x  (per tensor, affine):               x̂   = s · (clamp(round(x / s) + z, −128, 127) − z)

- ``FakeInt8Student`` (int8-aware training, ``train.int8_aware_epochs``): the student exported by
  ``torch.export`` and prepared by PT2E ``prepare_qat_pt2e`` with ExecuTorch's XNNPACK quantiser
  (the rules the TFLite and ExecuTorch converters apply: Q_w = 127, per-tensor int8 activations
  with moving-average min/max ranges, BatchNorm folded into the convolution before its weights are
  rounded). BatchNorm statistics stay frozen; rounding passes gradients straight through; the
  ranges follow the training batches only in train mode. The graph shares the student's
  parameters, so training it trains the student.
- ``SimulatedInt8`` (the export's layer ranking): symmetric inputs (z = 0) from a running max of
  |x|, on any chosen subset of layers, in place.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

ACTIVATION_LEVELS = 127


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


INT8_AWARE_QUANTIZER = "executorch XNNPACKQuantizer, symmetric, per-channel weights, QAT"  # what FakeInt8Student simulates


def int8_quantizer(qat: bool = False):
    """ExecuTorch's XNNPACK PT2E quantiser: per-channel symmetric int8 weights, int8 activations."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_qat=qat))


def _exported_any_batch(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """``model`` as a ``torch.export`` graph module taking any batch size (PT2E quantises those)."""
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    return torch.export.export(model, (example,), dynamic_shapes=({0: batch},)).module()


class FakeInt8Student(nn.Module):
    """``student`` under PT2E simulated int8 (``int8_quantizer(qat=True)``), BatchNorm frozen.
    ``train(False)`` freezes the activation ranges too (validation does not move them)."""

    def __init__(self, student: nn.Module, example: torch.Tensor):
        super().__init__()
        from torchao.quantization.pt2e import move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

        was_training = student.training
        exported = _exported_any_batch(student.eval(), example)
        student.train(was_training)
        self.graph = move_exported_model_to_eval(prepare_qat_pt2e(exported, int8_quantizer(qat=True)))
        self.embedding_size = student.embedding_size
        self._float = [student]  # not a submodule: its parameters are the graph's

    @property
    def float_student(self) -> nn.Module:
        """The student whose weights this simulation trains (the terms that read weights read them here)."""
        return self._float[0]

    def train(self, mode: bool = True) -> "FakeInt8Student":
        from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

        self.training = mode
        for module in self.graph.modules():
            if isinstance(module, FakeQuantizeBase):
                module.enable_observer(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)


def observed_int8(model: nn.Module, calibration: torch.Tensor) -> nn.Module:
    """``model`` prepared by PT2E with ``int8_quantizer()`` and calibrated on the NCHW faces of
    ``calibration``, one at a time, as the converters calibrate (histogram ranges depend on it)."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    observed = prepare_pt2e(_exported_any_batch(model.eval(), calibration[:2]), int8_quantizer())
    with torch.no_grad():
        for face in calibration:
            observed(face[None])
    return observed


def int8_twin(model: nn.Module, calibration: torch.Tensor) -> nn.Module:
    """``model`` post-training quantised in torch (``observed_int8``, then PT2E convert: the int8
    arithmetic simulated): what a full-integer artifact of it should compute."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    return convert_pt2e(observed_int8(model, calibration))
