"""Parent side of the worker protocol (see :mod:`facekd.runtime_bench.worker`).

A :class:`WorkerClient` owns one worker process (a local subprocess or an ``ssh`` process that
runs the worker remotely). Replies are read on a background thread so every request has a
timeout; a worker that dies or hangs becomes a :class:`WorkerDied` carrying the exit code and the
last line it wrote to stderr, never a crash of the benchmark.
"""
from __future__ import annotations

import collections
import json
import queue
import signal
import subprocess
import threading
from typing import Sequence

from .worker import PROTOCOL_VERSION

STDERR_LINES_KEPT = 40


class WorkerError(RuntimeError):
    """The worker answered a request with a failure; ``kind`` is "unavailable" or "error"."""

    def __init__(self, message: str, kind: str = "error"):
        super().__init__(message)
        self.kind = kind


class WorkerDied(RuntimeError):
    """The worker process exited, hung past its timeout, or broke the protocol."""


def _exit_description(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class WorkerClient:
    """Start ``command`` and talk to the worker it runs; use as a context manager."""

    def __init__(self, command: Sequence[str], timeout_s: float = 300.0, env: dict | None = None,
                 cwd: str | None = None, description: str = "worker"):
        self.description = description
        self.timeout_s = timeout_s
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES_KEPT)
        self._replies: queue.Queue[str | None] = queue.Queue()
        try:
            self.process = subprocess.Popen(
                list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, encoding="utf-8", errors="replace", bufsize=1, env=env, cwd=cwd,
            )
        except OSError as exc:
            raise WorkerDied(f"{description} could not start: {exc.strerror or exc}") from None
        self._stderr_thread = threading.Thread(target=self._pump_stderr, daemon=True)
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        self._stderr_thread.start()
        self.hello = self._read_reply("hello")
        if self.hello.get("protocol") != PROTOCOL_VERSION:
            self.kill()
            raise WorkerDied(f"{description} speaks protocol {self.hello.get('protocol')}, expected {PROTOCOL_VERSION}")

    def _pump_stdout(self) -> None:
        for line in self.process.stdout:
            self._replies.put(line)
        self._replies.put(None)

    def _pump_stderr(self) -> None:
        for line in self.process.stderr:
            if line.strip():
                self.stderr_tail.append(line.rstrip())

    def last_stderr_line(self) -> str:
        return self.stderr_tail[-1] if self.stderr_tail else ""

    def _died(self, what: str) -> WorkerDied:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.process.returncode
        self._stderr_thread.join(timeout=5)
        last = self.last_stderr_line()
        detail = f"; last stderr: {last}" if last else ""
        return WorkerDied(f"{self.description} {_exit_description(code)} during {what}{detail}")

    def _read_reply(self, what: str) -> dict:
        try:
            line = self._replies.get(timeout=self.timeout_s)
        except queue.Empty:
            self.kill()
            raise WorkerDied(f"{self.description} gave no answer to {what} within {self.timeout_s:.0f} s") from None
        if line is None:
            raise self._died(what)
        try:
            reply = json.loads(line)
        except json.JSONDecodeError:
            self.kill()
            raise WorkerDied(f"{self.description} broke the protocol during {what}: {line.strip()[:200]!r}") from None
        return reply

    def request(self, op: str, **fields) -> dict:
        """Send one request; return the reply or raise WorkerError / WorkerDied."""
        try:
            self.process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._died(op) from None
        reply = self._read_reply(op)
        if not reply.get("ok"):
            raise WorkerError(reply.get("error") or "worker failed without a message", reply.get("kind", "error"))
        return reply

    def close(self) -> None:
        """Say bye and wait briefly; kill the process if it lingers."""
        if self.process.poll() is None:
            try:
                self.request("bye")
            except (WorkerError, WorkerDied):
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            try:
                stream.close()
            except OSError:
                pass

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "WorkerClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
