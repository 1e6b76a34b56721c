"""What every format module provides besides its converter: a runner and an I/O description.

Nothing here imports a runtime; each runner imports its own lazily inside ``load`` so a
benchmark worker process imports only the runtime it measures.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Iterable

import numpy as np

from facekd.core.errors import FacekdError


@dataclass(frozen=True)
class ArtifactIO:
    """Input and output of an artifact as read back from the file itself (dims None = dynamic)."""

    input_name: str
    input_shape: list
    input_dtype: str
    output_name: str
    output_shape: list
    output_dtype: str
    details: dict = field(default_factory=dict)  # op census, quantisation facts, delegate partitions

    def to_dict(self) -> dict:
        return asdict(self)


class Runner(ABC):
    """Runs one artifact: ``load`` once, then ``run`` batches in the manifest's layout."""

    @abstractmethod
    def load(self, path: str | Path, threads: int | None = None) -> None:
        """Open the artifact; ``threads`` None keeps the runtime's default."""

    @abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 batch [N, ...] in the manifest's layout -> raw embeddings [N, D] (not normalised)."""

    @abstractmethod
    def info(self) -> dict:
        """Runtime name and version, delegate or execution provider, threads."""

    def profile_ops(self, batch: np.ndarray, runs: int) -> list[dict]:
        """Per-op time of ``runs`` inferences of ``batch`` by the runtime's own profiler, after
        ``load``: [{name, type, kernel (what ran it: precision, ISA), ms (per inference)}]."""
        raise OpProfileUnavailable(f"{type(self).__name__}: its runtime offers no per-op profiler through this runner")


class OpProfileUnavailable(FacekdError, RuntimeError):
    """The runtime cannot profile per op here; the message says why."""


def slowest_ops(timings: Iterable[tuple[str, str, str, float]], runs: int) -> list[dict]:
    """(name, type, kernel, ms) of each op execution over ``runs`` inferences -> one record per op
    with its ms per inference, slowest first."""
    totals: dict[tuple[str, str, str], float] = {}
    for name, kind, kernel, ms in timings:
        totals[name, kind, kernel] = totals.get((name, kind, kernel), 0.0) + ms
    ops = [{"name": name, "type": kind, "kernel": kernel, "ms": total / runs} for (name, kind, kernel), total in totals.items()]
    return sorted(ops, key=lambda op: -op["ms"])


def package_versions(distributions: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of the given distributions (absent ones are skipped)."""
    versions = {}
    for name in distributions:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def run_one_by_one(run_single, batch: np.ndarray) -> np.ndarray:
    """Embed a batch through a runtime fixed at batch 1, one image at a time."""
    return np.concatenate([run_single(batch[i : i + 1]) for i in range(len(batch))], axis=0)
