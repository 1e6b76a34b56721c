"""run_bench end to end on a tiny export folder: measured rows, refusals, crash containment."""
from __future__ import annotations

import json
import shutil
import textwrap
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from facekd.export.manifest import Manifest, artifact_size, sha256_artifact
from facekd.export.formats import FORMATS
from facekd.export.host import peak_gmacs
from facekd.runtime_bench.bench import (BenchConfig, BenchError, RuntimeSpec, _resumable, run_bench,
                                  run_bench_on_targets, subset_pairs)
from facekd.runtime_bench.client import WorkerClient
from facekd.runtime_bench.latency import TimingPlan
from facekd.runtime_bench.report import write_report
from facekd.runtime_bench.results import load_result
from facekd.runtime_bench.targets import LocalTarget
from facekd.training.checkpoint import save_checkpoint, student_state
from facekd.training.models.mobilefacenet import MobileFaceNet
from facekd.core.data import FaceFolder, load_rgb_file
from facekd.core.pairs import PairsError, VerificationPairs
from facekd.core.preprocess import STUDENT_DEFAULT
from tests.conftest import write_toy_bin
from tests.test_trainer import tiny_pairs, tiny_teacher  # noqa: F401  (fixtures)

EMBEDDING_SIZE = 128


def write_manifest(folder: Path, fmt: str, precision: str, file: str, *, status: str = "ok", reason: str = "",
                   shape: list | None = None, layout: str = "NCHW") -> Path:
    """A manifest as export writes it, for the artifact ``folder/file`` (which may be absent)."""
    artifact = folder / file
    exists = artifact.exists()
    manifest = Manifest(
        format=fmt, precision=precision, status=status, reason=reason, file=file,
        sha256=sha256_artifact(artifact) if exists else "", size_bytes=artifact_size(artifact) if exists else 0,
        input={"name": "input", "shape": shape or [None, 3, 112, 112], "layout": layout, "dtype": "float32"},
        output={"name": "embedding", "shape": [None, EMBEDDING_SIZE], "dtype": "float32"},
        preprocess=STUDENT_DEFAULT.with_layout(layout).to_dict(), embedding_size=EMBEDDING_SIZE, threshold=0.3,
        threshold_source="test", calibration=None, parity=None, converter_versions={}, quantization="none",
        source={},
    )
    folder.mkdir(parents=True, exist_ok=True)
    return manifest.save(folder / "manifest.json")


def build_export_dir(root: Path) -> Path:
    """torch-fp32 and onnx-fp32 of one tiny MobileFaceNet, plus artifacts that must be refused:
    a tampered onnx-int8, a CoreML package (needs macOS), TensorRT (not installed), a rejected
    tflite-int8 and a tflite-fp16 whose manifest is cut short."""
    torch.manual_seed(0)
    model = MobileFaceNet(width=0.25, embedding_size=EMBEDDING_SIZE).eval()
    out = root / "export"
    (out / "torch-fp32").mkdir(parents=True)
    save_checkpoint(out / "torch-fp32" / "model.pt", student_state(model, STUDENT_DEFAULT))
    write_manifest(out / "torch-fp32", "torch", "fp32", "model.pt")

    (out / "onnx-fp32").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(2, 3, 112, 112),), str(out / "onnx-fp32" / "model.onnx"),
                          input_names=["input"], output_names=["embedding"], opset_version=17, dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}})
    write_manifest(out / "onnx-fp32", "onnx", "fp32", "model.onnx")

    (out / "onnx-int8").mkdir()
    shutil.copy(out / "onnx-fp32" / "model.onnx", out / "onnx-int8" / "model.onnx")
    write_manifest(out / "onnx-int8", "onnx", "int8", "model.onnx")
    with open(out / "onnx-int8" / "model.onnx", "ab") as handle:
        handle.write(b"tampered after export")

    package = out / "coreml-fp16" / "model.mlpackage"
    package.mkdir(parents=True)
    (package / "Manifest.json").write_text("{}")
    write_manifest(out / "coreml-fp16", "coreml", "fp16", "model.mlpackage", status="validated-structure-only",
                   reason="Core ML prediction needs macOS")
    write_manifest(out / "tensorrt-fp16", "tensorrt", "fp16", "model.engine", status="unavailable",
                   reason=FORMATS["tensorrt"].unavailable_reason() or "TensorRT not installed")
    write_manifest(out / "rejected" / "tflite-int8", "tflite", "int8", "model.tflite", status="rejected",
                   reason="parity gate: worst cosine 0.91 < 0.99", shape=[1, 112, 112, 3], layout="NHWC")
    (out / "tflite-fp16").mkdir()
    (out / "tflite-fp16" / "manifest.json").write_text("{cut short")
    (out / "export_summary.json").write_text("{}")
    return out


