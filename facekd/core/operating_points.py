"""Operating points: cosine thresholds at target false-accept rates, and the rule clients pick one by.

An export measures all genuine and impostor pairs of faces never trained on and records, per
target FAR ``f``, the threshold ``t`` with the most impostor pairs scoring ``>= t`` whose
one-sided ``confidence`` upper bound on the FAR is still ``<= f`` (and at least ``min_impostors``
of them, so the FAR is backed by data): a threshold that keeps its FAR on other people too. Clients
accept a pair when ``cosine >= t`` and choose ``t`` by policy, the same rule in Python, the Java
core (``OperatingPoints.java``) and the browser client (``core.js``):

- 1:1 verification at FAR ``f``: the threshold of the point with the largest FAR ``<= f``;
- 1:N identification at FPIR ``p`` against ``n`` templates: per comparison FAR ``p / n`` (a
  stranger is matched to someone when any of the ``n`` comparisons accepts, so FPIR ``<= n · FAR``),
  then as above; and, where the export also calibrated open-set galleries (``identification``:
  thresholds at which at most FPIR ``p`` of strangers matched someone in random galleries of ``m``
  people), no lower than the threshold of the smallest calibrated gallery ``m >= n`` (the largest
  one beyond them) at the largest calibrated FPIR ``<= p``. Galleries are enrolled from particular
  faces, and their comparisons accept strangers more often than all pairs do, so the union bound
  alone lets more strangers in than it promises.

A FAR below the smallest calibrated one is refused: the data cannot say what threshold holds it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .errors import FacekdError

DEFAULT_VERIFY_FAR = 1e-4
DEFAULT_IDENTIFY_FPIR = 0.01
_TOLERANCE = 1e-9  # FARs written to JSON and read back compare equal within this relative slack


class OperatingPointError(FacekdError, ValueError):
    """A FAR or FPIR the operating points cannot support, or malformed operating points."""


@dataclass(frozen=True)
class OperatingPoint:
    far: float  # target false-accept rate per comparison
    threshold: float  # accept when cosine >= threshold
    impostors_above: int  # impostor pairs scoring >= threshold in the calibration set
    tar: float  # share of genuine calibration pairs scoring >= threshold


@dataclass(frozen=True)
class IdentificationPoint:
    gallery_size: int  # people enrolled, one template each, in every calibration gallery
    fpir: float  # target share of strangers matched to someone
    threshold: float  # accept the best match when cosine >= threshold
    strangers_above: int  # stranger probes (pooled over the galleries) whose best match scores >= threshold
    probes: int  # stranger probes pooled over the galleries


@dataclass
class OperatingPoints:
    """Thresholds at target FARs (sorted by FAR, descending) and the pairs they rest on."""

    points: list[OperatingPoint]
    source: str
    identities: int
    faces: int
    genuine_pairs: int
    impostor_pairs: int
    min_impostors: int
    confidence: float  # each point's FAR holds with this one-sided confidence (Clopper–Pearson upper bound)
    identification: list[IdentificationPoint] = field(default_factory=list)  # open-set galleries (none: FAR rule only)

    def __post_init__(self) -> None:
        self.points = sorted((p if isinstance(p, OperatingPoint) else OperatingPoint(**p) for p in self.points),
                             key=lambda p: -p.far)
        self.identification = sorted(
            (p if isinstance(p, IdentificationPoint) else IdentificationPoint(**p) for p in self.identification),
            key=lambda p: (p.gallery_size, -p.fpir))
        for point in self.identification:
            if point.gallery_size < 1 or not 0.0 < point.fpir < 1.0 or not -1.0 <= point.threshold <= 1.0:
                raise OperatingPointError(f"identification point {point} needs gallery_size >= 1, 0 < fpir < 1 and "
                                          "-1 <= threshold <= 1")
        if not self.points:
            raise OperatingPointError("operating points are empty: the calibration set supports no FAR")
        for point in self.points:
            if not 0.0 < point.far < 1.0 or not -1.0 <= point.threshold <= 1.0:
                raise OperatingPointError(f"operating point {point} needs 0 < far < 1 and -1 <= threshold <= 1")

    @property
    def smallest_far(self) -> float:
        return self.points[-1].far

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "OperatingPoints":
        try:
            return cls(**data)
        except TypeError as exc:  # a missing or unknown key, here or in a point
            raise OperatingPointError(f"malformed operating points: {exc}") from None

    def verification_threshold(self, far: float = DEFAULT_VERIFY_FAR) -> float:
        """The threshold of the point with the largest FAR ``<= far``."""
        _check_rate("FAR", far)
        chosen = self._point_at_most(far)
        if chosen is None:
            raise OperatingPointError(f"FAR {far:g} is below the calibrated range: the smallest supported FAR is "
                                      f"{self.smallest_far:g}")
        return chosen.threshold

    def identification_threshold(self, fpir: float = DEFAULT_IDENTIFY_FPIR, comparisons: int = 1) -> float:
        """The threshold that keeps strangers matched to someone at most at ``fpir`` when a probe
        is compared with ``comparisons`` templates: per-comparison FAR ``fpir / comparisons``, and no
        lower than the open-set gallery's (module docstring)."""
        _check_rate("FPIR", fpir)
        comparisons = max(int(comparisons), 1)
        far = fpir / comparisons
        chosen = self._point_at_most(far)
        if chosen is None:
            most = math.floor(fpir / self.smallest_far * (1 + _TOLERANCE))
            raise OperatingPointError(
                f"a gallery of {comparisons} templates at FPIR {fpir:g} needs a per-comparison FAR of {far:.2g}, "
                f"below the calibrated range (smallest {self.smallest_far:.2g}): enrol at most {most} templates "
                "or raise the FPIR")
        gallery = self._gallery_point(fpir, comparisons)
        return chosen.threshold if gallery is None else max(chosen.threshold, gallery.threshold)

    def _gallery_point(self, fpir: float, comparisons: int) -> IdentificationPoint | None:
        """The calibrated gallery for ``comparisons`` templates at ``fpir``: the smallest size ``>= comparisons``
        (else the largest) among those calibrated at an FPIR ``<= fpir``, at its largest such FPIR."""
        candidates = [p for p in self.identification if p.fpir <= fpir * (1 + _TOLERANCE)]
        if not candidates:
            return None
        sizes = sorted({p.gallery_size for p in candidates})
        size = next((m for m in sizes if m >= comparisons), sizes[-1])
        return max((p for p in candidates if p.gallery_size == size), key=lambda p: p.fpir)

    def _point_at_most(self, far: float) -> OperatingPoint | None:
        return next((p for p in self.points if p.far <= far * (1 + _TOLERANCE)), None)


def _check_rate(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise OperatingPointError(f"{name} must lie in (0, 1), got {value}")
