"""TensorRT engines for TensorRT 10 and 11, built from ONNX made and parity-checked here.

TensorRT 11 removed weak typing: ``BuilderFlag.FP16``/``INT8`` are gone and every network is
strongly typed, so each layer's precision comes from the ONNX itself (NVIDIA's migration guide:
fp16 with ModelOpt AutoCast, int8 with Q/DQ nodes). Both versions build the same way here: the
network is created ``STRONGLY_TYPED`` (required for strong typing on 10, accepted and ignored
by 11) and no precision flag is set (11 has none; a strongly typed 10 network refuses them).
TensorRT before 10 is refused.

Each engine's source is written beside it as ``model.source.onnx`` by :func:`make_source`,
which needs no GPU: export (``formats.SourceModel``) makes and parity-gates it on any host, so
a host without TensorRT still produces and validates everything the engine build consumes.

- fp16: the fp32 ONNX converted by ModelOpt AutoCast (``modelopt.onnx.autocast``,
  ``nvidia-modelopt``, which runs on a CPU): fp16 weights and compute, fp32 input and output
  (``keep_io_types``); nodes whose values on the calibration faces exceed AutoCast's
  ``data_max`` (512) stay fp32. Checked with onnxruntime on the CPU.
- int8: ``onnx_format.quantize_int8(reduce_range=False)``, the onnx-int8 quantiser with
  full-range weights (``reduce_range`` is the workaround for x86 CPUs without VNNI, not a GPU
  need), calibrated on the same faces: per-channel symmetric int8 weights, symmetric int8
  activations, float biases; layers it leaves unquantised run fp32 in the strongly typed engine.
  Gated on its QDQ arithmetic (onnxruntime CPU with graph optimisations off: int8 products,
  exact sums, as TensorRT's int8 kernels compute them); the parity of this CPU's own int8
  kernels is recorded beside it with the CPU's ISA (a lower bound on CPUs without VNNI, where
  full-range weights saturate).

An engine only runs on the GPU model and TensorRT version that built it. Device buffers come
from cuda-python's runtime bindings (``cuda.bindings.runtime``, formerly ``cuda.cudart``).
"""
from __future__ import annotations

import json
import logging
import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from facekd.core.io import atomic_path, atomic_write_bytes

from facekd.export import onnx_format
from .artifact import ArtifactIO, Runner
from .errors import ExportError, FormatUnavailable
from .int8 import NO_PLAN, Int8Plan

if TYPE_CHECKING:
    from torch import nn
    from facekd.core.preprocess import PreprocessSpec

    from .faces import FaceSet

INSTALL_HINT = "pip install tensorrt (10 or 11) from NVIDIA's index on a CUDA host, plus cuda-python"
AUTOCAST_HINT = "pip install 'facekd[tensorrt-onnx]'"
SOURCE_ONNX = "model.source.onnx"
PRECISIONS = ("fp16", "int8")
SUPPORTED_MAJORS = (10, 11)
AUTOCAST_DATA_MAX = 512  # AutoCast's default: values beyond it lose too much in fp16, their nodes stay fp32
OPTIMAL_BATCH = 8
WORKSPACE_BYTES = 1 << 30


def _tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise FormatUnavailable(f"TensorRT not installed ({INSTALL_HINT})") from None
    return tensorrt


def _cuda_runtime():
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise FormatUnavailable(f"cuda-python not installed ({INSTALL_HINT})") from None
    return runtime


def _checked(runtime, result):
    """Unpack a cuda-python ``(error, *values)`` tuple, raising on any CUDA error."""
    error, *values = result
    if error != runtime.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA call failed: {runtime.cudaGetErrorName(error)[1].decode()}")
    return values[0] if len(values) == 1 else tuple(values)


