"""ExecuTorch ``.pte`` lowered to the XNNPACK backend: fp32 and PT2E INT8; run by ExecuTorch's runtime.

Input ``[1, 3, H, W]`` float32 NCHW, output ``[1, D]`` float32, batch 1 (what an on-device
ExecuTorch app feeds); the runner loops over a batch.

- fp32: ``torch.export`` → ``to_edge_transform_and_lower`` with the XNNPACK partitioner.
- int8: PT2E static quantisation with ExecuTorch's XNNPACK quantiser (symmetric int8
  activations, per-channel int8 weights) calibrated on real aligned faces, then the same
  lowering: XNNPACK runs the quantised convolutions; ops it does not take stay on the portable
  CPU kernels. When the export gives a worst-cosine target that the all-int8 graph misses on the
  calibration faces, XNNPACK's dynamic-range int8 is tried (``_dynamic_range_program``: zoo
  student worst cosine 0.9993 vs 0.986 static, but about as fast as fp32 here: 1.00-1.14x), and
  when it misses too the most sensitive convolutions stay float (``export.int8_search``; each
  candidate lowered and run by ExecuTorch: the quantised torch graph differs from XNNPACK's int8
  arithmetic by up to 1e-3 in the worst cosine). A ``.pte`` has no metadata, so what the search
  measured is written beside it (``model.int8.json``) and read back by ``inspect``.

ExecuTorch's thread pool is global to the process and resizing it once programs exist hung or
crashed on these machines: the runner sizes it only before the process's first program (the
benchmark starts one worker per thread count) and reports the pool's real size.
"""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facekd.core.io import atomic_write_bytes, atomic_write_json

from .artifact import ArtifactIO, Runner, package_versions, run_one_by_one, slowest_ops
from .errors import ExportError
from .int8 import NO_PLAN, Int8Plan
from .int8_search import choose_int8, pt2e_choices
from .onnx_format import INT8_METADATA, METADATA_DETAILS

if TYPE_CHECKING:
    from torch import nn
    from facekd.core.preprocess import PreprocessSpec

    from .faces import FaceSet

logger = logging.getLogger(__name__)
SCALAR_TYPES = {6: "float32", 5: "float16", 1: "int8", 0: "uint8"}  # c10::ScalarType codes
DYNAMIC_MIN_WEIGHTS = 1024  # layers with fewer weights stay float in the dynamic-range int8 (TFLite's legacy rule)
_programs_loaded: list[bool] = []  # non-empty once this process has loaded a program (the pool is then in use)


def _facts_path(path: Path) -> Path:
    """Where the int8 search's facts of ``path`` are kept."""
    return path.with_name(f"{path.stem}.int8.json")


def _quantized(model: "nn.Module", example: tuple, calibration_inputs: np.ndarray,
               float_convolutions: frozenset[int] = frozenset()) -> "nn.Module":
    """PT2E int8 of ``model``, the convolutions at positions ``float_convolutions`` (execution order) left float."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    class FloatLayersQuantizer(XNNPACKQuantizer):
        def annotate(self, graph_module: torch.fx.GraphModule) -> torch.fx.GraphModule:
            convolutions = [n for n in graph_module.graph.nodes if n.target == torch.ops.aten.conv2d.default]
            float_nodes = {convolutions[i] for i in float_convolutions}
            self.set_filter_function(lambda node: node not in float_nodes)
            return super().annotate(graph_module)

    quantizer = FloatLayersQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(model, example).module(), quantizer)
    with torch.no_grad():
        for i in range(len(calibration_inputs)):
            prepared(torch.from_numpy(calibration_inputs[i : i + 1]))
    return convert_pt2e(prepared)


def convert(model: "nn.Module", precision: str, calibration: "FaceSet", out_path: Path, *,
            preprocess: "PreprocessSpec", max_batch: int, int8: Int8Plan = NO_PLAN,
            progress: bool = False) -> Path:
    import torch

    if precision not in ("fp32", "int8"):
        raise ExportError(f"executorch has no precision {precision!r}")
    nchw = preprocess.with_layout("NCHW")
    example = (torch.zeros(nchw.input_shape(1)),)
    model = model.eval()
    if precision == "fp32":
        return atomic_write_bytes(out_path, _lowered(model, example))
    faces = calibration.inputs(nchw)

    def embed(program: bytes) -> np.ndarray:
        method = _method(program)
        return np.concatenate([method.execute([torch.from_numpy(faces[i : i + 1])])[0].numpy() for i in range(len(faces))])

    choices = pt2e_choices(model, torch.from_numpy(faces), lambda floats: _lowered(_quantized(model, example, faces, frozenset(floats)), example),
                           embed, boundary_float=False, fallback=lambda: _dynamic_range_program(model, example))
    program, facts = choose_int8(choices, int8.search_target, {"calibration_faces": len(faces)},
                                 static_first=int8.static_first)
    atomic_write_json(_facts_path(out_path), facts)
    return atomic_write_bytes(out_path, program)


def _dynamic_range_program(model: "nn.Module", example: tuple) -> bytes | None:
    """XNNPACK dynamic-range int8 of ``model``: per-channel int8 weights of the convolutions and
    linears with >= 1024 of them (smaller ones, where quantising activations per call costs more
    than it saves, stay float), their activations quantised per inference from their own range.
    PReLUs become elementwise maxima (XNNPACK runs those; the quantised graph's own PReLU lowering
    falls back to portable kernels). None when no layer is that large."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
        XnnpackDynamicallyQuantizedPartitioner,
        XnnpackPartitioner,
    )
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from executorch.exir import to_edge_transform_and_lower
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from .prelu import prelu_as_maximum

    layers = (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)

    def large(node) -> bool:
        return node.target not in layers or node.args[1].meta["val"].numel() >= DYNAMIC_MIN_WEIGHTS

    graph = torch.export.export(prelu_as_maximum(model, any_slope=True), example).module()
    if not any(node.target in layers and large(node) for node in graph.graph.nodes):
        return None
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    quantizer.set_filter_function(large)
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        prepared(*example)
    # the dynamic partitioner first: with the plain one alone, a dynamically quantised conv feeding another
    # failed to run here (XNNPACK: invalid parameter while propagating shapes)
    return to_edge_transform_and_lower(torch.export.export(convert_pt2e(prepared), example),
                                       partitioner=[XnnpackDynamicallyQuantizedPartitioner(), XnnpackPartitioner()]
                                       ).to_executorch().buffer


