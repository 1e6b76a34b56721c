"""Runner variants on accelerators, added to a benchmark when the target's worker reports them
(``probe``): torch eager on CUDA, onnxruntime with the CUDA or TensorRT execution provider.

They reuse export's runners and change only the device or the execution provider, so the
artifact, its preprocessing and the output contract stay those of the format table.

onnxruntime's providers are asked for in the order TensorRT -> CUDA -> CPU, from the runner's own
down (:func:`onnxruntime_providers`): nodes one cannot run go to the next. TensorRT gets fp16
(``trt_fp16_enable``; ``trt_int8_enable`` too for a QDQ model, whose scales it then obeys) and
an engine + timing cache (``trt_engine_cache_path``, :func:`engine_cache_dir`), so an engine is
built once per model, GPU and TensorRT version and loaded after that. With TensorRT 11 the EP
builds strongly typed networks (onnxruntime 1.27+); what it makes of ``trt_fp16_enable`` there is
onnxruntime's, not measured here (no GPU): the fp16 ONNX that export makes for TensorRT engines
(``tensorrt-fp16/model.source.onnx``) carries its precision in the graph either way.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facekd.export.errors import FormatUnavailable
from facekd.export.onnx_format import OnnxRuntimeRunner
from facekd.export.torch_format import TorchRunner


class TorchCudaRunner(TorchRunner):
    """The PyTorch reference checkpoint, eager, on the first CUDA device."""

    def load(self, path: str | Path, threads: int | None = None) -> None:
        import torch

        if not torch.cuda.is_available():
            raise FormatUnavailable("torch reports no CUDA device")
        super().load(path, threads)
        self._model = self._model.to("cuda")

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            inputs = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to("cuda")
            return self._model(inputs).float().cpu().numpy()  # .cpu() waits for the kernels

    def info(self) -> dict:
        import torch

        return {**super().info(), "delegate": f"eager CUDA {torch.cuda.get_device_name(0)}"}


PROVIDER_CHAIN = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
ENGINE_CACHE_ENV = "FACEKD_TRT_CACHE"


def engine_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the TensorRT EP keeps its engines and timing cache: ``cache_dir``, else
    ``$FACEKD_TRT_CACHE``, else ``facekd/ort-tensorrt`` in the user cache (``$XDG_CACHE_HOME`` or
    ``~/.cache``) of the host the worker runs on; created when missing."""
    chosen = cache_dir or os.environ.get(ENGINE_CACHE_ENV)
    if not chosen:
        chosen = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "facekd" / "ort-tensorrt"
    path = Path(chosen).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def onnxruntime_providers(preferred: str, available: list[str], *, cache_dir: str | os.PathLike | None = None,
                          fp16: bool = True, int8: bool = False) -> list:
    """``providers`` for an onnxruntime session that prefers ``preferred``: it and those after it
    in TensorRT -> CUDA -> CPU that are ``available``, TensorRT with its options (see module
    docstring)."""
    providers = []
    for name in PROVIDER_CHAIN[PROVIDER_CHAIN.index(preferred):]:
        if name not in available:
            continue
        if name == "TensorrtExecutionProvider":
            cache = str(engine_cache_dir(cache_dir))
            providers.append((name, {"trt_fp16_enable": fp16, "trt_int8_enable": int8,
                                     "trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                                     "trt_timing_cache_enable": True, "trt_timing_cache_path": cache}))
        else:
            providers.append(name)
    return providers


class OnnxRuntimeCudaRunner(OnnxRuntimeRunner):
    """onnxruntime with the CUDA execution provider (nodes it lacks fall back to the CPU)."""

    PROVIDER = "CUDAExecutionProvider"

    def chain_options(self) -> dict:
        """Keyword arguments of :func:`onnxruntime_providers` besides the providers."""
        return {}

    def providers(self) -> list:
        import onnxruntime as ort

        available = ort.get_available_providers()
        if self.PROVIDER not in available:
            needs = "onnxruntime-gpu" + (" and TensorRT" if self.PROVIDER == PROVIDER_CHAIN[0] else "")
            raise FormatUnavailable(f"onnxruntime {ort.__version__} has no {self.PROVIDER} (install {needs})")
        return onnxruntime_providers(self.PROVIDER, available, **self.chain_options())

    def load(self, path: str | Path, threads: int | None = None) -> None:
        super().load(path, threads)
        if self._session.get_providers()[0] != self.PROVIDER:
            raise FormatUnavailable(f"{self.PROVIDER} could not be initialised (no GPU or driver)")

    def info(self) -> dict:
        return {**super().info(), "providers": self._session.get_providers() if self._session else None}


class OnnxRuntimeTensorRTRunner(OnnxRuntimeCudaRunner):
    """onnxruntime with the TensorRT execution provider (fp16, int8 for QDQ models, engine cache;
    engines built on first load), CUDA and then the CPU for nodes TensorRT does not take."""

    PROVIDER = "TensorrtExecutionProvider"

    def __init__(self, int8: bool = False, cache_dir: str | None = None) -> None:
        super().__init__()
        self._int8, self._cache_dir = int8, cache_dir

    def chain_options(self) -> dict:
        return {"int8": self._int8, "cache_dir": self._cache_dir}

    def info(self) -> dict:
        return {**super().info(), "trt_fp16": True, "trt_int8": self._int8, "engine_cache": str(engine_cache_dir(self._cache_dir))}


ACCELERATED_RUNTIMES = {
    "torch-cuda": ("torch", "facekd.runtime_bench.accelerated:TorchCudaRunner"),
    "onnxruntime-cuda": ("onnx", "facekd.runtime_bench.accelerated:OnnxRuntimeCudaRunner"),
    "onnxruntime-tensorrt": ("onnx", "facekd.runtime_bench.accelerated:OnnxRuntimeTensorRTRunner"),
}


def runtime_options(name: str, precision: str) -> dict:
    """Factory options of accelerated runtime ``name`` for an artifact of ``precision``: the
    TensorRT EP must be told to take int8 for a QDQ model (a weakly typed network refuses its
    int8 layers otherwise)."""
    return {"int8": True} if name == "onnxruntime-tensorrt" and precision == "int8" else {}
