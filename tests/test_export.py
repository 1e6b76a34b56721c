"""Export driver: plan errors, the parity gate, failure isolation, golden vectors, summary.

These tests use the PyTorch row (no converter package needed) and generated faces; the
converters themselves are tested on real faces in test_export_converters.py.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from facekd.export import build, formats
from facekd.export.build import ExportConfig, ExportError, export_checkpoint, plan_jobs, split_format_requests
from facekd.export.formats import available_formats
from facekd.export.errors import FormatUnavailable
from facekd.export.manifest import Manifest, verify_artifact
from facekd.export.parity import DEFAULT_BARS, Parity, ParityBar, ParityReference, gate, measure_parity
from facekd.export.torch_format import TorchRunner
from facekd.training.checkpoint import CheckpointError, save_checkpoint, student_state
from facekd.core.data import load_rgb_file
from facekd.core.host import usable_cores
from facekd.training.models.mobilefacenet import MobileFaceNet
from facekd.core.pairs import VerificationPairs
from facekd.core.preprocess import STUDENT_DEFAULT

TENSORRT_INSTALLED = formats.FORMATS["tensorrt"].unavailable_reason() is None


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = MobileFaceNet(width=0.25).eval()
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "student.pt", student_state(model, STUDENT_DEFAULT, threshold=0.3))


@pytest.fixture(scope="module")
def faces(tiny_faces) -> list[Path]:
    return sorted(tiny_faces.glob("*/*.jpg"))


@pytest.fixture(scope="module")
def pairs(faces) -> VerificationPairs:
    """Per identity: one same pair (images 1, 2) and one different pair (image 3 vs next identity's)."""
    people = sorted({p.parent.name for p in faces})
    index = {p: i for i, p in enumerate(faces)}
    by_person = {name: [p for p in faces if p.parent.name == name] for name in people}
    left, right, same = [], [], []
    for k, name in enumerate(people):
        other = people[(k + 1) % len(people)]
        left += [index[by_person[name][0]], index[by_person[name][2]]]
        right += [index[by_person[name][1]], index[by_person[other][2]]]
        same += [True, False]
    return VerificationPairs(list(faces), left, right, same, folds=np.arange(len(same)) % 2, name="tiny")


def _config(**overrides) -> ExportConfig:
    return ExportConfig(**{"formats": ["torch"], "calib_count": 4, "parity_count": 8, "threads": 1, **overrides})


def test_torch_export_writes_artifact_manifest_summary_and_golden(checkpoint, faces, pairs, tmp_path):
    records = export_checkpoint(checkpoint, tmp_path, _config(), faces[:8], faces, pairs, progress=False)

    (record,) = records
    assert (record.format, record.precision, record.status) == ("torch", "fp32", "ok")
    assert record.parity["worst_cos"] > 0.9999 and record.parity["flip_rate"] == 0.0
    assert record.parity["n_pairs"] == len(pairs)
    manifest_path = tmp_path / "torch-fp32" / "manifest.json"
    assert verify_artifact(manifest_path) == tmp_path / record.path
    manifest = Manifest.load(manifest_path)
    assert manifest.input == {"name": "input", "shape": [None, 3, 112, 112], "layout": "NCHW", "dtype": "float32"}
    assert manifest.preprocess == STUDENT_DEFAULT.to_dict() and manifest.embedding_size == 128
    assert manifest.calibration is None  # fp32 needs no calibration
    assert "pairs of tiny" in manifest.threshold_source and manifest.threshold != 0.3
    summary = json.loads((tmp_path / "export_summary.json").read_text())
    assert summary == [record.to_dict()]


def test_checkpoint_threshold_is_used_without_pairs(checkpoint, faces, tmp_path):
    export_checkpoint(checkpoint, tmp_path, _config(), faces[:8], faces, None, progress=False)
    manifest = Manifest.load(tmp_path / "torch-fp32" / "manifest.json")
    assert (manifest.threshold, manifest.threshold_source) == (0.3, "checkpoint")
    assert manifest.parity["flip_rate"] is None and manifest.parity["n_pairs"] == 0


def test_golden_vectors_match_the_spec(checkpoint, faces, pairs, tmp_path):
    export_checkpoint(checkpoint, tmp_path, _config(), faces[:8], faces, pairs, progress=False)
    golden_dir = tmp_path / "golden"
    golden = json.loads((golden_dir / "golden.json").read_text())

    assert golden["schema_version"] == 1 and golden["preprocess"] == STUDENT_DEFAULT.to_dict()
    items = golden["items"]
    assert [item["image"] for item in items] == [f"face_{i}.png" for i in range(8)] + ["face_resize.png"]
    assert [len({items[2 * k]["identity"], items[2 * k + 1]["identity"]}) for k in range(4)] == [1, 1, 1, 1]
    assert len({item["identity"] for item in items[:8]}) == 4
    assert load_rgb_file(golden_dir / "face_resize.png").shape == (128, 128, 3)
    model = MobileFaceNet(width=0.25).eval()
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["model"])
    for item in items:
        png = load_rgb_file(golden_dir / item["image"])
        tensor = np.fromfile(golden_dir / item["input"], dtype="<f4").reshape(item["input_shape"])
        np.testing.assert_array_equal(tensor, STUDENT_DEFAULT.apply(png))
        with torch.no_grad():
            expected = torch.nn.functional.normalize(model(torch.from_numpy(tensor)), dim=1)[0].numpy()
        np.testing.assert_allclose(item["embedding"], expected, atol=1e-5)
    assert len(golden["pairs"]) == 28
    for pair in golden["pairs"]:
        a, b = items[pair["a"]], items[pair["b"]]
        assert pair["cosine"] == pytest.approx(float(np.dot(a["embedding"], b["embedding"])))
        assert pair["same_identity"] == (a["identity"] == b["identity"])
        assert pair["match"] == (pair["cosine"] >= golden["threshold"])


