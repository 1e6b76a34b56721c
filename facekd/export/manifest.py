"""The JSON manifest written beside every artifact, and the sha256 check the benchmark relies on.

An artifact is a file (``.onnx``, ``.tflite``, ``.pt``, ``.engine``) or a directory
(``.mlpackage``); a directory's digest is the sha256 of its sorted ``relative/path<TAB>sha256``
lines, so it does not depend on the file system's listing order.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from facekd.core.io import atomic_write_json, sha256_file
from facekd.core.operating_points import OperatingPoints
from facekd.core.errors import FacekdError
from facekd.core.typed import from_data

from .int8 import Int8Record

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
STATUSES = ("ok", "rejected", "unavailable", "validated-structure-only", "failed")


class ManifestError(FacekdError, ValueError):
    """A manifest that cannot be read, or an artifact that no longer matches its manifest."""


def artifact_files(path: Path) -> list[Path]:
    """The files that make up an artifact: itself, or every file under it when it is a directory."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path]


def sha256_artifact(path: str | os.PathLike) -> str:
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in artifact_files(path):
        digest.update(f"{file.relative_to(path).as_posix()}\t{sha256_file(file)}\n".encode("utf-8"))
    return digest.hexdigest()


def artifact_size(path: str | os.PathLike) -> int:
    return sum(file.stat().st_size for file in artifact_files(Path(path)))


@dataclass
class Manifest:
    """Everything a runtime, a benchmark or an app needs to use one artifact correctly."""

    format: str
    precision: str
    status: str  # one of STATUSES
    reason: str
    file: str  # artifact name, relative to the manifest's folder
    sha256: str
    size_bytes: int
    input: dict  # {name, shape, layout (NCHW|NHWC), dtype}
    output: dict  # {name, shape, dtype}
    preprocess: dict  # PreprocessSpec.to_dict(), layout matching ``input``
    embedding_size: int
    threshold: float | None  # best-accuracy threshold of balanced val pairs: for comparison, not to deploy
    threshold_source: str
    calibration: dict | None  # {id: sha256 of the file list, count}; None when not calibrated
    parity: dict | None  # {mean_cos, worst_cos, flip_rate, n_images, n_pairs} vs PyTorch; None when not measured
    converter_versions: dict
    quantization: str  # what the precision means for this format
    source: dict  # {checkpoint, sha256, arch}
    details: dict = field(default_factory=dict)  # op census, notes read back from the artifact
    operating_points: dict | None = None  # OperatingPoints.to_dict(): thresholds at target FARs (to deploy)
    int8: dict | None = None  # int8 artifacts: export.int8.Int8Record.to_dict() (scheme, weight bits, float layers, ...)
    created_utc: str = ""
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ManifestError(f"manifest status {self.status!r} is not one of {STATUSES}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ManifestError(
                f"manifest schema_version {version!r} is not {SCHEMA_VERSION}: re-export with this facekd version"
            )
        try:
            return from_data(cls, data, ManifestError, "manifest", ignore_unknown=True)
        except ManifestError as exc:
            raise ManifestError(f"{exc}: re-export the artifact") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Manifest":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ManifestError(f"manifest {path} does not exist: point at a manifest.json written by `facekd export`") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError(f"manifest {path} is not valid JSON ({exc}): re-export the artifact") from None
        if not isinstance(data, dict):
            raise ManifestError(f"manifest {path} is not a JSON object: re-export the artifact")
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_json(path, self.to_dict())

    def deploy_points(self) -> OperatingPoints | None:
        """The operating points clients choose thresholds from; None, with a warning, for a
        manifest written before they existed (its one threshold accepts far more strangers)."""
        if self.operating_points is None:
            logger.warning("manifest of %s-%s has no operating points (exported before they existed): only its "
                           "best-accuracy threshold, which accepts far more strangers; re-export with facekd export",
                           self.format, self.precision)
            return None
        return OperatingPoints.from_dict(self.operating_points)

    def artifact_path(self, manifest_path: str | os.PathLike) -> Path:
        return Path(manifest_path).parent / self.file

    def int8_scheme(self) -> str | None:
        """How an int8 artifact quantises, in one line (``export.int8.Int8Record.summary``); None
        for other precisions and for manifests written before the record existed."""
        return Int8Record.from_dict(self.int8).summary() if self.precision == "int8" and self.int8 else None


def verify_artifact(manifest_path: str | os.PathLike) -> Path:
    """The artifact a manifest names, after checking it exists and its sha256 matches."""
    manifest = Manifest.load(manifest_path)
    path = manifest.artifact_path(manifest_path)
    if not path.exists():
        raise ManifestError(f"artifact {path} named by {manifest_path} is missing: re-run `facekd export`")
    actual = sha256_artifact(path)
    if actual != manifest.sha256:
        raise ManifestError(
            f"artifact {path} has sha256 {actual[:12]}… but its manifest says {manifest.sha256[:12]}…: "
            "the file changed after export; re-run `facekd export`"
        )
    return path
