"""The JSON-lines worker and its client: protocol, timing, embedding, failures contained."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from facekd.runtime_bench.accelerated import ACCELERATED_RUNTIMES
from facekd.runtime_bench.client import WorkerDied, WorkerError
from facekd.runtime_bench.targets import LocalTarget

RUNNERS = '''
import os
import sys
import time

import numpy as np


class MatrixRunner:
    """Embeds by a fixed projection; prints to stdout to prove the protocol stream is protected."""

    def load(self, path, threads):
        self.weights = np.load(path)
        self.threads = threads
        print("noise on stdout from a runtime")

    def run(self, batch):
        return batch.reshape(len(batch), -1) @ self.weights

    def info(self):
        return {"runtime": "numpy", "threads": self.threads}


class CrashingRunner:
    def load(self, path, threads):
        sys.stderr.write("native runtime: fatal error in load\\n")
        sys.stderr.flush()
        os._exit(3)


class RaisingRunner:
    def load(self, path, threads):
        raise RuntimeError("model file is corrupt\\nsecond line")


class MissingRuntimeRunner:
    REQUIRES = ("facekd_runtime_that_does_not_exist",)

    def load(self, path, threads):
        import facekd_runtime_that_does_not_exist  # noqa: F401


class BrokenInstallRunner:
    """Its declared runtime imports, but one of that runtime's own modules is missing."""

    REQUIRES = ("numpy",)

    def load(self, path, threads):
        import facekd_transitive_dependency_that_does_not_exist  # noqa: F401


class AbiClashRunner:
    REQUIRES = ("numpy",)

    def load(self, path, threads):
        raise ImportError("libruntime.so: undefined symbol: _ZN4core6Tensor4sizeEv")


class HangingRunner:
    def load(self, path, threads):
        time.sleep(60)
