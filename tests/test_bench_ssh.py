"""SshTarget against a real OpenSSH server started on loopback for the test.

Needs ``/usr/sbin/sshd`` (Debian/Ubuntu package ``openssh-server``) and ``ssh``/``scp``/
``ssh-keygen`` (``openssh-client``); skipped with that reason when they are missing.
"""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from facekd.runtime_bench.bench import BenchConfig, run_bench
from facekd.runtime_bench.results import load_result
from facekd.runtime_bench.targets import SshTarget
from tests.conftest import write_toy_bin
from tests.test_bench_run import QUICK, build_export_dir, synthetic_pairs

SSHD = Path("/usr/sbin/sshd")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A private sshd on 127.0.0.1:<free port> accepting one temporary key; yields a target factory."""
    if not SSHD.is_file():
        pytest.skip("sshd not installed: apt-get install -y openssh-server")
    if not all(shutil.which(tool) for tool in ("ssh", "scp", "ssh-keygen")):
        pytest.skip("ssh/scp/ssh-keygen not installed: apt-get install -y openssh-client")
    folder = tmp_path_factory.mktemp("sshd")
    os.chmod(folder, 0o700)
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    (folder / "authorized_keys").chmod(0o600)
    port = _free_port()
    sftp_server = next((p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
                                    "/usr/libexec/sftp-server") if Path(p).is_file()), None)
    config = [
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {folder / 'host_key'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}", f"PidFile {folder / 'sshd.pid'}",
        "StrictModes no", "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes", "PermitRootLogin prohibit-password", "LogLevel ERROR",
    ]
    if sftp_server:
        config.append(f"Subsystem sftp {sftp_server}")
    (folder / "sshd_config").write_text("\n".join(config) + "\n")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder when run as root
    log = open(folder / "sshd.log", "w")
    server = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(folder / "sshd_config")], stdout=log, stderr=log)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"sshd exited with {server.returncode}: {(folder / 'sshd.log').read_text()[-500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)

    def make_target(**overrides) -> SshTarget:
        settings = dict(host="127.0.0.1", user=getpass.getuser(), port=port, python=sys.executable,
                        remote_dir=str(folder / "remote"), identity_file=folder / "client_key",
                        options=["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "LogLevel=ERROR"])
        return SshTarget(**{**settings, **overrides})

    yield make_target
    server.terminate()
    server.wait(timeout=10)
    log.close()


def test_ssh_worker_round_trip(sshd, tmp_path):
    target = sshd()
    assert target.unavailable_reason() is None
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "x.npy", array)
    remote = target.put(tmp_path / "x.npy")
    assert remote.startswith(target.remote_dir) and Path(remote).read_bytes() == (tmp_path / "x.npy").read_bytes()
    with target.start_worker(timeout_s=60) as worker:
        assert worker.hello["host"]["cores"] >= 1
        assert worker.hello["pid"] != os.getpid()
    back = tmp_path / "back.npy"
    target.get(remote, back)
    np.testing.assert_array_equal(np.load(back), array)
    target.close()


def test_ssh_unreachable_is_a_reason_not_a_crash(sshd):
    target = sshd(port=_free_port(), connect_timeout_s=5)
    reason = target.unavailable_reason()
    target.close()
    assert reason and "failed" in reason


def test_run_bench_over_ssh(sshd, tmp_path, tiny_faces):
    export_dir = build_export_dir(tmp_path)
    config = BenchConfig(**{**QUICK, "batch": [1]}, artifacts=["torch-fp32", "onnx-fp32", "onnx-int8"], accelerators=False,
                         suites=[str(write_toy_bin(tmp_path / "toy_bin.bin", tiny_faces))])
    target = sshd()
    result = load_result(run_bench(export_dir, synthetic_pairs(), config, tmp_path / "ssh.json", target=target,
                                   progress=False))
    assert result.target == target.name and result.device["cores"] >= 1
    by_artifact = {row.artifact: row for row in result.rows}
    assert set(by_artifact) == {"torch-fp32", "onnx-fp32", "onnx-int8"}
    for name in ("torch-fp32", "onnx-fp32"):
        row = by_artifact[name]
        assert row.status == "ok", row.reason
        assert row.latency["n"] >= 3 and row.memory["peak_rss_mb"] > 20 and row.accuracy is not None
    assert by_artifact["onnx-fp32"].parity["worst_cos"] > 0.9999
    assert by_artifact["onnx-int8"].reason.startswith("sha256 mismatch")
    remote_files = list((Path(target.remote_dir) / "files").iterdir())
    assert remote_files  # artifacts really travelled by scp
    suites = [by_artifact[name].suites["toy_bin"] for name in ("torch-fp32", "onnx-fp32")]
    assert suites[0]["pairs"] == 20 and suites[1]["acc"] == pytest.approx(suites[0]["acc"])
    assert not any("suite" in path.name for path in remote_files)  # benchmark-set chunks go through io/ only
    assert not (Path(target.remote_dir) / "io").exists()  # removed when the run ended


def test_run_bench_unreachable_ssh_target_gives_unavailable_rows(sshd, tmp_path):
    export_dir = build_export_dir(tmp_path)
    config = BenchConfig(**QUICK, artifacts=["onnx-fp32"], accelerators=False)
    target = sshd(port=_free_port(), connect_timeout_s=5)
    result = load_result(run_bench(export_dir, synthetic_pairs(), config, tmp_path / "r.json", target=target,
                                   progress=False))
    assert {row.artifact for row in result.rows} == {"torch-fp32", "onnx-fp32"}  # the reference always comes along
    assert all(row.status == "unavailable" and "failed" in row.reason for row in result.rows)
    assert result.device["cores"] is None
