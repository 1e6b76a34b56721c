"""How close can a full-integer artifact come to its simulated-int8 twin? Three computations of one
int8 graph, compared after each depth of a student's ``features``:

- ``sim``: PT2E ``convert_pt2e`` (what ``export`` uses as the twin: int8 values, float arithmetic);
- ``ref``: the same graph in PyTorch's integer reference representation (int32 accumulation);
- ``xnnpack``: the same graph lowered to ExecuTorch/XNNPACK (the full-integer artifact's kernels);

each also against the float student. All share one calibration (``--calib`` faces of the training
identities, one at a time, as export calibrates) and are measured on ``--faces`` faces of the val
identities. Cosines are per face over the flattened activation (the embedding at the last depth).

    python benchmarks/int8_twin_floor.py runs/demo_qat2/student_int8.pt --depths 4 22 58 82 [--json out.json]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facekd.export import executorch_format
from facekd.export.faces import FaceSet
from facekd.training.checkpoint import load_student
from facekd.training.quant_aware import observed_int8

COMPUTATIONS = ("float", "sim", "ref", "xnnpack")


def faces_of(identity_file: Path, root: Path, count: int) -> FaceSet:
    identities = identity_file.read_text().split()
    paths = [path for identity in identities for path in sorted((root / identity).glob("*"))]
    return FaceSet.from_paths(paths, count)


def computations(model: nn.Module, calibration: np.ndarray, example: tuple) -> dict:
    """{name: callable on one NCHW face} for the float model and its three int8 computations."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    observed = observed_int8(model, torch.from_numpy(calibration))
    method = executorch_format._method(executorch_format._lowered(convert_pt2e(copy.deepcopy(observed)), example))
    return {"float": model, "sim": convert_pt2e(copy.deepcopy(observed)),
            "ref": convert_pt2e(copy.deepcopy(observed), use_reference_representation=True),
            "xnnpack": lambda x: method.execute([x])[0]}


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def compare_at_depth(model: nn.Module, depth: int | None, calibration: np.ndarray, faces: np.ndarray) -> dict:
    part = (model if depth is None else nn.Sequential(*list(model.features)[:depth])).eval()
    example = (torch.zeros((1, *faces.shape[1:])),)
    with torch.no_grad():
        outputs = {name: np.concatenate([run(torch.from_numpy(face[None])).flatten(1).numpy() for face in faces])
                   for name, run in computations(part, calibration, example).items()}
    pairs = [(a, b) for i, a in enumerate(COMPUTATIONS) for b in COMPUTATIONS[i + 1:]]
    return {f"{a}~{b}": {"mean_cos": float(cosines(outputs[a], outputs[b]).mean()),
                         "worst_cos": float(cosines(outputs[a], outputs[b]).min())} for a, b in pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--depths", nargs="*", type=int, default=[], help="prefixes of model.features (the embedding is always measured)")
    parser.add_argument("--calib", type=int, default=64)
    parser.add_argument("--faces", type=int, default=200)
    parser.add_argument("--lfw", type=Path, default=Path(os.environ.get("FACEKD_HOME", "../shared")) / "data" / "lfw")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, spec, _ = load_student(args.checkpoint)
    nchw = spec.with_layout("NCHW")
    root, splits = args.lfw / "aligned_112", args.lfw / "splits"
    calibration = faces_of(splits / "train_identities.txt", root, args.calib).inputs(nchw)
    faces = faces_of(splits / "val_identities.txt", root, args.faces).inputs(nchw)
    result = {}
    for depth in [*args.depths, None]:
        key = "embedding" if depth is None else f"features[:{depth}]"
        result[key] = compare_at_depth(model, depth, calibration, faces)
        print(key, "  ".join(f"{name} {v['mean_cos']:.5f}/{v['worst_cos']:.5f}" for name, v in result[key].items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"checkpoint": str(args.checkpoint), "calib": args.calib,
                                         "faces": args.faces, "mean/worst cosine": result}, indent=2))


if __name__ == "__main__":
    main()
