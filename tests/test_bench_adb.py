"""The adb target: benchmark_model output parsing and honest unavailability without adb."""
from __future__ import annotations

import os
import shutil

import pytest

from facekd.runtime_bench.bench import BenchConfig, run_bench
from facekd.runtime_bench.latency import TimingPlan
from facekd.runtime_bench.results import load_result
from facekd.runtime_bench.targets import (AdbTarget, BenchmarkOutputError, parse_benchmark_model_output,
                                   target_from_dict)
from tests.test_bench_run import synthetic_pairs, write_manifest

# Shape of real TFLite benchmark_model output (a recent build, log-prefixed, with percentiles),
# as printed on device in public benchmark write-ups.
OUTPUT_WITH_PERCENTILES = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [4]
INFO: Graph: [/data/local/tmp/facekd/model.tflite]
INFO: Loaded model /data/local/tmp/facekd/model.tflite
INFO: The input model file size (MB): 4.61
INFO: Initialized session in 5.579ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=64 first=21870 curr=7411 min=7302 max=21870 avg=7826.2 std=1803 p5=7330 median=7522 p95=8104

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=133 first=7518 curr=7377 min=7281 max=9912 avg=7.51923e+03 std=301 p5=7299 median=7418 p95=8020

INFO: Inference timings in us: Init: 5579, First inference: 21870, Warmup (avg): 7826.2, Inference (avg): 7519.23
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=6.36328 overall=19.832
"""

# Older builds: no log prefix, no percentiles, a warm-up line without "first=".
OUTPUT_OLD = """\
STARTING!
Num threads: [1]
Graph: [/data/local/tmp/mobilenet.tflite]
Loaded model /data/local/tmp/mobilenet.tflite
Initialized session in 17.187ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=3512391

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798

Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, Inference (avg): 2.95034e+06
Peak memory footprint (MB): init=4.21094 overall=46.0859
"""


def test_parse_output_with_percentiles():
    timings = parse_benchmark_model_output(OUTPUT_WITH_PERCENTILES)
    assert (timings.init_us, timings.first_us, timings.warmup_avg_us) == (5579, 21870, 7826.2)
    assert timings.inference_avg_us == pytest.approx(7519.23)
    assert timings.count == 133  # the timed phase, not the warm-up line
    assert (timings.min_us, timings.max_us, timings.std_us) == (7281, 9912, 301)
    assert (timings.p5_us, timings.median_us, timings.p95_us) == (7299, 7418, 8020)
    assert timings.peak_memory_mb == pytest.approx(19.832)
    latency = timings.to_latency(batch=1)
    assert latency.init_ms == pytest.approx(5.579) and latency.first_ms == pytest.approx(21.87)
    assert latency.mean == pytest.approx(7.51923) and latency.p50 == pytest.approx(7.418)
    assert latency.p90 is None and latency.p99 is None and latency.n == 133
    assert latency.throughput == pytest.approx(1000 / 7.51923)


def test_parse_old_output_without_percentiles():
    timings = parse_benchmark_model_output(OUTPUT_OLD)
    assert timings.inference_avg_us == pytest.approx(2.95034e6)
    assert timings.count == 50 and timings.std_us == 109798
    assert timings.median_us is None and timings.to_latency().p50 is None
    assert timings.peak_memory_mb == pytest.approx(46.0859)


def test_parse_failure_reports_last_line():
    with pytest.raises(BenchmarkOutputError, match="Failed to allocate tensors"):
        parse_benchmark_model_output("STARTING!\nERROR: Failed to allocate tensors!\n")


@pytest.mark.skipif(shutil.which("adb") is not None, reason="adb is installed here")
def test_adb_unavailable_without_adb(tmp_path):
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    target = target_from_dict({"kind": "adb", "serial": "emulator-5554", "benchmark_binary": str(binary)})
    assert isinstance(target, AdbTarget)
    assert "adb not on PATH" in target.unavailable_reason()


def test_adb_needs_benchmark_binary(tmp_path, monkeypatch):
    fake_adb = tmp_path / "adb"
    fake_adb.write_text("#!/bin/sh\necho device\n")
    fake_adb.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert "benchmark_model" in AdbTarget(benchmark_binary=None).unavailable_reason()
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    assert AdbTarget(benchmark_binary=binary).unavailable_reason() is None


FAKE_ADB = """#!/bin/sh
# Stands in for adb talking to one phone: answers the queries AdbTarget makes and prints a saved
# benchmark_model output for the benchmark run; every call is logged.
echo "$@" >> "$FAKE_ADB_LOG"
if [ "$1" = "-s" ]; then shift 2; fi
case "$1" in
  get-state) echo device ;;
  push) exit 0 ;;
  shell)
    shift
    case "$1" in
      getprop)
        case "$2" in
          ro.product.manufacturer) echo Google ;;
          ro.product.model) echo Pixel 8 ;;
          ro.build.version.release) echo 14 ;;
          ro.product.cpu.abi) echo arm64-v8a ;;
          *) echo ;;
        esac ;;
      cat)
        case "$2" in
          /proc/loadavg) echo "0.20 0.30 0.40 1/900 4242" ;;
          /sys/devices/system/cpu/present) echo 0-8 ;;
        esac ;;
      mkdir|chmod) exit 0 ;;
      *) cat "$FAKE_BENCHMARK_OUTPUT" ;;
    esac ;;
