"""Result files: one JSON per device run, validated on save and on load, merged for reports.

Schema (``schema_version`` 1)::

    {"schema_version": 1, "created": ISO time, "target": "local" | "ssh:user@host:22" | ...,
     "complete": bool (false while a run is in progress or was interrupted),
     "export_dir": str, "pairs": {"name", "count", "images"} | null, "config": {...},
     "device": {"name", "cpu", "cores", "isa": [kernel-deciding CPU features] | null,
                "peak_gmacs": {"fp32", "int8", "clock_ghz", "basis"} | null (export.host.peak_gmacs),
                "measured_gmacs": {"fp32": {"1", "all"}, "int8": {"1", "all"} | null, "cores", "how", "disturbed"}
                                  | null (runtime_bench.ceilings; absent in results written before),
                "os", "python", "load_before", "load_after"},
     "rows": [{"artifact", "format", "precision", "runtime", "manifest_sha256",
               "status": "ok" | "unavailable" | "failed" | "rejected", "reason",
               "size_bytes", "threads", "batch",
               "accuracy": {"acc", "std", "tar_at_far": {FAR: TAR}, "auc", "threshold"} | null,
               "parity": {"mean_cos", "worst_cos", "flip_rate"} | null,
               "latency": {"init_ms", "first_ms", "mean", "p50", "p90", "p99", "std", "n",
                           "throughput", "load_before", "load_after"} | null,
               "memory": {"peak_rss_mb"} | null,
               "model": {"params", "macs", "role": "student" | "teacher"} | null,
               "suites": {SET: {"acc", "std", "tar_at_far", "auc", "threshold", "pairs", "flip_test"}} | null,
               "identities": {"name", "identities", "faces", "genuine_pairs", "impostor_pairs",
                              "tar_at_far": {FAR: TAR}, "unsupported": {FAR: why}, "eer", "rank1",
                              "open_set": {...}, "policy": {...} | null} | null,
               "disturbed": bool, "disturbed_reason": str | null}]}

``suites`` (one entry per benchmark set of ``bench.suites``) and ``identities`` (all pairs of the
val identities, :func:`facekd.core.verification.measure_identities`) are absent in results written
before they existed; such files load with them None.

Times are milliseconds, throughput images per second, accuracy and rates fractions in 0..1.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from facekd.core.io import atomic_write_json
from facekd.core.errors import FacekdError

SCHEMA_VERSION = 1
STATUSES = ("ok", "unavailable", "failed", "rejected")

_NUMBER = (int, float)
_OPTIONAL_NUMBER = (int, float, type(None))
_OPTIONAL_TEXT = (str, type(None))

DEVICE_KEYS = {"name": (str,), "cpu": _OPTIONAL_TEXT, "cores": (int, type(None)), "os": _OPTIONAL_TEXT,
               "python": _OPTIONAL_TEXT, "load_before": _OPTIONAL_NUMBER, "load_after": _OPTIONAL_NUMBER}
ACCURACY_KEYS = {"acc": _NUMBER, "std": _NUMBER, "tar_at_far": (dict,), "auc": _NUMBER, "threshold": _OPTIONAL_NUMBER}
PARITY_KEYS = {"mean_cos": _NUMBER, "worst_cos": _NUMBER, "flip_rate": _OPTIONAL_NUMBER}
LATENCY_KEYS = {"init_ms": _OPTIONAL_NUMBER, "first_ms": _OPTIONAL_NUMBER, "mean": _NUMBER, "p50": _OPTIONAL_NUMBER,
                "p90": _OPTIONAL_NUMBER, "p99": _OPTIONAL_NUMBER, "std": _OPTIONAL_NUMBER, "n": (int,),
                "throughput": _NUMBER, "load_before": _OPTIONAL_NUMBER, "load_after": _OPTIONAL_NUMBER}
MEMORY_KEYS = {"peak_rss_mb": _OPTIONAL_NUMBER}
MODEL_KEYS = {"params": (int,), "macs": (int,), "role": (str,)}
SUITE_KEYS = {**ACCURACY_KEYS, "pairs": (int,), "flip_test": (bool,)}
IDENTITY_KEYS = {"name": (str,), "identities": (int,), "faces": (int,), "genuine_pairs": (int,),
                 "impostor_pairs": (int,), "tar_at_far": (dict,), "unsupported": (dict,), "eer": _NUMBER,
                 "rank1": _NUMBER, "open_set": (dict,), "policy": (dict, type(None))}
SECTIONS = {"accuracy": ACCURACY_KEYS, "parity": PARITY_KEYS, "latency": LATENCY_KEYS, "memory": MEMORY_KEYS,
            "model": MODEL_KEYS, "identities": IDENTITY_KEYS}


class ResultSchemaError(FacekdError, ValueError):
    """A result file that does not follow the schema; the message names the file and the field."""


def _check(value, types: tuple, where: str) -> None:
    if isinstance(value, bool) and bool not in types:
        raise ResultSchemaError(f"{where} must be {'/'.join(t.__name__ for t in types)}, got a bool")
    if not isinstance(value, types):
        raise ResultSchemaError(f"{where} must be {'/'.join(t.__name__ for t in types)}, got {type(value).__name__}")


def _check_section(data, keys: dict, where: str) -> dict:
    _check(data, (dict,), where)
    for key, types in keys.items():
        if key not in data:
            raise ResultSchemaError(f"{where} lacks {key!r}")
        _check(data[key], types, f"{where}.{key}")
    return dict(data)


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
    accuracy: dict | None = None
    parity: dict | None = None
    latency: dict | None = None
    memory: dict | None = None
    model: dict | None = None  # {params, macs, role: "student" | "teacher"} from the manifest
    int8_scheme: str | None = None  # int8 artifacts: Manifest.int8_scheme()
    suites: dict | None = None  # {set name: accuracy section + pairs + flip_test} with bench.suites
    identities: dict | None = None  # all-pairs measures of bench.identities (IdentityResult.to_dict() + name)
    op_profile: dict | None = None  # {runs, total_ms, ops: [{name, type, kernel, ms}] slowest first} or {unavailable}
    disturbed: bool = False
    disturbed_reason: str | None = None

    @classmethod
    def from_dict(cls, data: dict, where: str = "row") -> "Row":
        _check(data, (dict,), where)
        for key in ("artifact", "format", "precision", "runtime", "status"):
            if key not in data:
                raise ResultSchemaError(f"{where} lacks {key!r}")
            _check(data[key], (str,), f"{where}.{key}")
        if data["status"] not in STATUSES:
            raise ResultSchemaError(f"{where}.status must be one of {STATUSES}, got {data['status']!r}")
        if data["status"] != "ok" and not data.get("reason"):
            raise ResultSchemaError(f"{where} has status {data['status']!r} but no reason")
        for key, types in (("reason", _OPTIONAL_TEXT), ("manifest_sha256", _OPTIONAL_TEXT), ("int8_scheme", _OPTIONAL_TEXT),
                           ("size_bytes", (int, type(None))), ("threads", (int, type(None))),
                           ("batch", (int, type(None))), ("disturbed", (bool,)),
                           ("disturbed_reason", _OPTIONAL_TEXT)):
            if key in data:
                _check(data[key], types, f"{where}.{key}")
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        for section, keys in SECTIONS.items():
            if data.get(section) is not None:
                values[section] = _check_section(data[section], keys, f"{where}.{section}")
        if data.get("op_profile") is not None:
            _check(data["op_profile"], (dict,), f"{where}.op_profile")
        if data.get("suites") is not None:
            _check(data["suites"], (dict,), f"{where}.suites")
            values["suites"] = {name: _check_section(entry, SUITE_KEYS, f"{where}.suites.{name}")
                                for name, entry in data["suites"].items()}
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ResultSchemaError(f"{where} has unknown fields {unknown}")
        return cls(**values)

    def key(self) -> tuple:
        return (self.artifact, self.runtime, self.threads, self.batch)


@dataclass
class BenchResult:
    """Everything one ``run_bench`` call measured on one device."""

    device: dict
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
        _check(data, (dict,), source)
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ResultSchemaError(
                f"{source}: schema_version {version!r} is not {SCHEMA_VERSION}; re-run `facekd bench` with this version")
        for key in ("device", "rows", "created"):
            if key not in data:
                raise ResultSchemaError(f"{source} lacks {key!r}")
        device = _check_section(data["device"], DEVICE_KEYS, f"{source}: device")
        if "isa" in device:  # absent in results written before ISA facts
            _check(device["isa"], (list, type(None)), f"{source}: device.isa")
        _check(data["rows"], (list,), f"{source}: rows")
        rows = [Row.from_dict(row, f"{source}: rows[{index}]") for index, row in enumerate(data["rows"])]
        for key, types in (("config", (dict,)), ("target", (str,)), ("export_dir", (str,)),
                           ("pairs", (dict, type(None))), ("created", (str,)), ("complete", (bool,))):
            if key in data:
                _check(data[key], types, f"{source}: {key}")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ResultSchemaError(f"{source} has unknown fields {unknown}")
        return cls(**{**{k: data[k] for k in data if k not in ("device", "rows")}, "device": device, "rows": rows})

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