def _lowered(model: "nn.Module", example: tuple) -> bytes:
    """``model`` lowered to XNNPACK as an ExecuTorch program."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    return to_edge_transform_and_lower(torch.export.export(model, example),
                                       partitioner=[XnnpackPartitioner()]).to_executorch().buffer


class _LoadedMethod:
    """A program's forward method, holding the program: ExecuTorch's ``Method`` does not keep its
    ``Program`` alive, and a method whose program was collected ran on freed memory (intermittent
    SIGSEGV in ``Method::inputs_size``)."""

    def __init__(self, program) -> None:
        self.program = program
        self.method = program.load_method("forward")

    def execute(self, inputs: list):
        return self.method.execute(inputs)

    @property
    def metadata(self):
        return self.method.metadata


def _method(program: Path | bytes) -> _LoadedMethod:
    """The forward method of a ``.pte`` file or of a program's bytes."""
    from executorch.runtime import Runtime

    _programs_loaded.append(True)
    return _LoadedMethod(Runtime.get().load_program(program if isinstance(program, bytes) else Path(program)))


def inspect(path: Path) -> ArtifactIO:
    meta = _method(path).metadata
    if meta.num_inputs() != 1 or meta.num_outputs() != 1:
        raise ExportError(f"{path}: expected one input and one output, found {meta.num_inputs()} and {meta.num_outputs()}")
    source, sink = meta.input_tensor_meta(0), meta.output_tensor_meta(0)
    facts = _facts_path(Path(path))
    searched = {METADATA_DETAILS[INT8_METADATA]: json.loads(facts.read_text())} if facts.is_file() else {}
    return ArtifactIO(
        input_name="input", input_shape=list(source.sizes()), input_dtype=SCALAR_TYPES.get(source.dtype(), str(source.dtype())),
        output_name="embedding", output_shape=list(sink.sizes()), output_dtype=SCALAR_TYPES.get(sink.dtype(), str(sink.dtype())),
        details={"backend": "XNNPACK", "method": meta.name(), **searched},
    )


class ExecuTorchRunner(Runner):
    def __init__(self) -> None:
        self._method = None
        self._threads: int | None = None
        self._path = ""

    def load(self, path: str | Path, threads: int | None = None) -> None:
        if threads:
            _size_thread_pool(threads)
        self._threads, self._path = threads, str(path)
        self._method = _method(path)

    def _run_single(self, batch: np.ndarray) -> np.ndarray:
        import torch

        return self._method.execute([torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))])[0].numpy()

    def run(self, batch: np.ndarray) -> np.ndarray:
        return run_one_by_one(self._run_single, batch)

    def profile_ops(self, batch: np.ndarray, runs: int) -> list[dict]:
        """ExecuTorch's ETDump of a second load with ``enable_etdump``, read by its Inspector:
        XNNPACK reports each of its own ops (kernel XNNPACK), the rest run on portable kernels."""
        import torch
        from executorch.devtools import Inspector
        from executorch.runtime import Runtime

        program = Runtime.get().load_program(Path(self._path), enable_etdump=True)
        method, first = program.load_method("forward"), torch.from_numpy(np.ascontiguousarray(batch[:1], dtype=np.float32))
        for _ in range(runs):
            method.execute([first])
        with tempfile.TemporaryDirectory() as scratch:
            dump = Path(scratch) / "run.etdp"
            program.write_etdump_result_to_file(str(dump), str(Path(scratch) / "debug.bin"))
            blocks = Inspector(etdump_path=str(dump)).event_blocks
        events = [event for block in blocks if block.name == "Execute" for event in block.events
                  # not ops: Method::execute and the like, and DELEGATE_CALL, whose time is its XNNPACK ops'
                  if event.perf_data is not None and "::" not in event.name and event.name != "DELEGATE_CALL"]
        return slowest_ops(((event.name, event.name.split(" #")[0], "XNNPACK" if event.is_delegated_op else "portable",
                             float(event.perf_data.avg) * runs) for event in events), runs)

    def info(self) -> dict:
        from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count

        return {"runtime": "executorch", "version": package_versions(("executorch",)).get("executorch", ""),
                "delegate": "XNNPACK", "threads": self._threads, "pool_threads": _threadpool_get_thread_count()}


def _size_thread_pool(threads: int) -> None:
    """Size ExecuTorch's process-wide pool before the first program is loaded; afterwards keep the
    pool as it is (resizing a pool in use hung and crashed here) and say so: the benchmark runs one
    fresh worker per thread count, and ``info()`` reports the pool's real size."""
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count, _unsafe_reset_threadpool

    current = _threadpool_get_thread_count()
    if current == threads:
        return
    if _programs_loaded:
        logger.warning("ExecuTorch's thread pool is in use with %d threads in this process; %d threads "
                       "need a fresh process", current, threads)
        return
    _unsafe_reset_threadpool(threads)
