"""The one source of truth for how an aligned face becomes a model input tensor.

Serialised into every checkpoint and manifest; used by the dataset, the teacher, calibration,
every runner and (through the manifest) the Android core.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from .errors import InputError

CHANNEL_ORDERS = ("RGB", "BGR")
LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class PreprocessSpec:
    """Aligned uint8 RGB face -> float tensor.

    Steps, in order: resize to ``size``×``size`` with bilinear interpolation and half-pixel
    centres (OpenCV ``INTER_LINEAR``; skipped when already that size), reorder channels to
    ``channel_order``, ``(x - mean[c]) / std[c]`` per channel in float32, then lay out as
    ``layout``.
    """

    size: int = 112
    channel_order: str = "RGB"
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    layout: str = "NCHW"
    dtype: str = "float32"
    resize: str = field(default="bilinear_half_pixel")

    def __post_init__(self) -> None:
        if self.channel_order not in CHANNEL_ORDERS:
            raise InputError(f"channel_order must be one of {CHANNEL_ORDERS}, got {self.channel_order!r}")
        if self.layout not in LAYOUTS:
            raise InputError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s == 0 for s in self.std):
            raise InputError("mean and std need three values each, std non-zero")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def describe(self) -> str:
        """One line: ``RGB 112×112, (x − 0)/1 per channel, NCHW float32``."""
        mean = "/".join(f"{m:g}" for m in self.mean) if len(set(self.mean)) > 1 else f"{self.mean[0]:g}"
        std = "/".join(f"{s:g}" for s in self.std) if len(set(self.std)) > 1 else f"{self.std[0]:g}"
        return f"{self.channel_order} {self.size}×{self.size}, (x − {mean})/{std} per channel, {self.layout} {self.dtype}"

    def with_layout(self, layout: str) -> "PreprocessSpec":
        return PreprocessSpec(**{**asdict(self), "layout": layout})

    def input_shape(self, batch: int | None = None) -> list:
        if self.layout == "NCHW":
            return [batch, 3, self.size, self.size]
        return [batch, self.size, self.size, 3]

    def resize_rgb(self, image: np.ndarray) -> np.ndarray:
        """Resize one HxWx3 uint8 RGB image to size×size (no-op when already that size)."""
        if image.shape[0] == self.size and image.shape[1] == self.size:
            return image
        import cv2  # only when resizing: remote bench workers need numpy alone

        return cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_LINEAR)

    def apply(self, images: np.ndarray) -> np.ndarray:
        """Batch of uint8 RGB images [N,H,W,3] (or one [H,W,3]) -> float32 tensor in ``layout``."""
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise InputError(f"expected RGB images shaped [N,H,W,3], got {images.shape}")
        batch = np.stack([self.resize_rgb(img) for img in images]).astype(np.float32)
        if self.channel_order == "BGR":
            batch = batch[..., ::-1]
        batch = (batch - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.layout == "NCHW":
            batch = batch.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(batch, dtype=np.float32)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessSpec":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


STUDENT_DEFAULT = PreprocessSpec()
SFACE = PreprocessSpec(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
