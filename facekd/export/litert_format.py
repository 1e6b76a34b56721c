"""TFLite / LiteRT: converted by litert-torch, run by ai-edge-litert (XNNPACK).

The model is wrapped with ``litert_torch.to_channel_last_io`` so the ``.tflite`` takes NHWC
float32 input [1, H, W, 3] (what camera pipelines on phones produce) and returns float32
embeddings [1, D]. Every precision is fixed at batch 1 (the PT2E INT8 graph cannot be traced
with a dynamic batch); the runner loops over a batch.

Every precision converts a copy whose PReLUs with all slopes a_c <= 1 compute max(y, a*y) instead
(``prelu_as_maximum``: equal, and two ops where litert-torch lowers PReLU to four; in int8 the
MUL and MAXIMUM are int8 where PReLU's ops stay float between quantise/dequantise pairs) — except
int8 under a layer search, which keeps litert-torch's PReLU.

- fp32: plain conversion.
- fp16: convolution weights stored as float16 and dequantised at load (litert-torch's fp16
  recipe, applied by ai-edge-quantizer); compute stays float32.
- int8: PT2E static quantisation (per-channel symmetric int8 weights, int8 activations from
  histogram observers fed with real faces). The first and the last convolution stay float so
  the model keeps float32 input and output (≈2 % of the MACs). A PReLU with a slope above 1 stays
  float between quantise/dequantise pairs; the others, rewritten as maximum, run in int8, their
  MAXIMUM on LiteRT's own kernel between XNNPACK partitions (XNNPACK's MAXIMUM is float only;
  measured faster all the same). When the export gives a target
  and the artifact's worst cosine to the float model on the calibration faces is below it, the
  dynamic-range int8 is tried first (``_dynamic_range_int8``: int8 weights, activations quantised
  per inference by TFLite's hybrid kernels — on the zoo student worst cosine 0.9987 vs 0.982 static,
  1.20x fp32 vs 1.46x), and only when it misses too do the most sensitive convolutions stay float
  (``export.int8_search``). What was measured is stored in the file's metadata (``facekd.int8``),
  read back by ``inspect``.
"""
from __future__ import annotations

import json
import tempfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from facekd.core.io import atomic_path

from .artifact import ArtifactIO, OpProfileUnavailable, Runner, package_versions, run_one_by_one
from .errors import ExportError
from .int8 import NO_PLAN, Int8Plan
from .int8_search import choose_int8, pt2e_choices
from .onnx_format import INT8_METADATA, METADATA_DETAILS

INT8_INPUT_METADATA = "facekd.int8_input"  # metadata key of an int8-input model: {"shift"} subtracted before quantising

if TYPE_CHECKING:
    from torch import nn
    from facekd.core.preprocess import PreprocessSpec

    from .faces import FaceSet


@contextmanager
def _quiet_litert_progress():
    import litert_torch

    shown = litert_torch.config.show_progress
    litert_torch.config.show_progress = False
    try:
        yield
    finally:
        litert_torch.config.show_progress = shown


def _float_boundary_quantizer(float_convolutions: frozenset[int] = frozenset(), boundary: bool = True):
    """PT2E quantiser that leaves the convolutions at positions ``float_convolutions`` (in execution
    order) unquantised, and with ``boundary`` the graph's first and last too (float compute at the I/O)."""
    import torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.pt2e_quantizer_utils import OP_TO_ANNOTATOR, propagate_annotation

    class FloatBoundaryQuantizer(pt2e_quantizer.PT2EQuantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            convolutions = [n for n in model.graph.nodes if n.target == torch.ops.aten.conv2d.default]
            kept = {*float_convolutions, *((0, len(convolutions) - 1) if boundary and convolutions else ())}
            float_nodes = {convolutions[i] for i in kept}
            for pattern in self.STATIC_OPS:
                OP_TO_ANNOTATOR[pattern](model, self.global_config, lambda node: node not in float_nodes)
            propagate_annotation(model)
            return model

    config = pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True)
    return FloatBoundaryQuantizer().set_global(config)


