"""The one table of export formats. Export, validation, CLI help and the benchmark all read it.

Importing this module imports no runtime: every converter and runner imports its own lazily.
"""
from __future__ import annotations

import difflib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from facekd.export import coreml_format, executorch_format, litert_format, onnx_format, openvino_format, tensorrt_format, torch_format
from .artifact import ArtifactIO, Runner, package_versions

HOSTS = ("any", "macOS", "CUDA+TensorRT")
DISPLAY_NAMES = {"tensorrt": "TensorRT", "cuda": "cuda-python", "litert_torch": "litert-torch", "ai_edge_litert": "ai-edge-litert"}


def _always_runnable() -> str | None:
    return None


def _missing(modules: tuple[str, ...]) -> list[str]:
    """Import names among ``modules`` that are not installed."""
    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    return missing


def _not_installed(missing: list[str], install_hint: str) -> str | None:
    if not missing:
        return None
    return f"{' and '.join(DISPLAY_NAMES.get(module, module) for module in missing)} not installed ({install_hint})"


# what every post-training int8 description above gives way to for an int8-aware student
INT8_AWARE = ("; from an int8-aware student (student_int8.pt beside the checkpoint): static full-integer, "
              "no fallback, gated on its simulated-int8 twin (manifest int8)")

@dataclass(frozen=True)
class SourceModel:
    """The portable model a format's converter builds from, made and parity-gated by export on
    any host where ``requires`` are installed, even where the converter itself cannot run
    (TensorRT engines are built from an ONNX written here). Kept beside the artifact as ``file``."""

    file: str
    make: Callable[..., Path]  # (model, precision, calibration, out_path, *, preprocess, max_batch, int8, progress) -> path
    checks: Callable[[str], list[tuple[str, Callable[[], Runner]]]]  # precision -> [(how, runner)]; the first gates
    inspect: Callable[[Path], ArtifactIO]
    requires: tuple[str, ...]
    install_hint: str

    def unavailable_reason(self) -> str | None:
        return _not_installed(_missing(self.requires), self.install_hint)


@dataclass(frozen=True)
class FormatRow:
    """One export format: how to convert to it, inspect it and run it, and where it runs."""

    name: str
    suffix: str
    precisions: dict[str, str]  # precision -> what it means for this format (CLI help, manifest)
    requires: tuple[str, ...]  # import names the converter and runner need
    install_hint: str  # what to do when one of ``requires`` is missing
    host: str  # one of HOSTS
    layout: str  # input layout of the artifact: "NCHW" | "NHWC"
    distributions: tuple[str, ...]  # packages whose versions go into the manifest
    calibrated: tuple[str, ...]  # precisions whose converter is calibrated on real faces
    convert: Callable[..., Path]  # (model, precision, calibration, out_path, *, preprocess, max_batch, int8, progress) -> path
    runner: Callable[[], Runner]
    inspect: Callable[[Path], ArtifactIO]
    validate_only: Callable[[], str | None] = _always_runnable  # reason this host cannot run it, else None
    source: SourceModel | None = None  # what the converter builds from, made and validated even where it cannot run
    own_process: bool = False  # export converts and parity-runs it in a child process (its runtime crashed beside others)

    def missing(self) -> list[str]:
        """Import names of ``requires`` that are not installed."""
        return _missing(self.requires)

    def unavailable_reason(self) -> str | None:
        """None when this format can be converted here, else a one-line reason with the fix."""
        return _not_installed(self.missing(), self.install_hint)

    def versions(self) -> dict[str, str]:
        return package_versions(self.distributions)


