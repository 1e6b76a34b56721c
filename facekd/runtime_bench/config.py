"""The bench section of the run config (``bench.*``): what to measure, where and for how long.

Its own small module, so that reading a config imports none of the bench's machinery.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from facekd.core.errors import FacekdError
from facekd.core.pairs import verification_set_name

from .latency import TimingPlan

REFERENCE_ARTIFACT = "torch-fp32"


class BenchError(FacekdError, ValueError):
    """A benchmark that cannot start; the message says what to do."""


@dataclass
class RuntimeSpec:
    """One way of running a format: the format table's runner (``runner`` None) or another
    ``module:callable`` factory, with factory ``options`` and optionally another interpreter
    (e.g. a tflite-runtime venv with numpy<2)."""

    name: str
    formats: list[str]
    runner: str | None = None
    python_executable: str | None = None
    options: dict = field(default_factory=dict)


@dataclass
class BenchConfig:
    """What to measure and how long.

    ``threads`` × ``batch``: one fresh worker per combination. ``timing``: warm-up and timed runs
    of each (:class:`latency.TimingPlan`). ``pairs_per_fold``: pairs kept per fold, half same and half
    different (None = all). ``artifacts``: folder or format names to measure (None = all).
    ``runtimes``: extra ways to run formats; ``accelerators``: add torch-cuda /
    onnxruntime-cuda / onnxruntime-tensorrt where the target has them. ``python_executables``:
    interpreter per format or artifact name for the default runner. ``embed_batch``: chunk
    size for embedding pair images (fixed-batch artifacts use their own). ``reference``: the
    artifact parity is measured against. ``targets``: dicts for
    :func:`targets.target_from_dict` (used by callers that bench several targets).
    ``suites``: benchmark sets as ``facekd eval --sets`` takes them (``lfw.bin``,
    ``PAIRS.txt=IMAGES_ROOT``), each measured in full on every artifact × runtime (or on those of
    ``suite_artifacts``, which also limits ``identities``' all-pairs measures); ``flip_test``: their embeddings average image and mirror image (the val-pairs accuracy and
    parity stay single-view, so they remain comparable with export's gate).
    """

    threads: list[int] = field(default_factory=lambda: [1, 2])
    batch: list[int] = field(default_factory=lambda: [1])
    timing: TimingPlan = field(default_factory=TimingPlan)
    pairs_per_fold: int | None = None
    artifacts: list[str] | None = None
    runtimes: list[RuntimeSpec] = field(default_factory=list)
    accelerators: bool = True
    python_executables: dict[str, str] = field(default_factory=dict)
    embed_batch: int = 32
    worker_timeout_s: float = 600.0
    reference: str = REFERENCE_ARTIFACT
    targets: list[dict] = field(default_factory=lambda: [{"kind": "local"}])
    suites: list[str] = field(default_factory=list)
    suite_artifacts: list[str] | None = None  # artifacts the suites and identities are measured on (None: every one)
    flip_test: bool = False
    identities: str = ""  # ROOT or IDENTITIES.txt=ROOT; "" = the run's data.val_identities; "none" = skip
    gallery_size: int = 100
    fpir: float = 0.01
    op_profile_runs: int = 20  # inferences profiled per op by the runtime's own profiler (first threads × batch); 0 = off

    def __post_init__(self) -> None:
        if not self.threads or any(t < 1 for t in self.threads):
            raise BenchError("threads must list thread counts >= 1")
        if not self.batch or any(b < 1 for b in self.batch):
            raise BenchError("batch must list batch sizes >= 1")
        if self.pairs_per_fold is not None and self.pairs_per_fold < 2:
            raise BenchError("pairs_per_fold must be >= 2 (one same and one different pair), or null for all")
        if self.embed_batch < 1 or self.worker_timeout_s <= 0:
            raise BenchError("embed_batch must be >= 1 and worker_timeout_s > 0")
        if self.gallery_size < 1 or not 0.0 < self.fpir < 1.0:
            raise BenchError(f"gallery_size must be >= 1 and fpir in (0, 1), got {self.gallery_size}, {self.fpir}")
        names = [verification_set_name(spec) for spec in self.suites]
        if len(set(names)) != len(names):
            raise BenchError(f"bench.suites names a set twice (sets are named after their file): {names}")
        try:
            self.runtimes = [r if isinstance(r, RuntimeSpec) else RuntimeSpec(**r) for r in self.runtimes]
        except (TypeError, ValueError) as exc:
            raise BenchError(f"bad bench settings: {exc}") from None

    def to_dict(self) -> dict:
        return asdict(self)
