"""The one int8 decision: what every int8 converter is asked to make (``Int8Plan``) and the one
typed record of what it made (``Int8Record``, the manifest's ``int8``), which bench, report,
clients and tests read.

The plan:
- the student was trained for int8 (``train.int8_aware_epochs``: its weights and BatchNorms came
  through the converters' simulated arithmetic) → **static full-integer**: every convolution and
  linear int8, activations int8 from ranges calibrated on real faces, no layer search and no
  fallback. Its gate is conversion fidelity: the artifact against its own simulated-int8 twin
  (``export.int8_twin``); what int8 costs is measured against the float student.
- otherwise → static int8 with the converter's own fallbacks under a worst-cosine target on the
  calibration faces (``export.int8_search``): dynamic-range (TFLite, ExecuTorch) or weights-only
  (ONNX, OpenVINO) int8, or the most sensitive layers kept float; with ``export.int8_static_first``
  off, the dynamic-range / weights-only int8 is tried first.

The record's ``scheme``: ``static-full-integer`` (all weighted layers int8, int8 activations),
``static`` (int8 activations, some weighted layers float), ``dynamic`` (activations quantised per
inference), ``weights-only`` (float activations).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from facekd.core.errors import InputError

SCHEMES = ("static-full-integer", "static", "dynamic", "weights-only")
WEIGHTS_ONLY_OPS = ("constexpr_affine_dequantize",)  # Core ML: weights stored int8, computed float


@dataclass(frozen=True)
class Int8Plan:
    """What an int8 converter is asked for: ``search_target`` (worst cosine to float on the
    calibration faces its fallbacks aim at; None: none), or, for a student trained for int8
    (``int8_aware``: its training record), full-integer with no search, with an int8 input
    tensor where ``integer_input`` and the converter can."""

    search_target: float | None = None
    int8_aware: dict | None = None
    integer_input: bool = False  # int8 input tensor too (converters that can: TFLite), the form NPUs take
    static_first: bool = True  # False: the dynamic-range / weights-only fallback is tried before static int8

    def __post_init__(self) -> None:
        if self.int8_aware is not None and self.search_target is not None:
            raise InputError("an int8-aware student's int8 is full-integer: it has no search target")
        if self.integer_input and self.int8_aware is None:
            raise InputError("export.int8_input needs a full-integer int8: train the student with "
                             "train.int8_aware_epochs (student_int8.pt beside the checkpoint)")

    @property
    def full_integer(self) -> bool:
        """No layer left float."""
        return self.int8_aware is not None


NO_PLAN = Int8Plan()


@dataclass(frozen=True)
class Int8Record:
    """What an int8 artifact is (the manifest's ``int8``)."""

    scheme: str  # one of SCHEMES
    weight_bits: int  # 8, or 7 (reduce_range / overflow fix: x86 without VNNI)
    float_layers: list[str] = field(default_factory=list)  # weighted layers left float
    int8_aware: dict | None = None  # how the weights were trained for int8 (None: post-training only)
    conversion: dict | None = None  # parity with its simulated-int8 twin (mean_cos, worst_cos, flip_rate, ...)

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise InputError(f"int8 scheme {self.scheme!r} is not one of {SCHEMES}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Int8Record":
        return cls(**data)

    def summary(self) -> str:
        """One line for the report: scheme, weight bits, float layers, trained for int8."""
        parts = [self.scheme, f"{self.weight_bits}-bit weights"]
        if self.float_layers:
            parts.append(f"{len(self.float_layers)} weighted layers float")
        if self.int8_aware:
            parts.append(f"int8-aware training ({self.int8_aware.get('epochs')} epochs)")
        return ", ".join(parts)


def int8_record(details: dict, plan: Int8Plan, conversion: dict | None = None) -> Int8Record:
    """The record of an int8 artifact from what its converter wrote in ``details`` (its facts:
    ``int8_calibration``, ``float_layers``, OpenVINO's ``int8_reduce_range``/``int8_weight_constants``,
    Core ML's op census)."""
    facts = details.get("int8_calibration") or {}
    weights_only = (bool(details.get("int8_weight_constants"))
                    or any(op in details.get("op_census", {}) for op in WEIGHTS_ONLY_OPS)
                    or str(facts.get("activations", "")).startswith("float"))
    floats = [*(details.get("float_layers") or facts.get("kept_float") or []), *(facts.get("boundary_float") or [])]
    if weights_only:
        scheme = "weights-only"
    elif facts.get("activations") == "dynamic":
        scheme = "dynamic"
    else:
        scheme = "static" if floats else "static-full-integer"
    seven = scheme != "weights-only" and bool(facts.get("reduce_range") or details.get("int8_reduce_range"))
    return Int8Record(scheme=scheme, weight_bits=7 if seven else 8, float_layers=floats,
                      int8_aware=plan.int8_aware, conversion=conversion)
