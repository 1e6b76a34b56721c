"""ONNX: fp32 with a dynamic batch, and INT8 static QDQ calibrated on real faces; run by onnxruntime.

fp32 uses the dynamo exporter (``torch.export``) with ``external_data=False``: it writes one
self-contained file whose Conv biases are initializers (BatchNorm folded in). The legacy
TorchScript exporter left those biases as Constant nodes, which onnxruntime's quantiser cannot
quantise ("Expected bias to be an initializer").

INT8 is onnxruntime static quantisation in QDQ form, calibrated on real aligned faces (min-max or
percentile, whichever gives the higher worst cosine to fp32 there; when the export gives a target
worst cosine and that misses it, the most sensitive layers, measured one at a time, stay float until it is met):
per-channel symmetric int8 weights, symmetric int8 activations and float biases, so every
zero point is an int8 zero and no DequantizeLinear reads int32 — the form TensorRT needs to
build an explicitly quantised engine from the same file (onnxruntime still fuses it into
QLinearConv and computes int32 biases itself). ``reduce_range=True`` (7-bit weights) is
required on CPUs with AVX2 but no VNNI: there the int16 sums of u8×s8 products saturate; on a
partly trained MobileFaceNet the worst cosine to PyTorch was 0.967 without it and 0.993 with it.
That is a workaround for those CPUs, not a property of int8: ``quantize_int8(reduce_range=False)``
makes full-range weights for targets whose int8 products sum without saturating (TensorRT's
engine source, see tensorrt_format), and chooses its calibration by the QDQ arithmetic itself
(graph optimisations off: Q/DQ, then float Conv), not by this CPU's int8 kernels.
"""
from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from training.io import atomic_path

from .artifact import ArtifactIO, Runner
from .errors import ExportError

if TYPE_CHECKING:
    from torch import nn
    from training.preprocess import PreprocessSpec

    from .faces import FaceSet

INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
OPSET = 20
CALIBRATION_BATCH = 8
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
CALIBRATION_METHODS = ("MinMax", "Percentile")  # onnxruntime CalibrationMethod names; Entropy measured no better than MinMax
INT8_METADATA = "facekd.int8"  # metadata_props key: how the int8 model was chosen (json)
FP16_METADATA = "facekd.fp16"  # metadata_props key: how the fp16 model was made (json; tensorrt_format)
METADATA_DETAILS = {INT8_METADATA: "int8_calibration", FP16_METADATA: "fp16_conversion"}  # key -> inspect's details name


