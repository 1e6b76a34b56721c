"""Manifest round trip, atomic save, and the sha256 check the benchmark relies on."""
from __future__ import annotations

import json

import pytest

from facekd.core.errors import InputError
from facekd.export.int8 import Int8Plan, Int8Record, int8_record
from facekd.export.manifest import SCHEMA_VERSION, Manifest, ManifestError, artifact_size, sha256_artifact, verify_artifact


def _manifest(file_name: str, sha256: str, size: int) -> Manifest:
    return Manifest(
        format="onnx", precision="int8", status="ok", reason="", file=file_name, sha256=sha256, size_bytes=size,
        input={"name": "input", "shape": [None, 3, 112, 112], "layout": "NCHW", "dtype": "float32"},
        output={"name": "embedding", "shape": [None, 128], "dtype": "float32"},
        preprocess={"size": 112, "layout": "NCHW"}, embedding_size=128, threshold=0.31, threshold_source="checkpoint",
        calibration={"id": "ab" * 32, "count": 64},
        parity={"mean_cos": 0.999, "worst_cos": 0.995, "flip_rate": 0.0, "n_images": 64, "n_pairs": 300},
        converter_versions={"onnxruntime": "1.31.1"}, quantization="static QDQ", source={"checkpoint": "student.pt"},
    )


def test_manifest_round_trips_through_json(tmp_path):
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"not really onnx")
    manifest = _manifest(artifact.name, sha256_artifact(artifact), artifact_size(artifact))
    path = manifest.save(tmp_path / "manifest.json")

    assert Manifest.load(path) == manifest
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic: no temp file left
    assert verify_artifact(path) == artifact


def test_verify_artifact_detects_a_changed_file(tmp_path):
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"original bytes")
    path = _manifest(artifact.name, sha256_artifact(artifact), artifact_size(artifact)).save(tmp_path / "manifest.json")
    artifact.write_bytes(b"tampered bytes")

    with pytest.raises(ManifestError, match="sha256"):
        verify_artifact(path)


def test_verify_artifact_hashes_package_directories(tmp_path):
    package = tmp_path / "model.mlpackage"
    (package / "Data").mkdir(parents=True)
    (package / "Manifest.json").write_text("{}")
    (package / "Data" / "weights.bin").write_bytes(b"\x00" * 16)
    path = _manifest(package.name, sha256_artifact(package), artifact_size(package)).save(tmp_path / "manifest.json")
    assert verify_artifact(path) == package
    assert artifact_size(package) == 18

    (package / "Data" / "weights.bin").write_bytes(b"\x01" * 16)
    with pytest.raises(ManifestError, match="sha256"):
        verify_artifact(path)


def test_verify_artifact_reports_a_missing_file(tmp_path):
    path = _manifest("model.onnx", "0" * 64, 1).save(tmp_path / "manifest.json")
    with pytest.raises(ManifestError, match="missing"):
        verify_artifact(path)


def test_manifest_refuses_other_schema_versions_and_bad_files(tmp_path):
    data = _manifest("model.onnx", "0" * 64, 1).to_dict()
    with pytest.raises(ManifestError, match="schema_version"):
        Manifest.from_dict({**data, "schema_version": SCHEMA_VERSION + 1})
    with pytest.raises(ManifestError, match="lacks sha256"):
        Manifest.from_dict({k: v for k, v in data.items() if k != "sha256"})
    with pytest.raises(ManifestError, match="status"):
        Manifest.from_dict({**data, "status": "great"})
    broken = tmp_path / "manifest.json"
    broken.write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.load(broken)
    with pytest.raises(ManifestError, match="does not exist"):
        Manifest.load(tmp_path / "absent.json")


@pytest.mark.parametrize("details, plan, scheme, bits, floats", [
    ({"int8_calibration": {"activations": "static", "reduce_range": True}, "float_layers": []},
     Int8Plan(), "static-full-integer", 7, 0),  # onnx-int8 for x86 without VNNI
    ({"int8_calibration": {"activations": "static", "reduce_range": False}, "float_layers": ["a", "b"]},
     Int8Plan(), "static", 8, 2),  # the TensorRT source after a search
    ({"int8_calibration": {"activations": "dynamic", "kept_float": [], "boundary_float": []}}, Int8Plan(), "dynamic", 8, 0),
    ({"int8_calibration": {"activations": "static", "kept_float": ["c"], "boundary_float": ["a", "z"]}},
     Int8Plan(), "static", 8, 3),  # tflite: first/last conv float by the converter
    ({"int8_calibration": {"activations": "static", "kept_float": [], "boundary_float": []}},
     Int8Plan(int8_aware={"epochs": 2}), "static-full-integer", 8, 0),
    ({"int8_calibration": {"activations": "float (int8 weights only)", "reduce_range": True}, "float_layers": []},
     Int8Plan(), "weights-only", 8, 0),  # onnx fallback: static was 7-bit, these are not
    ({"int8_reduce_range": True, "fake_quantize_nodes": 40, "float_layers": ["c"]}, Int8Plan(), "static", 7, 1),  # openvino
    ({"int8_weight_constants": 29}, Int8Plan(), "weights-only", 8, 0),  # openvino weights only
    ({"op_census": {"constexpr_affine_dequantize": 29, "conv": 29}}, Int8Plan(), "weights-only", 8, 0),  # core ml
])
def test_the_int8_record_says_which_int8_an_artifact_is(details, plan, scheme, bits, floats):
    record = int8_record(details, plan)
    assert (record.scheme, record.weight_bits, len(record.float_layers)) == (scheme, bits, floats)
    assert record.int8_aware == plan.int8_aware
    manifest = _manifest("model.onnx", "ab" * 32, 1)
    manifest.precision, manifest.int8 = "int8", record.to_dict()
    loaded = Manifest.from_dict(json.loads(json.dumps(manifest.to_dict())))
    assert loaded.int8_scheme() == record.summary() and loaded.int8_scheme().startswith(scheme)
    assert ("int8-aware training (2 epochs)" in loaded.int8_scheme()) == (plan.int8_aware is not None)
    manifest.precision = "fp32"
    assert manifest.int8_scheme() is None


def test_an_int8_record_with_an_unknown_scheme_is_refused():
    with pytest.raises(InputError, match="scheme"):
        Int8Record(scheme="mostly-int8", weight_bits=8)
