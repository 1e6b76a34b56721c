"""Latency statistics, timing plan and disturbance rule of runtime_bench.latency."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facekd.runtime_bench.latency import (TimingPlan, disturbance, host_info, peak_rss_mb, percentile, summarize,
                                   time_runs)


@pytest.mark.parametrize("size", [1, 2, 3, 10, 101])
def test_percentile_matches_numpy_linear(size):
    values = np.random.default_rng(size).gamma(2.0, 3.0, size=size)
    for q in (0, 1, 5, 25, 50, 90, 95, 99, 99.9, 100):
        assert percentile(values.tolist(), q) == pytest.approx(np.percentile(values, q, method="linear"), rel=1e-12)


def test_percentile_rejects_empty_and_out_of_range():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_matches_numpy():
    times = np.random.default_rng(0).normal(10.0, 1.5, size=57).clip(1).tolist()
    stats = summarize(times, batch=4, init_ms=12.0, first_ms=30.0)
    assert stats.n == 57
    assert stats.mean == pytest.approx(np.mean(times))
    assert stats.std == pytest.approx(np.std(times))
    assert stats.p50 == pytest.approx(np.percentile(times, 50))
    assert stats.p90 == pytest.approx(np.percentile(times, 90))
    assert stats.p99 == pytest.approx(np.percentile(times, 99))
    assert stats.throughput == pytest.approx(4 * 1000.0 / np.mean(times))
    assert (stats.init_ms, stats.first_ms) == (12.0, 30.0)


class FakeClock:
    """Each run takes ``step`` seconds of fake time."""

    def __init__(self, step: float):
        self.now, self.step, self.calls = 0.0, step, 0

    def __call__(self) -> float:
        return self.now

    def run(self) -> None:
        self.calls += 1
        self.now += self.step


def test_time_runs_needs_both_count_and_time():
    clock = FakeClock(step=0.0625)
    runs = time_runs(clock.run, TimingPlan(warmup_count=3, warmup_seconds=0.25, min_runs=5, min_seconds=0.5), clock=clock)
    assert len(runs.warmup_ms) == 4  # 0.25 s of 62.5 ms runs outlasts 3 runs
    assert len(runs.times_ms) == 8  # 0.5 s outlasts 5 runs
    assert runs.times_ms[0] == pytest.approx(62.5)

    clock = FakeClock(step=0.5)
    runs = time_runs(clock.run, TimingPlan(warmup_count=2, warmup_seconds=0.1, min_runs=7, min_seconds=0.2), clock=clock)
    assert (len(runs.warmup_ms), len(runs.times_ms)) == (2, 7)


def test_time_runs_stops_at_max_seconds():
    clock = FakeClock(step=1.0)
    runs = time_runs(clock.run, TimingPlan(warmup_count=0, warmup_seconds=0, min_runs=1000, min_seconds=0, max_seconds=5),
                     clock=clock)
    assert len(runs.times_ms) == 5


def test_disturbance_rule():
    assert disturbance(0.2, 0.4, cores=2, p50=10.0, p99=15.0) is None
    assert "load average" in disturbance(1.5, 0.4, cores=2, p50=10.0, p99=15.0)
    assert "p99/p50" in disturbance(0.1, 0.1, cores=8, p50=10.0, p99=25.0)
    assert disturbance(None, None, cores=None, p50=None, p99=None) is None


def test_host_info_has_device_fields():
    info = host_info()
    assert info["cores"] >= 1 and info["cpu"] and info["python"].count(".") == 2
    assert {"name", "os", "load"} <= set(info)


def test_peak_rss_tracks_this_process_only():
    """A fresh interpreter starts low (the parent's memory is not counted) and sees its own growth."""
    script = ("import numpy as np; from facekd.runtime_bench.latency import peak_rss_mb; before = peak_rss_mb(); "
              "block = np.ones(64 * 2**20 // 8); print(before, peak_rss_mb())")
    ballast = np.ones(256 * 2**20 // 8)  # make this parent clearly bigger than the child
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    before, after = map(float, done.stdout.split())
    assert before < 200 and after - before > 48
    assert peak_rss_mb() > 256
    del ballast


def test_disturbance_prefers_measured_other_cpu_over_load_average():
    from facekd.runtime_bench.latency import disturbance

    # a high load average (our own worker counts in it) is not a disturbance when others were idle
    assert disturbance(1.9, 1.9, 2, 10.0, 11.0, other_cores=0.05) is None
    assert "other processes used 0.90 cores" in disturbance(0.1, 0.1, 2, 10.0, 11.0, other_cores=0.9)
    assert "load average" in disturbance(1.9, 1.9, 2, 10.0, 11.0, other_cores=None)


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux /proc/stat")
def test_other_cpu_meter_sees_a_busy_sibling_and_not_itself():
    import time as _time

    from facekd.runtime_bench.latency import OtherCpuMeter

    meter = OtherCpuMeter()
    deadline = _time.perf_counter() + 0.5
    while _time.perf_counter() < deadline:  # our own busy loop must not count
        pass
    alone = meter.other_cores()
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<3: pass"])
    try:
        _time.sleep(0.3)
        meter = OtherCpuMeter()
        _time.sleep(1.0)
        with_sibling = meter.other_cores()
    finally:
        busy.wait()
    assert with_sibling > 0.6
    assert with_sibling > alone + 0.5
