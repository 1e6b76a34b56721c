"""What measures and serves artifacts needs the runtimes, not torch: `facekd bench`, `report`, `web` and the
bench worker run in a process that never imports it (a board with a runtime, numpy and OpenCV can run them)."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pytest

import facekd
from tests.test_trainer import tiny_pairs, tiny_teacher  # noqa: F401  (fixtures)

QUICK_BENCH = ["bench.threads=[1]", "bench.timing.min_runs=2", "bench.timing.min_seconds=0.0", "bench.timing.warmup_count=1",
               "bench.timing.warmup_seconds=0.0", "bench.accelerators=false"]


@pytest.fixture(scope="module")
def onnx_and_tflite(tiny_faces, tiny_teacher, tiny_pairs, tmp_path_factory):  # noqa: F811
    import torch

    from facekd.core.preprocess import PreprocessSpec
    from facekd.training.checkpoint import save_checkpoint, student_state
    from facekd.training.models import MobileFaceNet

    root = tmp_path_factory.mktemp("torch-free")
    torch.manual_seed(0)
    checkpoint = save_checkpoint(root / "student.pt", student_state(MobileFaceNet(width=0.25).eval(), PreprocessSpec()))
    settings = ["export.calib_count=4", "export.parity_count=4", "export.golden=false", "export.teacher=false",
                f"data.val_pairs={tiny_pairs}"]
    records = facekd.load(checkpoint).export(root / "export", formats=["onnx-fp32", "tflite-fp32"], data=tiny_faces,
                                             teacher=tiny_teacher, overrides=settings, progress=False)
    assert [record.status for record in records] == ["ok", "ok"]
    return root / "export"


def test_bench_report_and_web_never_import_torch(onnx_and_tflite, tiny_faces, tiny_teacher, tiny_pairs, tmp_path):  # noqa: F811
    result, report = tmp_path / "bench" / "result.json", tmp_path / "report"
    settings = [f"--set={s}" for s in (*QUICK_BENCH, f"data.val_pairs={tiny_pairs}")]
    script = f"""
import json, sys
from facekd.cli import main
bench = main(["--quiet", "bench", {str(onnx_and_tflite)!r}, "--data", {str(tiny_faces)!r}, "--teacher",
              {str(tiny_teacher)!r}, "--out", {str(result)!r}, *{settings!r}])
report = main(["--quiet", "report", {str(result)!r}, "--out", {str(report)!r}])
import facekd.web
print(json.dumps({{"bench": bench, "report": report, "torch": "torch" in sys.modules}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome == {"bench": 0, "report": 0, "torch": False}, done.stderr[-2000:]
    rows = json.loads(result.read_text())["rows"]
    assert {row["artifact"] for row in rows if row["status"] == "ok"} == {"onnx-fp32", "tflite-fp32"}


def test_the_worker_and_its_remote_bundle_carry_no_training_code():
    from facekd.runtime_bench.targets import worker_bundle

    done = subprocess.run([sys.executable, "-c", "import sys, facekd.runtime_bench.worker, facekd.export.formats; "
                           "print(sorted({m for m in sys.modules if m == 'torch' or m.startswith('facekd.training')}))"],
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr[-2000:]
    names = zipfile.ZipFile(__import__("io").BytesIO(worker_bundle())).namelist()
    assert "facekd/runtime_bench/worker.py" in names and "facekd/core/verification.py" in names
    assert not any(name.startswith("facekd/training/") for name in names)
