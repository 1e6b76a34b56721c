"""The bench stage of a run: every artifact of an export measured on the run's val pairs and identities.

Imports no torch: `facekd bench` (and the demo's bench stage) needs the runtimes, not the training code.
"""
from __future__ import annotations

from pathlib import Path

from facekd.core.data import FaceFolder, read_identity_set
from facekd.core.errors import InputError
from facekd.runtime_bench.bench import run_bench, run_bench_on_targets
from facekd.training.config import load_val_pairs

from .config import RunConfig, save_config


def load_val_identities(cfg: RunConfig) -> FaceFolder | None:
    """All faces of the val identities (data.val_identities), or None when it is not set."""
    if not cfg.data.val_identities:
        return None
    return read_identity_set(f"{cfg.data.val_identities}={cfg.data.val_images_root or cfg.data.aligned_root}")


def bench_identities(cfg: RunConfig) -> FaceFolder | None:
    """bench.identities ("none": no all-pairs measures), else the val identities."""
    if cfg.bench.identities == "none":
        return None
    if cfg.bench.identities:
        return read_identity_set(cfg.bench.identities, cfg.data.val_images_root or cfg.data.aligned_root)
    return load_val_identities(cfg)


def onnx_teacher(cfg: RunConfig):
    """(path, preprocessing) of the run's teacher when it is an ONNX file, for the teacher row."""
    path = Path(cfg.teacher.path) if cfg.teacher.path else None
    return (path, cfg.teacher.preprocess) if path is not None and path.suffix == ".onnx" and path.is_file() else None


def bench_export(cfg: RunConfig, export_dir: Path, out_path: Path, progress: bool = True) -> list[Path]:
    """Bench on this machine into `out_path`; with other targets in bench.targets (ssh, adb),
    one `<target>.json` per target beside it."""
    pairs = load_val_pairs(cfg)
    if pairs is None:
        raise InputError("data.val_pairs is not set: the benchmark measures accuracy on verification pairs")
    identities = bench_identities(cfg)
    if [t.get("kind") for t in cfg.bench.targets] == ["local"]:
        paths = [run_bench(export_dir, pairs, cfg.bench, out_path, progress=progress, identities=identities)]
    else:
        paths = run_bench_on_targets(export_dir, pairs, cfg.bench, out_path.parent, progress=progress,
                                     identities=identities)
    save_config(cfg, out_path.parent / "config.yaml")
    return paths
