"""TensorRT as it is today (10 and 11: strongly typed, no precision flags), its ONNX sources made and
parity-checked here without TensorRT, and onnxruntime's TensorRT/CUDA providers.

TensorRT cannot be installed on these machines: the engine build runs against a fake ``tensorrt``
module that records what the builder is asked; the sources go through the real export of a tiny
random MobileFaceNet on real faces.
"""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from facekd.export import build, formats, tensorrt_format
from facekd.export.build import ExportConfig, export_checkpoint
from facekd.export.errors import ExportError, FormatUnavailable
from facekd.export.manifest import Manifest, verify_artifact
from facekd.export.parity import DEFAULT_BARS, ParityBar
from facekd.runtime_bench import accelerated
from facekd.training.checkpoint import save_checkpoint, student_state
from facekd.core.data import load_rgb_file
from facekd.training.models.mobilefacenet import MobileFaceNet
from facekd.core.preprocess import STUDENT_DEFAULT

# shared with the converter tests: real faces, the int8 student and its bar (random weights quantise worse)
from .test_export_converters import RANDOM_WEIGHTS_INT8_BAR, checkpoint, real_faces  # noqa: F401

TENSORRT_INSTALLED = formats.FORMATS["tensorrt"].unavailable_reason() is None
SOURCE_HERE = formats.FORMATS["tensorrt"].source.unavailable_reason() is None


# ----- the engine build, against a fake TensorRT --------------------------------------------------

def fake_tensorrt(version: str, precision_flags: bool, strongly_typed: bool = True) -> tuple[types.ModuleType, list]:
    """A ``tensorrt`` module of ``version`` whose builder records every call into the returned list.
    TensorRT 11 has no ``BuilderFlag.FP16``/``INT8`` (``precision_flags`` False): touching them raises."""
    calls: list = []
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.BuilderFlag = type("BuilderFlag", (), {"FP16": "FP16", "INT8": "INT8"} if precision_flags else {"DEBUG": "DEBUG"})
    trt.NetworkDefinitionCreationFlag = type("NetworkDefinitionCreationFlag", (), {"STRONGLY_TYPED": 0} if strongly_typed else {})
    trt.MemoryPoolType = type("MemoryPoolType", (), {"WORKSPACE": "WORKSPACE"})

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Input:
        name, shape = "input", (-1, 3, 112, 112)

    class Network:
        def get_input(self, index):
            return Input()

    class Parser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse(self, data):
            calls.append(("parse", bytes(data)))
            return True

    class Profile:
        def set_shape(self, name, low, optimal, high):
            calls.append(("profile", name, low, optimal, high))

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls.append(("memory_pool", pool, size))

        def set_flag(self, flag):
            calls.append(("set_flag", flag))

        def add_optimization_profile(self, profile):
            calls.append(("add_profile",))

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags=0):
            calls.append(("create_network", flags))
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(("build",))
            return b"serialized engine"

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, Parser
    return trt, calls


@pytest.mark.parametrize("version, precision_flags", [("11.1.0", False), ("10.13.0", True)])
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_engine_is_built_strongly_typed_without_precision_flags(version, precision_flags, precision, tmp_path, monkeypatch):
    trt, calls = fake_tensorrt(version, precision_flags)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    (tmp_path / tensorrt_format.SOURCE_ONNX).write_bytes(b"the validated source")  # what export writes first

    out = tensorrt_format.convert(None, precision, None, tmp_path / "model.engine", preprocess=STUDENT_DEFAULT, max_batch=16)

    assert out.read_bytes() == b"serialized engine"
    assert ("create_network", 1 << 0) in calls  # STRONGLY_TYPED: required on 10, accepted and ignored by 11
    assert not [call for call in calls if call[0] == "set_flag"]  # no BuilderFlag.FP16/INT8, on 11 nor on 10
    assert ("parse", b"the validated source") in calls
    assert ("profile", "input", (1, 3, 112, 112), (8, 3, 112, 112), (16, 3, 112, 112)) in calls


