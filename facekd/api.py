"""facekd from Python: load a student or an exported artifact, embed and verify faces; train, export, bench.

    import facekd
    model = facekd.load("sface-derived-k60")          # a zoo name, a checkpoint .pt, or an export's artifact folder
    vectors = model.embed(faces)                       # aligned uint8 RGB [N, 112, 112, 3] (or image paths) -> [N, D]
    same, score = model.verify(face_a, face_b, far=1e-4)   # at the operating point for that false-accept rate
    model.export("runs/mine/export", formats=["onnx", "tflite"])           # a checkpoint's artifacts + manifests
    facekd.train("runs/mine", data="MYFACES", teacher="MYTEACHER.onnx")    # the demo's recipe unless config= says
    facekd.bench("runs/mine/export", "runs/mine/bench/result.json")

The CLI is a thin shell over these functions.
"""
from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facekd.core.data import load_rgb_file
from facekd.core.operating_points import OperatingPoints
from facekd.core.preprocess import PreprocessSpec
from facekd.core.verification import l2_normalise

from .config import ConfigError, RunConfig, load_config

REPO = Path(__file__).resolve().parents[1]
ZOO = REPO / "zoo"
DEMO_CONFIG = Path(__file__).with_name("demo.yaml")
Faces = np.ndarray | Sequence[str | os.PathLike]


class ModelNotFound(ConfigError):
    """``facekd.load`` was given something that is neither a checkpoint, an artifact nor a zoo name."""


def run_config(config: str | os.PathLike | None = None, overrides: Sequence[str] = (),
               data: str | os.PathLike | None = None, teacher: str | os.PathLike | None = None) -> RunConfig:
    """Config file + ``key=value`` overrides, with data and teacher paths from (first set wins) the arguments,
    the config (``data.aligned_root``, ``teacher.path``), FACEKD_DATA/FACEKD_TEACHER/FACEKD_HOME, or the fetch cache."""
    from .paths import resolve_resources

    cfg = load_config(config, list(overrides))
    res = resolve_resources(data=data or cfg.data.aligned_root or None, teacher=teacher or cfg.teacher.path or None)
    cfg.data.aligned_root = str(res.aligned_root)
    cfg.data.train_identities = cfg.data.train_identities or str(res.train_identities or "")
    cfg.data.val_pairs = cfg.data.val_pairs or str(res.val_pairs or "")
    cfg.data.val_identities = cfg.data.val_identities or str(res.val_identities or "")
    cfg.data.val_images_root = cfg.data.val_images_root or str(res.val_images_root)
    cfg.teacher.path = str(res.teacher)
    return cfg


def _as_faces(faces: Faces) -> np.ndarray:
    """uint8 RGB [N, H, W, 3] from an array (one face [H, W, 3] too) or image paths."""
    if isinstance(faces, np.ndarray):
        return faces[None] if faces.ndim == 3 else faces
    return np.stack([load_rgb_file(path) for path in faces])


