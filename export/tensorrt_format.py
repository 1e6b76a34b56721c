"""TensorRT engines, built with the TensorRT 10 Python API from this package's own ONNX.

- fp16: the fp32 ONNX built with ``BuilderFlag.FP16``.
- int8: explicit quantisation. The engine is built from the onnx-int8 QDQ model (symmetric
  int8 weights and activations, zero points 0, calibrated on the same real faces) with
  ``BuilderFlag.INT8`` (+ FP16 for the layers left unquantised, such as PReLU). No implicit
  ``IInt8EntropyCalibrator2``: TensorRT 10 deprecates implicit quantisation, and the QDQ model
  it consumes is the onnx-int8 artifact, which is parity-gated on any host.

The ONNX an engine was built from is kept beside it (``model.source.onnx``). An engine only
runs on the GPU model and TensorRT version that built it. Device buffers come from
cuda-python's runtime bindings (``cuda.bindings.runtime``, formerly ``cuda.cudart``).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training.io import atomic_write_bytes

from .artifact import ArtifactIO, Runner
from .errors import ExportError, FormatUnavailable

if TYPE_CHECKING:
    from torch import nn
    from training.preprocess import PreprocessSpec

    from .faces import FaceSet

INSTALL_HINT = "pip install tensorrt from NVIDIA's index on a CUDA host, plus cuda-python"
SOURCE_ONNX = "model.source.onnx"
SOURCE_PRECISION = {"fp16": "fp32", "int8": "int8"}
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


def convert(model: "nn.Module", precision: str, calibration: "FaceSet", out_path: Path, *,
            preprocess: "PreprocessSpec", max_batch: int) -> Path:
    if precision not in SOURCE_PRECISION:
        raise ExportError(f"tensorrt has no precision {precision!r}")
    trt = _tensorrt()
    from . import onnx_format

    source = out_path.with_name(SOURCE_ONNX)
    onnx_format.convert(model, SOURCE_PRECISION[precision], calibration, source, preprocess=preprocess, max_batch=max_batch)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(source.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {source.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    image = network.get_input(0)
    per_image = tuple(image.shape)[1:]
    profile = builder.create_optimization_profile()
    profile.set_shape(image.name, (1, *per_image), (min(OPTIMAL_BATCH, max_batch), *per_image), (max_batch, *per_image))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError("TensorRT could not build the engine (its log above says why)")
    return atomic_write_bytes(out_path, bytes(engine))


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
