"""Shared fixtures: real faces from FACEKD_HOME (CI points it at ../shared), tiny generated faces."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

from facekd.paths import home_problem

REPO = Path(__file__).resolve().parents[1]


REQUIRE_REAL_DATA = "FACEKD_REQUIRE_REAL_DATA"


def _home() -> tuple[Path, str | None]:
    """The real-data folder the tests look at, and why it is not usable (None when it is)."""
    env = os.environ.get("FACEKD_HOME")
    candidate = Path(env) if env else REPO.parent / "shared"
    return candidate, home_problem(candidate)


@pytest.fixture(scope="session")
def facekd_home() -> Path:
    """Real faces; skipped when absent, except under FACEKD_REQUIRE_REAL_DATA=1 (CI), where a
    missing or wrong folder fails the run with the path it looked at."""
    home, problem = _home()
    if problem is not None:
        required_resource_missing(f"real faces not usable at {home}: {problem}")
    return home


def required_resource_missing(message: str) -> None:
    """Skip a test whose real data (or browser, or npm package) is missing, or fail it under
    FACEKD_REQUIRE_REAL_DATA=1 (CI, where `make test` installs all of them)."""
    if os.environ.get(REQUIRE_REAL_DATA) == "1":
        pytest.fail(f"{message} ({REQUIRE_REAL_DATA}=1: set FACEKD_HOME to a folder laid out like ../shared)")
    pytest.skip(f"{message}: set FACEKD_HOME to a folder laid out like ../shared")


@pytest.fixture(scope="session")
def tiny_faces(tmp_path_factory) -> Path:
    """A generated aligned-face folder: 6 identities × 4 images of 112×112 RGB JPEG.

    Each identity has its own colour pattern plus noise, so a model can tell them apart.
    """
    import cv2

    root = tmp_path_factory.mktemp("tiny_faces")
    rng = np.random.default_rng(0)
    for ident in range(6):
        base = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        base = cv2.resize(base, (112, 112), interpolation=cv2.INTER_CUBIC)
        folder = root / f"person_{ident}"
        folder.mkdir()
        for k in range(4):
            noise = rng.normal(0, 12, size=base.shape)
            image = np.clip(base.astype(np.float64) + noise, 0, 255).astype(np.uint8)
            cv2.imwrite(str(folder / f"person_{ident}_{k + 1:04d}.jpg"), image[..., ::-1])
    return root


def write_toy_bin(path: Path, faces_root: Path, count: int = 20) -> Path:
    """An insightface verification ``.bin`` (pickled ``(encoded images, issame)``) of ``count``
    pairs over the ``tiny_faces`` folder: even pairs one person twice, odd pairs two people."""
    import pickle

    import cv2

    faces = sorted(Path(faces_root).rglob("*.jpg"))
    encoded, issame = [], []
    for k in range(count):
        a = faces[(k % 6) * 4]
        b = faces[(k % 6) * 4 + 1] if k % 2 == 0 else faces[((k + 1) % 6) * 4]
        encoded += [cv2.imencode(".jpg", cv2.imread(str(face)))[1].tobytes() for face in (a, b)]
        issame.append(k % 2 == 0)
    with open(path, "wb") as handle:
        pickle.dump((encoded, issame), handle)
    return Path(path)


def torchrun_command(processes: int, *argv: str, module: str = "facekd.cli") -> list[str]:
    """``torchrun --nproc_per_node=processes -m facekd.cli --quiet argv…`` on a free local port (CPU: gloo);
    ``module``: another entry point taking the CLI's arguments (a test's probe around it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", "--master_addr=127.0.0.1",
            f"--master_port={port}", "-m", module, "--quiet", *map(str, argv)]


def run_torchrun(*argv, timeout: float = 300, module: str = "facekd.cli"):
    """``facekd argv…`` in two torchrun processes (one intra-op thread each); asserts it succeeded."""
    import subprocess

    done = subprocess.run(torchrun_command(2, *argv, module=module), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests use tiny models: one intra-op thread avoids oversubscribing 2-core CI machines."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _library_chatter_restored():
    """`facekd.cli.main` silences libraries for the whole process (env, warning filters, root logger): undo it
    after each test, so a test that ran the CLI does not change what the next one sees."""
    import logging
    import warnings

    from facekd.core.chatter import LIBRARY_ENV, QUIET_ENV

    names = (QUIET_ENV, *LIBRARY_ENV)
    saved, level = {name: os.environ.get(name) for name in names}, logging.getLogger().level
    with warnings.catch_warnings():
        yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    logging.getLogger().setLevel(level)


def pytest_terminal_summary(terminalreporter):
    """The bad-input campaign's tally (tests/test_bad_inputs.py), when it ran."""
    import sys

    campaign = sys.modules.get("tests.test_bad_inputs")
    if campaign is not None and any(campaign.TALLY.values()):
        terminalreporter.write_line(f"bad-input campaign: {campaign.tally_line()}")