class NoisyRunner(TorchRunner):
    """A runtime that returns corrupted embeddings: what a broken conversion looks like."""

    def run(self, batch: np.ndarray) -> np.ndarray:
        clean = super().run(batch)
        return clean + np.random.default_rng(0).normal(0, 3 * np.abs(clean).max(), clean.shape).astype(np.float32)


def test_gate_moves_a_broken_artifact_to_rejected(checkpoint, faces, pairs, tmp_path, monkeypatch):
    monkeypatch.setitem(formats.FORMATS, "torch", replace(formats.FORMATS["torch"], runner=NoisyRunner))
    (record,) = export_checkpoint(checkpoint, tmp_path, _config(), faces[:8], faces, pairs, progress=False)

    assert record.status == "rejected" and "below its bar 0.999" in record.reason
    assert record.path == "rejected/torch-fp32/model.pt"
    assert not (tmp_path / "torch-fp32").exists()
    manifest = Manifest.load(tmp_path / "rejected" / "torch-fp32" / "manifest.json")
    assert manifest.status == "rejected" and manifest.reason == record.reason
    assert manifest.parity["worst_cos"] < 0.999
    assert json.loads((tmp_path / "export_summary.json").read_text())[0]["status"] == "rejected"


def test_a_failing_converter_does_not_stop_the_others(checkpoint, faces, tmp_path, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("converter exploded\nwith a long traceback-ish second line")

    broken = replace(formats.FORMATS["torch"], name="broken", convert=explode)
    monkeypatch.setitem(formats.FORMATS, "broken", broken)
    records = export_checkpoint(checkpoint, tmp_path, _config(formats=["broken", "torch"]), faces[:8], faces, None, progress=False)

    assert [(r.format, r.status) for r in records] == [("broken", "failed"), ("torch", "ok")]
    assert records[0].reason == "RuntimeError: converter exploded"
    assert not (tmp_path / "broken-fp32").exists()



def crash_natively(model, precision, calibration, out_path, **kwargs):
    """A converter that half-writes its artifact, then dies the way a native library does."""
    import os
    import signal

    out_path.write_bytes(b"half")
    os.kill(os.getpid(), signal.SIGSEGV)


def test_a_native_crash_in_an_own_process_row_fails_that_artifact_only(checkpoint, faces, tmp_path, monkeypatch):
    crashing = replace(formats.FORMATS["torch"], name="crashing", convert=crash_natively, own_process=True)
    isolated_torch = replace(formats.FORMATS["torch"], name="isolated", own_process=True)
    monkeypatch.setitem(formats.FORMATS, "crashing", crashing)
    monkeypatch.setitem(formats.FORMATS, "isolated", isolated_torch)
    records = export_checkpoint(checkpoint, tmp_path, _config(formats=["crashing", "isolated", "torch"]), faces[:8], faces,
                                None, progress=False)

    assert [(r.format, r.status) for r in records] == [("crashing", "failed"), ("isolated", "ok"), ("torch", "ok")]
    assert "process died (signal SIGSEGV)" in records[0].reason
    assert not (tmp_path / "crashing-fp32").exists() and not (tmp_path / "rejected" / "crashing-fp32").exists()
    # the child measured what an in-process export of the same model measures, and wrote a valid manifest
    assert records[1].parity == records[2].parity
    assert Manifest.load(tmp_path / "isolated-fp32" / "manifest.json").status == "ok"
    verify_artifact(tmp_path / "isolated-fp32" / "manifest.json")

def meet_the_other_lane(model, precision, calibration, out_path, **kwargs):
    """A converter that finishes only when the other row's converter runs at the same time: each
    writes its marker (with its PyTorch threads) and waits up to 20 s for the other's."""
    import time

    import torch

    mine, other = ("own", "in-process") if "isolated" in out_path.parent.name else ("in-process", "own")
    markers = out_path.parent.parent
    (markers / f"{mine}.marker").write_text(str(torch.get_num_threads()))
    deadline = time.monotonic() + 20
    while not (markers / f"{other}.marker").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the {other} lane never ran beside this one")
        time.sleep(0.05)
    return formats.FORMATS["torch"].convert(model, precision, calibration, out_path, **kwargs)


@pytest.mark.skipif(usable_cores() < 2, reason="one core: export runs one lane")
@pytest.mark.parametrize("concurrent", [True, False])
def test_own_process_rows_convert_beside_the_others_on_half_the_cores(concurrent, checkpoint, faces, tmp_path, monkeypatch):
    monkeypatch.setitem(formats.FORMATS, "isolated", replace(formats.FORMATS["torch"], name="isolated",
                                                             convert=meet_the_other_lane, own_process=True))
    monkeypatch.setitem(formats.FORMATS, "local", replace(formats.FORMATS["torch"], name="local", convert=meet_the_other_lane))
    config = _config(formats=["isolated", "local"], threads=None, concurrent=concurrent)
    records = export_checkpoint(checkpoint, tmp_path, config, faces[:8], faces, None, progress=False)

    summary = json.loads((tmp_path / "export_summary.json").read_text())
    assert [r.format for r in records] == ["isolated", "local"] == [r["format"] for r in summary]  # the job order
    if concurrent:
        assert [r.status for r in records] == ["ok", "ok"]
        assert {(tmp_path / f"{lane}.marker").read_text() for lane in ("own", "in-process")} == {str(usable_cores() // 2)}
    else:  # one after the other: the first waits in vain
        assert records[0].status == "failed" and "never ran beside" in records[0].reason


def test_all_formats_records_unavailable_ones_instead_of_failing(checkpoint, faces, tmp_path, monkeypatch):
    if TENSORRT_INSTALLED:
        pytest.skip("TensorRT is installed here")
    # without its source (made and checked here, see test_export_tensorrt.py), TensorRT cannot do anything here
    tensorrt = replace(formats.FORMATS["tensorrt"], source=None)
    monkeypatch.setattr(build, "FORMATS", {"torch": formats.FORMATS["torch"], "tensorrt": tensorrt})
    records = export_checkpoint(checkpoint, tmp_path, _config(formats=None), faces[:8], faces, None, progress=False)

    assert [(r.format, r.precision, r.status) for r in records] == [
        ("torch", "fp32", "ok"), ("tensorrt", "fp16", "unavailable"), ("tensorrt", "int8", "unavailable")]
    assert "TensorRT" in records[1].reason and "pip install tensorrt" in records[1].reason


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (_config(formats=["onnx", "savedmodel"]), "unknown format 'savedmodel'; choose from torch, onnx"),
        (_config(formats=["tflit-int8"]), "unknown format 'tflit'; did you mean tflite[?]"),
        (_config(formats=["torch"], precisions={"torch": ["int4"]}), "torch has no precision 'int4'"),
        (_config(formats=["torch"], precisions={"onnx": ["int4"]}), "onnx has no precision 'int4'"),
        (_config(calib_count=0), "calib_count must be at least 1"),
    ],
)
def test_impossible_requests_fail_before_any_work(config, message, tmp_path):
    with pytest.raises(ExportError, match=message):
        export_checkpoint(tmp_path / "never-read.pt", tmp_path / "out", config)
    assert not (tmp_path / "out").exists()


def test_precisions_narrow_a_format_when_it_is_exported_and_name_no_other():
    jobs = build.plan_jobs(ExportConfig(formats=["torch", "onnx"], precisions={"onnx": ["int8"], "tensorrt": ["fp16"]}))
    assert [(row.name, precision) for row, precision, _ in jobs] == [("torch", "fp32"), ("onnx", "int8")]
    jobs = build.plan_jobs(ExportConfig(precisions={"tensorrt": ["fp16"]}))
    assert [precision for row, precision, _ in jobs if row.name == "tensorrt"] == ["fp16"]
    assert [precision for row, precision, _ in jobs if row.name == "onnx"] == ["fp32", "int8"]


def test_explicit_request_of_a_format_that_cannot_run_here_says_how_to_install(monkeypatch):
    if TENSORRT_INSTALLED:
        pytest.skip("TensorRT is installed here")
    monkeypatch.setattr(build, "FORMATS", {"tensorrt": replace(formats.FORMATS["tensorrt"], source=None)})
    with pytest.raises(ExportError, match=r"cannot export tensorrt: TensorRT .*not installed \(pip install tensorrt .*from NVIDIA"):
        build.plan_jobs(ExportConfig(formats=["tensorrt"]))


def test_tensorrt_converter_and_runner_report_unavailable(tmp_path):
    if TENSORRT_INSTALLED:
        pytest.skip("TensorRT is installed here")
    row = formats.FORMATS["tensorrt"]
    with pytest.raises(FormatUnavailable, match="TensorRT not installed"):
        row.convert(MobileFaceNet(width=0.25), "fp16", None, tmp_path / "model.engine", preprocess=STUDENT_DEFAULT, max_batch=8)
    assert not list(tmp_path.iterdir())
    with pytest.raises(FormatUnavailable, match="TensorRT not installed"):
        row.runner().load(tmp_path / "model.engine")


def test_bad_checkpoints_and_images_give_one_line_errors(checkpoint, faces, tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt or not a facekd checkpoint"):
        export_checkpoint(corrupt, tmp_path / "a", _config(), faces, faces)
    other = tmp_path / "other.pt"
    state = student_state(MobileFaceNet(width=0.25), STUDENT_DEFAULT)
    save_checkpoint(other, {**state, "arch": {**state["arch"], "name": "resnet50"}})
    with pytest.raises(CheckpointError, match="does not match its declared architecture"):
        export_checkpoint(other, tmp_path / "b", _config(), faces, faces)
    with pytest.raises(ExportError, match="no calibration images"):
        export_checkpoint(checkpoint, tmp_path / "c", _config(), [], faces)
    broken_image = tmp_path / "person" / "broken.jpg"
    broken_image.parent.mkdir()
    broken_image.write_bytes(b"")
    with pytest.raises(ExportError, match="parity: cannot decode image"):
        export_checkpoint(checkpoint, tmp_path / "d", _config(), faces, [broken_image])


def test_available_formats_lists_every_row_and_precision():
    listing = available_formats()
    expected = [(name, precision) for name, row in formats.FORMATS.items() for precision in row.precisions]
    assert [(name, precision) for name, precision, _, _ in listing] == expected
    by_key = {(name, precision): (available, note) for name, precision, available, note in listing}
    assert by_key[("torch", "fp32")][0] is True
    if not TENSORRT_INSTALLED:
        available, note = by_key[("tensorrt", "int8")]
        assert not available and note.startswith(formats.FORMATS["tensorrt"].unavailable_reason())
    assert all(row.host in formats.HOSTS and row.layout in ("NCHW", "NHWC") for row in formats.FORMATS.values())


def test_gate_applies_the_bar_of_each_precision_and_states_it():
    good_fp = Parity(mean_cos=0.9999, worst_cos=0.9995, flip_rate=0.0, n_images=8, n_pairs=4)
    passed = gate("fp32", good_fp, DEFAULT_BARS)
    assert passed.passed and passed.statement == "fp32 worst_cos 0.99950 >= 0.999"
    failed = gate("fp16", Parity(mean_cos=0.995, worst_cos=0.98, flip_rate=0.0, n_images=8, n_pairs=4), DEFAULT_BARS)
    assert not failed.passed and failed.statement == "fp16 worst_cos 0.98000 is below its bar 0.999 by 0.01900"
    nan = gate("fp32", Parity(float("nan"), float("nan"), None, 8, 0), DEFAULT_BARS)
    assert not nan.passed and "not finite" in nan.statement


def test_the_int8_bar_holds_the_worst_face_and_the_flips_and_names_the_failed_ones_first():
    worst_case = DEFAULT_BARS
    assert worst_case["int8"] == ParityBar(worst_cos=0.995, max_flip_rate=0.005)
    faithful = Parity(mean_cos=0.999, worst_cos=0.9962, flip_rate=0.0033, n_images=64, n_pairs=300)
    verdict = gate("int8", faithful, worst_case)
    assert verdict.passed and verdict.statement == "int8 worst_cos 0.99620 >= 0.995, flip_rate 0.00330 <= 0.005"
    # a good mean hides a bad face: a mean-cosine bar passes this one
    one_bad_face = Parity(mean_cos=0.9975, worst_cos=0.9742, flip_rate=0.0, n_images=64, n_pairs=300)
    assert gate("int8", one_bad_face, {"int8": ParityBar(mean_cos=0.99)}).passed
    verdict = gate("int8", one_bad_face, worst_case)
    assert not verdict.passed
    assert verdict.statement == "int8 worst_cos 0.97420 is below its bar 0.995 by 0.02080, flip_rate 0.00000 <= 0.005"
    flips = gate("int8", Parity(mean_cos=0.9999, worst_cos=0.999, flip_rate=0.01, n_images=64, n_pairs=300), worst_case)
    assert not flips.passed and flips.statement.startswith("int8 flip_rate 0.01000 is above its bar 0.005 by 0.00500")
    unmeasured = gate("int8", Parity(mean_cos=1.0, worst_cos=1.0, flip_rate=None, n_images=64, n_pairs=0), worst_case)
    assert not unmeasured.passed and "flip_rate not measured" in unmeasured.statement
    mean_only = {**DEFAULT_BARS, "int8": ParityBar(mean_cos=0.999)}
    strict = gate("int8", one_bad_face, mean_only)
    assert not strict.passed and strict.statement == "int8 mean_cos 0.99750 is below its bar 0.999 by 0.00150"
    with pytest.raises(ValueError, match="at least one of"):
        ParityBar()


def test_a_precision_without_a_bar_is_an_error_not_a_pass():
    with pytest.raises(ValueError, match="no parity bar for precision 'int8'"):
        gate("int8", Parity(1.0, 1.0, 0.0, 8, 4), {"fp32": DEFAULT_BARS["fp32"]})
    bars = {k: v for k, v in DEFAULT_BARS.items() if k != "int8"}
    with pytest.raises(ExportError, match="no parity bar for onnx-int8: set export.bars.int8"):
        plan_jobs(ExportConfig(formats=["onnx"], bars=bars))
    assert [p for _, p, _ in plan_jobs(ExportConfig(formats=["onnx-fp32"], bars=bars))] == ["fp32"]


def test_format_requests_take_an_optional_precision():
    assert split_format_requests(["onnx-fp32", "tflite-int8", "tflite-fp16"]) == (
        ["onnx", "tflite"], {"onnx": ["fp32"], "tflite": ["int8", "fp16"]})
    assert split_format_requests(["onnx-int8", "onnx"]) == (["onnx"], {})
    jobs = plan_jobs(ExportConfig(formats=["onnx-fp32", "torch"]))
    assert [(row.name, precision) for row, precision, _ in jobs] == [("onnx", "fp32"), ("torch", "fp32")]
    with pytest.raises(ExportError, match="unknown format 'onnx2'; did you mean onnx[?]"):
        split_format_requests(["onnx2-fp32"])
    with pytest.raises(ExportError, match="format onnx has no precision 'fp8'"):
        plan_jobs(ExportConfig(formats=["onnx-fp8"]))


def test_parity_counts_flipped_decisions():
    reference = np.eye(4, dtype=np.float32)
    reference[1] = reference[0]  # images 0 and 1 identical: a "same" decision at threshold 0.5
    ref = ParityReference(reference / np.linalg.norm(reference, axis=1, keepdims=True),
                          left=np.array([0, 2]), right=np.array([1, 3]), threshold=0.5)
    artifact = reference.copy()
    artifact[1] = [0.3, 1.0, 0, 0]  # pair (0,1) now scores 0.29 < 0.5: its decision flips
    parity = measure_parity(artifact, ref)
    assert parity.flip_rate == 0.5 and parity.n_pairs == 2 and parity.n_images == 4
    assert parity.worst_cos == pytest.approx(0.3 / np.hypot(0.3, 1.0))


def test_format_table_and_manifest_import_no_runtime():
    """A benchmark worker imports the table and manifests; each runner imports its runtime itself."""
    runtimes = ("torch", "onnx", "onnxruntime", "litert_torch", "ai_edge_litert", "coremltools", "tensorrt")
    probe = f"import sys, facekd.export.formats, facekd.export.manifest; print([m for m in {runtimes!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.strip() == "[]"
