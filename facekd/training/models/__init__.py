"""Student architectures: MobileFaceNet from scratch, or a student derived from the teacher's network."""
from __future__ import annotations

from torch import nn

from facekd.training.models.derived import DERIVED_NAME, DerivedArch, DerivedStudent
from facekd.training.models.mobilefacenet import MobileFaceNet, StudentArch
from facekd.core.errors import InputError

FAMILIES = ("mobilefacenet", DERIVED_NAME)

__all__ = ["DerivedStudent", "FAMILIES", "MobileFaceNet", "build_student"]


def build_student(arch: StudentArch | DerivedArch | dict) -> nn.Module:
    """Rebuild a student (random weights) from its architecture record, as stored in checkpoints."""
    if isinstance(arch, dict):
        name = arch.get("name", "mobilefacenet")
        if name == DERIVED_NAME:
            arch = DerivedArch(**{**arch, "layers": tuple(arch.get("layers", ()))})
        elif name == "mobilefacenet":
            arch = StudentArch(**arch)
        else:
            raise InputError(f"unknown student architecture {name!r} (known: {', '.join(FAMILIES)})")
    if isinstance(arch, DerivedArch):
        return DerivedStudent(arch)
    return MobileFaceNet(width=arch.width, embedding_size=arch.embedding_size)
