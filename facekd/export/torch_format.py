"""PyTorch reference artifact: the student checkpoint reduced to its exportable part."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .artifact import ArtifactIO, Runner
from .int8 import NO_PLAN, Int8Plan

if TYPE_CHECKING:
    from torch import nn
    from facekd.core.preprocess import PreprocessSpec

    from .faces import FaceSet

INPUT_NAME = "input"
OUTPUT_NAME = "embedding"


def convert(model: "nn.Module", precision: str, calibration: "FaceSet", out_path: Path, *,
            preprocess: "PreprocessSpec", max_batch: int, int8: Int8Plan = NO_PLAN,
            progress: bool = False) -> Path:
    """Save ``student_state`` (arch, preprocess, weights) — loadable by ``load_student``."""
    from facekd.training.checkpoint import save_checkpoint, student_state

    return save_checkpoint(out_path, student_state(model, preprocess))


def inspect(path: Path) -> ArtifactIO:
    from facekd.training.checkpoint import load_student

    model, preprocess, _ = load_student(path)
    parameters = sum(p.numel() for p in model.parameters())
    return ArtifactIO(
        input_name=INPUT_NAME,
        input_shape=preprocess.with_layout("NCHW").input_shape(None),
        input_dtype="float32",
        output_name=OUTPUT_NAME,
        output_shape=[None, model.embedding_size],
        output_dtype="float32",
        details={"parameters": parameters, "arch": asdict(model.arch)},
    )


class TorchRunner(Runner):
    def __init__(self) -> None:
        self._model = None
        self._threads: int | None = None

    def load(self, path: str | Path, threads: int | None = None) -> None:
        import torch

        from facekd.training.checkpoint import load_student

        if threads:
            torch.set_num_threads(threads)
        self._threads = torch.get_num_threads()
        self._model, _, _ = load_student(path)

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self._model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()

    def info(self) -> dict:
        import torch

        return {"runtime": "torch", "version": torch.__version__, "delegate": "eager CPU", "threads": self._threads}
