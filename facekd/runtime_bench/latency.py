"""Latency methodology: warm-up, timed runs, summary statistics, host facts, disturbance rule.

Standard library only, because the worker imports it in foreign environments and on remote hosts.

Method (the same shape as TFLite's ``benchmark_model``, so local, ssh and adb numbers compare):

1. ``init_ms``: wall time of the runner's ``load`` (file read, graph build, delegate set-up).
2. ``first_ms``: wall time of the first ``run`` after ``load`` (lazy allocation, JIT, caches).
3. Warm-up: keep running until at least ``warmup_count`` runs AND ``warmup_seconds`` have passed.
4. Timed runs: keep running until at least ``min_runs`` runs AND ``min_seconds`` have passed,
   but stop after ``max_seconds`` (at least one run is always timed).
5. Statistics over the timed runs only: mean, p50/p90/p99 (linear interpolation, numpy's
   default), population std, throughput = batch × 1000 / mean_ms images per second.

A run is flagged *disturbed* (see :func:`disturbance`) when other work competed for the CPU or
the tail is long: other processes used more than 0.25 core on average during the timed runs
(host busy time from /proc/stat minus the worker's own CPU time; where /proc/stat is missing,
the 1-minute load average before or after above ``cores × 0.5``), or p99 / p50 > 2.
"""
from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields
from typing import Callable, Sequence

from facekd.export.host import cpu_features, peak_gmacs  # noqa: F401  (cpu_features re-exported: targets and tests read it here)
from facekd.core.errors import InputError

LOAD_PER_CORE_LIMIT = 0.5
OTHER_CORES_LIMIT = 0.25
TAIL_RATIO_LIMIT = 2.0


