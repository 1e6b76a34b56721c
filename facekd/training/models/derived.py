"""A student derived from the teacher: the teacher's own network, read from ONNX, with a light head,
channel-pruned to a budget, then distilled like any other student.

The teacher graph must be a chain (each node reads the previous node's output) of
Sub/Mul by a scalar (input scaling), Conv, BatchNormalization, PRelu/Relu, then an optional
Dropout/Flatten and a Gemm (+BatchNormalization) embedding head — the shape of SFace and of most
MobileNet-style face models. Anything else is refused with the op that stopped the conversion.

The heavy head (Flatten → Gemm over C·H·W, 6.4 M of SFace's 9.7 M parameters) is replaced by
a global depthwise conv (GDC, as in MobileFaceNet) with ``head_rank`` spatial filters per channel:
depthwise H×W conv (C → r·C) → 1×1 conv (r·C → D) → BatchNorm. It is initialised from the Gemm
weights W[o, c, h, w] by the best rank-r fit per channel (W[:, c] ≈ Σ_j a_cj ⊗ g_cj, SVD), so the
derived network starts close to the teacher. Measured on SFace before pruning (`val_pairs.txt`,
teacher 99.50 %): rank 1 keeps 94.17 %, rank 2 96.42 %, rank 4 98.83 %, rank 8 99.58 % — the
head's rank, not only the backbone's width, bounds what the student can learn.

The network is rebuilt from a JSON-able layer list (`DerivedArch.layers`) stored in every
checkpoint: no pickled modules, `weights_only=True` loading, the same rebuild for every exporter.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from facekd.core.errors import FacekdError, InputError

DERIVED_NAME = "teacher_derived"
logger = logging.getLogger(__name__)


class ConversionError(FacekdError, ValueError):
    """The teacher graph cannot be turned into a derived student; the message names the op."""


@dataclass(frozen=True)
class DerivedArch:
    """What it takes to rebuild a derived student: its layers, in order (JSON-able dicts)."""

    name: str = DERIVED_NAME
    embedding_size: int = 128
    layers: tuple = field(default_factory=tuple)
    source: dict = field(default_factory=dict)   # teacher sha256, keep ratio: provenance only


class InputScale(nn.Module):
    """y = (x - shift) * scale: the teacher's in-graph input normalisation."""

    def __init__(self, shift: float, scale: float):
        super().__init__()
        self.shift, self.scale = float(shift), float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) * self.scale


def _layer(spec: dict) -> nn.Module:
    op = spec["op"]
    if op == "scale":
        return InputScale(spec["shift"], spec["scale"])
    if op == "conv":
        return nn.Conv2d(spec["cin"], spec["cout"], spec["kernel"], spec["stride"], spec["padding"],
                         groups=spec["groups"], bias=spec["bias"])
    if op == "bn":
        return nn.BatchNorm2d(spec["channels"], eps=spec["eps"])
    if op == "prelu":
        return nn.PReLU(spec["channels"])
    if op == "relu":
        return nn.ReLU()
    raise InputError(f"unknown derived layer op {op!r}")


def _spec_of(module: nn.Module) -> dict:
    if isinstance(module, InputScale):
        return {"op": "scale", "shift": module.shift, "scale": module.scale}
    if isinstance(module, nn.Conv2d):
        return {"op": "conv", "cin": module.in_channels, "cout": module.out_channels, "kernel": module.kernel_size[0],
                "stride": module.stride[0], "padding": module.padding[0], "groups": module.groups,
                "bias": module.bias is not None}
    if isinstance(module, nn.BatchNorm2d):
        return {"op": "bn", "channels": module.num_features, "eps": module.eps}
    if isinstance(module, nn.PReLU):
        return {"op": "prelu", "channels": module.num_parameters}
    if isinstance(module, nn.ReLU):
        return {"op": "relu"}
    raise InputError(f"no layer spec for {type(module).__name__}")


