"""Teacher embeddings of a training folder, computed once and memory-mapped during training.

A cache folder holds ``embeddings.npy`` (and ``flipped.npy``, embeddings of the mirrored
images) as float32 [N, D] arrays, plus ``index.json``::

    {"key": {format, teacher, preprocess, dataset, with_flip, count, dim}, "done": int, "complete": bool}

The arrays are filled in place chunk by chunk; ``index.json`` is rewritten atomically after
each flushed chunk and is the only commit point: a cache counts as built only once its index
says ``complete: true`` with the expected key, and an interrupted build resumes at ``done``.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .data import FaceFolder
from .io import atomic_write_json
from .teacher import Teacher

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
INDEX_FILE = "index.json"
EMBEDDINGS_FILE = "embeddings.npy"
FLIPPED_FILE = "flipped.npy"


class StaleCacheError(ValueError):
    """The cache folder is missing, incomplete or was built for another teacher or dataset."""


def cache_key(teacher: Teacher, folder: FaceFolder, with_flip: bool) -> dict:
    """Everything the cached embeddings depend on."""
    return {
        "format": CACHE_FORMAT,
        "teacher": teacher.identity,
        "preprocess": teacher.preprocess.to_dict(),
        "dataset": folder.file_list_digest(),
        "with_flip": bool(with_flip),
        "count": len(folder),
        "dim": int(teacher.embedding_size),
    }


def _as_json(key: dict) -> dict:
    return json.loads(json.dumps(key))


def _read_index(cache_dir: Path) -> dict | None:
    try:
        index = json.loads((cache_dir / INDEX_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return index if isinstance(index, dict) and isinstance(index.get("key"), dict) else None


@dataclass
class TeacherCache:
    """Read-only memory-mapped teacher embeddings; row ``i`` belongs to image ``i`` of the folder."""

    cache_dir: Path
    key: dict
    embeddings: np.memmap
    flipped: np.memmap | None

    @classmethod
    def open(cls, cache_dir: str | os.PathLike, expected_key: dict) -> "TeacherCache":
        cache_dir = Path(cache_dir)
        index = _read_index(cache_dir)
        if index is None:
            raise StaleCacheError(f"no teacher cache in {cache_dir}: build it first (build_teacher_cache)")
        expected = _as_json(expected_key)
        if index["key"] != expected:
            differing = sorted(name for name in expected.keys() | index["key"].keys() if index["key"].get(name) != expected.get(name))
            raise StaleCacheError(f"teacher cache in {cache_dir} is stale ({', '.join(differing)} changed): rebuild it")
        if not index.get("complete"):
            raise StaleCacheError(
                f"teacher cache in {cache_dir} is incomplete ({index.get('done', 0)}/{expected['count']}): "
                "run the build again to resume it"
            )
        shape = (expected["count"], expected["dim"])
        try:
            embeddings = np.load(cache_dir / EMBEDDINGS_FILE, mmap_mode="r")
            flipped = np.load(cache_dir / FLIPPED_FILE, mmap_mode="r") if expected["with_flip"] else None
        except (OSError, ValueError) as exc:
            raise StaleCacheError(f"teacher cache in {cache_dir} is damaged ({exc}): delete the folder and rebuild") from None
        for array in (embeddings, flipped):
            if array is not None and (array.shape != shape or array.dtype != np.float32):
                raise StaleCacheError(f"teacher cache in {cache_dir} holds {array.shape} {array.dtype}, expected {shape} float32: rebuild it")
        return cls(cache_dir, expected, embeddings, flipped)

    def __len__(self) -> int:
        return len(self.embeddings)

    def lookup(self, indices, flipped=None) -> np.ndarray:
        """Teacher embeddings of images ``indices``; where ``flipped`` is true, of the mirrored image."""
        indices = np.asarray(indices, dtype=np.int64)
        rows = np.array(self.embeddings[indices])
        if flipped is not None and np.any(flipped):
            if self.flipped is None:
                raise StaleCacheError(f"teacher cache in {self.cache_dir} has no mirrored embeddings: rebuild it with_flip")
            mask = np.asarray(flipped, dtype=bool)
            rows[mask] = self.flipped[indices[mask]]
        return rows


def build_teacher_cache(
    teacher: Teacher,
    folder: FaceFolder,
    cache_dir: str | os.PathLike,
    with_flip: bool = True,
    batch_size: int = 64,
    progress: bool = True,
) -> TeacherCache:
    """Embed every image of ``folder`` (and its mirror image) with ``teacher`` into ``cache_dir``.

    Returns the existing cache when it matches; resumes an interrupted build with the same key;
    starts over when the teacher, preprocess or file list changed.
    """
    cache_dir = Path(cache_dir)
    key = _as_json(cache_key(teacher, folder, with_flip))
    count, dim = key["count"], key["dim"]
    index = _read_index(cache_dir)
    if index is not None and index["key"] == key and index.get("complete"):
        try:
            return TeacherCache.open(cache_dir, key)
        except StaleCacheError as exc:
            logger.warning("%s", exc)
    arrays = _resume_arrays(cache_dir, index, key)
    if arrays is None:
        if index is not None:
            logger.info("teacher cache in %s does not match this teacher/dataset: rebuilding", cache_dir)
        done = 0
        (cache_dir / INDEX_FILE).unlink(missing_ok=True)
        if not with_flip:
            (cache_dir / FLIPPED_FILE).unlink(missing_ok=True)
        cache_dir.mkdir(parents=True, exist_ok=True)
        names = [EMBEDDINGS_FILE, FLIPPED_FILE] if with_flip else [EMBEDDINGS_FILE]
        arrays = [np.lib.format.open_memmap(cache_dir / name, mode="w+", dtype=np.float32, shape=(count, dim)) for name in names]
        atomic_write_json(cache_dir / INDEX_FILE, {"key": key, "done": 0, "complete": False})
    else:
        done = int(index["done"])
        logger.info("resuming teacher cache in %s at %d/%d", cache_dir, done, count)
    with tqdm(total=count, initial=done, desc="teacher cache", unit="img", disable=not progress) as bar:
        for start in range(done, count, batch_size):
            end = min(start + batch_size, count)
            images = np.stack([teacher.preprocess.resize_rgb(folder.load_rgb(i)) for i in range(start, end)])
            views = [images, images[:, :, ::-1]] if with_flip else [images]
            for array, view in zip(arrays, views):
                embeddings = teacher.embed(view)
                if embeddings.shape != (end - start, dim):
                    raise RuntimeError(f"teacher returned {embeddings.shape} for {end - start} images, expected dim {dim}")
                array[start:end] = embeddings
                array.flush()
            atomic_write_json(cache_dir / INDEX_FILE, {"key": key, "done": end, "complete": False})
            bar.update(end - start)
    for array in arrays:
        array.flush()
    del arrays
    atomic_write_json(cache_dir / INDEX_FILE, {"key": key, "done": count, "complete": True})
    return TeacherCache.open(cache_dir, key)


def _resume_arrays(cache_dir: Path, index: dict | None, key: dict) -> list[np.memmap] | None:
    """The half-filled arrays of an interrupted build with the same key, or None."""
    if index is None or index["key"] != key or index.get("complete") or not isinstance(index.get("done"), int):
        return None
    names = [EMBEDDINGS_FILE, FLIPPED_FILE] if key["with_flip"] else [EMBEDDINGS_FILE]
    try:
        arrays = [np.lib.format.open_memmap(cache_dir / name, mode="r+") for name in names]
    except (OSError, ValueError):
        return None
    if any(array.shape != (key["count"], key["dim"]) or array.dtype != np.float32 for array in arrays):
        return None
    return arrays
