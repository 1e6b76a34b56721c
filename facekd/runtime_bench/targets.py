"""Where artifacts run: this machine, a host reached over ssh, or an Android device over adb.

``LocalTarget`` and ``SshTarget`` run the same JSON-lines worker (:mod:`facekd.runtime_bench.worker`);
files travel as paths (local) or by ``scp`` (ssh). ``AdbTarget`` cannot run Python: it pushes
the model and a user-supplied TFLite ``benchmark_model`` binary and parses its output, so it
measures latency of ``.tflite`` artifacts only.
"""
from __future__ import annotations

import io
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .client import WorkerClient
from .latency import LatencyStats, TimingPlan, cpu_features
from facekd.core.errors import FacekdError, InputError

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WORKER_PACKAGES = ("facekd/core", "facekd/export", "facekd/runtime_bench")  # the worker and its runners: no training code
WORKER_BUNDLE_NAME = "facekd_worker.zip"


class TargetError(FacekdError, RuntimeError):
    """A target that cannot be reached or used; the message says what failed."""


def _python_path(extra: str) -> str:
    current = os.environ.get("PYTHONPATH")
    return os.pathsep.join([extra, current]) if current else extra


def run_tool(command: list[str], what: str, timeout_s: float, missing: str) -> str:
    """Run a host tool (ssh, scp, adb); any failure is a one-line TargetError naming ``what``."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError:
        raise TargetError(missing) from None
    except subprocess.TimeoutExpired:
        raise TargetError(f"{what} timed out after {timeout_s:.0f} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines()
                or [f"exit code {done.returncode}"])[-1]
        raise TargetError(f"{what} failed: {last}")
    return done.stdout


class LocalTarget:
    """This machine. ``python`` is the default interpreter for workers (this one if omitted)."""

    def __init__(self, python: str | None = None):
        self.python = python or sys.executable
        self.name = "local"

    def describe(self) -> str:
        return f"local ({self.python})"

    def unavailable_reason(self) -> str | None:
        return None

    def start_worker(self, python: str | None = None, timeout_s: float = 300.0) -> WorkerClient:
        env = {**os.environ, "PYTHONPATH": _python_path(str(PROJECT_ROOT))}
        command = [python or self.python, "-m", "facekd.runtime_bench.worker"]
        return WorkerClient(command, timeout_s=timeout_s, env=env, description=f"local worker ({command[0]})")

    def put(self, local: Path) -> str:
        return str(Path(local).resolve())

    send = put  # a one-off input: locally, like any other file, used where it lies

    def remote_path_for(self, local: Path) -> str:
        return str(Path(local).resolve())

    def get(self, remote: str, local: Path) -> None:
        if Path(remote).resolve() != Path(local).resolve():
            shutil.copyfile(remote, local)

    def close(self) -> None:
        """Nothing to clean up locally."""


def worker_bundle() -> bytes:
    """A zip of the packages a remote worker imports (Python source only; zipimport loads it)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.write(PROJECT_ROOT / "facekd" / "__init__.py", "facekd/__init__.py")
        for package in WORKER_PACKAGES:
            folder = PROJECT_ROOT / package
            if not folder.is_dir():
                continue
            for source in sorted(folder.rglob("*.py")):
                bundle.write(source, source.relative_to(PROJECT_ROOT).as_posix())
    return buffer.getvalue()