esac
"""


def test_run_bench_on_adb_target_parses_benchmark_model(tmp_path, monkeypatch):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "adb").write_text(FAKE_ADB)
    (tmp_path / "bin" / "adb").chmod(0o755)
    (tmp_path / "output.txt").write_text(OUTPUT_WITH_PERCENTILES)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_LOG", str(tmp_path / "adb.log"))
    monkeypatch.setenv("FAKE_BENCHMARK_OUTPUT", str(tmp_path / "output.txt"))
    export = tmp_path / "export"
    (export / "tflite-fp32").mkdir(parents=True)
    (export / "tflite-fp32" / "model.tflite").write_bytes(b"TFL3 tiny stand-in model")
    write_manifest(export / "tflite-fp32", "tflite", "fp32", "model.tflite", shape=[1, 112, 112, 3], layout="NHWC")
    (export / "onnx-fp32").mkdir()
    (export / "onnx-fp32" / "model.onnx").write_bytes(b"onnx stand-in")
    write_manifest(export / "onnx-fp32", "onnx", "fp32", "model.onnx")
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")

    config = BenchConfig(threads=[1, 4], batch=[1], timing=TimingPlan(warmup_count=2, warmup_seconds=0.5, min_runs=20,
                                                                      min_seconds=1.0, max_seconds=30.0))
    target = AdbTarget(serial="R5CX", benchmark_binary=binary)
    result = load_result(run_bench(export, synthetic_pairs(), config, tmp_path / "phone.json", target=target,
                                   progress=False))
    assert result.device["name"] == "Google Pixel 8" and result.device["cores"] == 9
    assert result.device["os"] == "Android 14" and result.device["load_before"] == 0.2
    rows = {(row.artifact, row.threads): row for row in result.rows}
    assert rows[("onnx-fp32", None)].status == "unavailable"
    for threads in (1, 4):
        row = rows[("tflite-fp32", threads)]
        assert row.status == "ok" and row.runtime == "benchmark_model" and row.accuracy is None
        assert row.latency["mean"] == pytest.approx(7.51923) and row.latency["p50"] == pytest.approx(7.418)
        assert row.memory["peak_rss_mb"] == pytest.approx(19.832)
    log = (tmp_path / "adb.log").read_text()
    assert "--num_threads=4" in log and "--num_runs=20" in log and "--warmup_runs=2" in log
    assert "-s R5CX" in log
