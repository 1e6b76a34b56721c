"""Benchmark worker: one runner in its own process, driven by JSON lines over stdin/stdout.

Run as ``python -m facekd.runtime_bench.worker`` (locally, under another Python environment, or on a
remote host over ssh). Only the standard library, numpy and the runner's own runtime are
imported, so a worker needs neither torch nor OpenCV unless its runner does.

Protocol (one JSON object per line; every reply has ``ok``; failures add ``kind``
("unavailable" when a package the runner declares is not installed, else "error") and a one-line
``error``):

- on start the worker sends ``{"op": "hello", "protocol": 1, "pid", "host": {...}, "numpy"}``
- ``{"op": "load", "format", "precision", "path", "threads", "layout", "runner"?, "options"?}``
  -> ``{"init_ms", "info"}``. ``runner`` ("module:callable") overrides the format table's
  factory; ``options`` are keyword arguments for the factory.
- ``{"op": "time", "input": "<batch.npy>", "batch", "warmup_count", "warmup_seconds",
  "min_runs", "min_seconds", "max_seconds"}`` -> ``{"first_ms", "warmup_ms": [...],
  "times_ms": [...], "peak_rss_mb", "load_before", "load_after"}``; ``first_ms`` is the first
  run after ``load`` (``null`` when an earlier request already ran the model).
- ``{"op": "embed", "input": "<images.npy>", "output": "<embeddings.npy>", "batch"}`` runs the
  input in chunks of ``batch`` and writes float32 [N, D] raw embeddings -> ``{"output", "shape"}``.
- ``{"op": "profile", "input": "<batch.npy>", "batch", "runs"}`` -> ``{"ops": [{name, type, kernel,
  ms}], "runs"}`` slowest first, from the runtime's own profiler (``Runner.profile_ops``), or
  ``{"unavailable": reason}`` where the runtime has none here.
- ``{"op": "probe"}`` -> ``{"accelerators": [...]}``: which of "torch-cuda", "onnxruntime-cuda",
  "onnxruntime-tensorrt" this environment can run (imports torch/onnxruntime if installed).
- ``{"op": "ceilings"}`` -> ``{"ceilings": {...}}``: the fp32 and int8 GEMM throughput this host
  achieves at one thread and at every core (measured once per host, ``ceilings.measured_ceilings``).
- ``{"op": "bye"}`` -> ``{}``, then the worker exits.

The protocol stream is a private duplicate of the original stdout; file descriptor 1 is pointed
at stderr so that anything a runtime prints cannot corrupt the protocol.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import time
from typing import Callable, TextIO

from .latency import OtherCpuMeter, TimingPlan, host_info, load_average, peak_rss_mb, time_runs
from facekd.core.errors import one_line

PROTOCOL_VERSION = 1
logger = logging.getLogger("facekd.runtime_bench.worker")


class ProtocolError(ValueError):
    """A request the worker cannot understand."""


def _runner_factory(request: dict) -> Callable[..., object]:
    spec = request.get("runner")
    if spec:
        module_name, _, attribute = spec.partition(":")
        if not module_name or not attribute:
            raise ProtocolError(f"runner must be 'module:callable', got {spec!r}")
        return getattr(importlib.import_module(module_name), attribute)
    from facekd.export.formats import FORMATS  # lazy: imports no runtime, only the format table

    name = request.get("format")
    if name not in FORMATS:
        raise ProtocolError(f"unknown format {name!r}; known: {sorted(FORMATS)}")
    return FORMATS[name].runner


class WorkerState:
    """The loaded runner, the input layout it expects, and whether it has run yet."""

    def __init__(self) -> None:
        self.runner = None
        self.layout: str | None = None
        self.has_run = False

    def run(self, batch):
        output = self.runner.run(batch)
        self.has_run = True
        return output

    def require_runner(self) -> None:
        if self.runner is None:
            raise ProtocolError("send 'load' before 'time' or 'embed'")


def _load(state: WorkerState, request: dict) -> dict:
    factory = _runner_factory(request)
    runner = factory(**(request.get("options") or {}))
    started = time.perf_counter()
    runner.load(request["path"], int(request.get("threads") or 1))
    init_ms = (time.perf_counter() - started) * 1000.0
    state.runner, state.layout, state.has_run = runner, request.get("layout"), False
    info = runner.info() if hasattr(runner, "info") else {}
    return {"init_ms": init_ms, "info": json.loads(json.dumps(info, default=str))}


def _read_batch(path: str, batch: int | None, layout: str | None):
    """float32 images from a .npy; with a layout, 4-D inputs must have 3 channels where it says."""
    import numpy as np

    data = np.load(path, allow_pickle=False)
    channel_axis = {"NCHW": 1, "NHWC": 3}.get(layout or "")
    if data.ndim == 4 and channel_axis is not None and data.shape[channel_axis] != 3:
        raise ProtocolError(f"input {path} shaped {list(data.shape)} is not {layout} RGB")
    if batch is not None:
        if len(data) < batch:
            raise ProtocolError(f"input {path} has {len(data)} rows, fewer than batch {batch}")
        data = data[:batch]
    return np.ascontiguousarray(data, dtype=np.float32)


def _time(state: WorkerState, request: dict) -> dict:
    state.require_runner()
    batch = _read_batch(request["input"], int(request["batch"]), state.layout)
    plan = TimingPlan.from_dict(request)
    load_before = load_average()
    first_ms = None
    if not state.has_run:
        started = time.perf_counter()
        state.run(batch)
        first_ms = (time.perf_counter() - started) * 1000.0
    meter = OtherCpuMeter()
    runs = time_runs(lambda: state.run(batch), plan)
    other_cores = meter.other_cores()
    return {
        "other_cpu_cores": other_cores,
        "first_ms": first_ms,
        "warmup_ms": runs.warmup_ms,
        "times_ms": runs.times_ms,
        "peak_rss_mb": peak_rss_mb(),
        "load_before": load_before,
        "load_after": load_average(),
    }


def _profile(state: WorkerState, request: dict) -> dict:
    state.require_runner()
    batch = _read_batch(request["input"], int(request["batch"]), state.layout)
    runs = max(1, int(request.get("runs") or 1))
    if not hasattr(state.runner, "profile_ops"):
        return {"unavailable": f"{type(state.runner).__name__} has no profile_ops"}
    try:
        return {"ops": state.runner.profile_ops(batch, runs), "runs": runs}
    except Exception as exc:
        artifact = sys.modules.get("facekd.export.artifact")  # loaded with the runner's module
        if artifact is None or not isinstance(exc, artifact.OpProfileUnavailable):
            raise
        return {"unavailable": str(exc)}


def _embed(state: WorkerState, request: dict) -> dict:
    import numpy as np

    state.require_runner()
    images = _read_batch(request["input"], None, state.layout)
    chunk = max(1, int(request.get("batch") or 1))
    outputs = []
    for start in range(0, len(images), chunk):
        output = np.asarray(state.run(images[start:start + chunk]), dtype=np.float32)
        outputs.append(output.reshape(output.shape[0], -1))
    embeddings = np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)
    if len(embeddings) != len(images):
        raise ProtocolError(f"runner returned {len(embeddings)} embeddings for {len(images)} inputs")
    with open(request["output"], "wb") as handle:
        np.save(handle, embeddings)
    return {"output": request["output"], "shape": list(embeddings.shape)}


ACCELERATED_ORT_PROVIDERS = {"CUDAExecutionProvider": "onnxruntime-cuda", "TensorrtExecutionProvider": "onnxruntime-tensorrt"}


def _probe(state: WorkerState, request: dict) -> dict:
    """Accelerated runtimes usable in this environment: torch on CUDA, onnxruntime CUDA/TensorRT."""
    accelerators = []
    if _nvidia_gpu() and importlib.util.find_spec("torch") is not None:  # torch is imported only where it can help
        import torch

        if torch.cuda.is_available():
            accelerators.append("torch-cuda")
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
        accelerators += [name for provider, name in ACCELERATED_ORT_PROVIDERS.items() if provider in providers]
    return {"accelerators": accelerators}


def _nvidia_gpu() -> bool:
    return os.path.exists("/dev/nvidiactl") or shutil.which("nvidia-smi") is not None


def _ceilings(state: WorkerState, request: dict) -> dict:
    """The GEMM throughput this host achieves (see facekd.runtime_bench.ceilings)."""
    from .ceilings import measured_ceilings

    return {"ceilings": measured_ceilings()}


HANDLERS: dict[str, Callable[[WorkerState, dict], dict]] = {
    "load": _load,
    "probe": _probe,
    "ceilings": _ceilings,
    "time": _time,
    "profile": _profile,
    "embed": _embed,
    "bye": lambda state, request: {},
}


def _is_format_unavailable(exc: Exception) -> bool:
    """Whether a runner refused because its runtime cannot run on this host (export's FormatUnavailable)."""
    errors = sys.modules.get("facekd.export.errors")
    return errors is not None and isinstance(exc, errors.FormatUnavailable)


def _declared_package_missing(request, exc: Exception) -> str | None:
    """"X not installed (hint)" when ``exc`` is the absence of a package the runner declares (the
    format row's ``requires``, or a custom runner's ``REQUIRES``); None for anything else (a broken
    install, an ABI clash, a missing transitive dependency): a failure, not "unavailable"."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name or not isinstance(request, dict):
        return None
    if request.get("runner"):
        factory = _runner_factory(request)
        declared, hint = tuple(getattr(factory, "REQUIRES", ())), getattr(factory, "INSTALL_HINT", "")
    else:
        from facekd.export.formats import FORMATS  # lazy: imports no runtime, only the format table

        row = FORMATS.get(request.get("format"))
        declared, hint = (row.requires, row.install_hint) if row else ((), "")
    if exc.name.split(".")[0] not in declared:
        return None
    return f"{exc.name} not installed" + (f" ({hint})" if hint else "")


def handle(state: WorkerState, line: str) -> tuple[dict, bool]:
    """Answer one request line; returns (reply, whether to stop)."""
    request = None
    try:
        request = json.loads(line)
        op = request.get("op") if isinstance(request, dict) else None
        if op not in HANDLERS:
            raise ProtocolError(f"unknown op {op!r}; expected one of {sorted(HANDLERS)}")
        reply = {"ok": True, "op": op, **HANDLERS[op](state, request)}
        return reply, op == "bye"
    except Exception as exc:  # a runner may raise anything; the parent gets it as one line
        hint = _declared_package_missing(request, exc)
        if hint is not None:
            return {"ok": False, "kind": "unavailable", "error": hint}, False
        if _is_format_unavailable(exc):
            return {"ok": False, "kind": "unavailable", "error": str(exc)}, False
        logger.exception("request failed")
        return {"ok": False, "kind": "error", "error": one_line(exc)}, False


def serve(requests: TextIO, replies: TextIO) -> None:
    """Send hello, then answer requests until ``bye`` or end of input."""
    import numpy

    def send(message: dict) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    send({"ok": True, "op": "hello", "protocol": PROTOCOL_VERSION, "pid": os.getpid(),
          "host": host_info(), "numpy": numpy.__version__})
    state = WorkerState()
    for line in requests:
        if not line.strip():
            continue
        reply, stop = handle(state, line)
        send(reply)
        if stop:
            break


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="worker: %(message)s")
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin, replies)


if __name__ == "__main__":
    main()