class SshTarget:
    """A host reached with OpenSSH: artifacts and the worker bundle are copied with ``scp`` into
    ``remote_dir`` and the worker runs as ``<python> -m facekd.runtime_bench.worker`` over ``ssh``.

    The remote Python needs numpy and the runtimes of the formats to measure (e.g. onnxruntime);
    it needs no project install. ``options`` are extra ``-o`` settings for ssh and scp. With
    ``multiplex`` every ssh/scp call reuses one authenticated connection (OpenSSH ControlMaster),
    closed by :meth:`close`.
    """

    def __init__(self, host: str, user: str | None = None, port: int = 22, python: str = "python3",
                 remote_dir: str = "/tmp/facekd-bench", identity_file: str | os.PathLike | None = None,
                 options: Sequence[str] = (), connect_timeout_s: int = 15, multiplex: bool = True):
        self.host, self.user, self.port = host, user, int(port)
        self.python, self.remote_dir = python, remote_dir.rstrip("/")
        self.identity_file = str(identity_file) if identity_file else None
        self.options = list(options)
        self.connect_timeout_s = connect_timeout_s
        self.multiplex = multiplex
        self._control_dir: str | None = None
        self.name = f"ssh:{self.destination}:{self.port}"
        self._prepared = False
        self._copied: dict[tuple[str, int, int], str] = {}

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def describe(self) -> str:
        return f"ssh {self.destination} port {self.port} ({self.python})"

    def _common_options(self) -> list[str]:
        options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout_s}"]
        if self.identity_file:
            options += ["-i", self.identity_file, "-o", "IdentitiesOnly=yes"]
        for option in self.options:
            options += ["-o", option]
        if self.multiplex:
            if self._control_dir is None:
                self._control_dir = tempfile.mkdtemp(prefix="fkssh-")  # short: socket paths max ~100 chars
            options += ["-o", "ControlMaster=auto", "-o", f"ControlPath={self._control_dir}/%C",
                        "-o", "ControlPersist=300"]
        return options

    def ssh_command(self, remote_command: str) -> list[str]:
        return ["ssh", "-p", str(self.port), *self._common_options(), self.destination, remote_command]

    def _run(self, command: list[str], what: str, timeout_s: float = 120.0) -> str:
        return run_tool(command, f"{what} on {self.destination}:{self.port}", timeout_s,
                        missing=f"{command[0]} is not installed: install openssh-client")

    def _scp(self, source: str, target: str, what: str, recursive: bool = False) -> None:
        flags = ["-q", "-r"] if recursive else ["-q"]
        self._run(["scp", *flags, "-P", str(self.port), *self._common_options(), source, target], what)

    def unavailable_reason(self) -> str | None:
        for tool in ("ssh", "scp"):
            if shutil.which(tool) is None:
                return f"{tool} not on PATH: install openssh-client"
        try:
            self._run(self.ssh_command("true"), "ssh connection test", timeout_s=self.connect_timeout_s + 15)
        except TargetError as exc:
            return str(exc)
        return None

    def prepare(self) -> None:
        """Create ``remote_dir`` and copy the worker bundle there (once per target object)."""
        if self._prepared:
            return
        quoted = shlex.quote(self.remote_dir)
        self._run(self.ssh_command(f"mkdir -p {quoted}/files {quoted}/io"), "creating the remote folder")
        with tempfile.TemporaryDirectory(prefix="facekd-bundle-") as folder:
            bundle = Path(folder) / WORKER_BUNDLE_NAME
            bundle.write_bytes(worker_bundle())
            self._scp(str(bundle), f"{self.destination}:{self.remote_dir}/{WORKER_BUNDLE_NAME}", "copying the worker")
        self._prepared = True

    def start_worker(self, python: str | None = None, timeout_s: float = 300.0) -> WorkerClient:
        self.prepare()
        folder = shlex.quote(self.remote_dir)
        bundle = shlex.quote(f"{self.remote_dir}/{WORKER_BUNDLE_NAME}")
        remote = f"cd {folder} && PYTHONPATH={bundle} exec {shlex.quote(python or self.python)} -m facekd.runtime_bench.worker"
        return WorkerClient(self.ssh_command(remote), timeout_s=timeout_s,
                            description=f"ssh worker on {self.destination}:{self.port}")

    def put(self, local: Path) -> str:
        """Copy a file or folder (e.g. ``.mlpackage``) into ``remote_dir/files`` once per unchanged
        version; return its remote path."""
        self.prepare()
        local = Path(local).resolve()
        stat = local.stat()
        key = (str(local), stat.st_size, stat.st_mtime_ns)
        if key not in self._copied:
            remote = f"{self.remote_dir}/files/{len(self._copied)}-{local.name}"
            self._scp(str(local), f"{self.destination}:{remote}", f"copying {local.name}", recursive=local.is_dir())
            self._copied[key] = remote
        return self._copied[key]

    def send(self, local: Path) -> str:
        """Copy a one-off input file into the exchange folder (``io/``, removed by :meth:`close`),
        replacing one of the same name; return its remote path. Unlike :meth:`put` nothing is kept."""
        remote = self.remote_path_for(local)
        self._scp(str(Path(local).resolve()), f"{self.destination}:{remote}", f"copying {Path(local).name}")
        return remote

    def remote_path_for(self, local: Path) -> str:
        self.prepare()
        return f"{self.remote_dir}/io/{Path(local).name}"

    def get(self, remote: str, local: Path) -> None:
        self._scp(f"{self.destination}:{remote}", str(local), f"fetching {Path(remote).name}")

    def close(self) -> None:
        """Remove the exchanged inputs/outputs (keep the bundle and artifacts for the next run) and
        stop the shared connection."""
        if self._prepared:
            try:
                self._run(self.ssh_command(f"rm -rf {shlex.quote(self.remote_dir + '/io')}"), "cleaning up")
            except TargetError as exc:
                logger.warning("%s", exc)
        if self._control_dir is not None:
            try:
                subprocess.run(["ssh", "-O", "exit", "-p", str(self.port), *self._common_options(), self.destination],
                               capture_output=True, timeout=30)
            except (OSError, subprocess.SubprocessError) as exc:
                logger.warning("could not stop the shared ssh connection: %s", exc)
            shutil.rmtree(self._control_dir, ignore_errors=True)
            self._control_dir = None


