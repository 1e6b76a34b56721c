"""The export section of the run config (``export.*``): which artifacts, calibrated and gated how.

Its own small module, so that reading a config imports none of the converters.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .parity import DEFAULT_BARS, ParityBar


@dataclass
class ExportConfig:
    formats: list[str] | None = None  # None: every format whose packages are installed
    precisions: dict[str, list[str]] = field(default_factory=dict)  # format -> its precisions to export when it is (default: all)
    calib_count: int = 64  # calibration faces for INT8
    parity_count: int = 64  # parity faces besides those of the pairs
    # verification pairs for the flip rate (spread evenly over the given pairs). The int8 bar allows 0.5 %: on 300
    # pairs that is one flip, and an artifact that truly flips 0.2 % would fail one export in eight
    parity_pairs: int = 1200
    bars: dict[str, ParityBar] = field(default_factory=lambda: dict(DEFAULT_BARS))
    threads: int | None = None  # threads for PyTorch and every runtime during the export (None: their defaults)
    max_batch: int = 64  # largest batch of formats with a bounded dynamic batch (Core ML, TensorRT)
    golden: bool = True  # write golden vectors for the app tests (failing to is an error)
    teacher: bool = True  # put the teacher's ONNX beside the artifacts, so the bench measures it too
    int8_input: bool = False  # tflite-int8 of an int8-aware student: int8 input tensor too (NPUs, Edge TPU); manifest input.quantization
    concurrent: bool = True  # convert OpenVINO and ExecuTorch (child processes) beside the other formats, each lane on half the cores
    int8_static_first: bool = True  # post-training int8: static first (False: dynamic-range / weights-only first, static if that misses the bar)
    int8_equalise: bool = True  # equalise channel ranges before int8 conversion (export.equalise); chain students only
