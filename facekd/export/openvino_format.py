"""OpenVINO IR: fp32, and INT8 quantised by NNCF on real faces; run by the OpenVINO CPU plugin.

The artifact is a folder ``<name>.openvino/`` holding ``model.xml`` (graph) and ``model.bin``
(weights), converted from the same fp32 ONNX as the ``onnx`` row (dynamic batch, input
``input`` NCHW float32, output ``embedding``).

- fp32: weights kept float32 (``save_model`` would halve them to fp16 by default). The runner
  asks for ``INFERENCE_PRECISION_HINT=f32``: on CPUs with AVX-512 BF16 or AMX the plugin would
  otherwise compute in bfloat16 (it reports ``bfloat16`` as its default on this project's EPYC).
- int8: NNCF post-training quantisation (FakeQuantize nodes; symmetric per-channel int8 weights,
  int8 activations) calibrated on real aligned faces, with ``overflow_fix=enable``: weights use
  7 of their 8 bits so the u8×s8 int16 sums of AVX2/AVX-512 kernels without VNNI cannot
  saturate. The same artifact is faithful on VNNI, AMX and Arm. What ships is the shared search's
  choice (``export.int8_search``): static int8 of every layer when it meets the export's
  worst-cosine target on the calibration faces (always, with no target: an int8-aware student's
  full-integer plan); else int8 weights only (``nncf.compress_weights``, symmetric per channel;
  activations float: a quarter of the file at fp32 speed) when they meet it; else NNCF's accuracy
  control returns the most sensitive layers to float until it is met. The manifest lists the
  float layers and what was measured (kept in the IR's rt_info).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .artifact import ArtifactIO, Runner, slowest_ops
from .errors import ExportError
from .int8 import NO_PLAN, Int8Plan
from .int8_search import WEIGHTS_ONLY, Int8Choices, choose_int8
from .onnx_format import export_fp32
from .parity import worst_cosine

if TYPE_CHECKING:
    from torch import nn
    from facekd.core.preprocess import PreprocessSpec

    from .faces import FaceSet

GRAPH_FILE = "model.xml"
MAX_FLOAT_ROUNDS = 8  # at most this many rounds of returning layers to float (each re-validates)
INT8_RT_INFO = ["facekd", "int8_calibration"]  # where the IR keeps what its int8 search measured (json)
WEIGHTS_ONLY_SCHEME = ("NNCF int8 weights only (compress_weights INT8_SYM, per-channel), activations float: {why} "
                       "the worst-cosine target {target} on the calibration faces")
INT8_SCHEME = ("NNCF static int8, symmetric per-channel weights in 7 bits (overflow_fix=enable: safe without VNNI), "
               "{floats} layers kept float for worst cosine to fp32 >= {target} on the calibration faces")


def _quantize(ov_model, calibration_inputs: np.ndarray, target_worst_cos: float | None, weights_only_fallback: bool,
              static_first: bool = True):
    """NNCF int8 of ``ov_model`` chosen by the shared search (``int8_search.choose_int8``) on the
    worst embedding cosine to fp32 on the calibration faces: static int8 of every layer; below
    ``target_worst_cos``, int8 weights only (with ``weights_only_fallback``) when they meet it, else
    NNCF's accuracy control, which returns the most sensitive layers to float, one at a time, until
    the target is met (or ``MAX_FLOAT_ROUNDS`` rounds have run: the parity gate judges what was
    reached). What was measured is kept in the IR (``INT8_RT_INFO``)."""
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedAccuracyRestorerParameters,
        AdvancedQuantizationParameters,
        OverflowFix,
    )

    fp32 = _compiled(ov_model)
    reference = np.concatenate([fp32(calibration_inputs[i : i + 1])[0] for i in range(len(calibration_inputs))])
    samples = [(i, calibration_inputs[i : i + 1]) for i in range(len(calibration_inputs))]
    dataset = nncf.Dataset(samples, lambda item: item[1])
    preset, advanced = nncf.QuantizationPreset.PERFORMANCE, AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE)

    def worst_on(compiled, items) -> float:
        items = list(items)
        outputs = np.concatenate([compiled(face)[0] for _, face in items])
        return worst_cosine(outputs, reference[[index for index, _ in items]])

    def accuracy_control(target: float):
        model = nncf.quantize_with_accuracy_control(
            ov_model.clone(), calibration_dataset=dataset, validation_dataset=dataset, validation_fn=worst_on,
            max_drop=1.0 - target, drop_type=nncf.DropType.ABSOLUTE, preset=preset, subset_size=len(samples),
            advanced_quantization_parameters=advanced, advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(max_num_iterations=MAX_FLOAT_ROUNDS))
        return model, _float_convolutions(model), worst_on(_compiled(model), samples)

    choices = Int8Choices(
        build=lambda kept: nncf.quantize(ov_model.clone(), dataset, preset=preset, subset_size=len(samples),
                                         ignored_scope=nncf.IgnoredScope(names=list(kept)), advanced_parameters=advanced),
        worst=lambda model: worst_on(_compiled(model), samples), search=accuracy_control,
        fallback=(lambda: nncf.compress_weights(ov_model.clone(), mode=nncf.CompressWeightsMode.INT8_SYM))
        if weights_only_fallback else None, fallback_activations=WEIGHTS_ONLY)
    model, facts = choose_int8(choices, target_worst_cos, {"calibration_faces": len(samples)}, static_first=static_first)
    model.set_rt_info(json.dumps(facts), INT8_RT_INFO)
    return model


def _compiled(ov_model):
    import openvino as ov

    return ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def convert(model: "nn.Module", precision: str, calibration: "FaceSet", out_path: Path, *,
            preprocess: "PreprocessSpec", max_batch: int, int8: Int8Plan = NO_PLAN,
            progress: bool = False) -> Path:
    import openvino as ov

    if precision not in ("fp32", "int8"):
        raise ExportError(f"openvino has no precision {precision!r}")
    scratch = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", dir=out_path.parent))
    try:
        onnx_path = export_fp32(model, scratch / "fp32.onnx", preprocess)
        ov_model = ov.convert_model(str(onnx_path))
        if precision == "int8":
            ov_model = _quantize(ov_model, calibration.inputs(preprocess.with_layout("NCHW")),
                                 int8.search_target, weights_only_fallback=int8.search_target is not None,
                                 static_first=int8.static_first)
        folder = scratch / out_path.name
        folder.mkdir()
        ov.save_model(ov_model, str(folder / GRAPH_FILE), compress_to_fp16=False)
        if out_path.exists():
            shutil.rmtree(out_path)
        os.replace(folder, out_path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out_path


def _dims(partial_shape) -> list:
    return [dim.get_length() if dim.is_static else None for dim in partial_shape]


def _float_convolutions(model) -> list[str]:
    """Names of the convolutions whose input is not quantised (kept float)."""
    return [op.get_friendly_name() for op in model.get_ops()
            if op.get_type_name() in ("Convolution", "GroupConvolution")
            and op.input_value(0).get_node().get_type_name() != "FakeQuantize"]


def _int8_facts(model) -> dict:
    """What the int8 search measured, as kept in the IR ({} for IRs made without it)."""
    return json.loads(model.get_rt_info(INT8_RT_INFO).astype(str)) if model.has_rt_info(INT8_RT_INFO) else {}


def inspect(path: Path) -> ArtifactIO:
    import openvino as ov

    graph = Path(path) / GRAPH_FILE
    if not graph.is_file():
        raise ExportError(f"{path} holds no {GRAPH_FILE}: not an OpenVINO artifact folder")
    model = ov.Core().read_model(str(graph))
    census = Counter(op.get_type_name() for op in model.get_ops())
    details = {"op_census": dict(census)}
    int8_constants = sum(op.get_type_name() == "Constant" and op.get_output_element_type(0) == ov.Type.i8
                         for op in model.get_ops())
    facts = _int8_facts(model)
    target = facts.get("target_worst_cos_on_calibration")
    if facts:
        details["int8_calibration"] = facts
    if census.get("FakeQuantize"):
        floats = _float_convolutions(model)
        details.update(fake_quantize_nodes=census["FakeQuantize"], int8_reduce_range=True, float_layers=floats,
                       int8_scheme=INT8_SCHEME.format(floats=len(floats), target=target))
    elif int8_constants:
        why = ("static int8 missed" if "worst_cos_on_calibration_before_search" in facts
               else "static int8 not tried (export.int8_static_first off); these meet")
        details.update(int8_weight_constants=int8_constants, int8_scheme=WEIGHTS_ONLY_SCHEME.format(why=why, target=target))
    source, sink = model.inputs[0], model.outputs[0]
    return ArtifactIO(
        input_name=source.get_any_name(), input_shape=_dims(source.get_partial_shape()),
        input_dtype=source.get_element_type().to_dtype().name,
        output_name=sink.get_any_name(), output_shape=_dims(sink.get_partial_shape()),
        output_dtype=sink.get_element_type().to_dtype().name, details=details,
    )


class OpenVinoRunner(Runner):
    DEVICE = "CPU"

    def __init__(self) -> None:
        self._request = None
        self._threads: int | None = None
        self._graph, self._config = "", {}

    def load(self, path: str | Path, threads: int | None = None) -> None:
        import openvino as ov

        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self._threads, self._graph, self._config = threads, str(Path(path) / GRAPH_FILE), config
        compiled = ov.Core().compile_model(self._graph, self.DEVICE, config)
        self._request = compiled.create_infer_request()

    def run(self, batch: np.ndarray) -> np.ndarray:
        self._request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return self._request.get_output_tensor(0).data.copy()

    def profile_ops(self, batch: np.ndarray, runs: int) -> list[dict]:
        """OpenVINO's performance counters (a second compilation with ``PERF_COUNT``; kernel = its
        exec type, e.g. ``jit_avx512_I8`` or ``..._FP32``)."""
        import openvino as ov

        compiled = ov.Core().compile_model(self._graph, self.DEVICE, {**self._config, "PERF_COUNT": True})
        request = compiled.create_infer_request()
        timings = []
        for _ in range(runs):
            request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
            timings += [(counter.node_name, counter.node_type, counter.exec_type, counter.real_time.total_seconds() * 1000.0)
                        for counter in request.get_profiling_info() if counter.status == counter.Status.EXECUTED]
        return slowest_ops(timings, runs)

    def info(self) -> dict:
        import openvino as ov

        return {"runtime": "openvino", "version": ov.get_version(), "device": self.DEVICE,
                "inference_precision": "f32", "threads": self._threads}