def autocast_fp16(fp32_path: Path, out_path: Path, calibration_inputs: np.ndarray) -> Path:
    """ModelOpt AutoCast of an fp32 ONNX to fp16 with fp32 I/O, its node ranges measured on the
    calibration inputs; what was done is stored in the file's metadata (``facekd.fp16``)."""
    try:
        from modelopt import __version__ as modelopt_version
        from modelopt.onnx.autocast import configure_logging, convert_to_mixed_precision
    except ImportError as exc:
        first_line = (str(exc).splitlines() or [""])[0]
        raise FormatUnavailable(f"nvidia-modelopt's AutoCast cannot be imported ({first_line}; {AUTOCAST_HINT})") from None
    import onnx

    configure_logging(logging.WARNING)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as scratch:
        faces = Path(scratch) / "calibration.npz"
        np.savez(faces, **{onnx_format.INPUT_NAME: np.ascontiguousarray(calibration_inputs, dtype=np.float32)})
        model = convert_to_mixed_precision(
            str(fp32_path), low_precision_type="fp16", keep_io_types=True, data_max=AUTOCAST_DATA_MAX,
            calibration_data=str(faces), providers=["cpu"],
        )
    facts = {"converter": "ModelOpt AutoCast (convert_to_mixed_precision)", "nvidia-modelopt": modelopt_version,
             "keep_io_types": True, "data_max": AUTOCAST_DATA_MAX, "calibration_faces": len(calibration_inputs)}
    onnx.helper.set_model_props(model, {onnx_format.FP16_METADATA: json.dumps(facts)})
    with atomic_path(out_path) as tmp:
        onnx.save(model, str(tmp))
    return out_path


def make_source(model: "nn.Module", precision: str, calibration: "FaceSet", out_path: Path, *,
                preprocess: "PreprocessSpec", max_batch: int, int8: Int8Plan = NO_PLAN,
                progress: bool = False) -> Path:
    """The ONNX an engine of ``precision`` is built from (see module docstring), at ``out_path``."""
    if precision not in PRECISIONS:
        raise ExportError(f"tensorrt has no precision {precision!r}")
    inputs = calibration.inputs(preprocess.with_layout("NCHW"))
    with tempfile.TemporaryDirectory(dir=out_path.parent) as scratch:
        fp32_path = onnx_format.export_fp32(model, Path(scratch) / "fp32.onnx", preprocess)
        if precision == "fp16":
            return autocast_fp16(fp32_path, out_path, inputs)
        return onnx_format.quantize_int8(fp32_path, out_path, inputs, reduce_range=False, target_worst_cos=int8.search_target,
                                           progress=progress)


def source_checks(precision: str) -> list[tuple[str, Callable[[], Runner]]]:
    """How export checks a source on this host: (what is measured, runner); the first one gates."""
    if precision == "int8":
        return [("QDQ arithmetic, onnxruntime CPU with graph optimisations off",
                 partial(onnx_format.OnnxRuntimeRunner, optimize=False)),
                ("this CPU's int8 kernels, onnxruntime CPU (a lower bound without VNNI)", onnx_format.OnnxRuntimeRunner)]
    return [("onnxruntime CPU", onnx_format.OnnxRuntimeRunner)]


def _strongly_typed(trt) -> int:
    """``create_network`` flags of a strongly typed network, for the TensorRT versions supported."""
    version = str(getattr(trt, "__version__", "0"))
    major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if major < SUPPORTED_MAJORS[0] or flag is None:
        raise FormatUnavailable(f"TensorRT {version} is not supported: engines are built strongly typed with TensorRT 10 or 11")
    return 1 << int(flag)


