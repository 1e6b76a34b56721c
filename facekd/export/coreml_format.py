"""Core ML ``.mlpackage`` (ML program): fp16, and 8-bit weights via coremltools.optimize.

Converted from ``torch.export``. Input ``input`` float32 NCHW with a batch range 1..max_batch, output ``embedding`` float32 (both
typed explicitly, so the iOS16 target of the 8-bit model keeps float32 I/O).

- fp16: fp16 compute, iOS15 target.
- int8: the fp16 program at an iOS16 target with every convolution weight linearly quantised
  to int8 (symmetric, per output channel); activations stay fp16.

Prediction needs macOS. On other hosts the artifact is reloaded and its I/O names, shapes,
types and op census are checked (``inspect``); the runner refuses to load.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .artifact import ArtifactIO, Runner
from .errors import ExportError, FormatUnavailable
from .int8 import NO_PLAN, Int8Plan

if TYPE_CHECKING:
    from torch import nn
    from facekd.core.preprocess import PreprocessSpec

    from .faces import FaceSet

INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
NEEDS_MACOS = "Core ML prediction needs macOS: parity is measured when the export runs on a Mac"


def runnable_here() -> str | None:
    """None on macOS, else why predictions cannot be made here."""
    return None if sys.platform == "darwin" else NEEDS_MACOS


def _save_package(mlmodel, out_path: Path) -> Path:
    """Write a package directory under a temporary name, then rename it into place."""
    scratch = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", dir=out_path.parent))
    try:
        mlmodel.save(str(scratch / out_path.name))
        if out_path.exists():
            shutil.rmtree(out_path)
        os.replace(scratch / out_path.name, out_path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out_path


def convert(model: "nn.Module", precision: str, calibration: "FaceSet", out_path: Path, *,
            preprocess: "PreprocessSpec", max_batch: int, int8: Int8Plan = NO_PLAN,
            progress: bool = False) -> Path:
    import coremltools as ct
    import torch

    if precision not in ("fp16", "int8"):
        raise ExportError(f"coreml has no precision {precision!r}")
    nchw = preprocess.with_layout("NCHW")
    largest = max(max_batch, 2)  # a batch range needs two distinct ends
    batch = torch.export.Dim("batch", min=1, max=largest)
    example = torch.zeros(nchw.input_shape(2))  # batch 2: a batch of 1 would be specialised
    program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},)).run_decompositions({})
    shape = (ct.RangeDim(1, largest, default=1), *nchw.input_shape(1)[1:])
    with warnings.catch_warnings():  # coremltools 9 calls its own deprecated op registry once per op
        warnings.simplefilter("ignore", DeprecationWarning)
        mlmodel = ct.convert(
            program, convert_to="mlprogram", compute_precision=ct.precision.FLOAT16,
            inputs=[ct.TensorType(name=INPUT_NAME, shape=shape, dtype=np.float32)],
            outputs=[ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)],
            minimum_deployment_target=ct.target.iOS16 if precision == "int8" else ct.target.iOS15,
        )
    if precision == "int8":
        from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig, linear_quantize_weights

        weights = OpLinearQuantizerConfig(mode="linear_symmetric", granularity="per_channel", weight_threshold=0)
        mlmodel = linear_quantize_weights(mlmodel, OptimizationConfig(global_config=weights))
    return _save_package(mlmodel, out_path)


def _array_description(feature) -> tuple[list, str]:
    from coremltools.proto.FeatureTypes_pb2 import ArrayFeatureType

    array = feature.type.multiArrayType
    dtype = ArrayFeatureType.ArrayDataType.Name(array.dataType).lower()
    if array.shapeRange.sizeRanges:
        shape = [r.lowerBound if r.lowerBound == r.upperBound else None for r in array.shapeRange.sizeRanges]
    else:
        shape = [int(d) for d in array.shape]
    return shape, dtype


def inspect(path: Path) -> ArtifactIO:
    import coremltools as ct

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    (inputs,), (outputs,) = spec.description.input, spec.description.output
    input_shape, input_dtype = _array_description(inputs)
    output_shape, output_dtype = _array_description(outputs)
    operations = [op for function in spec.mlProgram.functions.values()
                  for block in function.block_specializations.values() for op in block.operations]
    if not output_shape:  # the model description leaves a flexible output unshaped; the program types it
        produced = next(value for op in operations for value in op.outputs if value.name == outputs.name)
        output_shape = [d.constant.size if d.HasField("constant") else None for d in produced.type.tensorType.dimensions]
    return ArtifactIO(
        input_name=inputs.name, input_shape=input_shape, input_dtype=input_dtype,
        output_name=outputs.name, output_shape=output_shape, output_dtype=output_dtype,
        details={"specification_version": spec.specificationVersion, "op_census": dict(Counter(op.type for op in operations))},
    )


class CoreMLRunner(Runner):
    """coremltools ``MLModel.predict`` (macOS only); Core ML picks its own threads."""

    def __init__(self) -> None:
        self._model = None

    def load(self, path: str | Path, threads: int | None = None) -> None:
        reason = runnable_here()
        if reason:
            raise FormatUnavailable(reason)
        import coremltools as ct

        self._model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.ALL)

    def run(self, batch: np.ndarray) -> np.ndarray:
        prediction = self._model.predict({INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.asarray(prediction[OUTPUT_NAME], dtype=np.float32).reshape(len(batch), -1)

    def info(self) -> dict:
        import coremltools as ct

        return {"runtime": "coreml", "version": ct.__version__, "delegate": "ComputeUnit.ALL", "threads": None}