_NUMBER = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_SUMMARY = re.compile(
    rf"Inference timings in us: Init: (?P<init>{_NUMBER}), First inference: (?P<first>{_NUMBER}), "
    rf"Warmup \(avg\): (?P<warmup>{_NUMBER}), Inference \(avg\): (?P<avg>{_NUMBER})"
)
_RUNS = re.compile(
    rf"count=(?P<count>\d+) first=(?P<first>{_NUMBER}) curr=(?P<curr>{_NUMBER}) min=(?P<min>{_NUMBER}) "
    rf"max=(?P<max>{_NUMBER}) avg=(?P<avg>{_NUMBER}) std=(?P<std>{_NUMBER})"
    rf"(?: p5=(?P<p5>{_NUMBER}) median=(?P<median>{_NUMBER}) p95=(?P<p95>{_NUMBER}))?"
)
_MEMORY = (
    re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: (?P<mb>{_NUMBER})"),
    re.compile(rf"(?:Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\): "
               rf"init={_NUMBER} overall=(?P<mb>{_NUMBER})"),
)


class BenchmarkOutputError(FacekdError, ValueError):
    """benchmark_model output without the timing summary (it failed); holds its last line."""


@dataclass
class BenchmarkModelTimings:
    """What TFLite's ``benchmark_model`` prints, in microseconds (memory in MB)."""

    init_us: float
    first_us: float
    warmup_avg_us: float
    inference_avg_us: float
    count: int | None = None
    min_us: float | None = None
    max_us: float | None = None
    std_us: float | None = None
    p5_us: float | None = None
    median_us: float | None = None
    p95_us: float | None = None
    peak_memory_mb: float | None = None

    def to_latency(self, batch: int = 1) -> LatencyStats:
        """As LatencyStats in ms; p90/p99 are ``None`` (the tool reports p5/median/p95 only)."""
        mean = self.inference_avg_us / 1000.0
        return LatencyStats(
            init_ms=self.init_us / 1000.0,
            first_ms=self.first_us / 1000.0,
            mean=mean,
            p50=self.median_us / 1000.0 if self.median_us is not None else None,
            p90=None,
            p99=None,
            std=self.std_us / 1000.0 if self.std_us is not None else None,
            n=self.count or 0,
            throughput=batch * 1000.0 / mean if mean > 0 else float("inf"),
        )


def parse_benchmark_model_output(text: str) -> BenchmarkModelTimings:
    """Parse ``benchmark_model`` output (log prefixes such as ``INFO:`` are fine).

    The summary line gives init/first/warm-up/average; the last ``count=… first=…`` line is the
    timed phase (std, min/max, and p5/median/p95 when the build prints them); memory comes from
    whichever peak-memory line the version prints.
    """
    summary = _SUMMARY.search(text)
    if summary is None:
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        raise BenchmarkOutputError(
            f"benchmark_model printed no timing summary; last line: {lines[-1] if lines else '(no output)'}")
    timings = BenchmarkModelTimings(
        init_us=float(summary["init"]), first_us=float(summary["first"]),
        warmup_avg_us=float(summary["warmup"]), inference_avg_us=float(summary["avg"]),
    )
    runs = list(_RUNS.finditer(text))
    if runs:
        last = runs[-1]
        timings.count = int(last["count"])
        timings.min_us, timings.max_us, timings.std_us = float(last["min"]), float(last["max"]), float(last["std"])
        if last["median"] is not None:
            timings.p5_us, timings.median_us, timings.p95_us = (float(last[k]) for k in ("p5", "median", "p95"))
    for pattern in _MEMORY:
        memory = pattern.search(text)
        if memory:
            timings.peak_memory_mb = float(memory["mb"])
            break
    return timings


