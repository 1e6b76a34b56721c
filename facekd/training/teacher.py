"""Teachers: anything that turns aligned uint8 RGB faces into L2-normalised embeddings."""
from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from .checkpoint import content_digest
from facekd.core.io import sha256_file, sha256_text
from facekd.core.preprocess import SFACE, PreprocessSpec
from facekd.core.verification import l2_normalise
from facekd.core.errors import FacekdError

log = logging.getLogger(__name__)


class TeacherError(FacekdError, ValueError):
    """A teacher that cannot be loaded; the message says what to do."""


@runtime_checkable
class Teacher(Protocol):
    preprocess: PreprocessSpec
    embedding_size: int
    identity: str  # sha256 of the weights and the preprocess: changes whenever embeddings would

    def embed(self, images: np.ndarray) -> np.ndarray:
        """uint8 RGB [N, H, W, 3] -> float32 [N, D], each row of unit length."""
        ...


def _identity(weights_digest: str, preprocess: PreprocessSpec) -> str:
    return sha256_text(json.dumps({"weights": weights_digest, "preprocess": preprocess.to_dict()}, sort_keys=True))


CPU_CHUNK = 16  # images per onnxruntime CPU run: faster per image than larger batches on these convolutions


class OnnxTeacher:
    """An ONNX face-recognition model run with onnxruntime (CUDA execution provider when present, else CPU),
    or on the CPU with OpenVINO when it is installed (``runtime="auto"``; faster on these convolutions),
    in a process of its own (``openvino_process``).

    A model whose batch dimension is fixed (e.g. to 1) is run in chunks of that size; on the CPU in
    chunks of ``CPU_CHUNK``. It runs the file's float network (``onnx_graph.plain_graph``: int8 weight
    blocks folded into float, PRelus as Max(x, x·a), which onnxruntime's CPU runs faster; all exact).
    On CUDA it runs on GPU ``device_id`` (default: ``LOCAL_RANK``, so each torchrun process has its own GPU).
    """

    def __init__(self, path: str | os.PathLike, preprocess: PreprocessSpec = SFACE, threads: int | None = None,
                 device_id: int | None = None, runtime: str = "auto"):
        import onnx
        import onnxruntime as ort

        from .onnx_graph import clean_graph, input_normalisation, plain_graph

        path = Path(path)
        if not path.is_file():
            raise TeacherError(f"teacher model {path} does not exist: pass the path of an .onnx face-recognition model")
        try:
            model = onnx.load(str(path))
        except Exception as exc:  # protobuf DecodeError, onnx errors, OSError
            raise TeacherError(f"{path} is not an ONNX model ({type(exc).__name__}): pass an .onnx file") from None
        clean_graph(model)
        self.input_normalisation = input_normalisation(model)  # (shift, scale) the graph applies itself, or None
        if len(model.graph.input) != 1 or len(model.graph.output) < 1:
            raise TeacherError(f"{path}: expected one image input and an embedding output, found inputs "
                               f"{[i.name for i in model.graph.input]}")
        plain_graph(model)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            if device_id is None:
                device_id = int(os.environ.get("LOCAL_RANK", "0"))
            providers = [(p, {"device_id": device_id}) if p == "CUDAExecutionProvider" else p
                         for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
            self.session = ort.InferenceSession(model.SerializeToString(), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise TeacherError(f"onnxruntime cannot load {path}: {exc}") from None
        on_cpu = self.session.get_providers()[0] == "CPUExecutionProvider"
        model_input = self.session.get_inputs()[0]
        self.input_name, self.input_shape = model_input.name, list(model_input.shape)
        self.preprocess = preprocess
        expected = preprocess.input_shape()
        for axis, (declared, wanted) in enumerate(zip(model_input.shape[1:], expected[1:]), start=1):
            if isinstance(declared, int) and declared != wanted:
                raise TeacherError(
                    f"{path} expects input {model_input.shape} but the preprocess makes {expected} (axis {axis}): "
                    "pass the matching preprocess spec"
                )
        batch = model_input.shape[0]
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        self.chunk = self.fixed_batch or (CPU_CHUNK if on_cpu else None)
        self._runtime, self._openvino = "onnxruntime " + ("CPU" if on_cpu else "CUDA"), None
        self.name = str(path)
        self.identity = _identity(sha256_file(path), preprocess)
        dummy = np.zeros((1, preprocess.size, preprocess.size, 3), dtype=np.uint8)
        raw = self.session.run(None, {self.input_name: self._padded(preprocess.apply(dummy))})[0]
        if raw.ndim < 2 or int(np.prod(raw.shape[2:])) != 1:
            raise TeacherError(f"{path}: its first output has shape {list(raw.shape)} for one image; a face-recognition "
                               "teacher must output embeddings [N, D]: export the embedding, not a feature map")
        self.embedding_size = int(raw.shape[1])
        use_openvino = on_cpu and runtime != "onnxruntime" and importlib.util.find_spec("openvino") is not None
        # started on first use: a teacher loaded only for its identity (an existing cache) starts no process
        self._pending_openvino = (model.SerializeToString(), expected, threads) if use_openvino else None

    @property
    def runtime(self) -> str:
        """What embeds the faces: "OpenVINO CPU", "onnxruntime CPU" or "onnxruntime CUDA"."""
        self._start_openvino()
        return self._runtime

    def _start_openvino(self) -> None:
        """Run on OpenVINO (in a process of its own) in chunks of ``CPU_CHUNK``, even where the file fixes its
        batch, else of the fixed batch; onnxruntime where OpenVINO cannot take the graph."""
        if self._pending_openvino is None:
            return
        model, shape, threads = self._pending_openvino
        self._pending_openvino = None
        from .openvino_process import OpenVinoProcess

        for chunk in dict.fromkeys((CPU_CHUNK, self.chunk)):
            runner = OpenVinoProcess(model, [chunk, *shape[1:]], threads)
            if runner.error is None:
                self._openvino, self.fixed_batch, self.chunk, self._runtime = runner, chunk, chunk, "OpenVINO CPU"
                return
            log.debug("OpenVINO cannot run this teacher at batch %d (%s): onnxruntime runs it", chunk, runner.error)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self._openvino is not None:
            return self._openvino.run(batch).reshape(len(batch), -1)
        return self.session.run(None, {self.input_name: batch})[0].reshape(len(batch), -1)

    def embed(self, images: np.ndarray) -> np.ndarray:
        self._start_openvino()
        inputs = self.preprocess.apply(np.asarray(images, dtype=np.uint8))
        if self.chunk is None:
            return l2_normalise(self._run(inputs))
        outputs = []
        for start in range(0, len(inputs), self.chunk):
            chunk = inputs[start : start + self.chunk]
            outputs.append(self._run(self._padded(chunk))[: len(chunk)])
        return l2_normalise(np.concatenate(outputs))

    def _padded(self, chunk: np.ndarray) -> np.ndarray:
        """``chunk`` zero-padded to the model's fixed batch (unchanged for a dynamic batch)."""
        padding = (self.fixed_batch or len(chunk)) - len(chunk)
        if padding <= 0:
            return chunk
        return np.concatenate([chunk, np.zeros((padding, *chunk.shape[1:]), chunk.dtype)])


class TorchTeacher:
    """A torch module (in eval mode, gradients off) as a teacher."""

    def __init__(self, module: nn.Module, preprocess: PreprocessSpec):
        self.module = module.eval()
        self.preprocess = preprocess
        self.name = type(module).__qualname__
        self.identity = _identity(content_digest({"module": self.name, "state": module.state_dict()}), preprocess)
        dummy = np.zeros((1, preprocess.size, preprocess.size, 3), dtype=np.uint8)
        self.embedding_size = int(self.embed(dummy).shape[1])

    def embed(self, images: np.ndarray) -> np.ndarray:
        device = next(self.module.parameters(), torch.empty(0)).device
        inputs = torch.from_numpy(self.preprocess.apply(np.asarray(images, dtype=np.uint8))).to(device)
        with torch.inference_mode():
            outputs = self.module(inputs)
        return l2_normalise(outputs.float().cpu().numpy().reshape(len(inputs), -1))


def load_teacher(path_or_module: str | os.PathLike | nn.Module, preprocess: PreprocessSpec = SFACE,
                 threads: int | None = None, device_id: int | None = None) -> Teacher:
    """An ``nn.Module`` becomes a TorchTeacher; a path must be an ``.onnx`` file (OnnxTeacher)."""
    if isinstance(path_or_module, nn.Module):
        return TorchTeacher(path_or_module, preprocess)
    path = Path(path_or_module)
    if path.suffix.lower() != ".onnx":
        raise TeacherError(f"teacher {path} is not an .onnx file: export the teacher to ONNX or pass a torch module")
    return OnnxTeacher(path, preprocess, threads=threads, device_id=device_id)
