"""Golden vectors: real faces, their exact model inputs and PyTorch embeddings, for app-side tests.

Layout of ``<out>/golden/``:
- ``face_<i>.png`` (i = 0..7): 4 identities × 2 aligned faces, size×size RGB PNG;
  ``face_resize.png``: one more face resized with OpenCV INTER_AREA to 128×128, to test resizing.
- ``<stem>.nchw.f32``: ``PreprocessSpec.apply`` of the PNG as decoded, raw little-endian float32, NCHW.
- ``golden.json``: ``{"schema_version": 1, "preprocess", "threshold", "embedding_size",
  "items": [{"image", "input", "input_shape", "identity", "source", "embedding"}],
  "pairs": [{"a", "b", "cosine", "same_identity", "match"}]}`` with L2-normalised PyTorch
  embeddings, every pair among the 8 faces, and match = cosine >= threshold.
- ``identification.json``: the open-set case both clients are tested on, from all faces of the val
  identities: ``{"schema_version", "fpir", "operating_points", "gallery": [{"name", "embedding"}]
  (GALLERY_PEOPLE people, their first face), "mated": [...] (their other faces), "strangers": [...]
  (every face of everyone else), "expected": {"threshold", "strangers_matched", "mated_found", "strangers_borderline",
  "mated_borderline"}}`` (borderline: scores within SCORE_TOLERANCE of the threshold; a client's counts may
  differ from the expected ones by at most those),
  expected as the Python rule (:mod:`training.operating_points`) computes it.
"""
from __future__ import annotations

import itertools
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np

from facekd.core.data import load_rgb_file
from facekd.core.io import atomic_write_bytes, atomic_write_json
from facekd.core.verification import IdentitySetError, gallery_split, l2_normalise, open_set_trial

from .errors import ExportError

if TYPE_CHECKING:
    from torch import nn
    from facekd.core.operating_points import OperatingPoints
    from facekd.core.preprocess import PreprocessSpec

logger = logging.getLogger(__name__)

GOLDEN_SCHEMA_VERSION = 1
GALLERY_PEOPLE = 100
GALLERY_FPIR = 0.01
SCORE_TOLERANCE = 1e-5  # cosines this close to a threshold may land on either side in another client's arithmetic
IDENTITIES = 4
PER_IDENTITY = 2
RESIZE_SIDE = 128


def choose_golden_faces(candidates: Sequence[str | os.PathLike]) -> tuple[list[Path], Path]:
    """4 identities × 2 faces (folder name = identity, first ones in ``candidates`` order) and one extra face."""
    by_identity: OrderedDict[str, list[Path]] = OrderedDict()
    for candidate in map(Path, candidates):
        faces = by_identity.setdefault(candidate.parent.name, [])
        if candidate not in faces:
            faces.append(candidate)
    chosen = [faces[:PER_IDENTITY] for faces in by_identity.values() if len(faces) >= PER_IDENTITY][:IDENTITIES]
    if len(chosen) < IDENTITIES:
        raise ExportError(
            f"golden vectors need {IDENTITIES} identities with {PER_IDENTITY} faces each among the parity/pair "
            f"images, found {len(chosen)}: pass more parity images or a pairs file"
        )
    faces = [face for pair in chosen for face in pair]
    extra = next((c for group in by_identity.values() for c in group if c not in faces), faces[0])
    return faces, extra


