"""Real aligned faces used to calibrate quantisers and to measure parity against PyTorch."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from facekd.core.data import BadImageError, load_rgb_file
from facekd.core.io import sha256_text
from facekd.core.preprocess import PreprocessSpec

from .errors import ExportError


def evenly_spaced(count: int, total: int) -> np.ndarray:
    """``min(count, total)`` distinct indices spread evenly over ``range(total)``, first one 0."""
    if count >= total:
        return np.arange(total)
    return np.unique(np.linspace(0, total - 1, count).round().astype(np.int64))


def image_name(path: str | os.PathLike) -> str:
    """``identity/file`` — the part of a face's path that does not depend on where the data lives."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}"


@dataclass(frozen=True)
class FaceSet:
    """Decoded uint8 RGB faces [H, W, 3] with their names; ``set_id`` identifies the file list."""

    names: tuple[str, ...]
    images: tuple[np.ndarray, ...]

    @classmethod
    def from_paths(cls, paths: Sequence[str | os.PathLike], count: int | None = None, purpose: str = "faces") -> "FaceSet":
        """Load ``count`` faces spread evenly over ``paths`` (all when None)."""
        paths = [Path(p) for p in paths]
        if not paths:
            raise ExportError(f"no {purpose} images given: pass aligned face images (e.g. the LFW aligned_112 folder)")
        chosen = [paths[i] for i in evenly_spaced(count or len(paths), len(paths))]
        try:
            images = tuple(load_rgb_file(p) for p in chosen)
        except BadImageError as exc:
            raise ExportError(f"{purpose}: {exc}") from None
        return cls(tuple(image_name(p) for p in chosen), images)

    def __len__(self) -> int:
        return len(self.images)

    def __add__(self, other: "FaceSet") -> "FaceSet":
        return FaceSet(self.names + other.names, self.images + other.images)

    @property
    def set_id(self) -> str:
        return sha256_text("\n".join(self.names))

    def describe(self) -> dict:
        return {"id": self.set_id, "count": len(self)}

    def inputs(self, spec: PreprocessSpec) -> np.ndarray:
        """Model inputs [N, ...] in ``spec``'s layout."""
        return np.concatenate([spec.apply(image) for image in self.images], axis=0)