def test_tensorrt_before_10_is_refused(tmp_path, monkeypatch):
    trt, calls = fake_tensorrt("8.6.1", precision_flags=True, strongly_typed=False)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    (tmp_path / tensorrt_format.SOURCE_ONNX).write_bytes(b"source")
    with pytest.raises(FormatUnavailable, match=r"TensorRT 8\.6\.1 is not supported: .*TensorRT 10 or 11"):
        tensorrt_format.convert(None, "fp16", None, tmp_path / "model.engine", preprocess=STUDENT_DEFAULT, max_batch=8)
    assert not (tmp_path / "model.engine").exists() and not calls


def test_sources_exist_for_the_engine_precisions_only(tmp_path):
    # without TensorRT, convert raises FormatUnavailable and writes nothing: test_export.py
    with pytest.raises(ExportError, match="no precision 'fp32'"):
        tensorrt_format.make_source(None, "fp32", None, tmp_path / "model.source.onnx", preprocess=STUDENT_DEFAULT, max_batch=8)
    assert tuple(formats.FORMATS["tensorrt"].precisions) == tensorrt_format.PRECISIONS


def test_plan_runs_tensorrt_where_its_source_can_be_made():
    if TENSORRT_INSTALLED or not SOURCE_HERE:
        pytest.skip("needs TensorRT absent and onnx + onnxruntime present")
    jobs = build.plan_jobs(ExportConfig(formats=["tensorrt"]))  # an explicit request no longer fails
    assert [(row.name, precision, reason) for row, precision, reason in jobs] == [("tensorrt", "fp16", None), ("tensorrt", "int8", None)]
    listing = {(name, precision): (available, note) for name, precision, available, note in formats.available_formats()}
    available, note = listing[("tensorrt", "fp16")]
    assert not available and "TensorRT" in note and "model.source.onnx is still made and parity-checked here" in note


# ----- onnxruntime's TensorRT / CUDA providers -----------------------------------------------------