def convert(model: "nn.Module", precision: str, calibration: "FaceSet", out_path: Path, *,
            preprocess: "PreprocessSpec", max_batch: int, int8: Int8Plan = NO_PLAN,
            progress: bool = False) -> Path:
    import litert_torch
    import torch

    from .prelu import prelu_as_maximum

    if precision != "int8" or int8.search_target is None:
        # not under a layer search: convolutions it keeps float then fed int8 MUL/MAXIMUMs and measured
        # worse than all-int8 (zoo reference, 13 float: worst 0.975 on the calibration faces vs 0.994)
        model = prelu_as_maximum(model)
    nhwc = preprocess.with_layout("NHWC")
    wrapped = litert_torch.to_channel_last_io(model.eval(), args=[0]).eval()
    example = (torch.zeros(nhwc.input_shape(1)),)
    with _quiet_litert_progress():
        if precision == "fp32":
            edge_model = litert_torch.convert(wrapped, example)
        elif precision == "fp16":
            from litert_torch.generative.quantize import quant_recipes

            edge_model = litert_torch.convert(wrapped, example, quant_config=quant_recipes.full_fp16_recipe())
        elif precision == "int8":
            edge_model, facts = _int8_by_measurement(model, wrapped, example, calibration, preprocess, int8)
        else:
            raise ExportError(f"tflite has no precision {precision!r}")
        with atomic_path(out_path) as tmp:
            edge_model.export(str(tmp))
            if precision == "int8":
                _add_metadata(tmp, INT8_METADATA, json.dumps(facts))
                if int8.integer_input:
                    _add_metadata(tmp, INT8_INPUT_METADATA, json.dumps({"shift": _take_int8_input(tmp)}))
    return out_path


def _take_int8_input(path: Path) -> float:
    """Make the model's input the int8 tensor its first QUANTIZE writes (NPUs and the Edge TPU take
    int8 in), in place: that QUANTIZE goes, and with it a SUB of a scalar constant before it (the
    student's in-graph input shift), whose value is returned for clients to subtract first."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(path)
    graph = model.subgraphs[0]

    def is_op(op, name: str) -> bool:
        code = model.operatorCodes[op.opcodeIndex]
        return max(code.builtinCode, code.deprecatedBuiltinCode) == getattr(schema.BuiltinOperator, name)

    old_input, shift, head = graph.inputs[0], 0.0, 0
    if graph.tensors[old_input].type == schema.TensorType.INT8:  # the converter folded a leading QUANTIZE into it
        return shift
    if is_op(graph.operators[0], "SUB") and graph.operators[0].inputs[0] == old_input:
        constant = graph.tensors[graph.operators[0].inputs[1]]
        values = np.frombuffer(bytes(np.asarray(model.buffers[constant.buffer].data, dtype=np.uint8)), dtype=np.float32)
        if values.size != 1:
            raise ExportError(f"int8 input: the graph's first SUB subtracts {values.size} values, expected one")
        shift, head = float(values[0]), 1
    quantize = graph.operators[head]
    if not is_op(quantize, "QUANTIZE") or quantize.inputs[0] != (graph.operators[0].outputs[0] if head else old_input):
        raise ExportError("int8 input: the graph does not begin with a QUANTIZE of its input (is it full-integer?)")
    floats = {old_input, *(op.outputs[0] for op in graph.operators[:head])}
    if any(index in floats for op in graph.operators[head + 1:] for index in op.inputs):
        raise ExportError("int8 input: the float input is read by more than the QUANTIZE")
    new_input = quantize.outputs[0]
    graph.tensors[new_input].name, graph.tensors[old_input].name = graph.tensors[old_input].name, b"float_input_unused"
    graph.operators, graph.inputs = graph.operators[head + 1:], [new_input]
    for signature in model.signatureDefs or []:
        for tensor in signature.inputs:
            if tensor.tensorIndex == old_input:
                tensor.tensorIndex = new_input
    flatbuffer_utils.write_model(model, path)
    return shift


def _int8_edge_model(wrapped, example, faces: np.ndarray, float_convolutions: frozenset[int], boundary: bool):
    """PT2E int8 of ``wrapped`` calibrated on NHWC ``faces``, converted by litert-torch."""
    import litert_torch
    import torch
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    quantizer = _float_boundary_quantizer(float_convolutions, boundary)
    observed = quantize_pt2e.prepare_pt2e(torch.export.export(wrapped, example).module(), quantizer)
    with torch.no_grad():
        for face in faces:
            observed(torch.from_numpy(face[None]))
    quantized = quantize_pt2e.convert_pt2e(observed, fold_quantize=False)
    return litert_torch.convert(quantized, example, quant_config=QuantConfig(pt2e_quantizer=quantizer))


def _int8_by_measurement(model: "nn.Module", wrapped, example, calibration: "FaceSet", preprocess: "PreprocessSpec",
                         plan: Int8Plan):
    """(int8 edge model, what was measured): boundary convolutions float (none for a full-integer
    ``plan``), then the most sensitive inner ones too until the worst cosine to float on the
    calibration faces reaches the plan's target (None: no search; ``export.int8_search``)."""
    import torch

    faces = calibration.inputs(preprocess.with_layout("NHWC"))
    batch = torch.from_numpy(calibration.inputs(preprocess.with_layout("NCHW")))

    def embed(edge_model) -> np.ndarray:  # as the runner reads the file: an int8 output dequantised
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "candidate.tflite"
            path.write_bytes(edge_model.model_content())
            runner = LiteRTRunner()
            runner.load(path, threads=1)
            return runner.run(faces)

    boundary = not plan.full_integer
    choices = pt2e_choices(model, batch, lambda floats: _int8_edge_model(wrapped, example, faces, frozenset(floats), boundary),
                           embed, boundary_float=boundary, fallback=lambda: _dynamic_range_int8(model, example))
    return choose_int8(choices, plan.search_target, {"calibration_faces": len(faces)}, static_first=plan.static_first)


