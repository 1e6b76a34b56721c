"""Parity of an artifact with the PyTorch model on real faces, and the gate that rejects bad ones.

For image i with artifact embedding a_i and PyTorch embedding t_i (both L2-normalised),
cos_i = a_i · t_i; ``mean_cos`` and ``worst_cos`` are their mean and minimum. For verification
pair k = (l, r), the decision is same_k = (e_l · e_r >= threshold); ``flip_rate`` is the share
of pairs whose decision with artifact embeddings differs from the decision with PyTorch's.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from training.verification import l2_normalise

from .artifact import Runner

RUN_BATCH = 32


@dataclass(frozen=True)
class ParityBar:
    """An artifact of this precision passes when parity ``metric`` >= ``minimum``."""

    metric: str  # "mean_cos" | "worst_cos"
    minimum: float


DEFAULT_BARS: dict[str, ParityBar] = {
    "fp32": ParityBar("worst_cos", 0.999),
    "fp16": ParityBar("worst_cos", 0.999),
    "int8": ParityBar("mean_cos", 0.99),
}


@dataclass(frozen=True)
class Parity:
    mean_cos: float
    worst_cos: float
    flip_rate: float | None  # None when no pairs were given
    n_images: int
    n_pairs: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ParityReference:
    """PyTorch's view of the parity faces: embeddings and, for the pairs among them, decisions."""

    embeddings: np.ndarray  # [N, D] L2-normalised
    left: np.ndarray  # pair k compares image left[k] with image right[k]
    right: np.ndarray
    threshold: float | None

    def decisions(self, embeddings: np.ndarray) -> np.ndarray | None:
        if self.threshold is None or len(self.left) == 0:
            return None
        scores = np.sum(embeddings[self.left] * embeddings[self.right], axis=1)
        return scores >= self.threshold


def embed(runner: Runner, inputs: np.ndarray, batch_size: int = RUN_BATCH) -> np.ndarray:
    """Raw embeddings of ``inputs`` through ``runner``, ``batch_size`` images at a time."""
    return np.concatenate([runner.run(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)], axis=0)


def measure_parity(embeddings: np.ndarray, reference: ParityReference) -> Parity:
    """Compare an artifact's raw embeddings of the parity faces with PyTorch's."""
    if embeddings.shape != reference.embeddings.shape:
        raise ValueError(f"artifact embeddings are {embeddings.shape}, PyTorch's are {reference.embeddings.shape}")
    normalised = l2_normalise(embeddings)
    cosines = np.sum(normalised * reference.embeddings, axis=1)
    ours, theirs = reference.decisions(normalised), reference.decisions(reference.embeddings)
    flip_rate = None if ours is None else float(np.mean(ours != theirs))
    return Parity(
        mean_cos=float(np.mean(cosines)), worst_cos=float(np.min(cosines)), flip_rate=flip_rate,
        n_images=len(cosines), n_pairs=len(reference.left),
    )


@dataclass(frozen=True)
class GateResult:
    """The bar an artifact was held to, the value it measured, and the one-line verdict."""

    passed: bool
    statement: str  # e.g. "int8 mean_cos 0.99712 >= bar 0.99" or "... below the bar 0.999 by 0.00812"


def gate(precision: str, parity: Parity, bars: dict[str, ParityBar]) -> GateResult:
    """Hold ``parity`` to the bar of ``precision``; a precision without a bar is an error, not a pass."""
    bar = bars.get(precision)
    if bar is None:
        raise ValueError(f"no parity bar for precision {precision!r}: set export.bars.{precision} "
                         f"(bars exist for {', '.join(sorted(bars)) or 'none'})")
    value = getattr(parity, bar.metric)
    measured = f"{precision} {bar.metric} {value:.5f}"
    if not np.isfinite(value):
        return GateResult(False, f"{measured} is not finite (bar {bar.minimum})")
    if value < bar.minimum:
        return GateResult(False, f"{measured} is below the bar {bar.minimum} by {bar.minimum - value:.5f}")
    return GateResult(True, f"{measured} >= bar {bar.minimum}")
