"""ONNX: fp32 with a dynamic batch, and INT8 static QDQ calibrated on real faces; run by onnxruntime.

fp32 uses the dynamo exporter (``torch.export``) with ``external_data=False``: it writes one
self-contained file whose Conv biases are initializers (BatchNorm folded in). The legacy
TorchScript exporter left those biases as Constant nodes, which onnxruntime's quantiser cannot
quantise ("Expected bias to be an initializer").

INT8 is onnxruntime static quantisation in QDQ form, calibrated on real aligned faces (min-max or
percentile, whichever gives the higher worst cosine to fp32 there; when the export gives a target
worst cosine and that misses it, the shared search of ``export.int8_search`` picks what ships):
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

Where static int8 cannot meet a worst-cosine target (a face whose activations leave the calibrated
ranges: onnxruntime has no per-inference activation ranges for convolutions — its dynamic
quantisation (ConvInteger) quantises weights per tensor and measured worst 0.986-0.992, 0.3-1.0x
fp32 speed), onnx-int8 falls back to **int8 weights only**: each weighted layer's weights stored as
per-output-channel symmetric int8 behind a DequantizeLinear, activations float (demo student: worst
cosine 0.99911 on the 546 parity faces, 0 flips, 1.67 MB for 6.21 MB). The runner folds those
weights to float at load (``session.disable_quant_qdq``; otherwise onnxruntime runs each
DequantizeLinear on every inference: 1.3x slower), so it runs at fp32 speed: the smaller file, not
a faster one.
"""
from __future__ import annotations

import json
import tempfile
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from facekd.core.io import atomic_path, sha256_text

from .artifact import ArtifactIO, Runner, slowest_ops
from .errors import ExportError
from .int8 import NO_PLAN, Int8Plan
from .int8_search import WEIGHTS_ONLY, Int8Choices, choose_int8
from .parity import worst_cosine

if TYPE_CHECKING:
    from torch import nn
    from facekd.core.preprocess import PreprocessSpec

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
FOLD_WEIGHTS_OPTION = "session.disable_quant_qdq"  # onnxruntime: fold DequantizeLinear of constant weights at load


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