def synthetic_pairs(count: int = 20, folds: int = 10) -> VerificationPairs:
    """``count`` random faces and a noisy copy of each; per fold one same and one different pair."""
    rng = np.random.default_rng(0)
    originals = rng.integers(0, 256, size=(count, 112, 112, 3), dtype=np.uint8)
    copies = np.clip(originals + rng.normal(0, 12, originals.shape), 0, 255).astype(np.uint8)
    images = list(originals) + list(copies)
    left, right, same, fold = [], [], [], []
    for k in range(folds * 2):
        base = k % count
        left.append(base)
        right.append(base + count if k % 2 == 0 else (base + 1) % count + count)
        same.append(k % 2 == 0)
        fold.append(k // 2)
    return VerificationPairs(images, left, right, same, fold, name="synthetic")


QUICK = dict(threads=[1], batch=[1, 2], timing=TimingPlan(warmup_count=1, warmup_seconds=0.0, min_runs=3, min_seconds=0.0,
                                                          max_seconds=5.0), worker_timeout_s=120.0)

CRASHING_RUNNER = '''
import os
import sys


class CrashingRunner:
    def load(self, path, threads):
        sys.stderr.write("segfault in native code (simulated)\\n")
        sys.stderr.flush()
        os._exit(3)
'''


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return build_export_dir(tmp_path_factory.mktemp("bench"))


def _rows(result, artifact, runtime="default"):
    return [row for row in result.rows if row.artifact == artifact and row.runtime == runtime]


def test_run_bench_measures_refuses_and_contains_crashes(export_dir, tmp_path, monkeypatch):
    (tmp_path / "bench_crashing_runner.py").write_text(textwrap.dedent(CRASHING_RUNNER))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    config = BenchConfig(**QUICK, runtimes=[
        RuntimeSpec("crashing", ["onnx-fp32"], runner="bench_crashing_runner:CrashingRunner"),
        RuntimeSpec("onnxruntime-cuda", ["onnx"], runner="facekd.runtime_bench.accelerated:OnnxRuntimeCudaRunner"),
    ])
    path = run_bench(export_dir, synthetic_pairs(), config, tmp_path / "result.json", progress=False)
    result = load_result(path)

    assert result.device["cores"] >= 1 and result.device["load_before"] is not None
    assert result.device["peak_gmacs"] == peak_gmacs()  # the report's share of the peak is computed from it
    assert result.rows[0].artifact == "torch-fp32"  # the reference is measured first
    for artifact in ("torch-fp32", "onnx-fp32"):
        rows = _rows(result, artifact)
        assert [(r.threads, r.batch, r.status) for r in rows] == [(1, 1, "ok"), (1, 2, "ok")]
        for row in rows:
            assert row.latency["n"] >= 3 and row.latency["p50"] <= row.latency["p99"]
            assert row.latency["init_ms"] > 0 and row.latency["first_ms"] > 0
            assert row.latency["throughput"] == pytest.approx(row.batch * 1000 / row.latency["mean"])
            assert row.memory["peak_rss_mb"] > 20 and row.size_bytes > 100_000
            assert 0.0 <= row.accuracy["acc"] <= 1.0 and 0.0 <= row.accuracy["auc"] <= 1.0
            assert row.manifest_sha256 and len(row.manifest_sha256) == 64
    onnx = _rows(result, "onnx-fp32")[0]
    assert onnx.parity["worst_cos"] > 0.9999 and onnx.parity["flip_rate"] == 0.0
    torch_row = _rows(result, "torch-fp32")[0]
    assert torch_row.parity["worst_cos"] == pytest.approx(1.0, abs=1e-6)
    assert onnx.accuracy["acc"] == pytest.approx(torch_row.accuracy["acc"])

    crashed = _rows(result, "onnx-fp32", "crashing")
    assert len(crashed) == 2 and all(r.status == "failed" for r in crashed)
    assert "exited with code 3" in crashed[0].reason and "segfault in native code" in crashed[0].reason

    (cuda,) = _rows(result, "onnx-fp32", "onnxruntime-cuda")  # one row: the runtime cannot run here
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert cuda.status == "unavailable" and "has no CUDAExecutionProvider" in cuda.reason

    (tampered,) = _rows(result, "onnx-int8")
    assert tampered.status == "failed" and tampered.reason.startswith("sha256 mismatch")
    assert tampered.latency is None and tampered.accuracy is None
    (coreml,) = _rows(result, "coreml-fp16")
    assert (coreml.status, coreml.reason) == ("unavailable", "structure validated; parity/latency need macOS")
    (tensorrt,) = _rows(result, "tensorrt-fp16")
    assert tensorrt.status == "unavailable" and tensorrt.reason.startswith("TensorRT")
    assert "not installed" in tensorrt.reason
    (unreadable,) = _rows(result, "tflite-fp16")
    assert unreadable.status == "failed" and "is not valid JSON" in unreadable.reason
    (rejected,) = _rows(result, "tflite-int8")
    assert rejected.status == "rejected" and "parity gate" in rejected.reason

    md_path, html_path = write_report([path], tmp_path / "report")
    markdown = md_path.read_text()
    assert "| torch-fp32 | default | 1 | 1 | ✅ ok |" in markdown
    assert "sha256 mismatch" in markdown and "❌ failed" in markdown
    assert "scatter-" in markdown and "data:image/png;base64," in html_path.read_text()


def test_bench_suites_score_every_artifact_as_eval_sets_does(export_dir, tmp_path, tiny_faces, tiny_pairs,  # noqa: F811
                                                              tiny_teacher, capsys):  # noqa: F811
    from facekd.export.build import export_teacher
    from facekd.cli import main
    from facekd.config import load_config

    export = shutil.copytree(export_dir, tmp_path / "export")
    export_teacher(tiny_teacher, load_config().teacher.preprocess, export)
    sets = [str(write_toy_bin(tmp_path / "toy_bin.bin", tiny_faces)), f"{tiny_pairs}={tiny_faces}"]
    config = BenchConfig(**{**QUICK, "batch": [1]}, artifacts=["onnx-fp32", "teacher-onnx-fp32"], accelerators=False,
                         suites=sets, flip_test=True)
    path = run_bench(export, synthetic_pairs(), config, tmp_path / "result.json", progress=False)
    rows = {row.artifact: row for row in load_result(path).rows}
    assert set(rows) == {"torch-fp32", "onnx-fp32", "teacher-onnx-fp32"}

    def eval_sets(*model_args) -> dict:
        out = tmp_path / "eval.json"
        assert main(["--quiet", "eval", *model_args, "--sets", *sets, "--flip-test", "--json", str(out)]) == 0
        return json.loads(out.read_text())["sets"]

    student = eval_sets("--checkpoint", str(export / "torch-fp32" / "model.pt"))
    teacher = eval_sets("--teacher-model", str(tiny_teacher))
    for artifact, expected in (("torch-fp32", student), ("onnx-fp32", student), ("teacher-onnx-fp32", teacher)):
        suites = rows[artifact].suites
        assert list(suites) == ["toy_bin", "pairs"], artifact
        for name, measured in suites.items():
            want = expected[name]
            assert measured["flip_test"] is True and measured["pairs"] == want["num_pairs"] == 20
            assert measured["acc"] == pytest.approx(want["accuracy"], abs=1e-9), (artifact, name)
            assert measured["std"] == pytest.approx(want["accuracy_std"], abs=1e-9), (artifact, name)
            assert measured["auc"] == pytest.approx(want["auc"], abs=1e-6), (artifact, name)
            assert measured["threshold"] == pytest.approx(want["threshold"], abs=1e-4), (artifact, name)
            assert measured["tar_at_far"] == pytest.approx(want["tar_at_far"], abs=1e-6), (artifact, name)
    assert rows["onnx-fp32"].accuracy["acc"] == pytest.approx(rows["torch-fp32"].accuracy["acc"])  # val pairs as before

    markdown = write_report([path], tmp_path / "report")[0].read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| artifact"))
    assert "| accuracy | toy_bin (flip-test on) | pairs (flip-test on) | AUC |" in header
    torch_line = next(line for line in markdown.splitlines() if line.startswith("| torch-fp32 |"))
    toy = rows["torch-fp32"].suites["toy_bin"]
    assert f"| {100 * toy['acc']:.2f} ± {100 * toy['std']:.2f} % |" in torch_line


def test_suites_and_identities_are_measured_only_on_the_artifacts_named(export_dir, tmp_path, tiny_faces):
    sets = [str(write_toy_bin(tmp_path / "toy_bin.bin", tiny_faces))]
    config = BenchConfig(**{**QUICK, "batch": [1]}, accelerators=False, suites=sets, suite_artifacts=["onnx-fp32"],
                         artifacts=["torch-fp32", "onnx-fp32"])
    rows = load_result(run_bench(export_dir, synthetic_pairs(), config, tmp_path / "result.json", progress=False,
                                 identities=FaceFolder(tiny_faces))).rows
    assert {row.artifact: row.suites is not None for row in rows} == {"torch-fp32": False, "onnx-fp32": True}
    assert {row.artifact: row.identities is not None for row in rows} == {"torch-fp32": False, "onnx-fp32": True}


def test_faces_the_pairs_share_with_the_identities_are_embedded_once(export_dir, tmp_path, tiny_faces, monkeypatch):
    files = sorted(tiny_faces.glob("*/*.jpg"))  # 6 people × 4 faces; the pairs use the first 4 people's
    left, right, same, folds = [], [], [], []
    for fold in range(8):
        person = fold % 4
        left += [4 * person, 4 * person + 1]
        right += [4 * person + 2, 4 * ((person + 1) % 4)]
        same += [True, False]
        folds += [fold, fold]
    pairs = VerificationPairs([load_rgb_file(path) for path in files[:16]], left, right, same, folds, name="shared")
    embedded, original = [], WorkerClient.request

    def spy(worker, op, **fields):
        if op == "embed":
            embedded.append(len(np.load(fields["input"], mmap_mode="r")))
        return original(worker, op, **fields)

    monkeypatch.setattr(WorkerClient, "request", spy)
    config = BenchConfig(**{**QUICK, "batch": [1]}, accelerators=False, suite_artifacts=["onnx-fp32"],
                         artifacts=["torch-fp32", "onnx-fp32"])
    rows = {row.artifact: row for row in load_result(run_bench(export_dir, pairs, config, tmp_path / "result.json",
                                                               progress=False, identities=FaceFolder(tiny_faces))).rows}
    assert sorted(embedded) == [8, 16, 16]  # torch: the pairs' 16; onnx: those 16, then the 8 the pairs lack
    assert rows["onnx-fp32"].accuracy["acc"] == pytest.approx(rows["torch-fp32"].accuracy["acc"])
    assert rows["onnx-fp32"].parity["worst_cos"] > 0.9999  # the same faces as the reference's, in pair order
    assert rows["onnx-fp32"].identities["faces"] == 24


def test_faces_are_embedded_by_the_worker_with_the_most_threads(export_dir, tmp_path, monkeypatch):
    requests = []
    original = WorkerClient.request

    def spy(worker, op, **fields):
        requests.append((id(worker), op, fields.get("threads")))
        return original(worker, op, **fields)

    monkeypatch.setattr(WorkerClient, "request", spy)
    config = BenchConfig(**{**QUICK, "threads": [1, 2], "batch": [1]}, accelerators=False, artifacts=["onnx-fp32"])
    rows = load_result(run_bench(export_dir, synthetic_pairs(), config, tmp_path / "result.json", progress=False)).rows
    onnx = [row for row in rows if row.artifact == "onnx-fp32"]
    assert [row.threads for row in onnx] == [1, 2]  # rows keep the configured order
    assert onnx[0].accuracy == onnx[1].accuracy and onnx[0].accuracy is not None
    assert onnx[0].op_profile is not None and onnx[1].op_profile is None  # the profile stays at the first setting
    threads_of = {worker: threads for worker, op, threads in requests if op == "load"}
    assert {threads_of[worker] for worker, op, _ in requests if op == "embed"} == {2}


def test_fixed_batch_artifact_refuses_other_batches(tmp_path):
    out = tmp_path / "export"
    torch.manual_seed(1)
    model = MobileFaceNet(width=0.25).eval()
    (out / "torch-fp32").mkdir(parents=True)
    save_checkpoint(out / "torch-fp32" / "model.pt", student_state(model, STUDENT_DEFAULT))
    write_manifest(out / "torch-fp32", "torch", "fp32", "model.pt", shape=[1, 3, 112, 112])
    config = BenchConfig(**{**QUICK, "batch": [2]}, accelerators=False)
    result = load_result(run_bench(out, synthetic_pairs(), config, tmp_path / "r.json", progress=False))
    (row,) = result.rows
    assert row.status == "unavailable" and "batch 1 only" in row.reason


def test_subset_pairs_keeps_folds_balanced():
    pairs = synthetic_pairs(count=20, folds=5)
    pairs = VerificationPairs(pairs.images, np.tile(pairs.left, 2), np.tile(pairs.right, 2),
                              np.tile(pairs.same, 2), np.tile(pairs.folds, 2))
    subset = subset_pairs(pairs, 2)
    assert len(subset) == 10
    for fold in range(5):
        assert sorted(subset.same[subset.folds == fold]) == [False, True]
    assert subset_pairs(pairs, None) is pairs


def test_config_errors_are_user_errors(export_dir, tmp_path):
    with pytest.raises(BenchError, match="threads"):
        BenchConfig(threads=[0])
    with pytest.raises(BenchError, match="run `facekd export` first"):
        run_bench(tmp_path / "missing", synthetic_pairs(), BenchConfig(**QUICK), tmp_path / "r.json", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="no artifacts"):
        run_bench(tmp_path / "empty", synthetic_pairs(), BenchConfig(**QUICK), tmp_path / "r.json", progress=False)
    assert json.loads(json.dumps(BenchConfig().to_dict()))["threads"] == [1, 2]
    with pytest.raises(BenchError, match="names a set twice"):
        BenchConfig(suites=["a/lfw.bin", "b/lfw.bin"])
    with pytest.raises(PairsError, match="does not exist"):
        run_bench(export_dir, synthetic_pairs(), BenchConfig(**QUICK, suites=[str(tmp_path / "lfw.bin")]),
                  tmp_path / "r.json", progress=False)


def test_interrupted_run_resumes_and_remeasures_only_the_reference(export_dir, tmp_path):
    config = BenchConfig(**{**QUICK, "batch": [1]}, artifacts=["onnx-fp32"], accelerators=False)
    out = tmp_path / "result.json"
    first = load_result(run_bench(export_dir, synthetic_pairs(), config, out, progress=False))
    assert first.complete and {row.artifact for row in first.rows} == {"torch-fp32", "onnx-fp32"}

    data = json.loads(out.read_text())
    data["complete"] = False  # as if interrupted after the last artifact
    for row in data["rows"]:
        row["latency"]["n"] = 999  # a mark that survives only if the row is reused
    out.write_text(json.dumps(data))
    resumed = load_result(run_bench(export_dir, synthetic_pairs(), config, out, progress=False))
    marks = {row.artifact: row.latency["n"] for row in resumed.rows}
    assert marks["onnx-fp32"] == 999 and marks["torch-fp32"] != 999 and resumed.complete

    # a complete result, or one made with other settings, is measured afresh
    target, pairs = LocalTarget(), synthetic_pairs()
    assert _resumable(out, export_dir.resolve(), target, config, pairs) == []
    data["config"]["timing"]["min_runs"] = 4
    out.write_text(json.dumps(data))
    assert _resumable(out, export_dir.resolve(), target, config, pairs) == []
    data["config"]["timing"]["min_runs"] = 3
    out.write_text(json.dumps(data))
    assert len(_resumable(out, export_dir.resolve(), target, config, pairs)) == 2


def test_run_bench_on_targets_writes_one_result_per_target(export_dir, tmp_path):
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    config = BenchConfig(**QUICK, artifacts=["tflite"], targets=[
        {"kind": "adb", "serial": "phone-1", "adb": str(tmp_path / "no-adb"), "benchmark_binary": str(binary)}])
    (path,) = run_bench_on_targets(export_dir, synthetic_pairs(), config, tmp_path / "results", progress=False)
    assert path.name == "adb-phone-1.json"
    result = load_result(path)
    assert result.target == "adb:phone-1" and result.device["cores"] is None
    reasons = {row.artifact: (row.status, row.reason) for row in result.rows}
    assert reasons["torch-fp32"] == ("unavailable", f"{tmp_path / 'no-adb'} not on PATH: install Android platform-tools")
    assert reasons["tflite-int8"][0] == "rejected"


def test_formats_the_export_could_not_make_still_get_a_row(tmp_path):
    from facekd.runtime_bench.bench import export_only_rows

    (tmp_path / "export_summary.json").write_text(json.dumps([
        {"format": "onnx", "precision": "fp32", "status": "ok", "reason": ""},
        {"format": "tensorrt", "precision": "int8", "status": "unavailable", "reason": "TensorRT not installed"},
        {"format": "tflite", "precision": "int8", "status": "failed", "reason": "converter crashed"},
    ]))
    rows = export_only_rows(tmp_path, measured={"onnx-fp32", "tflite-int8"})
    assert [(r.artifact, r.status, r.reason) for r in rows] == [
        ("tensorrt-int8", "unavailable", "export: TensorRT not installed")]
