"""Student families, by name: how to make one for a new run, and how to rebuild one from the architecture
record a checkpoint stores. ``register_family`` adds a family; ``student.family`` picks one."""
from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from torch import nn

from facekd.core.errors import InputError
from facekd.core.io import sha256_file
from facekd.core.preprocess import PreprocessSpec
from facekd.training.models.derived import DERIVED_NAME, ConversionError, DerivedArch, DerivedStudent, derive_student
from facekd.training.models.mobilefacenet import MobileFaceNet, StudentArch

if TYPE_CHECKING:
    from facekd.training.config import TrainingSection

__all__ = ["DerivedStudent", "FAMILIES", "MobileFaceNet", "StudentFamily", "build_student", "make_student",
           "register_family"]


@dataclass(frozen=True)
class StudentFamily:
    create: Callable[["TrainingSection"], tuple[nn.Module, PreprocessSpec]]  # a new student and the input it takes
    rebuild: Callable[[dict], nn.Module]  # random weights, from a checkpoint's architecture record


FAMILIES: dict[str, StudentFamily] = {}


def register_family(name: str, family: StudentFamily) -> StudentFamily:
    FAMILIES[name] = family
    return family


def family(name: str) -> StudentFamily:
    if name not in FAMILIES:
        near = difflib.get_close_matches(name, FAMILIES, n=1)
        raise InputError(f"unknown student family {name!r}" + (f"; did you mean {near[0]}?" if near else
                                                               f" (known: {', '.join(FAMILIES)})"))
    return FAMILIES[name]


def make_student(cfg: "TrainingSection") -> tuple[nn.Module, PreprocessSpec]:
    """The student of this run (``student.family``) and the preprocessing it takes."""
    return family(cfg.student.family).create(cfg)


def build_student(arch: StudentArch | DerivedArch | dict) -> nn.Module:
    """Rebuild a student (random weights) from its architecture record, as stored in checkpoints."""
    record = arch if isinstance(arch, dict) else asdict(arch)
    return family(record.get("name", "mobilefacenet")).rebuild(record)


def _mobilefacenet(cfg: "TrainingSection") -> tuple[nn.Module, PreprocessSpec]:
    return MobileFaceNet(width=cfg.student.width, embedding_size=cfg.student.embedding_size), cfg.student.preprocess


def _derived(cfg: "TrainingSection") -> tuple[nn.Module, PreprocessSpec]:
    """The teacher's own network, converted from its ONNX file and channel-pruned (preprocessing: the teacher's)."""
    if not cfg.teacher.path:
        raise InputError("student.family=teacher_derived needs the teacher's ONNX file (teacher.path / --teacher)")
    try:
        student = derive_student(cfg.teacher.path, cfg.student.keep_ratio, sha256_file(cfg.teacher.path),
                                 cfg.student.prune_importance, cfg.student.head_rank)
    except (ConversionError, ValueError) as exc:
        raise ConversionError(f"cannot derive a student from the teacher: {exc}; train a MobileFaceNet "
                              "instead with --set student.family=mobilefacenet") from None
    return student, cfg.teacher.preprocess


def _rebuild_mobilefacenet(record: dict) -> nn.Module:
    arch = StudentArch(**record)
    return MobileFaceNet(width=arch.width, embedding_size=arch.embedding_size)


register_family("mobilefacenet", StudentFamily(create=_mobilefacenet, rebuild=_rebuild_mobilefacenet))
register_family(DERIVED_NAME, StudentFamily(
    create=_derived, rebuild=lambda arch: DerivedStudent(DerivedArch(**{**arch, "layers": tuple(arch.get("layers", ()))}))))
