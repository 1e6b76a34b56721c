"""Runner variants on accelerators, added to a benchmark when the target's worker reports them
(``probe``): torch eager on CUDA, onnxruntime with the CUDA or TensorRT execution provider.

They reuse export's runners and change only the device or the execution provider, so the
artifact, its preprocessing and the output contract stay those of the format table.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from export.errors import FormatUnavailable
from export.onnx_format import OnnxRuntimeRunner
from export.torch_format import TorchRunner


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


class OnnxRuntimeCudaRunner(OnnxRuntimeRunner):
    """onnxruntime with the CUDA execution provider (nodes it lacks fall back to the CPU)."""

    PROVIDER = "CUDAExecutionProvider"

    def load(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        if self.PROVIDER not in ort.get_available_providers():
            raise FormatUnavailable(f"onnxruntime {ort.__version__} has no {self.PROVIDER} (install onnxruntime-gpu)")
        super().load(path, threads)
        if self._session.get_providers()[0] != self.PROVIDER:
            raise FormatUnavailable(f"{self.PROVIDER} could not be initialised (no GPU or driver)")


class OnnxRuntimeTensorRTRunner(OnnxRuntimeCudaRunner):
    """onnxruntime with the TensorRT execution provider (engines built on first run)."""

    PROVIDER = "TensorrtExecutionProvider"


ACCELERATED_RUNTIMES = {
    "torch-cuda": ("torch", "runtime_bench.accelerated:TorchCudaRunner"),
    "onnxruntime-cuda": ("onnx", "runtime_bench.accelerated:OnnxRuntimeCudaRunner"),
    "onnxruntime-tensorrt": ("onnx", "runtime_bench.accelerated:OnnxRuntimeTensorRTRunner"),
}
