"""Student checkpoints: saved atomically, loaded with ``weights_only=True``.

A checkpoint is a plain dict of tensors and primitives:
``{"format": "facekd-checkpoint", "version": 1, "arch": {...}, "preprocess": {...},
"model": state_dict, "epoch": int, "step": int, "threshold": float|None, "metrics": {...},
"trainer": {optimizer/scheduler/loss-suite state, only in training checkpoints},
"content_sha256": digest of everything else}``. The digest catches a tampered or bit-rotted file
that still unpickles (checkpoints written before it existed load without the check).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from facekd.core.io import atomic_path
from .models import build_student
from facekd.core.preprocess import PreprocessSpec
from facekd.core.errors import FacekdError

CHECKPOINT_FORMAT = "facekd-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(FacekdError, ValueError):
    """A checkpoint that cannot be used; the message says what to do."""


INT8_STUDENT = "student_int8.pt"  # the int8-aware student (train.int8_aware_epochs), beside student.pt


def content_digest(value, digest=None) -> str:
    """sha256 over a nest of dicts, lists, tensors and primitives (keys, dtypes, shapes and bytes)."""
    digest = digest or hashlib.sha256()
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            digest.update(f"<{key!s}>".encode())
            content_digest(value[key], digest)
    elif isinstance(value, (list, tuple)):
        digest.update(f"[{len(value)}".encode())
        for item in value:
            content_digest(item, digest)
    elif isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    else:
        digest.update(repr(value).encode())
    return digest.hexdigest()


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    state = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    state.pop("content_sha256", None)
    state["content_sha256"] = content_digest(state)
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
    recorded = state.pop("content_sha256", None)
    if recorded is not None and content_digest(state) != recorded:
        raise CheckpointError(f"checkpoint {path} was modified after it was written (content sha256 differs): "
                              "it is damaged or tampered with; re-run `facekd train` or restore it from a copy")
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
