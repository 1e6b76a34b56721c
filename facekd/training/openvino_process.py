"""An ONNX graph run by OpenVINO's CPU plugin in a process of its own.

OpenVINO's thread pools stay alive in the process that used them, and a process holding them can
crash later when it runs torch DataLoader workers (seen: SIGSEGV in the parent while a streamed
epoch's workers shut down). In a child (``python -m facekd.training.openvino_process``, not
multiprocessing's spawn, which would re-run an unguarded caller script) they share nothing with the
caller. Batches go through the pipes as ``.npy`` (no pickle); 16 faces are ~2.4 MB against ~120 ms
of inference.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from typing import BinaryIO

import numpy as np


def _send_bytes(stream: BinaryIO, payload: bytes) -> None:
    stream.write(len(payload).to_bytes(8, "little") + payload)
    stream.flush()


def _read_bytes(stream: BinaryIO) -> bytes:
    header = stream.read(8)
    if len(header) < 8:
        raise EOFError("the other end closed the pipe")
    return stream.read(int.from_bytes(header, "little"))


def _send_array(stream: BinaryIO, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    _send_bytes(stream, buffer.getvalue())


def _read_array(stream: BinaryIO) -> np.ndarray:
    return np.load(io.BytesIO(_read_bytes(stream)), allow_pickle=False)


def _serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """Child: read the settings and the model, compile it (fp32), answer "" (ready) or why not, then
    answer each batch with the first output until the input closes."""
    settings = json.loads(_read_bytes(requests))
    model = _read_bytes(requests)
    try:
        import openvino as ov

        core = ov.Core()
        network = core.read_model(model)
        network.reshape(settings["shape"])
        if network.outputs[0].get_partial_shape()[0].get_length() != settings["shape"][0]:
            raise ValueError("the graph flattens its batch away")
        threads = {"INFERENCE_NUM_THREADS": settings["threads"]} if settings["threads"] else {}
        compiled = core.compile_model(network, "CPU", {"INFERENCE_PRECISION_HINT": "f32", **threads})
    except Exception as exc:  # ImportError, OpenVINO's RuntimeErrors, the check above
        _send_bytes(answers, f"{type(exc).__name__}: {exc}".encode())
        return
    _send_bytes(answers, b"")
    while requests.peek(1):
        _send_array(answers, compiled(_read_array(requests))[0])


class OpenVinoProcess:
    """``run(batch)`` → the graph's first output, computed in a child process; ``error`` says why the
    child could not compile the graph (None: it runs)."""

    def __init__(self, model: bytes, shape: list[int], threads: int | None):
        self._child = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            _send_bytes(self._child.stdin, json.dumps({"shape": shape, "threads": threads or 0}).encode())
            _send_bytes(self._child.stdin, model)
            self.error = _read_bytes(self._child.stdout).decode() or None
        except (BrokenPipeError, EOFError) as exc:
            self.error = f"the OpenVINO process stopped ({exc})"
        if self.error:
            self.close()

    def run(self, batch: np.ndarray) -> np.ndarray:
        _send_array(self._child.stdin, batch)
        return _read_array(self._child.stdout)

    def close(self) -> None:
        if self._child.poll() is None:
            self._child.stdin.close()
            try:
                self._child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._child.kill()
        self._child.stdout.close()

    def __del__(self) -> None:
        if getattr(self, "_child", None) is not None:
            self.close()


if __name__ == "__main__":
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # anything a library prints goes to stderr, not into the answers
    _serve(sys.stdin.buffer, answers)
