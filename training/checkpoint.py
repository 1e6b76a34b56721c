"""Student checkpoints: saved atomically, loaded with ``weights_only=True``.

A checkpoint is a plain dict of tensors and primitives:
``{"format": "facekd-checkpoint", "version": 1, "arch": {...}, "preprocess": {...},
"model": state_dict, "epoch": int, "step": int, "threshold": float|None, "metrics": {...},
"trainer": {optimizer/scheduler/loss-suite state, only in training checkpoints}}``.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .io import atomic_path
from .models import build_student
from .preprocess import PreprocessSpec

CHECKPOINT_FORMAT = "facekd-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says what to do."""


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    state = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: pass the .pt written by `facekd train`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt/foreign files
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}); it is corrupt or not a "
            "facekd checkpoint: re-run `facekd train` or point at another file"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a facekd checkpoint (no 'format: {CHECKPOINT_FORMAT}' entry)")
    return state


def student_state(model: nn.Module, preprocess: PreprocessSpec, **extra) -> dict:
    """The exportable part of a checkpoint."""
    from dataclasses import asdict

    return {
        "arch": asdict(model.arch),
        "preprocess": preprocess.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }


def load_student(path: str | os.PathLike) -> tuple[nn.Module, PreprocessSpec, dict]:
    """Rebuild the student of a checkpoint in eval mode; returns (model, preprocess, checkpoint)."""
    state = load_checkpoint(path)
    try:
        model = build_student(dict(state["arch"]))
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        first = str(exc).splitlines()[0][:200]
        raise CheckpointError(
            f"checkpoint {path} does not match its declared architecture ({first}); "
            "it was made by another model or version: retrain or pass the matching checkpoint"
        ) from None
    model.eval()
    return model, PreprocessSpec.from_dict(state["preprocess"]), state