@dataclass
class FaceModel:
    """A face-embedding model (a student checkpoint or an exported artifact) with its operating points."""

    name: str
    preprocess: PreprocessSpec
    embed_batch: Callable[[np.ndarray], np.ndarray]  # uint8 RGB [N, H, W, 3] -> [N, D]
    operating_points: OperatingPoints | None = None
    checkpoint: Path | None = None
    info: dict = field(default_factory=dict)

    def embed(self, faces: Faces, batch_size: int = 64) -> np.ndarray:
        """Unit-length embeddings [N, D] of aligned faces (uint8 RGB arrays, or image files)."""
        faces = _as_faces(faces)
        return np.concatenate([l2_normalise(self.embed_batch(faces[start:start + batch_size]))
                               for start in range(0, len(faces), batch_size)])

    def similarity(self, a: Faces, b: Faces) -> np.ndarray:
        """Cosine similarity of each face of ``a`` with the face of ``b`` at the same position."""
        return np.sum(self.embed(a) * self.embed(b), axis=1)

    def verify(self, a: Faces, b: Faces, far: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
        """(same person?, score) per pair, at the operating point that keeps false accepts at ``far``."""
        if self.operating_points is None:
            raise ConfigError(f"{self.name} carries no operating points: call calibrate(identities) with aligned "
                              "faces of people it never trained on, or load an artifact made by `facekd export`")
        scores = self.similarity(a, b)
        return scores >= self.operating_points.verification_threshold(far), scores

    def calibrate(self, identities: str | os.PathLike) -> OperatingPoints:
        """Operating points from ``identities`` (``ROOT/<identity>/<image>`` or ``LIST.txt=ROOT``): all their
        pairs, and open-set galleries of them."""
        from facekd.core.data import read_identity_set
        from facekd.core.verification import calibrate, check_identity_set, embed_folder

        folder = read_identity_set(str(identities))
        check_identity_set(np.asarray(folder.labels))
        self.operating_points = calibrate(embed_folder(self.embed_batch, folder), folder.labels, str(identities))
        return self.operating_points

    def export(self, out: str | os.PathLike, formats: Sequence[str] | None = None, config: str | os.PathLike | None = None,
               overrides: Sequence[str] = (), data: str | os.PathLike | None = None,
               teacher: str | os.PathLike | None = None, progress: bool = True):
        """Artifacts and manifests of this checkpoint (``facekd export``), calibrated on training faces and
        checked on the val pairs and identities of ``data``; returns one record per artifact."""
        from .stages import export_student

        if self.checkpoint is None:
            raise ConfigError(f"{self.name} is an exported artifact already: export from its checkpoint")
        cfg = run_config(config, overrides, data, teacher)
        if formats is not None:
            cfg.export.formats = list(formats)
        return export_student(cfg, self.checkpoint, Path(out), progress=progress)


def _checkpoint_model(path: Path) -> FaceModel:
    from facekd.training.checkpoint import load_student
    from facekd.training.evaluate import student_embed_fn

    model, preprocess, _ = load_student(path)
    embed = student_embed_fn(model, preprocess)
    return FaceModel(path.parent.name if path.name == "student.pt" else path.stem, preprocess, embed, checkpoint=path)


def _artifact_model(manifest_path: Path, threads: int | None) -> FaceModel:
    from facekd.export.formats import FORMATS
    from facekd.export.manifest import Manifest, verify_artifact

    manifest = Manifest.load(manifest_path)
    artifact = verify_artifact(manifest_path)
    runner = FORMATS[manifest.format].runner()
    runner.load(artifact, threads)
    spec = PreprocessSpec.from_dict(manifest.preprocess)
    return FaceModel(f"{manifest.format}-{manifest.precision}", spec, lambda faces: runner.run(spec.apply(faces)),
                     manifest.deploy_points(), info={"manifest": manifest.to_dict(), "runtime": runner.info()})


def load(source: str | os.PathLike, threads: int | None = None) -> FaceModel:
    """A checkpoint (``.pt``), an exported artifact (its folder, its file or its ``manifest.json``), or a zoo
    student by name (``zoo/<name>/student.pt``)."""
    path = Path(source)
    for manifest in (path / "manifest.json", path.parent / "manifest.json", path):
        if manifest.name == "manifest.json" and manifest.is_file():
            return _artifact_model(manifest, threads)
    if path.suffix == ".pt" and path.is_file():
        return _checkpoint_model(path)
    if (ZOO / str(source) / "student.pt").is_file():
        return _checkpoint_model(ZOO / str(source) / "student.pt")
    zoo = sorted(p.name for p in ZOO.glob("*") if (p / "student.pt").is_file())
    near = difflib.get_close_matches(str(source), zoo, n=1)
    raise ModelNotFound(f"{source}: not a checkpoint (.pt), an export's artifact folder (with manifest.json) or a zoo "
                        f"student" + (f"; did you mean {near[0]}?" if near else f" ({', '.join(zoo) or 'none here'})"))


def train(out: str | os.PathLike, config: str | os.PathLike | None = None, overrides: Sequence[str] = (),
          data: str | os.PathLike | None = None, teacher: str | os.PathLike | None = None, resume: bool = False,
          progress: bool = True):
    """Distil a student into ``out`` (``facekd train``); without ``config``, the demo's recipe."""
    from .stages import train_student

    cfg = run_config(config or DEMO_CONFIG, overrides, data, teacher)
    return train_student(cfg, Path(out), resume=resume, progress=progress)


def bench(export_dir: str | os.PathLike, out: str | os.PathLike, config: str | os.PathLike | None = None,
          overrides: Sequence[str] = (), data: str | os.PathLike | None = None,
          teacher: str | os.PathLike | None = None, progress: bool = True) -> list[Path]:
    """Accuracy, parity, latency and size of every artifact of ``export_dir`` (``facekd bench``); the result files."""
    from .bench_stage import bench_export

    cfg = run_config(config, overrides, data, teacher)
    return bench_export(cfg, Path(export_dir), Path(out), progress=progress)