class DerivedStudent(nn.Module):
    """A chain of layers ending in a [N, D, 1, 1] embedding map."""

    def __init__(self, arch: DerivedArch):
        super().__init__()
        self.features = nn.Sequential(*[_layer(spec) for spec in arch.layers])
        self.embedding_size = arch.embedding_size
        self.source = dict(arch.source)  # provenance, updated by derive_student / prune_channels

    @property
    def arch(self) -> DerivedArch:
        """The architecture as it is now (after pruning, the layer list follows the modules)."""
        return DerivedArch(embedding_size=self.embedding_size,
                           layers=tuple(_spec_of(m) for m in self.features), source=self.source)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def hint_taps(self, count: int = 4) -> list[int]:
        """Layer indices whose outputs end the last ``count`` spatial stages of the backbone: the
        layer before each strided conv, and the last layer before the head (whose last two convs
        are the GDC and the 1×1 embedding conv). A pruned student and its teacher share them
        (SFace: 56×56, 28×28, 14×14 and 7×7 maps)."""
        layers = list(self.features)
        convs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
        head = convs[-2]
        ends = [i - 1 for i in convs[1:] if i < head and layers[i].stride != (1, 1)]
        return sorted(set(ends + [head - 1]))[-count:]

    def forward_with_taps(self, x: torch.Tensor, taps: list[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(embedding, [the output of layer t for t in taps])."""
        maps, wanted = [], set(taps)
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in wanted:
                maps.append(x)
        return x.flatten(1), maps

    def maps_at(self, x: torch.Tensor, taps: list[int]) -> list[torch.Tensor]:
        """The outputs at ``taps`` only, stopping after the last one (a teacher's forward)."""
        maps, last = [], max(taps)
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in taps:
                maps.append(x)
            if index == last:
                return maps
        return maps


# -- conversion from ONNX ------------------------------------------------------------------------

def _attributes(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class _ChainReader:
    """Reads an ONNX chain node by node into the derived student's layer list (one handler per op)."""

    SUPPORTED = "Sub/Mul, Conv, BatchNormalization, PRelu, Relu, Dropout, Flatten, Gemm"

    def __init__(self, path: str | Path, weights: dict[str, np.ndarray], spatial: list[int]):
        self.path, self.weights, self.spatial = path, weights, spatial
        self.layers: list[dict] = []
        self.state: dict[str, np.ndarray] = {}
        self.gemm: tuple[np.ndarray, np.ndarray] | None = None
        self.out_bn: tuple | None = None
        self.channels, self.shift, self.scale = 3, 0.0, 1.0

    def fail(self, message: str) -> ConversionError:
        return ConversionError(f"{self.path}: {message}")

    def add(self, spec: dict, tensors: dict[str, np.ndarray]) -> None:
        index = len(self.layers)
        self.layers.append(spec)
        self.state.update({f"features.{index}.{k}": v for k, v in tensors.items()})

    def read(self, node) -> None:
        op = node.op_type
        if self.gemm is not None and op != "BatchNormalization":
            raise self.fail(f"op {op} after the embedding Gemm is not supported")
        handler = {"Sub": self.scalar, "Mul": self.scalar, "Conv": self.conv, "BatchNormalization": self.batch_norm,
                   "PRelu": self.prelu, "Relu": self.relu, "Gemm": self.read_gemm,
                   "Dropout": self.skip, "Flatten": self.skip, "Identity": self.skip}.get(op)
        if handler is None:
            raise self.fail(f"op {op} ({node.name or node.output[0]}) is not supported by the teacher-derived "
                            f"student (supported: {self.SUPPORTED})")
        handler(node, _attributes(node))

    def skip(self, node, attrs: dict) -> None:
        """Dropout, Flatten, Identity: nothing to compute at inference."""

    def scalar(self, node, attrs: dict) -> None:
        """The input scaling at the graph's head: (x − shift) · scale."""
        if self.layers:
            raise self.fail(f"op {node.op_type} ({node.name or node.output[0]}) is only supported at the graph's input")
        if node.input[1] not in self.weights or np.asarray(self.weights[node.input[1]]).size != 1:
            raise self.fail(f"input {node.op_type} must be by a constant scalar")
        value = float(np.asarray(self.weights[node.input[1]]).reshape(-1)[0])
        if node.op_type == "Sub":
            self.shift += value / self.scale  # (x·s − v) = s·(x − v/s)
        else:
            self.scale *= value

    def conv(self, node, attrs: dict) -> None:
        w = self.weights[node.input[1]]
        pads = attrs.get("pads", [0] * 4)
        if w.shape[2] != w.shape[3] or len(set(pads)) != 1 or len(set(attrs.get("strides", [1, 1]))) != 1:
            raise self.fail(f"conv {node.name or node.output[0]} is not square/symmetric")
        tensors = {"weight": w}
        if len(node.input) > 2:
            tensors["bias"] = self.weights[node.input[2]]
        spec = {"op": "conv", "cin": self.channels, "cout": int(w.shape[0]), "kernel": int(w.shape[2]),
                "stride": int(attrs.get("strides", [1])[0]), "padding": int(pads[0]),
                "groups": int(attrs.get("group", 1)), "bias": len(node.input) > 2}
        if not self.layers and (self.shift or self.scale != 1.0):
            self.add({"op": "scale", "shift": self.shift, "scale": self.scale}, {})
        self.add(spec, tensors)
        self.channels = int(w.shape[0])
        self.spatial = [(side + 2 * spec["padding"] - spec["kernel"]) // spec["stride"] + 1 for side in self.spatial]

    def batch_norm(self, node, attrs: dict) -> None:
        gamma, beta, mean, var = (self.weights[name] for name in node.input[1:5])
        bn = {"weight": gamma, "bias": beta, "running_mean": mean, "running_var": var}
        if self.gemm is not None:
            self.out_bn = (bn, float(attrs.get("epsilon", 1e-5)))
        else:
            self.add({"op": "bn", "channels": self.channels, "eps": float(attrs.get("epsilon", 1e-5))}, bn)

    def prelu(self, node, attrs: dict) -> None:
        self.add({"op": "prelu", "channels": self.channels}, {"weight": self.weights[node.input[1]].reshape(-1)})

    def relu(self, node, attrs: dict) -> None:
        self.add({"op": "relu"}, {})

    def read_gemm(self, node, attrs: dict) -> None:
        w = self.weights[node.input[1]]
        if not attrs.get("transB", 0):
            w = w.T
        bias = self.weights[node.input[2]] if len(node.input) > 2 else np.zeros(w.shape[0], np.float32)
        self.gemm = (w, bias)

    def head(self, head_rank: int) -> tuple[np.ndarray, np.ndarray]:
        """Append the rank-``head_rank`` GDC head fitted to the Gemm (and its BatchNorm); returns the Gemm as [O, C, H, W]."""
        if self.gemm is None:
            raise self.fail("no Gemm embedding head found")
        w, bias = self.gemm
        embedding = int(w.shape[0])
        height, width = self.spatial if len(self.spatial) == 2 and all(self.spatial) else (7, 7)
        if w.shape[1] != self.channels * height * width:
            raise self.fail(f"Gemm reads {w.shape[1]} values, expected {self.channels}×{height}×{width}")
        head_weight = w.reshape(embedding, self.channels, height, width)
        for spec, tensors in _head_layers(head_weight, bias, head_rank):
            self.add(spec, tensors)
        if self.out_bn is not None:
            bn, eps = self.out_bn
            self.add({"op": "bn", "channels": embedding, "eps": eps}, bn)
        return head_weight, bias


def _graph_constants(model) -> tuple[dict[str, np.ndarray], set[int]]:
    """Initializers, Constant outputs and Identity aliases of weights; and the numbers of the nodes that made them."""
    from onnx import numpy_helper

    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    constant_nodes = set()
    for number, node in enumerate(model.graph.node):
        if node.op_type == "Constant":
            weights[node.output[0]] = numpy_helper.to_array(_attributes(node)["value"])
            constant_nodes.add(number)
        elif node.op_type == "Identity" and node.input[0] in weights:  # exporters alias shared weights
            weights[node.output[0]] = weights[node.input[0]]
            constant_nodes.add(number)
    return weights, constant_nodes


def convert_teacher(path: str | Path, head_rank: int = 1) -> tuple[DerivedStudent, dict]:
    """ONNX teacher -> (DerivedStudent with a rank-``head_rank`` GDC head, {name: value} of what was read)."""
    import onnx

    from facekd.training.onnx_graph import fold_dequantized_weights

    model = onnx.load(str(path))
    if fold_dequantized_weights(model):
        logger.info("%s: int8 weights dequantised to float for the derived student", Path(path).name)
    weights, constant_nodes = _graph_constants(model)
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise ConversionError(f"{path}: expected one image input, found {[i.name for i in inputs]}")
    reader = _ChainReader(path, weights, [d.dim_value for d in inputs[0].type.tensor_type.shape.dim][2:])
    for number, node in enumerate(model.graph.node):
        if number not in constant_nodes:
            reader.read(node)
    head_weight, bias = reader.head(head_rank)
    student = DerivedStudent(DerivedArch(embedding_size=int(head_weight.shape[0]), layers=tuple(reader.layers)))
    expected = student.state_dict()
    missing = [k for k in expected if k not in reader.state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ConversionError(f"{path}: no weights read for {missing[:3]}")
    student.load_state_dict({k: torch.tensor(np.asarray(v, dtype=np.float32)).reshape(expected[k].shape)
                             for k, v in reader.state.items()}, strict=False)
    return student, {"input_shift": reader.shift, "input_scale": reader.scale,
                     "head_hw": tuple(head_weight.shape[2:]), "head_weight": head_weight, "head_bias": bias}


def _head_layers(w: np.ndarray, bias: np.ndarray, rank: int) -> list[tuple[dict, dict]]:
    """The GDC head approximating the Gemm W [O, C, H, W] + bias at ``rank``: (spec, tensors) of its
    depthwise conv and its 1×1 embedding conv."""
    out_dim, channels, height, width = w.shape
    gdc, pointwise = _low_rank_head(w.reshape(out_dim, channels, height * width), rank)
    return [({"op": "conv", "cin": channels, "cout": channels * rank, "kernel": height, "stride": 1, "padding": 0,
              "groups": channels, "bias": False}, {"weight": gdc.reshape(channels * rank, 1, height, width)}),
            ({"op": "conv", "cin": channels * rank, "cout": out_dim, "kernel": 1, "stride": 1, "padding": 0,
              "groups": 1, "bias": True}, {"weight": pointwise.reshape(out_dim, channels * rank, 1, 1), "bias": bias})]


def _low_rank_head(w: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """W [O, C, HW] -> (g [C·r, HW], A [O, C·r]) with W[:, c, :] ≈ Σ_j A[:, c·r+j] ⊗ g[c·r+j] (best
    rank r per channel; row c·r+j is what a depthwise conv with r outputs per group writes)."""
    out_dim, channels, area = w.shape
    if not 1 <= rank <= min(out_dim, area):
        raise InputError(f"head rank must lie in [1, {min(out_dim, area)}], got {rank}")
    gdc = np.empty((channels * rank, area), np.float32)
    pointwise = np.empty((out_dim, channels * rank), np.float32)
    for c in range(channels):
        u, s, vt = np.linalg.svd(w[:, c, :].astype(np.float64), full_matrices=False)
        for j in range(rank):
            sign = 1.0 if vt[j].sum() >= 0 else -1.0
            gdc[c * rank + j] = sign * vt[j] * np.sqrt(s[j])
            pointwise[:, c * rank + j] = sign * u[:, j] * np.sqrt(s[j])
    return gdc, pointwise


# -- pruning ---------------------------------------------------------------------------------------

PRUNE_IMPORTANCE = ("l2", "bn_scale")


def prune_channels(student: DerivedStudent, keep_ratio: float, importance: str = "l2",
                   round_to: int = 8) -> np.ndarray:
    """Remove the (1 - keep_ratio) least important channels of every layer (torch-pruning); returns
    the indices of the backbone's last channels that were kept (the head's inputs).

    Importance ``l2``: the L2 norm of each filter; ``bn_scale``: |γ| of the BatchNorm after each
    conv (Network Slimming). Measured on SFace at keep 0.5: before training bn_scale points closer
    to the teacher (mean cosine 0.145 vs 0.068 on 128 training faces), but l2 trains faster
    (hardness-aware FCD after 60 steps: 137 vs 175), so l2 is the default. The embedding layer's outputs
    are kept; depthwise convs, BatchNorms and PReLUs follow the channels of the layer they read
    from (torch-pruning's dependency graph).
    """
    import torch_pruning as tp

    if not 0.0 < keep_ratio <= 1.0:
        raise InputError(f"keep ratio must be in (0, 1], got {keep_ratio}")
    if importance not in PRUNE_IMPORTANCE:
        raise InputError(f"prune importance must be one of {', '.join(PRUNE_IMPORTANCE)}, got {importance!r}")
    layers = list(student.features)
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    embedding_conv = convs[-1]
    kept = np.ones(embedding_conv.in_channels, bool)
    if keep_ratio == 1.0:
        return np.flatnonzero(kept)
    if convs[-2].out_channels != convs[-2].in_channels:
        raise InputError("prune the derived student with its rank-1 head (torch-pruning cannot follow a "
                         "depthwise conv with several outputs per channel), then widen the head")
    backbone_convs = convs[:-2]  # the head's GDC and 1×1 convs follow the backbone's channels
    if importance == "bn_scale" and not all(isinstance(after, nn.BatchNorm2d)
                                            for layer, after in zip(layers, layers[1:]) if layer in backbone_convs):
        logger.warning("the teacher's convs are not all followed by a BatchNorm (folded?): pruning by l2 filter norm")
        importance = "l2"
    student.source["importance"] = importance
    scorer = tp.importance.BNScaleImportance() if importance == "bn_scale" else tp.importance.MagnitudeImportance(p=2)
    pruner = tp.pruner.MetaPruner(
        student, example_inputs=torch.zeros(1, 3, 112, 112), importance=scorer,
        pruning_ratio=1.0 - keep_ratio, ignored_layers=[embedding_conv], round_to=round_to,
    )
    for group in pruner.step(interactive=True):
        for dependency, removed in group:
            if dependency.target.module is embedding_conv and pruner.DG.is_in_channel_pruning_fn(dependency.handler):
                kept[list(removed)] = False
        group.prune()
    return np.flatnonzero(kept)


def derive_student(teacher_path: str | Path, keep_ratio: float, teacher_sha256: str = "",
                   importance: str = "l2", head_rank: int = 1) -> DerivedStudent:
    """Convert the ONNX teacher, replace its head by a rank-``head_rank`` GDC, prune it to
    ``keep_ratio`` of its channels."""
    student, info = convert_teacher(teacher_path)
    student.eval()
    kept = prune_channels(student, keep_ratio, importance)
    if head_rank > 1:
        _widen_head(student, info["head_weight"][:, kept], info["head_bias"], head_rank)
    student.source.update(teacher_sha256=teacher_sha256, keep_ratio=keep_ratio, head_rank=head_rank)
    return student


def _widen_head(student: DerivedStudent, head_weight: np.ndarray, bias: np.ndarray, rank: int) -> None:
    """Replace the student's rank-1 GDC head by the rank-``rank`` fit of the teacher's Gemm over the
    channels the backbone kept (``head_weight`` [O, C_kept, H, W])."""
    convs = [i for i, m in enumerate(student.features) if isinstance(m, nn.Conv2d)]
    for index, (spec, tensors) in zip(convs[-2:], _head_layers(head_weight, bias, rank)):
        layer = _layer(spec)
        layer.load_state_dict({k: torch.tensor(np.asarray(v, np.float32)).reshape(getattr(layer, k).shape)
                               for k, v in tensors.items()})
        student.features[index] = layer
