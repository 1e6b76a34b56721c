"""What every loss term receives and declares.

A term is a small ``nn.Module`` whose ``forward(LossInputs) -> scalar``; ``needs`` names the optional
inputs it reads (``teacher``, ``queue``, ``model``) so the trainer only gathers what live terms use.
Notation in the term docstrings: ``f̂ = f / ‖f‖₂``; ``s`` student, ``t`` teacher; B batch size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from facekd.core.data import UNLABELLED  # label of a face without identity: label-dependent terms skip it
from facekd.core.errors import FacekdError

OPTIONAL_INPUTS = frozenset({"teacher", "queue", "model"})

_Value = TypeVar("_Value")


class LossInputError(FacekdError, ValueError):
    """A loss term was called without an input it needs, or with inputs of the wrong shape."""


@dataclass
class LossInputs:
    student: Tensor  # [B, Ds] raw student embeddings (requires grad)
    labels: Tensor  # [B] int64 class ids in [0, num_classes), or UNLABELLED
    teacher: Tensor | None = None  # [B, Dt] L2-normalised teacher embeddings of the same images
    queue: Tensor | None = None  # [Q, Dt] L2-normalised teacher embeddings of other training images
    queue_labels: Tensor | None = None  # [Q] int64
    model: nn.Module | None = None  # the student, for weight-based terms
    student_maps: list[Tensor] | None = None  # feature maps at the hint taps (requires grad)
    teacher_maps: list[Tensor] | None = None  # the teacher's maps at the same taps of the same chain


class LossTerm(nn.Module):
    """Base class: subclasses set ``needs`` and implement ``forward(inputs) -> scalar``."""

    needs: frozenset[str] = frozenset()


def require(value: _Value | None, name: str, term: str) -> _Value:
    """Return ``value``, or raise LossInputError naming the missing ``LossInputs`` field."""
    if value is None:
        raise LossInputError(f"loss term {term!r} needs LossInputs.{name}; pass it (see the term's `needs`)")
    return value


def student_projection(student_dim: int, teacher_dim: int) -> nn.Module:
    """Learnable linear map P: R^Ds -> R^Dt (no bias) when the dimensions differ, identity otherwise."""
    if student_dim == teacher_dim:
        return nn.Identity()
    return nn.Linear(student_dim, teacher_dim, bias=False)


def normalized(features: Tensor) -> Tensor:
    """Row-wise L2 normalisation f̂ = f / max(‖f‖₂, 1e-12)."""
    return F.normalize(features, dim=1)


def zero_like_graph(reference: Tensor) -> Tensor:
    """A scalar 0 connected to ``reference``'s graph, for terms with nothing to compare in a batch."""
    return reference.sum() * 0.0


def pairwise_mask(size: int, device: torch.device) -> Tensor:
    """[size, size] bool, True off the diagonal (pairs i ≠ j)."""
    return ~torch.eye(size, dtype=torch.bool, device=device)
