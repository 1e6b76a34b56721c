"""Benchmark worker: one runner in its own process, driven by JSON lines over stdin/stdout.

Run as ``python -m runtime_bench.worker`` (locally, under another Python environment, or on a
remote host over ssh). Only the standard library, numpy and the runner's own runtime are
imported, so a worker needs neither torch nor OpenCV unless its runner does.

Protocol (one JSON object per line; every reply has ``ok``; failures add ``kind``
("unavailable" when the runtime is not installed, else "error") and a one-line ``error``):

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
- ``{"op": "bye"}`` -> ``{}``, then the worker exits.

The protocol stream is a private duplicate of the original stdout; file descriptor 1 is pointed
at stderr so that anything a runtime prints cannot corrupt the protocol.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import time
from typing import Callable, TextIO

from .latency import TimingPlan, host_info, load_average, peak_rss_mb, time_runs

PROTOCOL_VERSION = 1
logger = logging.getLogger("runtime_bench.worker")


class ProtocolError(ValueError):
    """A request the worker cannot understand."""


def _runner_factory(request: dict) -> Callable[..., object]:
    spec = request.get("runner")
    if spec:
        module_name, _, attribute = spec.partition(":")
        if not module_name or not attribute:
            raise ProtocolError(f"runner must be 'module:callable', got {spec!r}")
        return getattr(importlib.import_module(module_name), attribute)
    from export.formats import runner_factory  # lazy: the format table is only needed here

    return runner_factory(request["format"], request.get("precision"))


class WorkerState:
    """The loaded runner and whether it has run yet."""

    def __init__(self) -> None:
        self.runner = None
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
    state.runner, state.has_run = runner, False
    info = runner.info() if hasattr(runner, "info") else {}
    return {"init_ms": init_ms, "info": json.loads(json.dumps(info, default=str))}


def _read_batch(path: str, batch: int | None):
    import numpy as np

    data = np.load(path, allow_pickle=False)
    if batch is not None:
        if len(data) < batch:
            raise ProtocolError(f"input {path} has {len(data)} rows, fewer than batch {batch}")
        data = data[:batch]
    return np.ascontiguousarray(data, dtype=np.float32)


def _time(state: WorkerState, request: dict) -> dict:
    state.require_runner()
    batch = _read_batch(request["input"], int(request["batch"]))
    plan = TimingPlan.from_dict(request)
    load_before = load_average()
    first_ms = None
    if not state.has_run:
        started = time.perf_counter()
        state.run(batch)
        first_ms = (time.perf_counter() - started) * 1000.0
    runs = time_runs(lambda: state.run(batch), plan)
    return {
        "first_ms": first_ms,
        "warmup_ms": runs.warmup_ms,
        "times_ms": runs.times_ms,
        "peak_rss_mb": peak_rss_mb(),
        "load_before": load_before,
        "load_after": load_average(),
    }


def _embed(state: WorkerState, request: dict) -> dict:
    import numpy as np

    state.require_runner()
    images = _read_batch(request["input"], None)
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


HANDLERS: dict[str, Callable[[WorkerState, dict], dict]] = {
    "load": _load,
    "time": _time,
    "embed": _embed,
    "bye": lambda state, request: {},
}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip().rstrip(":")


def handle(state: WorkerState, line: str) -> tuple[dict, bool]:
    """Answer one request line; returns (reply, whether to stop)."""
    try:
        request = json.loads(line)
        op = request.get("op") if isinstance(request, dict) else None
        if op not in HANDLERS:
            raise ProtocolError(f"unknown op {op!r}; expected one of {sorted(HANDLERS)}")
        reply = {"ok": True, "op": op, **HANDLERS[op](state, request)}
        return reply, op == "bye"
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        reason = f"{missing} not installed" if missing else _one_line(exc)
        return {"ok": False, "kind": "unavailable", "error": reason}, False
    except Exception as exc:  # a runner may raise anything; the parent gets it as one line
        logger.exception("request failed")
        return {"ok": False, "kind": "error", "error": _one_line(exc)}, False


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
