"""Each converter whose package is installed, on a small MobileFaceNet and real aligned faces.

The student here is random-init MobileFaceNet(width=0.25) with its stem convolution scaled so
embeddings are O(1): with BatchNorm at its initial statistics the network is positively
homogeneous, so the scale changes no direction, but the untouched net's activations shrink to
~1e-5 by the last layer, below the smallest step an INT8 quantiser uses (2^-12). Random weights
quantise worse than trained ones, so INT8 is held to ``RANDOM_WEIGHTS_INT8_BAR`` here; real
exports get ``DEFAULT_BARS`` or the bars their config sets.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facekd.export.build import ExportConfig, export_checkpoint
from facekd.export.errors import FormatUnavailable
from facekd.export.formats import FORMATS
from facekd.export.manifest import Manifest, verify_artifact
from facekd.export.parity import DEFAULT_BARS, ParityBar
from facekd.training.checkpoint import save_checkpoint, student_state
from facekd.core.data import load_rgb_file
from facekd.training.models.mobilefacenet import MobileFaceNet
from facekd.core.pairs import read_lfw_pairs
from facekd.core.preprocess import STUDENT_DEFAULT

pytestmark = pytest.mark.realdata

RANDOM_WEIGHTS_INT8_BAR = ParityBar(mean_cos=0.97)  # measured 0.98-0.99 (onnxruntime), 0.99 (PT2E)
BARS = {**DEFAULT_BARS, "int8": RANDOM_WEIGHTS_INT8_BAR}


def _needs(format_name: str):
    reason = FORMATS[format_name].unavailable_reason()
    return pytest.mark.skipif(reason is not None, reason=reason or "")


@pytest.fixture(scope="module")
def real_faces(facekd_home):
    """(calibration paths from training identities, parity paths and 16 pairs from validation identities)."""
    lfw = facekd_home / "data" / "lfw"
    aligned = lfw / "aligned_112"
    train = (lfw / "splits" / "train_identities.txt").read_text().split()[:40]
    val = (lfw / "splits" / "val_identities.txt").read_text().split()[:40]
    calibration = sorted(p for name in train for p in (aligned / name).glob("*.jpg"))
    parity = sorted(p for name in val for p in (aligned / name).glob("*.jpg"))
    pairs = read_lfw_pairs(lfw / "splits" / "val_pairs.txt", aligned)
    return calibration, parity, pairs.subset(np.linspace(0, len(pairs) - 1, 16).astype(int))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, real_faces) -> Path:
    torch.manual_seed(0)
    model = MobileFaceNet(width=0.25).eval()
    faces = STUDENT_DEFAULT.apply(np.stack([load_rgb_file(path) for path in real_faces[1][:8]]))
    with torch.no_grad():
        model.features[0][0].weight.mul_(1.0 / model(torch.from_numpy(faces)).abs().max())
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "student.pt", student_state(model, STUDENT_DEFAULT, threshold=0.3))


def _export(checkpoint, real_faces, out: Path, format_name: str, precisions: list[str], bars=BARS):
    calibration, parity, pairs = real_faces
    config = ExportConfig(formats=[format_name], precisions={format_name: precisions}, calib_count=8,
                          parity_count=8, parity_pairs=16, bars=bars, max_batch=8, threads=1)
    records = export_checkpoint(checkpoint, out, config, calibration, parity, pairs, progress=False)
    return {r.precision: r for r in records}


@_needs("onnx")
def test_onnx_fp32_is_one_file_with_a_dynamic_batch(checkpoint, real_faces, tmp_path):
    record = _export(checkpoint, real_faces, tmp_path, "onnx", ["fp32"])["fp32"]
    assert record.status == "ok" and record.parity["worst_cos"] >= 0.9999

    manifest = Manifest.load(tmp_path / "onnx-fp32" / "manifest.json")
    assert manifest.input == {"name": "input", "shape": [None, 3, 112, 112], "layout": "NCHW", "dtype": "float32"}
    assert manifest.output["shape"] == [None, 128] and manifest.calibration is None
    assert sorted(p.name for p in (tmp_path / "onnx-fp32").iterdir()) == ["manifest.json", "model.onnx"]  # no .data
    runner = FORMATS["onnx"].runner()
    runner.load(verify_artifact(tmp_path / "onnx-fp32" / "manifest.json"), threads=1)
    for batch in (1, 3):
        assert runner.run(np.zeros((batch, 3, 112, 112), np.float32)).shape == (batch, 128)
    assert runner.info()["provider"] == "CPUExecutionProvider" and runner.info()["threads"] == 1


@_needs("onnx")
def test_onnx_int8_stays_close_and_suits_tensorrt(checkpoint, real_faces, tmp_path):
    record = _export(checkpoint, real_faces, tmp_path, "onnx", ["int8"])["int8"]
    assert record.status == "ok" and record.parity["mean_cos"] >= RANDOM_WEIGHTS_INT8_BAR.mean_cos

    manifest = Manifest.load(tmp_path / "onnx-int8" / "manifest.json")
    assert manifest.calibration["count"] == 8 and len(manifest.calibration["id"]) == 64
    assert manifest.details["qdq_nodes"] > 0 and manifest.details["tensorrt_explicit_quantization"] is True
    assert manifest.details["int8_weight_max_abs"] <= 64 and manifest.details["int8_calibration"]["reduce_range"] is True
    assert manifest.input["shape"] == [None, 3, 112, 112]
    fp32_size = sum(p.numel() for p in torch.load(checkpoint, weights_only=True)["model"].values()) * 4
    # this test's int8 bar bounds the mean only, so no layer search ran: every layer is int8
    # (the search and its float layers: test_int8_sensitivity, test_int8_equalise)
    assert manifest.details["int8_calibration"]["target_worst_cos_on_calibration"] is None
    assert manifest.details["float_layers"] == [] == manifest.details["int8_calibration"]["kept_float"]
    assert record.size_bytes < 0.6 * fp32_size


@_needs("tflite")
def test_tflite_fp32_takes_nhwc_and_matches_torch(checkpoint, real_faces, tmp_path):
    record = _export(checkpoint, real_faces, tmp_path, "tflite", ["fp32"])["fp32"]
    assert record.status == "ok" and record.parity["worst_cos"] >= 0.9999

    manifest = Manifest.load(tmp_path / "tflite-fp32" / "manifest.json")
    assert manifest.input["layout"] == "NHWC" and manifest.input["shape"] == [1, 112, 112, 3]
    assert manifest.preprocess == STUDENT_DEFAULT.with_layout("NHWC").to_dict()
    assert manifest.details["xnnpack_whole_graph"] is True
    assert manifest.details["op_census"]["MAXIMUM"] == 33 and "SUB" not in manifest.details["op_census"]  # every PReLU
    runner = FORMATS["tflite"].runner()
    runner.load(tmp_path / record.path, threads=1)
    assert runner.run(np.zeros((3, 112, 112, 3), np.float32)).shape == (3, 128)  # loops over a batch
    assert runner.info()["delegate"] == "XNNPACK"


def test_prelus_with_slopes_up_to_one_become_an_equal_maximum():
    from facekd.export.prelu import prelu_as_maximum

    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.PReLU(4), torch.nn.Conv2d(4, 4, 1), torch.nn.PReLU(4),
                                torch.nn.Flatten(), torch.nn.PReLU())
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([-0.8, 0.0, 0.25, 1.0]))  # negative, zero and one are rewritten
        model[3].weight.copy_(torch.tensor([0.1, 0.2, 1.13, 0.3]))  # one slope above 1: this PReLU stays
    rewritten, every_slope = prelu_as_maximum(model), prelu_as_maximum(model, any_slope=True)
    assert [type(m).__name__ for m in rewritten if "PReLU" in type(m).__name__] == ["MaximumPReLU", "PReLU", "MaximumPReLU"]
    assert [type(m).__name__ for m in every_slope if "PReLU" in type(m).__name__] == ["MaximumPReLU", "ClampPReLU", "MaximumPReLU"]
    assert all(isinstance(m, torch.nn.PReLU) for m in (model[1], model[3], model[5]))  # the original is untouched
    x = torch.randn(16, 3, 9, 9) * 3
    with torch.no_grad():
        assert torch.equal(rewritten(x), model(x))
        assert torch.allclose(every_slope(x), model(x), rtol=0, atol=1e-6)


@pytest.mark.slow
@_needs("tflite")
def test_tflite_fp16_and_int8(checkpoint, real_faces, tmp_path):
    records = _export(checkpoint, real_faces, tmp_path, "tflite", ["fp16", "int8"])
    assert {p: r.status for p, r in records.items()} == {"fp16": "ok", "int8": "ok"}
    assert records["fp16"].parity["worst_cos"] >= 0.999

    fp16, int8 = (Manifest.load(tmp_path / f"tflite-{p}" / "manifest.json") for p in ("fp16", "int8"))
    assert fp16.details["tensor_types"]["float16"] > 0 and fp16.calibration is None
    assert int8.details["tensor_types"]["int8"] > 0 and int8.calibration["count"] == 8
    assert int8.input["dtype"] == int8.output["dtype"] == "float32"  # first/last conv kept float
    # PReLUs as int8 MUL + MAXIMUM: none of litert-torch's float PReLU ops (RELU, SUB) is left
    assert int8.details["op_census"]["MAXIMUM"] == 33 and not {"RELU", "SUB"} & set(int8.details["op_census"])


@_needs("coreml")
def test_coreml_fp16_is_validated_structurally_off_macos(checkpoint, real_faces, tmp_path):
    record = _export(checkpoint, real_faces, tmp_path, "coreml", ["fp16"])["fp16"]
    manifest = Manifest.load(tmp_path / "coreml-fp16" / "manifest.json")
    assert manifest.input == {"name": "input", "shape": [None, 3, 112, 112], "layout": "NCHW", "dtype": "float32"}
    assert manifest.output == {"name": "embedding", "shape": [None, 128], "dtype": "float32"}
    assert manifest.details["op_census"]["conv"] > 0
    assert verify_artifact(tmp_path / "coreml-fp16" / "manifest.json").is_dir()
    if FORMATS["coreml"].validate_only() is None:
        assert record.status == "ok" and record.parity["worst_cos"] >= 0.999
        return
    assert (record.status, record.parity) == ("validated-structure-only", None)
    assert "needs macOS" in record.reason
    with pytest.raises(FormatUnavailable, match="needs macOS"):
        FORMATS["coreml"].runner().load(tmp_path / record.path)


@_needs("coreml")
def test_coreml_int8_stores_quantised_weights(checkpoint, real_faces, tmp_path):
    records = _export(checkpoint, real_faces, tmp_path, "coreml", ["fp16", "int8"])
    assert records["int8"].status in ("ok", "validated-structure-only")
    manifest = Manifest.load(tmp_path / "coreml-int8" / "manifest.json")
    assert manifest.details["op_census"]["constexpr_affine_dequantize"] > 0
    assert manifest.input["dtype"] == manifest.output["dtype"] == "float32"
    assert records["int8"].size_bytes < records["fp16"].size_bytes


@_needs("openvino")
def test_openvino_fp32_and_int8_ir_folders(checkpoint, real_faces, tmp_path):
    with_worst_bar = {**BARS, "int8": ParityBar(mean_cos=RANDOM_WEIGHTS_INT8_BAR.mean_cos, worst_cos=0.5)}
    records = _export(checkpoint, real_faces, tmp_path, "openvino", ["fp32", "int8"], bars=with_worst_bar)
    assert {p: r.status for p, r in records.items()} == {"fp32": "ok", "int8": "ok"}
    assert records["fp32"].parity["worst_cos"] >= 0.9999  # f32 inference precision, not the plugin's bf16 default
    assert records["int8"].parity["mean_cos"] >= RANDOM_WEIGHTS_INT8_BAR.mean_cos

    fp32, int8 = (Manifest.load(tmp_path / f"openvino-{p}" / "manifest.json") for p in ("fp32", "int8"))
    assert fp32.input == {"name": "input", "shape": [None, 3, 112, 112], "layout": "NCHW", "dtype": "float32"}
    assert fp32.output["shape"] == [None, 128] and "FakeQuantize" not in fp32.details["op_census"]
    assert int8.details["fake_quantize_nodes"] > 0 and "overflow_fix" in int8.details["int8_scheme"]
    assert ">= 0.503 on the calibration faces" in int8.details["int8_scheme"]  # the bar's worst_cos + the search margin
    assert isinstance(int8.details["float_layers"], list)  # the layers accuracy control kept float, named
    assert int8.calibration["count"] == 8
    folder = verify_artifact(tmp_path / "openvino-int8" / "manifest.json")
    assert sorted(p.name for p in folder.iterdir()) == ["model.bin", "model.xml"]
    runner = FORMATS["openvino"].runner()
    runner.load(folder, threads=1)
    for batch in (1, 3):
        assert runner.run(np.zeros((batch, 3, 112, 112), np.float32)).shape == (batch, 128)
    assert runner.info()["runtime"] == "openvino" and runner.info()["threads"] == 1


@_needs("executorch")
def test_executorch_fp32_and_int8_programs(checkpoint, real_faces, tmp_path):
    records = _export(checkpoint, real_faces, tmp_path, "executorch", ["fp32", "int8"])
    assert {p: r.status for p, r in records.items()} == {"fp32": "ok", "int8": "ok"}
    assert records["fp32"].parity["worst_cos"] >= 0.9999
    assert records["int8"].parity["mean_cos"] >= RANDOM_WEIGHTS_INT8_BAR.mean_cos

    manifest = Manifest.load(tmp_path / "executorch-int8" / "manifest.json")
    assert manifest.input == {"name": "input", "shape": [1, 3, 112, 112], "layout": "NCHW", "dtype": "float32"}
    assert manifest.output == {"name": "embedding", "shape": [1, 128], "dtype": "float32"}
    assert manifest.details["backend"] == "XNNPACK" and manifest.calibration["count"] == 8
    assert records["int8"].size_bytes < 0.5 * records["fp32"].size_bytes
    runner = FORMATS["executorch"].runner()
    runner.load(verify_artifact(tmp_path / "executorch-fp32" / "manifest.json"), threads=1)
    assert runner.run(np.zeros((3, 3, 112, 112), np.float32)).shape == (3, 128)  # loops over a batch
    info = runner.info()
    assert info["delegate"] == "XNNPACK" and info["threads"] == 1 and info["pool_threads"] >= 1


@_needs("executorch")
def test_executorch_pool_is_sized_in_a_fresh_process_only(tmp_path):
    """A fresh process gets the pool size it asks for; once a program is loaded the pool is kept."""
    import subprocess
    import sys

    script = (
        "import torch, sys\n"
        "from facekd.export.executorch_format import ExecuTorchRunner, convert\n"
        "from facekd.core.preprocess import STUDENT_DEFAULT\n"
        "from pathlib import Path\n"
        "model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())\n"
        "path = convert(model, 'fp32', None, Path(sys.argv[1]), preprocess=STUDENT_DEFAULT, max_batch=1)\n"
        "first = ExecuTorchRunner(); first.load(path, threads=2)\n"
        "second = ExecuTorchRunner(); second.load(path, threads=1)\n"
        "print(first.info()['pool_threads'], second.info()['pool_threads'])\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "tiny.pte")], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=300, check=True)
    assert out.stdout.split()[-2:] == ["2", "2"]
