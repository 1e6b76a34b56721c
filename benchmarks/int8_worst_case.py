"""INT8 worst-case probe (not a test): where does a student's worst int8 face come from?

Simulates what the int8 exporters do to the equalised copy of a chain student (per-channel
symmetric int8 weights, per-tensor asymmetric int8 inputs of every Conv2d/Linear with min-max
ranges from calibration faces of training identities) and prints, on faces of validation
identities, the cosine to the float student (mean, worst, the five worst faces) for: the
calibration ranges, weights only, the ranges widened ×1.1/1.25/1.5, and ranges that include every
val face. Then, for the worst face, each layer's input range against the calibration range and the
share of its values clipped.

    FACEKD_HOME=../shared .venv/bin/python benchmarks/int8_worst_case.py runs/demo/student.pt [--faces 512 --calib 64]
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from facekd.export.equalise import equalise_for_int8
from facekd.export.faces import FaceSet
from facekd.training.checkpoint import load_student
from facekd.training.quant_aware import quantised_layers


def split_paths(lfw: Path) -> tuple[list[Path], list[Path]]:
    """(aligned faces of training identities, of validation identities)."""
    train = set((lfw / "splits" / "train_identities.txt").read_text().split())
    val = set((lfw / "splits" / "val_identities.txt").read_text().split())
    paths = sorted((lfw / "aligned_112").glob("*/*"))
    return [p for p in paths if p.parent.name in train], [p for p in paths if p.parent.name in val]


def input_ranges(model: torch.nn.Module, layers: list, x: torch.Tensor) -> np.ndarray:
    """[faces, layers, 2]: each face's (min, max) of each layer's input."""
    found = np.zeros((len(x), len(layers), 2), np.float32)
    start = 0

    def record(index):
        def hook(_, args):
            flat = args[0].detach().flatten(1)
            found[start:start + len(flat), index] = torch.stack([flat.amin(1), flat.amax(1)], 1).numpy()
        return hook

    handles = [layer.register_forward_pre_hook(record(i)) for i, layer in enumerate(layers)]
    with torch.no_grad():
        for start in range(0, len(x), 64):
            model(x[start:start + 64])
    for handle in handles:
        handle.remove()
    return found


def simulated(model, layers, x, ranges: np.ndarray | None, weights: bool = True) -> torch.Tensor:
    """Normalised embeddings of ``x`` with int8 weights and/or int8 inputs in ``ranges`` [layers, 2]."""
    saved = [layer.weight.detach().clone() for layer in layers]
    handles = []
    if weights:
        with torch.no_grad():
            for layer in layers:
                scale = layer.weight.abs().flatten(1).amax(1).clamp_min(1e-8) / 127
                zero = torch.zeros_like(scale, dtype=torch.int32)
                layer.weight.copy_(torch.fake_quantize_per_channel_affine(layer.weight, scale, zero, 0, -127, 127))
    if ranges is not None:
        for layer, (low, high) in zip(layers, ranges):
            low, high = min(float(low), 0.0), max(float(high), 0.0)
            scale = max(high - low, 1e-8) / 255
            zero = int(round(-128 - low / scale))
            handles.append(layer.register_forward_pre_hook(
                lambda _, args, s=scale, z=zero: (torch.fake_quantize_per_tensor_affine(args[0], s, z, -128, 127), *args[1:])))
    try:
        with torch.no_grad():
            return torch.nn.functional.normalize(model(x), dim=1)
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for layer, weight in zip(layers, saved):
                layer.weight.copy_(weight)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--faces", type=int, default=512)
    parser.add_argument("--calib", type=int, default=64)
    args = parser.parse_args()
    lfw = Path(os.environ.get("FACEKD_HOME", "../shared")) / "data" / "lfw"
    model, preprocess, _ = load_student(args.checkpoint)
    train_paths, val_paths = split_paths(lfw)
    rng = np.random.default_rng(0)
    calibration = FaceSet.from_paths([train_paths[i] for i in sorted(rng.permutation(len(train_paths))[:args.calib])])
    layout = preprocess.with_layout("NCHW")
    x = torch.from_numpy(FaceSet.from_paths(val_paths, args.faces).inputs(layout))
    with torch.no_grad():
        reference = torch.nn.functional.normalize(model.eval()(x), dim=1)
    copy, _ = equalise_for_int8(model, calibration.inputs(layout))
    layers = quantised_layers(copy)
    calib = input_ranges(copy, layers, torch.from_numpy(calibration.inputs(layout)))
    calib = np.stack([calib[:, :, 0].min(0), calib[:, :, 1].max(0)], 1)
    val = input_ranges(copy, layers, x)
    everyone = np.stack([np.minimum(calib[:, 0], val[:, :, 0].min(0)), np.maximum(calib[:, 1], val[:, :, 1].max(0))], 1)

    print(f"{args.checkpoint}: {len(x)} val faces, {args.calib} calibration faces, {len(layers)} layers")
    cases = [("calibration min-max", calib, True), ("weights only", None, True),
             *((f"ranges x{k}", calib * k, True) for k in (1.1, 1.25, 1.5)), ("ranges of every val face", everyone, True)]
    worst_face = None
    for name, ranges, weights in cases:
        cosine = (simulated(copy, layers, x, ranges, weights) * reference).sum(1)
        order = torch.argsort(cosine)[:5].tolist()
        worst_face = order[0] if worst_face is None else worst_face
        print(f"{name:26s} mean {cosine.mean():.5f}  worst {cosine.min():.5f}  five worst "
              + " ".join(f"#{i}:{cosine[i]:.4f}" for i in order))
    print(f"worst face #{worst_face}: layer, its input range / calibration range, share clipped")
    clipped = np.zeros(len(layers))
    handles = [layer.register_forward_pre_hook(
        lambda _, a, i=i: clipped.__setitem__(i, float(((a[0] < calib[i, 0]) | (a[0] > calib[i, 1])).float().mean())))
        for i, layer in enumerate(layers)]
    with torch.no_grad():
        copy(x[worst_face:worst_face + 1])
    for handle in handles:
        handle.remove()
    for i in range(len(layers)):
        low, high = val[worst_face, i]
        print(f"  {i:2d}  [{low:8.3f}, {high:8.3f}] / [{calib[i, 0]:8.3f}, {calib[i, 1]:8.3f}]  "
              f"max ×{high / max(calib[i, 1], 1e-9):.2f}  clipped {clipped[i]:.4f}")


if __name__ == "__main__":
    main()
