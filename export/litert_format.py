"""TFLite / LiteRT: converted by litert-torch, run by ai-edge-litert (XNNPACK).

The model is wrapped with ``litert_torch.to_channel_last_io`` so the ``.tflite`` takes NHWC
float32 input [1, H, W, 3] (what camera pipelines on phones produce) and returns float32
embeddings [1, D]. Every precision is fixed at batch 1 (the PT2E INT8 graph cannot be traced
with a dynamic batch); the runner loops over a batch.

- fp32: plain conversion.
- fp16: convolution weights stored as float16 and dequantised at load (litert-torch's fp16
  recipe, applied by ai-edge-quantizer); compute stays float32.
- int8: PT2E static quantisation (per-channel symmetric int8 weights, int8 activations from
  histogram observers fed with real faces). The first and the last convolution stay float so
  the model keeps float32 input and output (≈2 % of the MACs); PReLU stays float between
  quantise/dequantise pairs. The whole graph runs under XNNPACK.
"""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training.io import atomic_path

from .artifact import ArtifactIO, Runner, package_versions, run_one_by_one
from .errors import ExportError

if TYPE_CHECKING:
    from torch import nn
    from training.preprocess import PreprocessSpec

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


def _float_boundary_quantizer():
    """PT2E quantiser that leaves the graph's first and last convolution unquantised (float I/O)."""
    import torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.pt2e_quantizer_utils import OP_TO_ANNOTATOR, propagate_annotation

    class FloatBoundaryQuantizer(pt2e_quantizer.PT2EQuantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            convolutions = [n for n in model.graph.nodes if n.target == torch.ops.aten.conv2d.default]
            float_nodes = {convolutions[0], convolutions[-1]} if convolutions else set()
            for pattern in self.STATIC_OPS:
                OP_TO_ANNOTATOR[pattern](model, self.global_config, lambda node: node not in float_nodes)
            propagate_annotation(model)
            return model

    config = pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True)
    return FloatBoundaryQuantizer().set_global(config)


def convert(model: "nn.Module", precision: str, calibration: "FaceSet", out_path: Path, *,
            preprocess: "PreprocessSpec", max_batch: int) -> Path:
    import litert_torch
    import torch

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
            from litert_torch.quantize.quant_config import QuantConfig
            from torchao.quantization.pt2e import quantize_pt2e

            quantizer = _float_boundary_quantizer()
            observed = quantize_pt2e.prepare_pt2e(torch.export.export(wrapped, example).module(), quantizer)
            with torch.no_grad():
                for face in calibration.inputs(nhwc):
                    observed(torch.from_numpy(face[None]))
            quantized = quantize_pt2e.convert_pt2e(observed, fold_quantize=False)
            edge_model = litert_torch.convert(quantized, example, quant_config=QuantConfig(pt2e_quantizer=quantizer))
        else:
            raise ExportError(f"tflite has no precision {precision!r}")
        with atomic_path(out_path) as tmp:
            edge_model.export(str(tmp))
    return out_path


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
        },
    )


class LiteRTRunner(Runner):
    """ai-edge-litert interpreter with its default XNNPACK delegate; loops over the batch."""

    def __init__(self) -> None:
        self._interpreter = None
        self._input_index = self._output_index = 0
        self._threads: int | None = None

    def load(self, path: str | Path, threads: int | None = None) -> None:
        self._threads = threads
        self._interpreter = _interpreter_class()(model_path=str(path), num_threads=threads)
        self._interpreter.allocate_tensors()
        self._input_index = self._interpreter.get_input_details()[0]["index"]
        self._output_index = self._interpreter.get_output_details()[0]["index"]

    def _run_single(self, image: np.ndarray) -> np.ndarray:
        self._interpreter.set_tensor(self._input_index, np.ascontiguousarray(image, dtype=np.float32))
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output_index).copy()

    def run(self, batch: np.ndarray) -> np.ndarray:
        return run_one_by_one(self._run_single, batch)

    def info(self) -> dict:
        package = _interpreter_class().__module__.split(".")[0]
        version = package_versions(("ai-edge-litert", "tflite-runtime")).get(package.replace("_", "-"), "unknown")
        return {"runtime": package, "version": version, "delegate": "XNNPACK", "threads": self._threads}