def build_engine(trt, onnx_model: bytes, max_batch: int) -> bytes:
    """A serialized strongly typed engine of ``onnx_model`` with a batch profile 1..``max_batch``.

    No ``BuilderFlag`` is set: the ONNX decides every layer's precision (TensorRT 11 has no
    precision flags left, and a strongly typed TensorRT 10 network refuses them)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_strongly_typed(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_model):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {SOURCE_ONNX}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    image = network.get_input(0)
    per_image = tuple(image.shape)[1:]
    profile = builder.create_optimization_profile()
    profile.set_shape(image.name, (1, *per_image), (min(OPTIMAL_BATCH, max_batch), *per_image), (max_batch, *per_image))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError("TensorRT could not build the engine (its log above says why)")
    return bytes(engine)


def convert(model: "nn.Module", precision: str, calibration: "FaceSet", out_path: Path, *,
            preprocess: "PreprocessSpec", max_batch: int, int8: Int8Plan = NO_PLAN,
            progress: bool = False) -> Path:
    """Build the engine from the source beside ``out_path`` (made first when missing; export
    writes and validates it before calling this). Raises FormatUnavailable without TensorRT."""
    if precision not in PRECISIONS:
        raise ExportError(f"tensorrt has no precision {precision!r}")
    trt = _tensorrt()
    source = out_path.with_name(SOURCE_ONNX)
    if not source.exists():
        make_source(model, precision, calibration, source, preprocess=preprocess, max_batch=max_batch,
                    int8=int8, progress=progress)
    return atomic_write_bytes(out_path, build_engine(trt, source.read_bytes(), max_batch))


def _deserialize(trt, path: Path):
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(Path(path).read_bytes())
    if engine is None:
        raise RuntimeError(f"{path} is not an engine for this GPU and TensorRT {trt.__version__}: rebuild it here")
    return engine


def _io_names(trt, engine) -> tuple[str, str]:
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    return inputs[0], outputs[0]


def inspect(path: Path) -> ArtifactIO:
    trt = _tensorrt()
    engine = _deserialize(trt, path)
    input_name, output_name = _io_names(trt, engine)

    def description(name: str) -> tuple[list, str]:
        shape = [d if d >= 0 else None for d in engine.get_tensor_shape(name)]
        return shape, np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name

    (input_shape, input_dtype), (output_shape, output_dtype) = description(input_name), description(output_name)
    return ArtifactIO(
        input_name=input_name, input_shape=input_shape, input_dtype=input_dtype,
        output_name=output_name, output_shape=output_shape, output_dtype=output_dtype,
        details={"layers": engine.num_layers, "tensorrt": trt.__version__},
    )


class TensorRTRunner(Runner):
    """Deserialised engine + execution context; host batches are copied to reusable device buffers."""

    def __init__(self) -> None:
        self._engine = self._context = self._stream = self._runtime = None
        self._input = self._output = ""
        self._output_type = np.dtype(np.float32)
        self._buffers: dict[str, tuple[int, int]] = {}  # tensor name -> (device pointer, bytes)

    def load(self, path: str | Path, threads: int | None = None) -> None:
        trt = _tensorrt()
        self._runtime = _cuda_runtime()
        self._engine = _deserialize(trt, Path(path))
        self._context = self._engine.create_execution_context()
        self._input, self._output = _io_names(trt, self._engine)
        self._output_type = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self._output)))
        self._stream = _checked(self._runtime, self._runtime.cudaStreamCreate())

    def _device_buffer(self, name: str, size: int) -> int:
        pointer, capacity = self._buffers.get(name, (0, 0))
        if capacity < size:
            if pointer:
                _checked(self._runtime, self._runtime.cudaFree(pointer))
            pointer = _checked(self._runtime, self._runtime.cudaMalloc(size))
            self._buffers[name] = (pointer, size)
        return pointer

    def run(self, batch: np.ndarray) -> np.ndarray:
        cuda = self._runtime
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        self._context.set_input_shape(self._input, batch.shape)
        output = np.empty(tuple(self._context.get_tensor_shape(self._output)), dtype=self._output_type)
        device_input = self._device_buffer(self._input, batch.nbytes)
        device_output = self._device_buffer(self._output, output.nbytes)
        _checked(cuda, cuda.cudaMemcpyAsync(device_input, batch.ctypes.data, batch.nbytes,
                                            cuda.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream))
        self._context.set_tensor_address(self._input, device_input)
        self._context.set_tensor_address(self._output, device_output)
        if not self._context.execute_async_v3(int(self._stream)):
            raise RuntimeError("TensorRT execution failed")
        _checked(cuda, cuda.cudaMemcpyAsync(output.ctypes.data, device_output, output.nbytes,
                                            cuda.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream))
        _checked(cuda, cuda.cudaStreamSynchronize(self._stream))
        return output.astype(np.float32).reshape(len(batch), -1)

    def close(self) -> None:
        """Free device buffers and the stream."""
        for pointer, _ in self._buffers.values():
            _checked(self._runtime, self._runtime.cudaFree(pointer))
        self._buffers.clear()
        if self._stream is not None:
            _checked(self._runtime, self._runtime.cudaStreamDestroy(self._stream))
            self._stream = None

    def info(self) -> dict:
        trt = _tensorrt()
        device = _checked(self._runtime, self._runtime.cudaGetDeviceProperties(0)).name
        return {"runtime": "tensorrt", "version": trt.__version__,
                "delegate": f"CUDA {device.decode(errors='replace').rstrip(chr(0))}", "threads": None}
