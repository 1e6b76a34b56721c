"""Result schema round trip and validation, merging, Pareto front and report files."""
from __future__ import annotations

import base64
import json
import re

import pytest

from facekd.runtime_bench.report import pareto_front, scatter_points, write_report
from facekd.runtime_bench.results import (BenchResult, ResultSchemaError, Row, load_result, merge_results,
                                   save_result)


def _latency(p50: float) -> dict:
    return {"init_ms": 20.0, "first_ms": 40.0, "mean": p50 * 1.05, "p50": p50, "p90": p50 * 1.2,
            "p99": p50 * 1.5, "std": 0.4, "n": 50, "throughput": 1000 / (p50 * 1.05),
            "load_before": 0.3, "load_after": 0.4}


def _ok_row(artifact: str, acc: float, p50: float, threads: int = 1) -> Row:
    fmt, precision = artifact.split("-")
    return Row(artifact=artifact, format=fmt, precision=precision, runtime="default", status="ok",
               manifest_sha256="ab" * 32, size_bytes=1_500_000, threads=threads, batch=1,
               accuracy={"acc": acc, "std": 0.01, "tar_at_far": {"1e-01": 0.97, "1e-02": 0.9}, "auc": 0.99,
                         "threshold": 0.31},
               parity={"mean_cos": 0.9999, "worst_cos": 0.998, "flip_rate": 0.0025},
               latency=_latency(p50), memory={"peak_rss_mb": 140.0})


def make_result(name: str = "box", created: str = "2026-11-22T10:00:00+00:00") -> BenchResult:
    rows = [
        _ok_row("torch-fp32", 0.95, 15.0),
        _ok_row("onnx-fp32", 0.95, 10.0),
        _ok_row("onnx-int8", 0.948, 9.0),
        _ok_row("tflite-fp16", 0.94, 12.0),
        Row(artifact="coreml-fp16", format="coreml", precision="fp16", runtime="default", status="unavailable",
            reason="structure validated; parity/latency need macOS", threads=1, batch=1),
        Row(artifact="tflite-int8", format="tflite", precision="int8", runtime="default", status="failed",
            reason="local worker exited with code 3 during load", threads=1, batch=1),
        Row(artifact="onnx-int8-bad", format="onnx", precision="int8", runtime="default", status="rejected",
            reason="parity gate: worst cosine 0.92 < 0.99"),
    ]
    rows[1].disturbed, rows[1].disturbed_reason = True, "load average 1.70 > 1.00 (2 cores × 0.5)"
    rows[2].int8_scheme = "static-full-integer, 8-bit weights, int8-aware training (1 epochs)"
    rows[2].op_profile = {"runs": 20, "total_ms": 0.9, "ops": [
        {"name": "Conv_3", "type": "QLinearConv", "kernel": "CPUExecutionProvider", "ms": 0.5},
        {"name": "prelu_1", "type": "PRelu", "kernel": "CPUExecutionProvider", "ms": 0.4},
        {"name": "PReLU (ND) #3", "type": "PReLU (ND)", "kernel": "XNNPACK", "ms": 0.0}]}
    rows[3].op_profile = {"unavailable": "the LiteRT Python interpreter exposes no op profiler"}
    device = {"name": name, "cpu": "Test CPU", "cores": 2, "os": "Linux", "python": "3.11.9",
              "load_before": 0.5, "load_after": 0.7}
    return BenchResult(device=device, rows=rows, config={"threads": [1]}, target="local",
                       export_dir="/tmp/export", pairs={"name": "val_pairs", "count": 120}, created=created)


def test_result_round_trip(tmp_path):
    result = make_result()
    path = save_result(result, tmp_path / "result.json")
    loaded = load_result(path)
    assert loaded == result
    assert json.loads(path.read_text())["schema_version"] == 1


@pytest.mark.parametrize("corrupt, message", [
    (lambda d: d.update(schema_version=99), "schema_version"),
    (lambda d: d["rows"][0].update(status="great"), "status must be one of"),
    (lambda d: d["rows"][4].update(reason=None), "no reason"),
    (lambda d: d["rows"][0]["latency"].pop("p50"), r"rows\[0\].latency lacks p50"),
    (lambda d: d["rows"][0]["accuracy"].update(acc="high"), "rows\\[0\\].accuracy.acc: expected float, got 'high'"),
    (lambda d: d["rows"][0].update(threads=True), "rows\\[0\\].threads: expected int, got True"),
    (lambda d: d["device"].pop("cores"), "device lacks cores"),
    (lambda d: d["rows"][0].update(speed=1), "rows\\[0\\].speed: unknown field"),
    (lambda d: d["rows"][0].update(suites={"lfw": {**d["rows"][0]["accuracy"], "pairs": 10}}), "suites.lfw lacks flip_test"),
    (lambda d: d["rows"][0].update(suites=[]), "suites: expected a mapping"),
])
def test_result_validation_rejects(tmp_path, corrupt, message):
    data = make_result().to_dict()
    corrupt(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ResultSchemaError, match=message):
        load_result(path)