def fake_onnxruntime(available: list[str], initialised: list[str] | None = None) -> tuple[types.ModuleType, list]:
    """An ``onnxruntime`` module offering ``available`` providers; its sessions record the
    providers they were asked for and report ``initialised`` (default: those asked for)."""
    sessions: list = []
    ort = types.ModuleType("onnxruntime")
    ort.__version__ = "1.31.1-fake"
    ort.get_available_providers = lambda: list(available)
    ort.GraphOptimizationLevel = types.SimpleNamespace(ORT_DISABLE_ALL=0)

    class SessionOptions:
        intra_op_num_threads = inter_op_num_threads = graph_optimization_level = None

    class InferenceSession:
        def __init__(self, path, options=None, providers=None):
            self.asked = providers
            sessions.append(self)

        def get_providers(self):
            return initialised or [p[0] if isinstance(p, tuple) else p for p in self.asked]

        def get_inputs(self):
            return [types.SimpleNamespace(name="input")]

        def get_modelmeta(self):
            return types.SimpleNamespace(custom_metadata_map={})

    ort.SessionOptions, ort.InferenceSession = SessionOptions, InferenceSession
    return ort, sessions


ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_tensorrt_provider_gets_fp16_and_an_engine_cache_then_falls_back_to_cuda_and_cpu(tmp_path, monkeypatch):
    ort, sessions = fake_onnxruntime(ALL)
    monkeypatch.setitem(sys.modules, "onnxruntime", ort)
    monkeypatch.setenv(accelerated.ENGINE_CACHE_ENV, str(tmp_path / "engines"))

    runner = accelerated.OnnxRuntimeTensorRTRunner(**accelerated.runtime_options("onnxruntime-tensorrt", "fp16"))
    runner.load(tmp_path / "model.onnx", threads=1)

    cache = str(tmp_path / "engines")
    assert sessions[0].asked == [
        ("TensorrtExecutionProvider", {"trt_fp16_enable": True, "trt_int8_enable": False,
                                       "trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                                       "trt_timing_cache_enable": True, "trt_timing_cache_path": cache}),
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert (tmp_path / "engines").is_dir()
    info = runner.info()
    assert info["providers"][0] == "TensorrtExecutionProvider" and info["engine_cache"] == cache and info["trt_fp16"]


def test_tensorrt_provider_takes_int8_for_qdq_models_and_a_given_cache(tmp_path):
    options = accelerated.runtime_options("onnxruntime-tensorrt", "int8")
    assert options == {"int8": True} and accelerated.runtime_options("onnxruntime-cuda", "int8") == {}
    providers = accelerated.onnxruntime_providers("TensorrtExecutionProvider", ["TensorrtExecutionProvider", "CPUExecutionProvider"],
                                                  cache_dir=tmp_path / "c", int8=True)
    (name, trt_options), cpu = providers
    assert name == "TensorrtExecutionProvider" and cpu == "CPUExecutionProvider"  # no CUDA EP offered: none asked for
    assert trt_options["trt_int8_enable"] and trt_options["trt_engine_cache_path"] == str(tmp_path / "c")


def test_cuda_runner_asks_for_cuda_then_cpu_and_tensorrt_runner_needs_its_provider(tmp_path, monkeypatch):
    ort, sessions = fake_onnxruntime(["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setitem(sys.modules, "onnxruntime", ort)
    accelerated.OnnxRuntimeCudaRunner().load(tmp_path / "model.onnx")
    assert sessions[-1].asked == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(FormatUnavailable, match=r"has no TensorrtExecutionProvider \(install onnxruntime-gpu and TensorRT\)"):
        accelerated.OnnxRuntimeTensorRTRunner().load(tmp_path / "model.onnx")


def test_a_provider_that_fell_back_is_not_measured_under_its_name(tmp_path, monkeypatch):
    ort, _ = fake_onnxruntime(ALL, initialised=["CUDAExecutionProvider", "CPUExecutionProvider"])  # TensorRT failed to start
    monkeypatch.setitem(sys.modules, "onnxruntime", ort)
    monkeypatch.setenv(accelerated.ENGINE_CACHE_ENV, str(tmp_path))
    with pytest.raises(FormatUnavailable, match="TensorrtExecutionProvider could not be initialised"):
        accelerated.OnnxRuntimeTensorRTRunner().load(tmp_path / "model.onnx")


def test_cpu_runner_is_unchanged_by_the_provider_chain(monkeypatch, tmp_path):
    ort, sessions = fake_onnxruntime(ALL)
    monkeypatch.setitem(sys.modules, "onnxruntime", ort)
    formats.FORMATS["onnx"].runner().load(tmp_path / "model.onnx")
    assert sessions[-1].asked == ["CPUExecutionProvider"]


# ----- the sources, made and validated here ---------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, real_faces, checkpoint) -> dict[str, Path]:
    """A random MobileFaceNet(width=0.25) per precision, made to have the value ranges of a trained one.

    fp16: BatchNorm statistics measured on 16 real faces, so every layer's values are O(1), within
    fp16's range (AutoCast keeps layers beyond ±512 in fp32). int8: the converter tests' student,
    its stem scaled so embeddings are O(1) (a random net with normalised layers amplifies the
    quantisation noise layer after layer: mean cosine 0.81 at full range, 0.83 with reduce_range).
    """
    torch.manual_seed(0)
    normalised = MobileFaceNet(width=0.25)
    for module in normalised.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the batches seen
    with torch.no_grad():
        normalised.train()(torch.from_numpy(STUDENT_DEFAULT.apply(np.stack([load_rgb_file(p) for p in real_faces[0][:16]]))))
    fp16 = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "student.pt", student_state(normalised.eval(), STUDENT_DEFAULT, threshold=0.3))
    return {"fp16": fp16, "int8": checkpoint}


def _export(checkpoint, real_faces, out: Path, precision: str, int8_bar: ParityBar = RANDOM_WEIGHTS_INT8_BAR):
    calibration, parity, pairs = real_faces
    config = ExportConfig(formats=["tensorrt"], precisions={"tensorrt": [precision]}, calib_count=8, parity_count=8,
                          parity_pairs=16, bars={**DEFAULT_BARS, "int8": int8_bar}, max_batch=8, threads=1)
    (record,) = export_checkpoint(checkpoint, out, config, calibration, parity, pairs, progress=False)
    return record


@pytest.fixture(scope="module")
def tensorrt_export(tmp_path_factory, checkpoints, real_faces):
    """Each TensorRT job exported without TensorRT: precision -> (record, export folder)."""
    if TENSORRT_INSTALLED or not SOURCE_HERE:
        pytest.skip("needs TensorRT absent and onnx + onnxruntime present")
    exports = {}
    for precision, checkpoint in checkpoints.items():
        out = tmp_path_factory.mktemp(f"export-{precision}")
        exports[precision] = _export(checkpoint, real_faces, out, precision), out
    return exports


@pytest.mark.realdata
def test_fp16_source_is_autocast_fp16_with_fp32_io_and_passes_the_fp16_bar(tensorrt_export):
    record, out = tensorrt_export["fp16"]
    assert record.status == "unavailable", record.reason
    assert record.reason.startswith("TensorRT not installed") and "model.engine not built" in record.reason
    assert "its source model.source.onnx was made here and passed parity (onnxruntime CPU): fp16 worst_cos" in record.reason
    assert record.path == "tensorrt-fp16/model.source.onnx" and record.parity["worst_cos"] >= DEFAULT_BARS["fp16"].worst_cos

    folder = out / "tensorrt-fp16"
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.source.onnx"]  # no engine
    manifest = Manifest.load(folder / "manifest.json")
    assert verify_artifact(folder / "manifest.json") == folder / "model.source.onnx"
    assert (manifest.status, manifest.parity) == ("unavailable", record.parity)
    assert manifest.input["dtype"] == manifest.output["dtype"] == "float32" and manifest.input["shape"] == [None, 3, 112, 112]
    assert manifest.details["fp16_conversion"]["converter"].startswith("ModelOpt AutoCast")
    assert manifest.details["source"]["gate"].startswith("fp16 worst_cos") and manifest.calibration["count"] == 8

    model = onnx.load(str(folder / "model.source.onnx"))
    weights = {init.name: init.data_type for init in model.graph.initializer}
    conv_weights = [weights[node.input[1]] for node in model.graph.node if node.op_type == "Conv"]
    assert conv_weights and set(conv_weights) == {onnx.TensorProto.FLOAT16}  # fp16 weights, so fp16 compute
    assert [node.op_type for node in model.graph.node].count("Cast") == 2  # only at the fp32 input and output
    assert {v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)} == {onnx.TensorProto.FLOAT}


@pytest.mark.realdata
def test_int8_source_has_full_range_weights_and_passes_its_bar_on_the_qdq_arithmetic(tensorrt_export):
    record, out = tensorrt_export["int8"]
    assert record.status == "unavailable", record.reason
    assert "passed parity (QDQ arithmetic, onnxruntime CPU with graph optimisations off): int8 mean_cos" in record.reason

    manifest = Manifest.load(out / "tensorrt-int8" / "manifest.json")
    details = manifest.details
    assert details["int8_weight_max_abs"] == 127  # full range: reduce_range would stop at 64
    assert details["int8_calibration"]["reduce_range"] is False and details["tensorrt_explicit_quantization"] is True
    assert manifest.calibration["count"] == 8 and manifest.parity["mean_cos"] >= RANDOM_WEIGHTS_INT8_BAR.mean_cos
    gated, cpu_kernels = details["source"]["checks"]
    assert gated["parity"] == manifest.parity and cpu_kernels["how"].startswith("this CPU's int8 kernels")
    assert isinstance(details["source"]["cpu_isa"], list)  # what decides whether full-range saturates on this CPU
    (summary,) = json.loads((out / "export_summary.json").read_text())
    assert summary["path"] == "tensorrt-int8/model.source.onnx" and summary["status"] == "unavailable"


@pytest.mark.realdata
def test_a_source_below_its_bar_is_rejected_and_no_engine_is_built(checkpoints, real_faces, tmp_path, monkeypatch):
    """With TensorRT (faked) present, a source that fails its gate never reaches the builder."""
    if not SOURCE_HERE:
        pytest.skip("needs onnx + onnxruntime")
    trt, calls = fake_tensorrt("11.1.0", precision_flags=False)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    record = _export(checkpoints["int8"], real_faces, tmp_path, "int8", ParityBar(worst_cos=0.99999))
    assert record.status == "rejected" and record.reason.startswith("model.engine not built: its source model.source.onnx")
    assert "failed parity" in record.reason and not calls  # the builder was never reached
    assert record.path == "rejected/tensorrt-int8/model.source.onnx" and (tmp_path / record.path).exists()
