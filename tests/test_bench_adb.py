"""The adb target: benchmark_model output parsing and honest unavailability without adb."""
from __future__ import annotations

import shutil

import pytest

from runtime_bench.targets import (AdbTarget, BenchmarkOutputError, parse_benchmark_model_output,
                                   target_from_dict)

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