@dataclass(frozen=True)
class TimingPlan:
    """How long to warm up and how much to time; see the module docstring for the rules."""

    warmup_count: int = 5
    warmup_seconds: float = 0.5
    min_runs: int = 50
    min_seconds: float = 1.0
    max_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.warmup_count < 0 or self.warmup_seconds < 0:
            raise InputError("warmup_count and warmup_seconds must be >= 0")
        if self.min_runs < 1 or self.min_seconds < 0:
            raise InputError("min_runs must be >= 1 and min_seconds >= 0")
        if self.max_seconds <= 0:
            raise InputError("max_seconds must be > 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TimingPlan":
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass
class TimedRuns:
    """Raw per-run wall times in milliseconds."""

    warmup_ms: list[float]
    times_ms: list[float]


def time_runs(run: Callable[[], object], plan: TimingPlan, clock: Callable[[], float] = time.perf_counter) -> TimedRuns:
    """Warm ``run`` up, then time it, following ``plan``."""

    def timed() -> float:
        start = clock()
        run()
        return (clock() - start) * 1000.0

    warmup: list[float] = []
    started = clock()
    while len(warmup) < plan.warmup_count or (clock() - started) < plan.warmup_seconds:
        if clock() - started >= plan.max_seconds:
            break
        warmup.append(timed())

    times: list[float] = []
    started = clock()
    while not times or len(times) < plan.min_runs or (clock() - started) < plan.min_seconds:
        if times and clock() - started >= plan.max_seconds:
            break
        times.append(timed())
    return TimedRuns(warmup_ms=warmup, times_ms=times)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation between closest ranks.

    With ``x`` sorted ascending and ``n`` values: ``h = (n - 1) · q / 100``,
    ``p = x[⌊h⌋] + (h − ⌊h⌋) · (x[⌊h⌋ + 1] − x[⌊h⌋])`` (Hyndman & Fan type 7, numpy's default).
    """
    if not values:
        raise InputError("percentile of an empty sequence")
    if not 0.0 <= q <= 100.0:
        raise InputError(f"percentile q must be within 0..100, got {q}")
    ordered = sorted(float(v) for v in values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


@dataclass
class LatencyStats:
    """Summary of timed runs, in milliseconds (throughput in images per second).

    Fields the source cannot provide (e.g. p90/p99 from ``benchmark_model``) are ``None``.
    """

    init_ms: float | None
    first_ms: float | None
    mean: float
    p50: float | None
    p90: float | None
    p99: float | None
    std: float | None
    n: int
    throughput: float

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(times_ms: Sequence[float], batch: int, init_ms: float | None = None,
              first_ms: float | None = None) -> LatencyStats:
    """Statistics of per-run times for a batch of ``batch`` images; std is the population std."""
    if not times_ms:
        raise InputError("no timed runs to summarise")
    count = len(times_ms)
    mean = sum(times_ms) / count
    std = math.sqrt(sum((t - mean) ** 2 for t in times_ms) / count)
    return LatencyStats(
        init_ms=init_ms,
        first_ms=first_ms,
        mean=mean,
        p50=percentile(times_ms, 50),
        p90=percentile(times_ms, 90),
        p99=percentile(times_ms, 99),
        std=std,
        n=count,
        throughput=batch * 1000.0 / mean if mean > 0 else math.inf,
    )


def disturbance(load_before: float | None, load_after: float | None, cores: int | None,
                p50: float | None, p99: float | None, other_cores: float | None = None) -> str | None:
    """Why a measurement is unreliable, or ``None`` when it is clean.

    Rule: other processes used more than ``OTHER_CORES_LIMIT`` cores on average while the runs
    were timed (``other_cores``; when it is unknown, the 1-minute load average before or after
    above ``cores × 0.5`` stands in — coarser, since it also counts the benchmark itself), or
    ``p99 / p50 > 2`` (a long tail: preemption, throttling, GC).
    """
    reasons = []
    if other_cores is not None:
        if other_cores > OTHER_CORES_LIMIT:
            reasons.append(f"other processes used {other_cores:.2f} cores during timing (> {OTHER_CORES_LIMIT})")
    elif cores:
        limit = cores * LOAD_PER_CORE_LIMIT
        loads = [load for load in (load_before, load_after) if load is not None]
        if loads and max(loads) > limit:
            reasons.append(f"load average {max(loads):.2f} > {limit:.2f} ({cores} cores × {LOAD_PER_CORE_LIMIT})")
    if p50 and p99 is not None and p99 / p50 > TAIL_RATIO_LIMIT:
        reasons.append(f"p99/p50 = {p99 / p50:.2f} > {TAIL_RATIO_LIMIT}")
    return "; ".join(reasons) or None


def host_busy_seconds() -> float | None:
    """CPU seconds the whole host has spent busy since boot (Linux /proc/stat), else ``None``."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields_ = handle.readline().split()
    except OSError:
        return None
    if not fields_ or fields_[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields_[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OtherCpuMeter:
    """Average number of cores used by processes other than this one between start and stop."""

    def __init__(self) -> None:
        self.busy, self.own, self.wall = host_busy_seconds(), time.process_time(), time.perf_counter()

    def other_cores(self) -> float | None:
        busy = host_busy_seconds()
        if busy is None or self.busy is None:
            return None
        wall = time.perf_counter() - self.wall
        own = time.process_time() - self.own
        return max(0.0, (busy - self.busy - own) / wall) if wall > 0 else None


def load_average() -> float | None:
    """The 1-minute load average, or ``None`` where the OS has none (Windows)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def cpu_model() -> str:
    """A human-readable CPU name (Linux /proc/cpuinfo, macOS sysctl, else platform)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                    return value.strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True, timeout=5, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def host_info() -> dict:
    """Facts about the machine this process runs on, for the result's ``device`` block."""
    return {
        "name": platform.node(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "isa": cpu_features(),
        "peak_gmacs": peak_gmacs(),
        "os": platform.platform(),
        "system": platform.system(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "load": load_average(),
    }


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process in MiB.

    Linux: ``VmHWM`` of /proc/self/status, the high-water mark of this program's own memory
    (``ru_maxrss`` would also count the parent's RSS at fork time, inherited across exec).
    Elsewhere ``ru_maxrss`` (bytes on macOS, KiB on other Unixes).
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0
