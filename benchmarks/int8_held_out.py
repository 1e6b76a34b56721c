"""INT8 held-out probe (not a test): how far do the int8 converters' own measurements overstate an
artifact's worst case?

The int8 converters choose (static, dynamic-range, weights only, which layers stay float) by the
worst cosine to the float model on the calibration faces — the faces the activation ranges were
calibrated on, which those ranges hold by construction. This runs every int8 artifact of an export
folder (TensorRT's int8 source with onnxruntime's QDQ arithmetic, as export gates it) on training
faces that are not calibration faces (the same seeded sample ``facekd export`` draws its calibration
faces from, continued) and prints beside what its manifest recorded on the calibration faces and
on the parity faces (validation identities): the worst cosine to the float student on those
held-out faces and how many of them fall below the int8 bar's worst cosine and the search target.

    FACEKD_HOME=../shared .venv/bin/python benchmarks/int8_held_out.py runs/demo/export [--faces 1024]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from facekd.export.build import INT8_SEARCH_MARGIN, MANIFEST
from facekd.export.faces import FaceSet
from facekd.export.formats import FORMATS
from facekd.export.manifest import Manifest
from facekd.export.parity import embed
from facekd.config import RunConfig, load_config
from facekd.stages import calibration_faces
from facekd.core.preprocess import PreprocessSpec
from facekd.core.verification import l2_normalise


def held_out_faces(cfg: RunConfig, count: int) -> FaceSet:
    """``count`` training faces of the export's seeded sample (``cfg``: the export's run config) that
    are not among its calibration faces."""
    calibration, sample = calibration_faces(cfg, cfg.export.calib_count, cfg.export.calib_count + count)
    if isinstance(sample, FaceSet):
        calibrated = set(calibration.names)
        keep = [i for i, name in enumerate(sample.names) if name not in calibrated]
        return FaceSet(tuple(sample.names[i] for i in keep), tuple(sample.images[i] for i in keep))
    calibrated = set(calibration)
    return FaceSet.from_paths([path for path in sample if path not in calibrated], purpose="held-out")


def run(manifest_path: Path, faces: FaceSet) -> np.ndarray:
    """L2-normalised embeddings of ``faces`` by the artifact of ``manifest_path`` (TensorRT: its source, gated runner)."""
    manifest = Manifest.load(manifest_path)
    row = FORMATS[manifest.format]
    path = manifest.artifact_path(manifest_path)
    is_source = row.source is not None and path.name == row.source.file
    runner = (row.source.checks(manifest.precision)[0][1] if is_source else row.runner)()
    runner.load(path, threads=2)
    return l2_normalise(embed(runner, faces.inputs(PreprocessSpec.from_dict(manifest.preprocess))))


def recorded_on_calibration(manifest: Manifest) -> float | None:
    facts = manifest.details.get("int8_calibration") or {}
    by_method = facts.get("worst_cos_on_calibration_by_method") or {}
    return facts.get("worst_cos_on_calibration", max(by_method.values(), default=None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("--faces", type=int, default=1024, help="held-out training faces")
    args = parser.parse_args()
    cfg = load_config(args.export_dir / "config.yaml")
    bar = cfg.export.bars["int8"].worst_cos
    target = None if bar is None else min(1.0, bar + INT8_SEARCH_MARGIN)
    faces = held_out_faces(cfg, args.faces)
    reference = run(args.export_dir / "torch-fp32" / MANIFEST, faces)
    manifests = sorted(args.export_dir.glob(f"*/{MANIFEST}")) + sorted(args.export_dir.glob(f"rejected/*/{MANIFEST}"))
    print(f"{len(faces)} held-out training faces; int8 bar worst_cos {bar}, search target {target}")
    print("| artifact | status | scheme | worst cos, calibration faces (recorded) | worst cos, held-out | "
          f"below {bar} | below {target} | worst cos, parity faces (recorded) |")
    print("|---|---|---|---|---|---|---|---|")
    for path in manifests:
        manifest = Manifest.load(path)
        if manifest.precision != "int8" or manifest.parity is None:
            continue
        cosines = np.sum(run(path, faces) * reference, axis=1)
        recorded = recorded_on_calibration(manifest)
        below = [int((cosines < bound).sum()) if bound is not None else "–" for bound in (bar, target)]
        print(f"| {manifest.format}-{manifest.precision} | {manifest.status} | {manifest.int8_scheme()} | "
              f"{'–' if recorded is None else f'{recorded:.5f}'} | {cosines.min():.5f} | {below[0]} | {below[1]} | "
              f"{manifest.parity['worst_cos']:.5f} |")


if __name__ == "__main__":
    main()