'''


@pytest.fixture()
def target(tmp_path, monkeypatch):
    (tmp_path / "bench_test_runners.py").write_text(textwrap.dedent(RUNNERS))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return LocalTarget()


def test_load_time_embed(target, tmp_path):
    weights = np.random.default_rng(0).normal(size=(3 * 2 * 2, 4)).astype(np.float32)
    np.save(tmp_path / "weights.npy", weights)
    images = np.random.default_rng(1).normal(size=(7, 3, 2, 2)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    with target.start_worker(timeout_s=60) as worker:
        assert worker.hello["protocol"] == 1 and worker.hello["host"]["cores"] >= 1
        loaded = worker.request("load", format="numpy", precision="fp32", path=str(tmp_path / "weights.npy"),
                                threads=2, layout="NCHW", runner="bench_test_runners:MatrixRunner")
        assert loaded["init_ms"] > 0 and loaded["info"] == {"runtime": "numpy", "threads": 2}
        timing = worker.request("time", input=str(tmp_path / "images.npy"), batch=3, warmup_count=2,
                                warmup_seconds=0, min_runs=5, min_seconds=0, max_seconds=10)
        assert timing["first_ms"] > 0 and len(timing["warmup_ms"]) == 2 and len(timing["times_ms"]) == 5
        assert timing["peak_rss_mb"] > 10
        reply = worker.request("embed", input=str(tmp_path / "images.npy"), output=str(tmp_path / "out.npy"), batch=3)
        assert reply["shape"] == [7, 4]
        again = worker.request("time", input=str(tmp_path / "images.npy"), batch=1, warmup_count=0,
                               warmup_seconds=0, min_runs=1, min_seconds=0, max_seconds=10)
        assert again["first_ms"] is None  # the model had already run
        np.save(tmp_path / "nhwc.npy", images.transpose(0, 2, 3, 1))
        with pytest.raises(WorkerError, match="is not NCHW RGB"):
            worker.request("embed", input=str(tmp_path / "nhwc.npy"), output=str(tmp_path / "x.npy"), batch=3)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), images.reshape(7, -1) @ weights, rtol=1e-5)


def test_crash_is_contained_with_exit_code_and_stderr(target, tmp_path):
    with target.start_worker(timeout_s=60) as worker:
        with pytest.raises(WorkerDied, match=r"exited with code 3 during load; last stderr: native runtime: fatal"):
            worker.request("load", format="x", precision="fp32", path="unused", threads=1, layout="NCHW",
                           runner="bench_test_runners:CrashingRunner")


def test_runner_exception_is_one_line_error(target):
    with target.start_worker(timeout_s=60) as worker:
        with pytest.raises(WorkerError) as caught:
            worker.request("load", format="x", precision="fp32", path="unused", threads=1, layout="NCHW",
                           runner="bench_test_runners:RaisingRunner")
        assert caught.value.kind == "error" and str(caught.value) == "RuntimeError: model file is corrupt"
        with pytest.raises(WorkerError, match="send 'load'"):
            worker.request("time", input="unused", batch=1)
        with pytest.raises(WorkerError, match="unknown op"):
            worker.request("dance")


def test_missing_runtime_is_unavailable(target):
    with target.start_worker(timeout_s=60) as worker:
        with pytest.raises(WorkerError) as caught:
            worker.request("load", format="x", precision="fp32", path="unused", threads=1, layout="NCHW",
                           runner="bench_test_runners:MissingRuntimeRunner")
    assert caught.value.kind == "unavailable"
    assert str(caught.value) == "facekd_runtime_that_does_not_exist not installed"


@pytest.mark.parametrize("runner, message", [
    ("BrokenInstallRunner", "ModuleNotFoundError: No module named 'facekd_transitive_dependency_that_does_not_exist'"),
    ("AbiClashRunner", "ImportError: libruntime.so: undefined symbol: _ZN4core6Tensor4sizeEv"),
])
def test_broken_install_is_a_failure_not_unavailable(target, runner, message):
    with target.start_worker(timeout_s=60) as worker:
        with pytest.raises(WorkerError) as caught:
            worker.request("load", format="x", precision="fp32", path="unused", threads=1, layout="NCHW",
                           runner=f"bench_test_runners:{runner}")
    assert caught.value.kind == "error" and str(caught.value) == message


def test_a_format_rows_declared_package_missing_is_unavailable_with_its_hint():
    from facekd.runtime_bench.worker import _declared_package_missing

    request = {"op": "load", "format": "tflite"}
    hint = _declared_package_missing(request, ModuleNotFoundError("No module named 'ai_edge_litert'", name="ai_edge_litert"))
    assert hint == "ai_edge_litert not installed (pip install 'facekd[tflite]')"
    assert _declared_package_missing(request, ModuleNotFoundError("x", name="flatbuffers")) is None


def test_hanging_worker_times_out(target):
    with target.start_worker(timeout_s=60) as worker:
        worker.timeout_s = 2
        with pytest.raises(WorkerDied, match="gave no answer to load within 2 s"):
            worker.request("load", format="x", precision="fp32", path="unused", threads=1, layout="NCHW",
                           runner="bench_test_runners:HangingRunner")
        assert worker.process.poll() is not None


def test_missing_interpreter_is_worker_died(tmp_path):
    with pytest.raises(WorkerDied, match="could not start"):
        LocalTarget(python=str(tmp_path / "no-python")).start_worker(timeout_s=10)


def test_probe_reports_only_known_accelerators(target):
    with target.start_worker(timeout_s=120) as worker:
        accelerators = worker.request("probe")["accelerators"]
    assert set(accelerators) <= set(ACCELERATED_RUNTIMES)
    assert ("torch-cuda" in accelerators) == torch.cuda.is_available()


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "executorch"])
def test_profile_names_each_op_of_the_runtimes_own_profiler_slowest_first(target, tmp_path, fmt):
    from facekd.core.preprocess import STUDENT_DEFAULT
    from facekd.export.faces import FaceSet
    from facekd.export.formats import FORMATS

    row = FORMATS[fmt]
    if row.unavailable_reason():
        pytest.skip(row.unavailable_reason())
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, stride=2),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    net.embedding_size = 16
    rng = np.random.default_rng(0)
    faces = FaceSet(tuple(f"f{i}" for i in range(4)), tuple(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(4)))
    path = row.convert(net, "fp32", faces, tmp_path / f"model{row.suffix}", preprocess=STUDENT_DEFAULT, max_batch=1)
    np.save(tmp_path / "batch.npy", rng.normal(size=(1, 3, 112, 112)).astype(np.float32))
    with target.start_worker(timeout_s=120) as worker:
        worker.request("load", format=fmt, precision="fp32", path=str(path), threads=1, layout="NCHW")
        reply = worker.request("profile", input=str(tmp_path / "batch.npy"), batch=1, runs=3)
    ops = reply["ops"]
    assert reply["runs"] == 3 and len(ops) >= 2
    assert all(op["ms"] >= 0 and op["name"] and op["type"] and op["kernel"] for op in ops)
    assert [op["ms"] for op in ops] == sorted((op["ms"] for op in ops), reverse=True)
    assert any("onv" in op["type"] for op in ops)  # Conv / Convolution, as each runtime names it


def test_a_runner_without_a_profiler_says_so(target, tmp_path):
    np.save(tmp_path / "weights.npy", np.ones((12, 4), np.float32))
    np.save(tmp_path / "batch.npy", np.ones((1, 3, 2, 2), np.float32))
    with target.start_worker(timeout_s=60) as worker:
        worker.request("load", format="numpy", precision="fp32", path=str(tmp_path / "weights.npy"), threads=1,
                       layout="NCHW", runner="bench_test_runners:MatrixRunner")
        reply = worker.request("profile", input=str(tmp_path / "batch.npy"), batch=1, runs=2)
    assert reply["unavailable"] == "MatrixRunner has no profile_ops"