def test_save_refuses_invalid_result(tmp_path):
    result = make_result()
    result.rows[0].status = "maybe"
    with pytest.raises(ResultSchemaError):
        save_result(result, tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()


def test_load_result_errors_are_one_line(tmp_path):
    with pytest.raises(ResultSchemaError, match="does not exist"):
        load_result(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ResultSchemaError, match="is not JSON"):
        load_result(tmp_path / "x.json")


def test_merge_groups_devices_and_newer_rows_win(tmp_path):
    old = make_result("box", created="2026-11-22T10:00:00+00:00")
    new = make_result("box", created="2026-11-22T11:00:00+00:00")
    new.rows = [_ok_row("onnx-fp32", 0.95, 8.0)]
    phone = make_result("phone")
    paths = [save_result(r, tmp_path / f"{i}.json") for i, r in enumerate((new, phone, old))]
    devices = merge_results(paths)
    assert [d.label for d in devices] == ["box [local]", "phone [local]"]
    box = devices[0]
    assert len(box.rows) == len(old.rows)
    assert next(r for r in box.rows if r.artifact == "onnx-fp32").latency["p50"] == 8.0
    assert len(box.sources) == 2


def test_pareto_front():
    points = [(10.0, 0.95), (9.0, 0.94), (12.0, 0.96), (11.0, 0.93), (10.0, 0.95), (9.0, 0.90), (20.0, 0.96)]
    # (11, .93) is beaten by (10, .95); (9, .90) by (9, .94); (20, .96) by (12, .96)
    assert pareto_front(points) == [1, 0, 4, 2]
    assert pareto_front([]) == []
    assert pareto_front([(5.0, 0.5)]) == [0]


def test_scatter_points_use_latency_per_image():
    row = _ok_row("onnx-fp32", 0.95, 40.0)
    row.batch = 4
    failed = Row(artifact="x-fp32", format="x", precision="fp32", runtime="default", status="failed", reason="boom")
    (point,) = scatter_points([row, failed])
    assert point.latency_ms == pytest.approx(10.0) and point.accuracy == pytest.approx(95.0)


def test_report_files_contain_rows_and_embedded_plot(tmp_path):
    result_path = save_result(make_result(), tmp_path / "result.json")
    md_path, html_path = write_report([result_path], tmp_path / "report")
    markdown, page = md_path.read_text(), html_path.read_text()
    for text in (markdown, page):
        assert "box [local]" in text
        assert "95.00 ± 1.00 %" in text  # accuracy of torch-fp32
        assert "structure validated; parity/latency need macOS" in text
        assert "exited with code 3" in text
        assert "⚠ disturbed" in text
        assert "0.25 %" in text  # flip rate
        assert "int8: static-full-integer, 8-bit weights, int8-aware training (1 epochs)" in text  # which int8
        assert ("onnx-int8 (default, 1 thread, batch 1): 0.90 ms in ops per inference (20 profiled); slowest: "
                "Conv_3 [QLinearConv, CPUExecutionProvider] 0.500 ms, prelu_1 [PRelu, CPUExecutionProvider] 0.400 ms, "
                "PReLU (ND) #3 [XNNPACK] 0.000 ms") in text
        assert "tflite-fp16 (default, 1 thread, batch 1): no per-op profile (the LiteRT Python interpreter" in text
    assert markdown.count("✅ ok") == 4 and markdown.count("❎") == 2 and markdown.count("❌ failed") == 1
    assert re.search(r"\| onnx-int8 \| default \| 1 \| 1 \| ✅ ok \| 1\.43 MiB \|", markdown)
    png_name = re.search(r"\]\((scatter-[^)]+\.png)\)", markdown).group(1)
    assert (md_path.parent / png_name).read_bytes().startswith(b"\x89PNG")
    encoded = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    assert base64.b64decode(encoded).startswith(b"\x89PNG")
    assert "src=\"http" not in page and "<script" not in page


def _suite(acc: float, flip_test: bool) -> dict:
    return {"acc": acc, "std": 0.005, "tar_at_far": {"1e-01": 0.9}, "auc": 0.98, "threshold": 0.3, "pairs": 6000,
            "flip_test": flip_test}


def test_report_shows_one_accuracy_column_per_benchmark_set(tmp_path):
    result = make_result()
    result.rows[0].suites = {"lfw": _suite(0.991, True), "agedb_30": _suite(0.952, True)}
    result.rows[1].suites = {"lfw": _suite(0.989, True), "agedb_30": _suite(0.951, False)}
    loaded = load_result(save_result(result, tmp_path / "result.json"))
    assert loaded.rows[0].suites == result.rows[0].suites and loaded.rows[2].suites is None
    md_path, html_path = write_report([tmp_path / "result.json"], tmp_path / "report")
    markdown, page = md_path.read_text(), html_path.read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| artifact"))
    assert "| accuracy | lfw (flip-test on) | agedb_30 (flip-test mixed) | AUC |" in header
    lines = {line.split(" | ")[0][2:]: line for line in markdown.splitlines() if line.startswith("| ")}
    assert "| 95.00 ± 1.00 % | 99.10 ± 0.50 % | 95.20 ± 0.50 % (flip-test on) | 0.9900 |" in lines["torch-fp32"]
    assert "| 98.90 ± 0.50 % | 95.10 ± 0.50 % (flip-test off) |" in lines["onnx-fp32"]
    assert "| 94.80 ± 1.00 % | – | – | 0.9900 |" in lines["onnx-int8"]
    assert "Benchmark-set columns" in markdown
    assert "<th>lfw (flip-test on)</th><th>agedb_30 (flip-test mixed)</th>" in page
    assert "<td>99.10 ± 0.50 %</td><td>95.20 ± 0.50 % (flip-test on)</td>" in page


def test_results_written_before_suites_load_and_report_as_before(tmp_path):
    data = make_result().to_dict()
    for row in data["rows"]:
        del row["suites"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    assert all(row.suites is None for row in load_result(tmp_path / "old.json").rows)
    markdown = write_report([tmp_path / "old.json"], tmp_path / "report")[0].read_text()
    assert "| accuracy | AUC |" in markdown and "flip-test" not in markdown and "Benchmark-set" not in markdown
