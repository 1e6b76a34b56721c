"""INT8 static vs dynamic-range probe (not a test): worst case and speed of each, same run.

For a student, builds with the project's own converters the fp32, static int8 (PT2E, as under
the default bar) and dynamic-range int8 (what tflite-int8 and executorch-int8 ship under a
worst-cosine target they miss statically) artifacts of TFLite and ExecuTorch — the int8 ones, like
``facekd export``, of the channel-equalised copy of a chain student (``export.int8_equalise``;
``--no-equalise``: of the student as given) — then prints on faces of validation identities the cosine to the float student (mean, worst, 1st percentile), the file
size, and the p50 latency at one thread and batch 1, each runtime's artifacts timed interleaved in
one loop with the ratio to its fp32.

    FACEKD_HOME=../shared .venv/bin/python benchmarks/int8_dynamic_range.py runs/demo/student.pt [--faces 512 --calib 64]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.int8_worst_case import split_paths  # noqa: E402
from facekd.export import executorch_format, litert_format
from facekd.export.equalise import equalise_for_int8
from facekd.export.faces import FaceSet
from facekd.export.prelu import prelu_as_maximum
from facekd.training.checkpoint import load_student


def tflite_artifacts(model, int8_model, preprocess, calibration: FaceSet) -> dict:
    """{name: (callable on one NHWC face, file bytes)}; the int8 ones of ``int8_model``."""
    import litert_torch

    example = (torch.zeros(preprocess.with_layout("NHWC").input_shape(1)),)
    fp32 = litert_torch.convert(litert_torch.to_channel_last_io(prelu_as_maximum(model), args=[0]).eval(), example)
    shipped = prelu_as_maximum(int8_model)  # what int8 without a target converts
    wrapped = litert_torch.to_channel_last_io(shipped, args=[0]).eval()
    static, _ = litert_format._int8_by_measurement(shipped, wrapped, example, calibration, preprocess, None)
    dynamic = litert_format._dynamic_range_int8(int8_model, example)
    return {name: (edge, edge.model_content()) for name, edge in
            (("fp32", fp32), ("static int8", static), ("dynamic-range int8", dynamic))}


def executorch_artifacts(model, int8_model, preprocess, calibration: FaceSet) -> dict:
    """{name: (callable on one NCHW face, program bytes)}; the int8 ones of ``int8_model``."""
    nchw = preprocess.with_layout("NCHW")
    example = (torch.zeros(nchw.input_shape(1)),)
    programs = {"fp32": executorch_format._lowered(model, example),
                "static int8": executorch_format._lowered(
                    executorch_format._quantized(int8_model, example, calibration.inputs(nchw)), example),
                "dynamic-range int8": executorch_format._dynamic_range_program(int8_model, example)}

    def runner(program: bytes):
        method = executorch_format._method(program)
        return lambda face: method.execute([torch.from_numpy(face)])[0].numpy()

    return {name: (runner(program), program) for name, program in programs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--faces", type=int, default=512)
    parser.add_argument("--calib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--no-equalise", action="store_true", help="quantise the student as given")
    args = parser.parse_args()
    lfw = Path(os.environ.get("FACEKD_HOME", "../shared")) / "data" / "lfw"
    model, preprocess, _ = load_student(args.checkpoint)
    model.eval()
    train_paths, val_paths = split_paths(lfw)
    rng = np.random.default_rng(0)
    calibration = FaceSet.from_paths([train_paths[i] for i in sorted(rng.permutation(len(train_paths))[:args.calib])])
    parity = FaceSet.from_paths(val_paths, args.faces)
    with torch.no_grad():
        reference = torch.nn.functional.normalize(model(torch.from_numpy(parity.inputs(preprocess.with_layout("NCHW")))), dim=1).numpy()
    int8_model = model if args.no_equalise else equalise_for_int8(model, calibration.inputs(preprocess.with_layout("NCHW")))[0]
    torch.set_num_threads(1)
    executorch_format._size_thread_pool(1)
    for runtime, build, layout in (("tflite", tflite_artifacts, "NHWC"), ("executorch", executorch_artifacts, "NCHW")):
        artifacts = build(model, int8_model, preprocess, calibration)
        faces = parity.inputs(preprocess.with_layout(layout))
        for name, (run, content) in artifacts.items():
            out = np.concatenate([run(faces[i:i + 1]) for i in range(len(faces))])
            cos = (out / np.linalg.norm(out, axis=1, keepdims=True) * reference).sum(1)
            print(f"{runtime:10s} {name:18s} mean {cos.mean():.5f} worst {cos.min():.5f} p1 {np.quantile(cos, 0.01):.5f} "
                  f"file {len(content) / 1e6:.2f} MB", flush=True)
        times = {name: [] for name in artifacts}
        for _ in range(args.rounds):
            for name, (run, _) in artifacts.items():
                start = time.perf_counter()
                for _ in range(5):
                    run(faces[:1])
                times[name].append((time.perf_counter() - start) / 5 * 1e3)
        for name, samples in times.items():
            print(f"{runtime:10s} {name:18s} p50 {np.median(samples):.2f} ms, fp32/this {np.median(times['fp32']) / np.median(samples):.2f}")


if __name__ == "__main__":
    main()