def export_fp32(model: "nn.Module", out_path: Path, preprocess: "PreprocessSpec") -> Path:
    """Single-file ONNX with input ``input`` [batch, 3, H, W] and output ``embedding`` [batch, D]."""
    import onnx
    import torch

    example = torch.zeros(preprocess.with_layout("NCHW").input_shape(2))  # batch 2: a batch of 1 would be specialised
    with atomic_path(out_path) as tmp:
        torch.onnx.export(
            model.eval(), (example,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=OPSET,
            dynamo=True, external_data=False, optimize=True, verbose=False,
        )
        exported = onnx.load(str(tmp))
        _drop_debug_metadata(exported.graph)
        onnx.save(exported, str(tmp))
    return out_path


def _drop_debug_metadata(graph) -> None:
    """Remove the exporter's per-value debug metadata (PyTorch stack traces, FX names): up to
    half of a small model's file, and nothing a runtime reads."""
    for item in (*graph.node, *graph.input, *graph.output, *graph.value_info, *graph.initializer):
        del item.metadata_props[:]


class _FaceBatches:
    """onnxruntime calibration reader over NCHW float inputs, ``CALIBRATION_BATCH`` faces at a time."""

    def __init__(self, inputs: np.ndarray) -> None:
        self._batches = iter([{INPUT_NAME: inputs[i : i + CALIBRATION_BATCH]} for i in range(0, len(inputs), CALIBRATION_BATCH)])

    def get_next(self):
        return next(self._batches, None)


def _embed(path: Path, inputs: np.ndarray, optimize: bool = True) -> np.ndarray:
    runner = OnnxRuntimeRunner(optimize=optimize)
    runner.load(path)
    return runner.run(inputs)


def worst_cosine(outputs: np.ndarray, reference: np.ndarray) -> float:
    """min_i cos(outputs_i, reference_i) over rows (neither needs to be normalised)."""
    outputs, reference = np.asarray(outputs, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    norms = np.linalg.norm(outputs, axis=1) * np.linalg.norm(reference, axis=1)
    return float(np.min(np.sum(outputs * reference, axis=1) / np.maximum(norms, 1e-12)))


def _weighted_nodes(path: Path) -> list[str]:
    """Names of the Conv/Gemm/MatMul nodes of an ONNX file, in graph order."""
    import onnx

    return [node.name for node in onnx.load(str(path)).graph.node if node.op_type in WEIGHTED_OPS and node.name]


def quantize_int8(fp32_path: Path, out_path: Path, calibration_inputs: np.ndarray, *, reduce_range: bool = True,
                  target_worst_cos: float | None = None, progress: bool = False) -> Path:
    """Static QDQ INT8 of an fp32 ONNX, calibrated on NCHW float inputs (see module docstring).

    Each of ``CALIBRATION_METHODS`` quantises the model; the one with the higher worst cosine to
    fp32 on the calibration faces is kept. Below ``target_worst_cos`` there (None: no target), per-layer
    sensitivity decides which layers stay float: each weighted layer is quantised alone and
    ranked by the worst cosine that gives; the most sensitive are excluded from quantisation one
    at a time until the target is met (at most half the layers; the export's parity gate judges
    what was reached). What each step measured is stored in the file's metadata
    (``facekd.int8``), read back by ``inspect``. ``reduce_range``: 7-bit weights for x86 CPUs
    without VNNI, measured with this CPU's int8 kernels; False: full-range int8 weights,
    measured on the QDQ arithmetic (independent of this CPU).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from tqdm import tqdm

    reference = _embed(fp32_path, calibration_inputs)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as scratch:

        def quantise(method: str, path: Path, *, exclude: Sequence[str] = (), only: Sequence[str] | None = None) -> float:
            """Quantise into ``path`` (ranges calibrated once per method) and return its worst cosine to fp32."""
            ranges = Path(scratch) / f"{method}.ranges.json"
            quantize_static(
                str(fp32_path), str(path), None if ranges.is_file() else _FaceBatches(calibration_inputs),
                quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=reduce_range,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod[method],
                nodes_to_quantize=list(only) if only is not None else None, nodes_to_exclude=list(exclude),
                calibration_cache_path=str(ranges),
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
            )
            return worst_cosine(_embed(path, calibration_inputs, optimize=reduce_range), reference)

        worst_by_method = {method: quantise(method, Path(scratch) / f"{method}.onnx") for method in CALIBRATION_METHODS}
        method = max(worst_by_method, key=worst_by_method.get)
        chosen, worst = Path(scratch) / f"{method}.onnx", worst_by_method[method]
        facts = {"calibration_method": method, "calibration_faces": len(calibration_inputs),
                 "worst_cos_on_calibration_by_method": worst_by_method, "reduce_range": reduce_range,
                 "target_worst_cos_on_calibration": target_worst_cos}
        if target_worst_cos is not None and worst < target_worst_cos:
            layers = _weighted_nodes(fp32_path)
            probe = Path(scratch) / "one_layer.onnx"
            alone = {name: quantise(method, probe, only=[name])
                     for name in tqdm(layers, desc="int8 sensitivity", unit="layer", disable=not progress, leave=False)}
            kept_float = []
            for name in sorted(alone, key=alone.get)[: len(layers) // 2]:
                if worst >= target_worst_cos:
                    break
                kept_float.append(name)
                chosen = Path(scratch) / f"float{len(kept_float)}.onnx"
                worst = quantise(method, chosen, exclude=kept_float)
            facts.update(sensitivity_worst_cos_alone=alone, kept_float=kept_float, worst_cos_on_calibration=worst)
        quantised = onnx.load(str(chosen))
        onnx.helper.set_model_props(quantised, {INT8_METADATA: json.dumps(facts)})
        with atomic_path(out_path) as tmp:
            onnx.save(quantised, str(tmp))
    return out_path


def convert(model: "nn.Module", precision: str, calibration: "FaceSet", out_path: Path, *,
            preprocess: "PreprocessSpec", max_batch: int, int8_target_worst_cos: float | None = None,
            progress: bool = False) -> Path:
    if precision == "fp32":
        return export_fp32(model, out_path, preprocess)
    if precision == "int8":
        with tempfile.TemporaryDirectory(dir=out_path.parent) as scratch:
            fp32_path = export_fp32(model, Path(scratch) / "fp32.onnx", preprocess)
            return quantize_int8(fp32_path, out_path, calibration.inputs(preprocess.with_layout("NCHW")),
                                 target_worst_cos=int8_target_worst_cos, progress=progress)
    raise ExportError(f"onnx has no precision {precision!r}")


def _dims(value_info) -> list:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def _type_name(elem_type: int) -> str:
    import onnx

    return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name


def _dtype(value_info) -> str:
    return _type_name(value_info.type.tensor_type.elem_type)


def qdq_summary(graph) -> dict:
    """Q/DQ node count, whether every Q/DQ is int8 with a zero zero point (what TensorRT's explicit
    quantisation parses), and the largest |q| of the int8 weights (127: full range; 63/64: reduce_range)."""
    import onnx

    initializers = {init.name: init for init in graph.initializer}
    nodes = [node for node in graph.node if node.op_type in QDQ_OPS]
    zero_points = [initializers[node.input[2]] for node in nodes if len(node.input) > 2 and node.input[2] in initializers]
    symmetric = bool(nodes) and len(zero_points) == len(nodes) and all(
        zp.data_type == onnx.TensorProto.INT8 and not onnx.numpy_helper.to_array(zp).any() for zp in zero_points
    )
    weights = [initializers[node.input[0]] for node in nodes
               if node.op_type == "DequantizeLinear" and node.input[0] in initializers]
    weight_max = max((int(np.abs(onnx.numpy_helper.to_array(w).astype(np.int32)).max()) for w in weights
                      if w.data_type == onnx.TensorProto.INT8 and w.dims), default=None)
    return {"qdq_nodes": len(nodes), "tensorrt_explicit_quantization": symmetric, "int8_weight_max_abs": weight_max}


def inspect(path: Path) -> ArtifactIO:
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    graph = model.graph
    details = {
        "opset": max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")),
        "op_census": dict(Counter(node.op_type for node in graph.node)),
        "initializer_types": dict(Counter(_type_name(init.data_type) for init in graph.initializer)),
    }
    if any(node.op_type in QDQ_OPS for node in graph.node):
        details.update(qdq_summary(graph))
        dequantised = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
        details["float_layers"] = [node.name for node in graph.node
                                   if node.op_type in WEIGHTED_OPS and node.input[1] not in dequantised]
    props = {prop.key: prop.value for prop in model.metadata_props}
    details.update({name: json.loads(props[key]) for key, name in METADATA_DETAILS.items() if key in props})
    return ArtifactIO(
        input_name=graph.input[0].name, input_shape=_dims(graph.input[0]), input_dtype=_dtype(graph.input[0]),
        output_name=graph.output[0].name, output_shape=_dims(graph.output[0]), output_dtype=_dtype(graph.output[0]),
        details=details,
    )


class OnnxRuntimeRunner(Runner):
    """onnxruntime on the CPU. ``optimize=False`` turns graph optimisations off, so a QDQ model runs
    as written (QuantizeLinear/DequantizeLinear, then float Conv/Gemm) instead of fused into this
    CPU's int8 kernels: the quantised arithmetic itself, as int8 products summed in int32 give it
    on any hardware that does not saturate, whatever this CPU's ISA."""

    PROVIDER = "CPUExecutionProvider"

    def __init__(self, optimize: bool = True) -> None:
        self._session = None
        self._input_name = ""
        self._threads: int | None = None
        self._optimize = optimize

    def providers(self) -> list:
        """Execution providers to ask for, in order of preference (accelerated runners add theirs)."""
        return [self.PROVIDER]

    def load(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        if not self._optimize:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self._threads = threads
        self._session = ort.InferenceSession(str(path), options, providers=self.providers())
        self._input_name = self._session.get_inputs()[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    def info(self) -> dict:
        import onnxruntime as ort

        info = {"runtime": "onnxruntime", "version": ort.__version__, "provider": self.PROVIDER, "threads": self._threads}
        return info if self._optimize else {**info, "graph_optimizations": "off (QDQ run as written)"}