FORMATS: dict[str, FormatRow] = {
    row.name: row
    for row in (
        FormatRow(
            name="torch", suffix=".pt", precisions={"fp32": "PyTorch reference weights (student_state)"},
            requires=("torch",), install_hint="pip install torch==2.13.0", host="any", layout="NCHW",
            distributions=("torch",), calibrated=(), convert=torch_format.convert, runner=torch_format.TorchRunner,
            inspect=torch_format.inspect,
        ),
        FormatRow(
            name="onnx", suffix=".onnx",
            precisions={
                "fp32": "float32, dynamic batch",
                "int8": "static QDQ: per-channel symmetric int8 weights (7-bit range), symmetric int8 activations; "
                        "under a worst-cosine target it misses: int8 weights only (activations float, fp32 speed) if "
                        "that meets it, else sensitive layers float (details.int8_calibration)" + INT8_AWARE,
            },
            requires=("onnx", "onnxscript", "onnxruntime"), install_hint="pip install onnx onnxscript onnxruntime",
            host="any", layout="NCHW", distributions=("torch", "onnx", "onnxscript", "onnxruntime"),
            calibrated=("int8",), convert=onnx_format.convert, runner=onnx_format.OnnxRuntimeRunner, inspect=onnx_format.inspect,
        ),
        FormatRow(
            name="tflite", suffix=".tflite",
            precisions={
                "fp32": "float32, batch 1",
                "fp16": "float16 weights, float32 compute, batch 1",
                "int8": "PT2E static int8 (per-channel weights, int8 activations), float first/last conv, batch 1; "
                        "under a worst-cosine target it misses: dynamic-range int8 (int8 weights, activations "
                        "quantised per inference) if that meets it, else sensitive convs float (details.int8_calibration)"
                        + INT8_AWARE + "; its output is then int8 (manifest output.quantization)",
            },
            requires=("litert_torch", "ai_edge_litert"), install_hint="pip install 'facekd[tflite]'",
            host="any", layout="NHWC", distributions=("torch", "litert-torch", "ai-edge-litert", "ai-edge-quantizer", "torchao"),
            calibrated=("int8",), convert=litert_format.convert, runner=litert_format.LiteRTRunner, inspect=litert_format.inspect,
        ),
        FormatRow(
            name="openvino", suffix=".openvino",
            precisions={
                "fp32": "IR folder (model.xml + model.bin), float32 weights and compute, dynamic batch",
                "int8": "NNCF static int8 (FakeQuantize), per-channel 7-bit weights (overflow fix), int8 activations; "
                        "under a worst-cosine target it misses: int8 weights only (activations float, fp32 speed) "
                        "if that meets it, else NNCF's accuracy control keeps sensitive layers float "
                        "(details.int8_calibration)" + INT8_AWARE,
            },
            requires=("openvino", "nncf", "onnx", "onnxscript"), install_hint="pip install 'facekd[openvino]'",
            host="any", layout="NCHW", distributions=("torch", "onnx", "openvino", "nncf"),
            calibrated=("int8",), convert=openvino_format.convert, runner=openvino_format.OpenVinoRunner,
            inspect=openvino_format.inspect, own_process=True,
        ),
        FormatRow(
            name="executorch", suffix=".pte",
            precisions={
                "fp32": "XNNPACK-lowered program, float32, batch 1",
                "int8": "PT2E static int8 (XNNPACK quantiser: per-channel weights, int8 activations), batch 1; "
                        "under a worst-cosine target it misses: dynamic-range int8 (int8 weights, activations "
                        "quantised per inference) if that meets it, else sensitive convs float (details.int8_calibration)"
                        + INT8_AWARE,
            },
            requires=("executorch", "torchao"), install_hint="pip install 'facekd[executorch]'",
            host="any", layout="NCHW", distributions=("torch", "executorch", "torchao"),
            calibrated=("int8",), convert=executorch_format.convert, runner=executorch_format.ExecuTorchRunner,
            inspect=executorch_format.inspect, own_process=True,
        ),
        FormatRow(
            name="coreml", suffix=".mlpackage",
            precisions={
                "fp16": "ML program, float16 compute, iOS15+",
                "int8": "ML program, int8 per-channel weights, float16 activations, iOS16+",
            },
            requires=("coremltools",), install_hint="pip install 'facekd[coreml]'", host="macOS", layout="NCHW",
            distributions=("torch", "coremltools"), calibrated=(), convert=coreml_format.convert, runner=coreml_format.CoreMLRunner,
            inspect=coreml_format.inspect, validate_only=coreml_format.runnable_here,
        ),
        FormatRow(
            name="tensorrt", suffix=".engine",
            precisions={
                "fp16": "strongly typed engine from an fp16 ONNX (ModelOpt AutoCast: fp16 weights and compute, fp32 I/O)",
                "int8": "strongly typed engine from a QDQ ONNX: per-channel full-range int8 weights, int8 activations",
            },
            requires=("tensorrt", "cuda"), install_hint=tensorrt_format.INSTALL_HINT, host="CUDA+TensorRT",
            layout="NCHW", distributions=("torch", "onnx", "onnxruntime", "nvidia-modelopt", "tensorrt", "cuda-python"),
            calibrated=("fp16", "int8"), convert=tensorrt_format.convert, runner=tensorrt_format.TensorRTRunner,
            inspect=tensorrt_format.inspect, source=SourceModel(
                file=tensorrt_format.SOURCE_ONNX, make=tensorrt_format.make_source, checks=tensorrt_format.source_checks,
                inspect=onnx_format.inspect, requires=("onnx", "onnxscript", "onnxruntime"),
                install_hint="pip install onnx onnxscript onnxruntime",
            ),
        ),
    )
}


def unknown_format(name: str) -> str:
    """"unknown format X; did you mean Y?" (or the list of formats when nothing is near)."""
    near = difflib.get_close_matches(name, FORMATS, n=1, cutoff=0.5)
    hint = f"did you mean {near[0]}?" if near else f"choose from {', '.join(FORMATS)}"
    return f"unknown format {name!r}; {hint}"


def available_formats() -> list[tuple[str, str, bool, str]]:
    """(format, precision, available here, note) for every row of the table; the note says why
    a format is unavailable, what limits it on this host, or what the precision means."""
    listing = []
    for row in FORMATS.values():
        unavailable = row.unavailable_reason()
        if unavailable and source_here(row):
            unavailable += f"; its source {row.source.file} is still made and parity-checked here"
        for precision, meaning in row.precisions.items():
            limit = row.validate_only()
            note = unavailable or (f"{meaning}; {limit}" if limit else meaning)
            listing.append((row.name, precision, unavailable is None, note))
    return listing


def source_here(row: FormatRow) -> bool:
    """Whether the model ``row``'s converter builds from can be made and validated on this host."""
    return row.source is not None and row.source.unavailable_reason() is None
