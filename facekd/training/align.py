"""Face alignment: YuNet 5-point landmarks -> similarity transform onto the ArcFace template."""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from facekd.core.data import IMAGE_EXTENSIONS, BadImageError, load_rgb_file
from facekd.core.io import atomic_write_bytes
from facekd.core.errors import FacekdError, InputError

logger = logging.getLogger(__name__)

# Image-left eye, image-right eye, nose tip, image-left and image-right mouth corner, in a 112×112 crop.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
JPEG_QUALITY = 95


class AlignError(FacekdError, ValueError):
    """Alignment cannot start (detector missing or unusable); the message says what to do."""


def similarity_transform(src5: np.ndarray, dst5: np.ndarray) -> np.ndarray:
    """Least-squares similarity (scale, rotation, translation; no reflection) mapping src -> dst.

    Umeyama (1991): with centred points x_i, y_i, covariance Σ = (1/n) Σ y_i x_iᵀ = U D Vᵀ and
    S = diag(1, sign(det U · det V)): R = U S Vᵀ, scale c = tr(D S) / σ²_x,
    t = μ_y − c R μ_x. Returns the 2×3 matrix [c R | t].
    """
    src = np.asarray(src5, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst5, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise InputError(f"need matching point sets of at least 2 points, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, d, vt = np.linalg.svd(covariance)
    reflect = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ reflect @ vt
    variance = (src_c**2).sum() / len(src)
    if variance == 0:
        raise InputError("source points all coincide: no transform exists")
    scale = np.trace(np.diag(d) @ reflect) / variance
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def align_face(image_rgb: np.ndarray, landmarks5: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp a photo so its 5 landmarks land on the ArcFace template scaled to ``size``."""
    matrix = similarity_transform(landmarks5, ARCFACE_TEMPLATE_112 * (size / 112.0))
    return cv2.warpAffine(image_rgb, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


class FaceAligner:
    """YuNet detector (``cv2.FaceDetectorYN``) that finds the largest face's 5 landmarks.

    Photos larger than ``max_side`` are shrunk for detection only; landmarks are returned in the
    original photo's pixels.
    """

    def __init__(self, detector_onnx_path: str | os.PathLike, score_threshold: float = 0.6, max_side: int = 640):
        path = Path(detector_onnx_path)
        if not path.is_file():
            raise AlignError(f"face detector {path} does not exist: pass the YuNet .onnx file")
        try:
            self.detector = cv2.FaceDetectorYN.create(str(path), "", (320, 320), score_threshold, 0.3, 5000)
        except cv2.error as exc:
            raise AlignError(f"OpenCV cannot load {path} as a YuNet face detector: {exc.err}") from None
        self.max_side = max_side

    def detect_largest(self, image_rgb: np.ndarray) -> np.ndarray | None:
        """Landmarks [5, 2] (image-left eye, image-right eye, nose, mouth corners) or None."""
        height, width = image_rgb.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
        if scale < 1.0:
            bgr = cv2.resize(bgr, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        self.detector.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, faces = self.detector.detect(bgr)
        if faces is None or len(faces) == 0:
            return None
        largest = faces[np.argmax(faces[:, 2] * faces[:, 3])]
        return largest[4:14].reshape(5, 2).astype(np.float64) / scale

    def align(self, image_rgb: np.ndarray, size: int = 112) -> np.ndarray | None:
        """Aligned crop of the largest face, or None when no face is found."""
        landmarks = self.detect_largest(image_rgb)
        return None if landmarks is None else align_face(image_rgb, landmarks, size)


@dataclass
class PrepareReport:
    """What ``prepare_folder`` did; images listed here have no aligned output."""

    written: int = 0
    already_done: int = 0
    no_face: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def prepare_folder(
    src_root: str | os.PathLike,
    dst_root: str | os.PathLike,
    detector_path: str | os.PathLike,
    progress: bool = True,
    size: int = 112,
) -> PrepareReport:
    """Align every photo of ``src_root/<identity>/<image>`` into ``dst_root/<identity>/<stem>.jpg``.

    Crops are JPEG q=95, written atomically; photos whose output exists are skipped, so an
    interrupted run resumes. Photos without a face or that cannot be decoded get no output and
    are listed in the report (relative paths).
    """
    src_root, dst_root = Path(src_root), Path(dst_root)
    if not src_root.is_dir():
        raise AlignError(f"photo folder {src_root} does not exist: pass a folder laid out as <identity>/<image>")
    photos = sorted(
        path.relative_to(src_root)
        for path in src_root.glob("*/*")
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS
    )
    aligner = FaceAligner(detector_path)
    report = PrepareReport()
    for relative in tqdm(photos, desc="aligning faces", unit="img", disable=not progress):
        target = dst_root / relative.with_suffix(".jpg")
        if target.exists():
            report.already_done += 1
            continue
        try:
            image = load_rgb_file(src_root / relative)
        except BadImageError:
            report.unreadable.append(relative.as_posix())
            continue
        crop = aligner.align(image, size)
        if crop is None:
            report.no_face.append(relative.as_posix())
            continue
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"OpenCV failed to encode the crop of {relative} as JPEG")
        atomic_write_bytes(target, encoded.tobytes())
        report.written += 1
    if report.no_face or report.unreadable:
        logger.warning(
            "%d photos had no face and %d could not be read; they were left out", len(report.no_face), len(report.unreadable)
        )
    return report
