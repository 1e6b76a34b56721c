"""Augmented views of an aligned face, re-created exactly from (image, view id, augmentation spec).

A view is a pure function of the source pixels, the :class:`ViewSpec` and a per-view seed: its
parameters (crop scale/shift, rotation, flip, colour jitter, grayscale, low-resolution, blur,
JPEG quality) are drawn from a generator seeded by ``(spec.seed, image_index, view_id)``, then
applied with OpenCV. The teacher-view cache (FKD-style: teacher outputs stored per view, pixels
re-created at train time) and the trainer both call :func:`make_view`, so the student trains on
exactly the pixels the teacher embedded. View 0 is always the unaugmented image.

Bounds keep the face aligned: one similarity warp about the image centre (scale, rotation,
shift within a few percent), so eyes and mouth stay within a few pixels of the template.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
from facekd.core.errors import InputError


@dataclass(frozen=True)
class ViewSpec:
    """Ranges of each augmentation; probabilities are per view."""

    seed: int = 0
    scale: tuple[float, float] = (0.9, 1.1)    # zoom of the similarity warp (1 = aligned crop)
    shift: float = 0.05                         # max shift, fraction of the side
    rotate_deg: float = 8.0                     # max |rotation|
    flip: float = 0.5
    brightness: float = 0.25                    # x · U(1 ± b)
    contrast: float = 0.25                      # mean + (x − mean) · U(1 ± c)
    saturation: float = 0.25                    # grey + (x − grey) · U(1 ± s)
    grayscale: float = 0.1
    lowres: float = 0.2                         # probability of down-up sampling
    lowres_side: tuple[int, int] = (28, 72)     # side it is downsampled to
    blur: float = 0.1
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    jpeg: float = 0.25
    jpeg_quality: tuple[int, int] = (30, 90)

    def __post_init__(self) -> None:
        for name in ("flip", "grayscale", "lowres", "blur", "jpeg"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"views.{name} is a probability in [0, 1], got {getattr(self, name)}")
        for name in ("scale", "lowres_side", "blur_sigma", "jpeg_quality"):
            low, high = getattr(self, name)
            if low > high or low <= 0:
                raise InputError(f"views.{name} must be (low, high) with 0 < low <= high, got {(low, high)}")
        if self.shift < 0 or self.rotate_deg < 0 or self.shift > 0.2 or self.rotate_deg > 30:
            raise InputError("views.shift must lie in [0, 0.2] and views.rotate_deg in [0, 30] to keep faces aligned")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def view_parameters(spec: ViewSpec, image_index: int, view_id: int) -> dict:
    """The parameters of view ``view_id`` of image ``image_index`` (view 0: identity)."""
    if view_id == 0:
        return {"identity": True}
    rng = np.random.default_rng([spec.seed, int(image_index), int(view_id)])
    u = rng.random(16)

    def jitter(amount: float, x: float) -> float:
        return 1.0 + amount * (2.0 * x - 1.0)  # U(1 ± amount)

    return {
        "identity": False,
        "scale": spec.scale[0] + (spec.scale[1] - spec.scale[0]) * u[0],
        "angle": spec.rotate_deg * (2.0 * u[1] - 1.0),
        "dx": spec.shift * (2.0 * u[2] - 1.0),
        "dy": spec.shift * (2.0 * u[3] - 1.0),
        "flip": bool(u[4] < spec.flip),
        "brightness": jitter(spec.brightness, u[5]),
        "contrast": jitter(spec.contrast, u[6]),
        "saturation": jitter(spec.saturation, u[7]),
        "grayscale": bool(u[8] < spec.grayscale),
        "lowres_side": int(round(spec.lowres_side[0] + (spec.lowres_side[1] - spec.lowres_side[0]) * u[10]))
        if u[9] < spec.lowres else 0,
        "blur_sigma": spec.blur_sigma[0] + (spec.blur_sigma[1] - spec.blur_sigma[0]) * u[12] if u[11] < spec.blur else 0.0,
        "jpeg_quality": int(round(spec.jpeg_quality[0] + (spec.jpeg_quality[1] - spec.jpeg_quality[0]) * u[14]))
        if u[13] < spec.jpeg else 0,
    }


def apply_view(rgb: np.ndarray, params: dict) -> np.ndarray:
    """uint8 RGB [S, S, 3] -> the view described by ``params`` (same size, uint8 RGB)."""
    if params["identity"]:
        return rgb
    side = rgb.shape[0]
    centre = (side / 2.0, side / 2.0)
    matrix = cv2.getRotationMatrix2D(centre, params["angle"], params["scale"])
    matrix[:, 2] += (params["dx"] * side, params["dy"] * side)
    out = cv2.warpAffine(rgb, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if params["flip"]:
        out = out[:, ::-1]
    x = out.astype(np.float32) * params["brightness"]
    grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = grey.mean() + (x - grey.mean()) * params["contrast"]
    grey = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    x = grey + (x - grey) * (0.0 if params["grayscale"] else params["saturation"])
    out = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    if params["lowres_side"]:
        small = cv2.resize(out, (params["lowres_side"],) * 2, interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (side, side), interpolation=cv2.INTER_LINEAR)
    if params["blur_sigma"]:
        out = cv2.GaussianBlur(out, (0, 0), params["blur_sigma"])
    if params["jpeg_quality"]:
        ok, encoded = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, params["jpeg_quality"]])
        if not ok:
            raise RuntimeError("OpenCV could not JPEG-encode a view")
        out = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(out)


def make_view(rgb: np.ndarray, spec: ViewSpec, image_index: int, view_id: int) -> np.ndarray:
    """View ``view_id`` of image ``image_index``: the one function both the cache and the trainer use."""
    return apply_view(rgb, view_parameters(spec, image_index, view_id))