def _encode_png(rgb: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise RuntimeError("OpenCV could not encode a PNG")
    return encoded.tobytes()


def write_golden(out_dir: Path, model: "nn.Module", preprocess: "PreprocessSpec",
                 candidates: Sequence[str | os.PathLike], threshold: float | None) -> Path:
    """Write the golden folder; returns the path of ``golden.json``."""
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    spec = preprocess.with_layout("NCHW")
    faces, extra = choose_golden_faces(candidates)
    images = {f"face_{i}": load_rgb_file(face) for i, face in enumerate(faces)}
    sources = {f"face_{i}": face for i, face in enumerate(faces)}
    for stem, image in images.items():
        if image.shape[:2] != (spec.size, spec.size):
            raise ExportError(f"golden face {sources[stem]} is {image.shape[1]}×{image.shape[0]}, not an aligned {spec.size}×{spec.size} face")
    resize_source = load_rgb_file(extra)
    images["face_resize"] = cv2.resize(resize_source, (RESIZE_SIDE, RESIZE_SIDE), interpolation=cv2.INTER_AREA)
    sources["face_resize"] = extra

    items = []
    for stem, image in images.items():
        png_path = out_dir / f"{stem}.png"
        atomic_write_bytes(png_path, _encode_png(image))
        tensor = spec.apply(load_rgb_file(png_path))  # what an app gets from decoding the PNG
        atomic_write_bytes(out_dir / f"{stem}.nchw.f32", tensor.astype("<f4").tobytes())
        with torch.inference_mode():
            embedding = torch.nn.functional.normalize(model(torch.from_numpy(tensor)), dim=1)[0].numpy()
        items.append({
            "image": png_path.name, "input": f"{stem}.nchw.f32", "input_shape": list(tensor.shape),
            "identity": sources[stem].parent.name, "source": sources[stem].name,
            "embedding": [float(v) for v in embedding],
        })

    pairs = []
    for a, b in itertools.combinations(range(len(faces)), 2):
        cosine = float(np.dot(items[a]["embedding"], items[b]["embedding"]))
        pairs.append({
            "a": a, "b": b, "cosine": cosine, "same_identity": items[a]["identity"] == items[b]["identity"],
            "match": None if threshold is None else cosine >= threshold,
        })
    return atomic_write_json(out_dir / "golden.json", {
        "schema_version": GOLDEN_SCHEMA_VERSION, "preprocess": spec.to_dict(), "threshold": threshold,
        "embedding_size": len(items[0]["embedding"]), "items": items, "pairs": pairs,
    })


def _entries(indices: np.ndarray, embeddings: np.ndarray, names: list[str]) -> list[dict]:
    return [{"name": names[i], "embedding": [float(v) for v in embeddings[i]]} for i in indices]


def _borderline(scores: np.ndarray, threshold: float) -> int:
    """Scores within SCORE_TOLERANCE of the threshold: a client computing in float32 may decide them either way
    (the thresholds are cut between measured scores of these very faces)."""
    return int(np.sum(np.abs(scores - threshold) <= SCORE_TOLERANCE))


def write_identification_fixture(path: Path, embeddings: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                                 points: "OperatingPoints") -> Path | None:
    """``identification.json`` (see the module docstring): GALLERY_PEOPLE random identities with two
    or more faces enrolled with their first face, matched at the rule's threshold for FPIR GALLERY_FPIR.
    Not written (None, with a warning) when the val identities are too few for it."""
    embeddings, labels = l2_normalise(embeddings).astype(np.float64), np.asarray(labels)
    try:
        gallery, mated, strangers = gallery_split(labels, GALLERY_PEOPLE, np.random.default_rng(0))
    except IdentitySetError as exc:
        logger.warning("no identification.json for the app tests: %s", exc)
        return None
    threshold = points.identification_threshold(GALLERY_FPIR, len(gallery))
    trial = open_set_trial(embeddings, labels, gallery, mated, strangers)
    names = [classes[label] for label in labels]
    return atomic_write_json(path, {
        "schema_version": GOLDEN_SCHEMA_VERSION, "fpir": GALLERY_FPIR, "operating_points": points.to_dict(),
        "gallery": _entries(gallery, embeddings, names), "mated": _entries(mated, embeddings, names),
        "strangers": _entries(strangers, embeddings, names),
        "expected": {"threshold": threshold, "strangers_matched": int(np.sum(trial.stranger_scores >= threshold)),
                     "mated_found": int(np.sum(trial.mated_correct & (trial.mated_scores >= threshold))),
                     "strangers_borderline": _borderline(trial.stranger_scores, threshold),
                     "mated_borderline": _borderline(trial.mated_scores[trial.mated_correct], threshold)},
    })
