"""`facekd demo` end to end on tiny generated faces: report written, a re-run reuses every stage."""
from __future__ import annotations

import json
import logging

from facekd.config import load_config
from facekd.pipeline import run_demo
from tests.test_trainer import tiny_pairs, tiny_teacher  # noqa: F401  (fixtures)


def tiny_demo_config(tiny_faces, tiny_teacher, tiny_pairs, tmp_path, *extra):
    return load_config(None, [
        f"data.aligned_root={tiny_faces}", f"data.val_pairs={tiny_pairs}", f"teacher.path={tiny_teacher}",
        f"teacher.cache_dir={tmp_path / 'cache'}", "student.width=0.25", "data.identities_per_batch=3",
        "data.images_per_identity=2", "train.epochs=1", "train.threads=1", "loss.fcd=1.0",
        "export.calib_count=8", "export.parity_count=8", "bench.threads=[1]", "bench.timing.min_runs=3",
        "bench.timing.min_seconds=0.05", "bench.timing.warmup_count=1", "bench.timing.warmup_seconds=0.0", *extra,
    ])


def test_demo_chain_writes_report_and_reuses_finished_stages(tiny_faces, tiny_teacher, tiny_pairs, tmp_path, caplog):
    cfg = tiny_demo_config(tiny_faces, tiny_teacher, tiny_pairs, tmp_path, "export.formats=[torch, onnx]")
    out = tmp_path / "demo"
    summary = run_demo(cfg, out, progress=False)
    html = (out / "report" / "report.html").read_text()
    assert "onnx" in html and "torch" in html
    result = json.loads((out / "demo.json").read_text())
    assert result["report_html"] == summary["report_html"]
    rows = json.loads(open(summary["results"][0]).read())["rows"]
    assert {(r["format"], r["precision"]) for r in rows if r["status"] == "ok"} >= {("torch", "fp32"), ("onnx", "fp32")}
    assert (out / "export" / "golden" / "golden.json").is_file()
    teacher = [r for r in rows if r["artifact"] == "teacher-onnx-fp32"]
    assert teacher and all(r["status"] == "ok" and r["accuracy"] and r["parity"] is None for r in teacher)
    assert teacher[0]["model"]["role"] == "teacher" and teacher[0]["model"]["macs"] > 0
    report = (out / "report" / "report.md").read_text()
    assert "**Ship " in report and "Student vs teacher (teacher-onnx-fp32)" in report

    student_mtime = (out / "student.pt").resolve().stat().st_mtime_ns
    caplog.clear()  # what the second run says
    with caplog.at_level(logging.INFO, logger="facekd.pipeline"):
        run_demo(cfg, out, progress=False)
    reused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reusing")]
    assert len(reused) == 3  # train, export, bench
    assert (out / "student.pt").resolve().stat().st_mtime_ns == student_mtime
    skipped = [r.getMessage() for r in caplog.records if "int8 artifacts are post-training" in r.getMessage()]
    assert len(skipped) == 1 and "train.int8_aware_epochs=1" in skipped[0]  # the demo says what it skips


def test_demo_report_shows_the_reference_student_beside_the_new_one(tiny_faces, tiny_teacher, tiny_pairs, tmp_path):
    import torch

    from facekd.training.checkpoint import save_checkpoint, student_state
    from facekd.training.models.mobilefacenet import MobileFaceNet
    from facekd.core.preprocess import STUDENT_DEFAULT

    torch.manual_seed(3)
    reference = save_checkpoint(tmp_path / "zoo" / "student.pt", student_state(MobileFaceNet(width=0.25).eval(), STUDENT_DEFAULT))
    cfg = tiny_demo_config(tiny_faces, tiny_teacher, tiny_pairs, tmp_path, "export.formats=[torch]",
                           f"demo.reference_student={reference}")
    summary = run_demo(cfg, tmp_path / "demo", progress=False)
    assert len(summary["results"]) == 2
    reference_rows = json.loads(open(summary["results"][1]).read())["rows"]
    names = {r["artifact"] for r in reference_rows if r["status"] == "ok"}
    assert names == {"reference torch-fp32", "reference tflite-fp32"}
    assert {r["threads"] for r in reference_rows if r["status"] == "ok"} == {1, 2}
    report = (tmp_path / "demo" / "report" / "report.md").read_text()
    assert "reference tflite-fp32" in report and "torch-fp32" in report
    assert report.count("## ") == 1  # one device table holding both students