def _dynamic_range_int8(model: "nn.Module", example):
    """TFLite's dynamic-range int8 of ``model`` (ai-edge-quantizer's legacy recipe): per-channel
    int8 weights of the layers with >= 1024 of them, activations quantised per inference from their
    own range by the hybrid kernels; the rest float. Its PReLUs are maxima (activations stay float).
    None when no layer is that large (nothing would be int8)."""
    import litert_torch
    from ai_edge_quantizer import quantizer, recipe
    from litert_torch.model import LiteRTModel

    from .prelu import prelu_as_maximum

    float_model = litert_torch.convert(litert_torch.to_channel_last_io(prelu_as_maximum(model), args=[0]).eval(), example)
    dynamic = quantizer.Quantizer(bytearray(float_model.model_content()))
    dynamic.load_quantization_recipe(recipe.dynamic_legacy_wi8_afp32())
    quantized = bytes(dynamic.quantize().quantized_model)
    interpreter = _interpreter_class()(model_content=quantized)
    int8_tensors = [t for t in interpreter.get_tensor_details() if t["dtype"] == np.int8]
    return LiteRTModel(quantized) if int8_tensors else None


def _add_metadata(path: Path, name: str, value: str) -> None:
    """Append a named metadata buffer (utf-8 ``value``) to a .tflite file in place."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(path)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(value.encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = name, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    flatbuffer_utils.write_model(model, path)


def _read_metadata(path: Path) -> dict[str, str]:
    """{name: utf-8 text} of a .tflite file's metadata buffers that decode as text."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(path)
    found = {}
    for entry in model.metadata or []:
        name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        data = model.buffers[entry.buffer].data
        if data is not None:
            try:
                found[name] = bytes(np.asarray(data, dtype=np.uint8)).decode()
            except UnicodeDecodeError:
                continue
    return found


