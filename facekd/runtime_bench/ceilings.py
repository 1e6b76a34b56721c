"""What this host's cores demonstrably compute: the achieved ceilings a bench row's speed is judged by.

A formula peak (FMA pipes × lanes × the clock ``/proc/cpuinfo`` reports) overstates what a core
delivers; a GEMM of known arithmetic measures it. fp32: ``C = A·B`` of float32 n×n matrices through
numpy's BLAS (threads limited with threadpoolctl). int8: onnxruntime's ``MatMulInteger`` (uint8 ×
int8 → int32, the VNNI kernels of MLAS where the CPU has them). Each at one thread and at every core;
the best of several runs. Measured once per host and library versions and kept in the user cache —
unless other work was running (1-minute load average at or above a quarter of the cores): then the
figures are marked ``disturbed`` and measured again next time.

Runs where the bench worker runs: numpy is required, onnxruntime and onnx are used when present.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time

import numpy as np

from facekd.core.io import atomic_write_json, cache_dir

SIZE = 512  # n of the n×n GEMMs: n³ = 134 M multiply-accumulates per product
REPEATS = 12
CACHE_VERSION = 1


def _best_seconds(run, repeats: int = REPEATS) -> float:
    run()  # warm-up: buffers, thread pools, kernel selection
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def fp32_gmacs(threads: int, size: int = SIZE) -> float:
    """Achieved float32 GEMM multiply-accumulates per second (×1e9) at ``threads`` BLAS threads."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a, b = rng.random((size, size), dtype=np.float32), rng.random((size, size), dtype=np.float32)
    with threadpool_limits(limits=threads, user_api="blas"):
        seconds = _best_seconds(lambda: a @ b)
    return size ** 3 / seconds / 1e9


def int8_gmacs(threads: int, size: int = SIZE) -> float | None:
    """Achieved int8 GEMM multiply-accumulates per second (×1e9) through onnxruntime's MatMulInteger
    at ``threads`` intra-op threads; None without onnxruntime and onnx."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])], "int8_gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size]),
         helper.make_tensor_value_info("b", TensorProto.INT8, [size, size])],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [size, size])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, 9)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"a": rng.integers(0, 256, (size, size), dtype=np.uint8),
             "b": rng.integers(-128, 128, (size, size), dtype=np.int8)}
    return size ** 3 / _best_seconds(lambda: session.run(None, feeds)) / 1e9


def _host_key() -> str:
    from facekd.export.host import cpu_features

    from .latency import cpu_model

    versions = {}
    for name in ("numpy", "onnxruntime"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    facts = {"cpu": cpu_model(), "machine": platform.machine(), "cores": os.cpu_count(),
             "isa": cpu_features(), "versions": versions, "size": SIZE, "version": CACHE_VERSION}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def measured_ceilings(use_cache: bool = True) -> dict:
    """{"fp32": {"1": GMAC/s, "all": GMAC/s}, "int8": {...} or None, "cores", "how"}, measured once per host."""
    cache = cache_dir() / "ceilings" / f"{_host_key()}.json"
    if use_cache and cache.is_file():
        try:
            return json.loads(cache.read_text())
        except (OSError, ValueError):
            pass
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    int8_one = int8_gmacs(1)
    ceilings = {
        "fp32": {"1": round(fp32_gmacs(1), 1), "all": round(fp32_gmacs(cores), 1)},
        "int8": None if int8_one is None else {"1": round(int8_one, 1), "all": round(int8_gmacs(cores), 1)},
        "cores": cores,
        "how": f"best of {REPEATS} {SIZE}×{SIZE} GEMMs: fp32 numpy BLAS, int8 onnxruntime MatMulInteger (u8×s8)",
        "disturbed": load is not None and load >= cores / 4,
    }
    if ceilings["disturbed"]:
        return ceilings
    try:
        atomic_write_json(cache, ceilings)
    except OSError:
        pass  # an unwritable cache: measured again next time
    return ceilings


def ceiling_for(ceilings: dict | None, precision: str, threads: int) -> float | None:
    """The measured ceiling (GMAC/s) a row of ``precision`` at ``threads`` threads is judged by: the
    one-thread figure times the threads, at most the all-core figure."""
    figures = (ceilings or {}).get("int8" if precision == "int8" else "fp32")
    if not figures or not threads:
        return None
    return min(figures["1"] * threads, figures["all"])