def weights_only_int8(fp32_path: Path, out_path: Path) -> Path:
    """``fp32_path`` with every Conv/Gemm weight initializer stored as int8 (symmetric, one scale per
    output channel) and a DequantizeLinear in front of its layer; activations stay float."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(fp32_path))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    nodes = []
    for node in graph.node:
        weight = initializers.get(node.input[1]) if node.op_type in ("Conv", "Gemm") and len(node.input) > 1 else None
        transposed = any(a.name == "transB" and a.i for a in node.attribute)
        if weight is not None:
            values = numpy_helper.to_array(weight)
            axis = 0 if node.op_type == "Conv" or transposed else 1  # the output-channel axis
            rows = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
            scale = (np.maximum(np.abs(rows).max(axis=1), 1e-30) / 127.0).astype(np.float32)
            shape = [-1 if dim == axis else 1 for dim in range(values.ndim)]
            quantised = np.clip(np.round(values / scale.reshape(shape)), -127, 127).astype(np.int8)
            graph.initializer.remove(weight)
            graph.initializer.extend([numpy_helper.from_array(quantised, f"{weight.name}_int8"),
                                      numpy_helper.from_array(scale, f"{weight.name}_scale")])
            nodes.append(helper.make_node("DequantizeLinear", [f"{weight.name}_int8", f"{weight.name}_scale"], [weight.name],
                                          axis=axis, name=f"{weight.name}_dequantize"))
            del initializers[weight.name]
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    with atomic_path(out_path) as tmp:
        onnx.save(model, str(tmp))
    return out_path


def _weighted_nodes(path: Path) -> list[str]:
    """Names of the Conv/Gemm/MatMul nodes of an ONNX file, in graph order."""
    import onnx

    return [node.name for node in onnx.load(str(path)).graph.node if node.op_type in WEIGHTED_OPS and node.name]


def quantize_int8(fp32_path: Path, out_path: Path, calibration_inputs: np.ndarray, *, reduce_range: bool = True,
                  target_worst_cos: float | None = None, weights_only_fallback: bool = False,
                  static_first: bool = True, progress: bool = False) -> Path:
    """Static QDQ INT8 of an fp32 ONNX, calibrated on NCHW float inputs (see module docstring).

    Each of ``CALIBRATION_METHODS`` quantises the model; the one with the higher worst cosine to
    fp32 on the calibration faces is kept. Below ``target_worst_cos`` there, the shared search
    (``int8_search.choose_int8``, which tries int8 weights only first without ``static_first``):
    int8 weights only (``weights_only_int8``, with ``weights_only_fallback``), else weighted layers
    kept float, ranked by the worst cosine with each quantised alone. What was measured is stored in
    the file's metadata (``facekd.int8``), read back by ``inspect``. ``reduce_range``: 7-bit weights
    for x86 CPUs without VNNI, measured with this CPU's int8 kernels; False: full-range int8
    weights, measured on the QDQ arithmetic (independent of this CPU).
    """
    import onnx

    with tempfile.TemporaryDirectory(dir=out_path.parent) as scratch:
        quantise = _Quantiser(fp32_path, calibration_inputs, reduce_range, Path(scratch))
        choices = Int8Choices(
            build=lambda kept: quantise.build(quantise.best_method, exclude=kept), worst=quantise.worst,
            layers=lambda: _weighted_nodes(fp32_path), alone=lambda layers: quantise.alone(quantise.best_method, layers, progress),
            fallback=(lambda: weights_only_int8(fp32_path, Path(scratch) / "weights_only.onnx")) if weights_only_fallback else None,
            fallback_activations=WEIGHTS_ONLY)
        chosen, facts = choose_int8(choices, target_worst_cos, {"calibration_faces": len(calibration_inputs),
                                                                "reduce_range": reduce_range}, static_first=static_first)
        if "worst_cos_on_calibration_before_search" in facts:  # static int8 was made: by each method
            facts.update(calibration_method=quantise.best_method, worst_cos_on_calibration_by_method=quantise.worst_by_method)
        quantised = onnx.load(str(chosen))
        onnx.helper.set_model_props(quantised, {INT8_METADATA: json.dumps(facts)})
        with atomic_path(out_path) as tmp:
            onnx.save(quantised, str(tmp))
    return out_path


class _Quantiser:
    """Static QDQ int8 of one fp32 ONNX by calibration method (ranges calibrated once per method, every
    model cached in ``scratch``), scored by the worst cosine to fp32 on the calibration faces."""

    def __init__(self, fp32_path: Path, inputs: np.ndarray, reduce_range: bool, scratch: Path):
        self.fp32_path, self.inputs, self.reduce_range, self.scratch = fp32_path, inputs, reduce_range, scratch
        self.reference = _embed(fp32_path, inputs)

    @cached_property
    def worst_by_method(self) -> dict[str, float]:
        return {method: self.worst(self.build(method)) for method in CALIBRATION_METHODS}

    @property
    def best_method(self) -> str:
        return max(self.worst_by_method, key=self.worst_by_method.get)

    def worst(self, path: Path) -> float:
        return worst_cosine(_embed(path, self.inputs, optimize=self.reduce_range), self.reference)

    def build(self, method: str, *, exclude: Sequence[str] = (), only: Sequence[str] | None = None) -> Path:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        path = self.scratch / f"{method}-{sha256_text(json.dumps([sorted(exclude), only]))[:12]}.onnx"
        if path.is_file():
            return path
        ranges = self.scratch / f"{method}.ranges.json"
        quantize_static(
            str(self.fp32_path), str(path), None if ranges.is_file() else _FaceBatches(self.inputs),
            quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=self.reduce_range,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod[method],
            nodes_to_quantize=list(only) if only is not None else None, nodes_to_exclude=list(exclude),
            calibration_cache_path=str(ranges),
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        )
        return path

    def alone(self, method: str, layers: Sequence[str], progress: bool) -> dict[str, float]:
        """{layer: worst cosine with only that layer quantised}."""
        from tqdm import tqdm

        return {name: self.worst(self.build(method, only=[name]))
                for name in tqdm(layers, desc="int8 sensitivity", unit="layer", disable=not progress, leave=False)}


def convert(model: "nn.Module", precision: str, calibration: "FaceSet", out_path: Path, *,
            preprocess: "PreprocessSpec", max_batch: int, int8: Int8Plan = NO_PLAN,
            progress: bool = False) -> Path:
    if precision == "fp32":
        return export_fp32(model, out_path, preprocess)
    if precision == "int8":
        with tempfile.TemporaryDirectory(dir=out_path.parent) as scratch:
            fp32_path = export_fp32(model, Path(scratch) / "fp32.onnx", preprocess)
            return quantize_int8(fp32_path, out_path, calibration.inputs(preprocess.with_layout("NCHW")),
                                 target_worst_cos=int8.search_target, weights_only_fallback=True,
                                 static_first=int8.static_first, progress=progress)
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


def _weights_only(session) -> bool:
    """Whether an onnxruntime session holds a model this exporter made as int8 weights only (its
    ``facekd.int8`` metadata says so; read from the session, not by parsing the file again)."""
    facts = session.get_modelmeta().custom_metadata_map.get(INT8_METADATA)
    return facts is not None and json.loads(facts).get("activations") == WEIGHTS_ONLY


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
        self._folds_weights = False
        self._path = ""

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
        self._threads, self._path = threads, str(path)
        self._session = ort.InferenceSession(str(path), options, providers=self.providers())
        self._folds_weights = self._optimize and _weights_only(self._session)
        if self._folds_weights:  # again, folding the int8 weights to float at load
            options.add_session_config_entry(FOLD_WEIGHTS_OPTION, "1")
            self._session = ort.InferenceSession(str(path), options, providers=self.providers())
        self._input_name = self._session.get_inputs()[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    def profile_ops(self, batch: np.ndarray, runs: int) -> list[dict]:
        """onnxruntime's own profiler (a second session with ``enable_profiling``; its trace's node
        kernel times, kernel = the execution provider)."""
        import onnxruntime as ort

        with tempfile.TemporaryDirectory() as scratch:
            options = self._session.get_session_options()
            options.enable_profiling, options.profile_file_prefix = True, str(Path(scratch) / "profile")
            session = ort.InferenceSession(self._path, options, providers=self.providers())
            feed = {self._input_name: np.ascontiguousarray(batch, dtype=np.float32)}
            for _ in range(runs):
                session.run(None, feed)
            trace = json.loads(Path(session.end_profiling()).read_text())
        return slowest_ops(((event["name"][: -len("_kernel_time")], event["args"].get("op_name", ""),
                             event["args"].get("provider", ""), event["dur"] / 1000.0)
                            for event in trace
                            if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time")), runs)

    def info(self) -> dict:
        import onnxruntime as ort

        info = {"runtime": "onnxruntime", "version": ort.__version__, "provider": self.PROVIDER, "threads": self._threads}
        if self._folds_weights:
            info["int8_weights"] = f"folded to float at load ({FOLD_WEIGHTS_OPTION}=1)"
        return info if self._optimize else {**info, "graph_optimizations": "off (QDQ run as written)"}