def _interpreter_class():
    """ai-edge-litert's Interpreter, or tflite-runtime's in environments that only have that."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
    return Interpreter


def inspect(path: Path) -> ArtifactIO:
    interpreter = _interpreter_class()(model_path=str(path))
    interpreter.allocate_tensors()
    (inputs,), (outputs,) = interpreter.get_input_details(), interpreter.get_output_details()
    operations = interpreter._get_ops_details()  # noqa: SLF001 - the interpreter's only op listing
    operators = Counter(op["op_name"] for op in operations)
    delegates = [op for op in operations if op["op_name"] == "DELEGATE"]
    # one delegate kernel that reads the model input and writes its output = the whole graph runs in XNNPACK
    whole_graph = len(delegates) == 1 and inputs["index"] in delegates[0]["inputs"] and outputs["index"] in delegates[0]["outputs"]
    tensor_types = Counter(t["dtype"].__name__ for t in interpreter.get_tensor_details())
    metadata = _read_metadata(Path(path))
    output_quantization = _quantization(outputs)
    input_quantization = _input_quantization(inputs, lambda: metadata)
    return ArtifactIO(
        input_name=inputs["name"], input_shape=[int(d) for d in inputs["shape_signature"]],
        input_dtype=np.dtype(inputs["dtype"]).name,
        output_name=outputs["name"], output_shape=[int(d) for d in outputs["shape_signature"]],
        output_dtype=np.dtype(outputs["dtype"]).name,
        details={
            "op_census": {k: v for k, v in operators.items() if k != "DELEGATE"},
            "delegate_partitions": len(delegates),
            "xnnpack_whole_graph": bool(whole_graph),
            "tensor_types": dict(tensor_types),
            **{name: json.loads(metadata[key]) for key, name in METADATA_DETAILS.items() if key in metadata},
            **({"output_quantization": output_quantization} if output_quantization else {}),
            **({"input_quantization": input_quantization} if input_quantization else {}),
        },
    )


def _quantization(tensor: dict) -> dict | None:
    """{scale, zero_point} of an integer tensor (float = scale · (q − zero_point)); None for a float one.
    An int8 input takes q = clamp(round_half_away((x − shift) / scale) + zero_point, −128, 127), x as
    the manifest's preprocessing makes it (``shift``: ``inspect`` adds it from the file's metadata)."""
    if np.dtype(tensor["dtype"]).kind not in "iu":
        return None
    scale, zero_point = tensor["quantization"]
    return {"scale": float(scale), "zero_point": int(zero_point)}


def _input_quantization(tensor: dict, metadata: Callable[[], dict[str, str]]) -> dict | None:
    """An int8 input's {scale, zero_point, shift} (``_quantization``; the shift from the file's
    ``metadata()``, read only for an integer input)."""
    found = _quantization(tensor)
    if found is not None:
        found["shift"] = json.loads(metadata().get(INT8_INPUT_METADATA, "{}")).get("shift", 0.0)
    return found


class LiteRTRunner(Runner):
    """ai-edge-litert interpreter with its default XNNPACK delegate; loops over the batch."""

    def __init__(self) -> None:
        self._interpreter = None
        self._input_index = self._output_index = 0
        self._input_quantization: dict | None = None
        self._output_quantization: dict | None = None
        self._threads: int | None = None

    def load(self, path: str | Path, threads: int | None = None) -> None:
        self._threads = threads
        self._interpreter = _interpreter_class()(model_path=str(path), num_threads=threads)
        self._interpreter.allocate_tensors()
        source = self._interpreter.get_input_details()[0]
        self._input_index, self._input_quantization = source["index"], _input_quantization(source, lambda: _read_metadata(Path(path)))
        output = self._interpreter.get_output_details()[0]
        self._output_index, self._output_quantization = output["index"], _quantization(output)

    def _input(self, image: np.ndarray) -> np.ndarray:
        """``image`` as the model takes it: float32, or quantised to its int8 input (see ``_quantization``)."""
        if self._input_quantization is None:
            return np.ascontiguousarray(image, dtype=np.float32)
        q = self._input_quantization
        scaled = (image.astype(np.float64) - q["shift"]) / q["scale"]
        rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
        return np.clip(rounded + q["zero_point"], -128, 127).astype(np.int8)

    def _run_single(self, image: np.ndarray) -> np.ndarray:
        self._interpreter.set_tensor(self._input_index, self._input(image))
        self._interpreter.invoke()
        output = self._interpreter.get_tensor(self._output_index)
        if self._output_quantization is None:
            return output.copy()
        scale, zero_point = self._output_quantization["scale"], self._output_quantization["zero_point"]
        return scale * (output.astype(np.float32) - zero_point)  # a full-integer model's int8 embedding

    def run(self, batch: np.ndarray) -> np.ndarray:
        return run_one_by_one(self._run_single, batch)

    def profile_ops(self, batch: np.ndarray, runs: int) -> list[dict]:
        raise OpProfileUnavailable("the LiteRT Python interpreter exposes no op profiler (TFLite's benchmark_model "
                                   "binary has one: --enable_op_profiling=true)")

    def info(self) -> dict:
        package = _interpreter_class().__module__.split(".")[0]
        version = package_versions(("ai-edge-litert", "tflite-runtime")).get(package.replace("_", "-"), "unknown")
        return {"runtime": package, "version": version, "delegate": "XNNPACK", "threads": self._threads}
