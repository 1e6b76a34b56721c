"""Result files: one JSON per device run, validated on save and on load, merged for reports.

Schema (``schema_version`` 1): :class:`BenchResult` — the device (:class:`Device`), the bench
config, the export folder, the pairs, whether the run completed (false while it runs or after an
interruption) — and its rows, one :class:`Row` per artifact × runtime × threads × batch with
their sections (:class:`Accuracy`, :class:`ParityMeasure`, :class:`Latency`, :class:`Memory`,
:class:`ModelFacts`, per benchmark set a :class:`Suite`, the all-pairs :class:`Identities`).
The annotations are the schema, checked by :func:`facekd.core.typed.from_data`; sections keep keys
beyond their declared ones (``device.peak_gmacs``/``measured_gmacs``, ``latency`` extras), and
sections added later (``suites``, ``identities``, ``op_profile``) are None in older files.

Times are milliseconds, throughput images per second, accuracy and rates fractions in 0..1.
"""
from __future__ import annotations

import json
import os
import typing
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, NotRequired, TypedDict

from facekd.core.io import atomic_write_json
from facekd.core.errors import FacekdError
from facekd.core.typed import from_data

from .latency import LatencyStats

SCHEMA_VERSION = 1
STATUSES = ("ok", "unavailable", "failed", "rejected")

class Accuracy(TypedDict):
    acc: float
    std: float
    tar_at_far: dict
    auc: float
    threshold: float | None


class Suite(Accuracy):
    pairs: int
    flip_test: bool


class ParityMeasure(TypedDict):
    mean_cos: float
    worst_cos: float
    flip_rate: float | None


# a row's latency: the timed runs' summary and the host's load around them
Latency = TypedDict("Latency", {**typing.get_type_hints(LatencyStats), "load_before": float | None, "load_after": float | None})


class Memory(TypedDict):
    peak_rss_mb: float | None


class ModelFacts(TypedDict):
    params: int
    macs: int
    role: str


class Identities(TypedDict):
    name: str
    identities: int
    faces: int
    genuine_pairs: int
    impostor_pairs: int
    tar_at_far: dict
    unsupported: dict
    eer: float
    rank1: float
    open_set: dict
    policy: dict | None


class Device(TypedDict):
    name: str
    cpu: str | None
    cores: int | None
    os: str | None
    python: str | None
    load_before: float | None
    load_after: float | None
    isa: NotRequired[list | None]  # absent in results written before ISA facts


class ResultSchemaError(FacekdError, ValueError):
    """A result file that does not follow the schema; the message names the file and the field."""


@dataclass
class Row:
    """One artifact × runtime × threads × batch on one device."""

    artifact: str
    format: str
    precision: str
    runtime: str
    status: str
    reason: str | None = None
    manifest_sha256: str | None = None
    size_bytes: int | None = None
    threads: int | None = None
    batch: int | None = None
    accuracy: Accuracy | None = None
    parity: ParityMeasure | None = None
    latency: Latency | None = None
    memory: Memory | None = None
    model: ModelFacts | None = None  # from the manifest
    int8_scheme: str | None = None  # int8 artifacts: Manifest.int8_scheme()
    suites: dict[str, Suite] | None = None  # {set name: its measures} with bench.suites
    identities: Identities | None = None  # all-pairs measures of bench.identities (IdentityResult.to_dict() + name)
    op_profile: dict | None = None  # {runs, total_ms, ops: [{name, type, kernel, ms}] slowest first} or {unavailable}
    disturbed: bool = False
    disturbed_reason: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ResultSchemaError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.status != "ok" and not self.reason:
            raise ResultSchemaError(f"status {self.status!r} but no reason")

    def key(self) -> tuple:
        return (self.artifact, self.runtime, self.threads, self.batch)


@dataclass
class BenchResult:
    """Everything one ``run_bench`` call measured on one device."""

    device: Device
    rows: list[Row]
    config: dict = field(default_factory=dict)
    target: str = "local"
    export_dir: str = ""
    pairs: dict | None = None
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    complete: bool = True
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        data = asdict(self)
        return {"schema_version": data.pop("schema_version"), **data}

    @classmethod
    def from_dict(cls, data: dict, source: str = "result") -> "BenchResult":
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version != SCHEMA_VERSION:
            raise ResultSchemaError(
                f"{source}: schema_version {version!r} is not {SCHEMA_VERSION}; re-run `facekd bench` with this version")
        return from_data(cls, data, ResultSchemaError, f"{source}:")

    def device_label(self) -> str:
        return f"{self.device['name']} [{self.target}]"


def save_result(result: BenchResult, path: str | os.PathLike) -> Path:
    """Validate and write atomically."""
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    BenchResult.from_dict(data, source=str(path))
    return atomic_write_json(path, data)


def with_artifact_prefix(path: str | os.PathLike, prefix: str, out_path: str | os.PathLike) -> Path:
    """A copy of a result whose rows are named ``<prefix><artifact>``, so a second model's rows
    (e.g. the zoo reference student) sit beside the first's in one device table."""
    result = load_result(path)
    result.rows = [replace(row, artifact=f"{prefix}{row.artifact}") for row in result.rows]
    return save_result(result, out_path)


def load_result(path: str | os.PathLike) -> BenchResult:
    path = Path(path)
    if not path.is_file():
        raise ResultSchemaError(f"result file {path} does not exist: pass a JSON written by `facekd bench`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultSchemaError(f"result file {path} is not JSON ({exc}): pass a file written by `facekd bench`") from None
    return BenchResult.from_dict(data, source=str(path))


@dataclass
class DeviceRuns:
    """All rows measured on one device (same name and target), newest measurement per key."""

    label: str
    device: dict
    rows: list[Row]
    sources: list[str]
    incomplete: list[str]  # sources whose run was interrupted


def merge_results(paths: Iterable[str | os.PathLike]) -> list[DeviceRuns]:
    """Load result files and group them per device (``name [target]``), in first-seen order.

    Within a device, a row measured again (same artifact, runtime, threads, batch) in a newer
    file replaces the older one; the device block is the newest file's.
    """
    results = [(str(path), load_result(path)) for path in paths]
    if not results:
        raise ResultSchemaError("no result files given: pass at least one JSON written by `facekd bench`")
    merged: dict[str, DeviceRuns] = {}
    for source, result in sorted(results, key=lambda item: item[1].created):
        label = result.device_label()
        runs = merged.setdefault(label, DeviceRuns(label, result.device, [], [], []))
        runs.device = result.device
        runs.sources.append(source)
        if not result.complete:
            runs.incomplete.append(source)
        kept = {row.key(): row for row in runs.rows}
        for row in result.rows:
            kept[row.key()] = row
        runs.rows = list(kept.values())
    order = {result.device_label(): index for index, (_, result) in reversed(list(enumerate(results)))}
    return sorted(merged.values(), key=lambda runs: order[runs.label])