class AdbTarget:
    """An Android device: runs TFLite's ``benchmark_model`` (which the user supplies, built for
    the device's ABI) on pushed ``.tflite`` artifacts. Latency only: no accuracy on device."""

    suffixes = (".tflite",)

    def __init__(self, serial: str | None = None, benchmark_binary: str | os.PathLike | None = None,
                 remote_dir: str = "/data/local/tmp/facekd", adb: str = "adb"):
        self.serial = serial
        self.benchmark_binary = Path(benchmark_binary) if benchmark_binary else None
        self.remote_dir = remote_dir.rstrip("/")
        self.adb = adb
        self.name = f"adb:{serial or 'default'}"
        self._pushed: dict[str, str] = {}

    def describe(self) -> str:
        return f"adb device {self.serial or '(default)'} with {self.benchmark_binary}"

    def _adb(self, *args: str, timeout_s: float = 600.0) -> str:
        command = [self.adb, *(["-s", self.serial] if self.serial else []), *args]
        return run_tool(command, f"adb {' '.join(args[:2])}", timeout_s,
                        missing=f"{self.adb} not on PATH: install Android platform-tools")

    def unavailable_reason(self) -> str | None:
        if shutil.which(self.adb) is None:
            return f"{self.adb} not on PATH: install Android platform-tools"
        if self.benchmark_binary is None or not self.benchmark_binary.is_file():
            return "no benchmark_model binary: pass benchmark_binary (TFLite's benchmark_model for the device ABI)"
        try:
            state = self._adb("get-state", timeout_s=20).strip()
        except TargetError as exc:
            return str(exc)
        return None if state == "device" else f"adb device state is {state!r}, not 'device'"

    def device_info(self) -> dict:
        def prop(name: str) -> str:
            return self._adb("shell", "getprop", name, timeout_s=20).strip()

        cores = self._adb("shell", "cat", "/sys/devices/system/cpu/present", timeout_s=20).strip()
        last_core = cores.rsplit("-", 1)[-1]
        return {
            "name": f"{prop('ro.product.manufacturer')} {prop('ro.product.model')}".strip(),
            "cpu": prop("ro.soc.model") or prop("ro.board.platform") or prop("ro.product.cpu.abi"),
            "cores": int(last_core) + 1 if last_core.isdigit() else None,
            "isa": cpu_features(self._adb("shell", "cat", "/proc/cpuinfo", timeout_s=20)),
            "os": f"Android {prop('ro.build.version.release')}",
            "system": "Android",
            "machine": prop("ro.product.cpu.abi"),
            "python": None,
            "load": self._load_average(),
        }

    def _load_average(self) -> float | None:
        fields = self._adb("shell", "cat", "/proc/loadavg", timeout_s=20).split()
        return float(fields[0]) if fields else None

    def _push(self, local: Path) -> str:
        local = Path(local).resolve()
        if str(local) not in self._pushed:
            remote = f"{self.remote_dir}/{local.name}"
            self._adb("shell", "mkdir", "-p", self.remote_dir, timeout_s=30)
            self._adb("push", str(local), remote)
            self._pushed[str(local)] = remote
        return self._pushed[str(local)]

    def benchmark(self, model: Path, threads: int, plan: TimingPlan) -> tuple[BenchmarkModelTimings, float | None, float | None]:
        """Run benchmark_model on ``model``; returns (timings, load before, load after)."""
        binary = self._push(self.benchmark_binary)
        self._adb("shell", "chmod", "755", binary, timeout_s=30)
        remote_model = self._push(model)
        load_before = self._load_average()
        output = self._adb(
            "shell", binary, f"--graph={remote_model}", f"--num_threads={threads}",
            f"--warmup_runs={plan.warmup_count}", f"--warmup_min_secs={plan.warmup_seconds}",
            f"--num_runs={plan.min_runs}", f"--min_secs={plan.min_seconds}", f"--max_secs={plan.max_seconds}",
            timeout_s=plan.max_seconds * 3 + 120,
        )
        load_after = self._load_average()
        return parse_benchmark_model_output(output), load_before, load_after

    def close(self) -> None:
        """Leave pushed files for the next run."""


Target = LocalTarget | SshTarget | AdbTarget


def target_from_dict(spec: dict) -> Target:
    """Build a target from config: ``{"kind": "local"|"ssh"|"adb", ...constructor arguments}``."""
    spec = dict(spec)
    kind = spec.pop("kind", "local")
    makers = {"local": LocalTarget, "ssh": SshTarget, "adb": AdbTarget}
    if kind not in makers:
        raise InputError(f"unknown target kind {kind!r}: use one of {sorted(makers)}")
    try:
        return makers[kind](**spec)
    except TypeError as exc:
        raise InputError(f"bad settings for a {kind} target: {exc}") from None
