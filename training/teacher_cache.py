"""Teacher embeddings of a training folder, computed once and memory-mapped during training.

A plain cache folder holds ``embeddings.npy`` (and ``flipped.npy``, embeddings of the mirrored
images) as float32 [N, D] arrays, plus ``index.json``::

    {"key": {format, teacher, preprocess, dataset, with_flip, count, dim}, "done": int, "complete": bool}

The arrays are filled in place chunk by chunk; ``index.json`` is rewritten atomically after
each flushed chunk and is the only commit point: a cache counts as built only once its index
says ``complete: true`` with the expected key, and an interrupted build resumes at ``done``.

A view cache (``views.npy`` [N, V, D]) holds the teacher's embeddings of V augmented views per
image (`training.views`); its key adds the augmentation spec and V.
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
from .io import atomic_write_json, remove_stale_temp_files
from .teacher import Teacher, TeacherError
from .views import ViewSpec, make_view

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
    key = _as_json(cache_key(teacher, folder, with_flip))
    names = [EMBEDDINGS_FILE, FLIPPED_FILE] if with_flip else [EMBEDDINGS_FILE]
    shape = (key["count"], key["dim"])

    def embed_chunk(start: int, end: int) -> list[np.ndarray]:
        images = np.stack([teacher.preprocess.resize_rgb(folder.load_rgb(i)) for i in range(start, end)])
        views = [images, images[:, :, ::-1]] if with_flip else [images]
        return [_checked(teacher, teacher.embed(view), (end - start, key["dim"]), lambda row: folder.path(start + row))
                for view in views]

    _fill_cache(Path(cache_dir), key, {name: shape for name in names}, embed_chunk, batch_size, progress,
                "teacher cache", stale_files=[FLIPPED_FILE] if not with_flip else [])
    return TeacherCache.open(cache_dir, key)


def _checked(teacher: Teacher, embeddings: np.ndarray, shape: tuple, path_of_row) -> np.ndarray:
    """The teacher's embeddings; TeacherError when wrong in shape or not finite (naming the image of the bad row)."""
    name = getattr(teacher, "name", type(teacher).__name__)
    if embeddings.shape != shape:
        raise TeacherError(f"teacher {name} returned {list(embeddings.shape)} for {shape[0]} images, expected dim "
                           f"{shape[1]}: its output size changed between images")
    if not np.all(np.isfinite(embeddings)):
        bad = int(np.flatnonzero(~np.isfinite(embeddings).all(axis=tuple(range(1, embeddings.ndim))))[0])
        raise TeacherError(f"teacher {name} returned NaN/inf for {path_of_row(bad)}: the model is broken "
                           "for this input; check the teacher file and its preprocessing (teacher.preprocess)")
    return embeddings


def _fill_cache(cache_dir: Path, key: dict, arrays: dict[str, tuple], embed_chunk, batch_size: int,
                progress: bool, desc: str, stale_files: list[str] = ()) -> None:
    """Fill the memory-mapped ``arrays`` {file: shape} of ``cache_dir`` image chunk by image chunk.

    ``embed_chunk(start, end)`` returns one array per file for images ``start:end``. ``index.json``
    is rewritten atomically after each flushed chunk: an interrupted build resumes at ``done``;
    a complete cache with the same key is left as it is.
    """
    count = key["count"]
    remove_stale_temp_files(cache_dir)
    index = _read_index(cache_dir)
    if index is not None and index["key"] == key and index.get("complete"):
        return
    maps = _resume_arrays(cache_dir, index, key, arrays)
    if maps is None:
        if index is not None:
            logger.info("%s in %s does not match this teacher/dataset: rebuilding", desc, cache_dir)
        done = 0
        (cache_dir / INDEX_FILE).unlink(missing_ok=True)
        for name in stale_files:
            (cache_dir / name).unlink(missing_ok=True)
        cache_dir.mkdir(parents=True, exist_ok=True)
        maps = [np.lib.format.open_memmap(cache_dir / name, mode="w+", dtype=np.float32, shape=shape)
                for name, shape in arrays.items()]
        atomic_write_json(cache_dir / INDEX_FILE, {"key": key, "done": 0, "complete": False})
    else:
        done = int(index["done"])
        logger.info("resuming %s in %s at %d/%d", desc, cache_dir, done, count)
    with tqdm(total=count, initial=done, desc=desc, unit="img", disable=not progress) as bar:
        for start in range(done, count, batch_size):
            end = min(start + batch_size, count)
            for array, values in zip(maps, embed_chunk(start, end)):
                array[start:end] = values
                array.flush()
            atomic_write_json(cache_dir / INDEX_FILE, {"key": key, "done": end, "complete": False})
            bar.update(end - start)
    del maps
    atomic_write_json(cache_dir / INDEX_FILE, {"key": key, "done": count, "complete": True})


def _resume_arrays(cache_dir: Path, index: dict | None, key: dict, arrays: dict[str, tuple]) -> list[np.memmap] | None:
    """The half-filled arrays of an interrupted build with the same key, or None."""
    if index is None or index["key"] != key or index.get("complete") or not isinstance(index.get("done"), int):
        return None
    try:
        maps = [np.lib.format.open_memmap(cache_dir / name, mode="r+") for name in arrays]
    except (OSError, ValueError):
        return None
    if any(m.shape != tuple(shape) or m.dtype != np.float32 for m, shape in zip(maps, arrays.values())):
        return None
    return maps


# -- consistent views ------------------------------------------------------------------------------

VIEWS_FILE = "views.npy"


def view_cache_key(teacher: Teacher, folder: FaceFolder, spec: ViewSpec, views: int) -> dict:
    """The plain cache's key plus the augmentation spec and the number of views per image."""
    key = cache_key(teacher, folder, with_flip=False)
    key.pop("with_flip")
    return {**key, "kind": "views", "views": int(views), "view_spec": spec.to_dict()}


@dataclass
class ViewCache:
    """Teacher embeddings of ``views`` augmented views per image: ``embeddings[i, v]`` is the teacher's
    embedding of ``make_view(image i, spec, i, v)``."""

    cache_dir: Path
    key: dict
    spec: ViewSpec
    embeddings: np.memmap   # [N, V, D] float32

    @property
    def views(self) -> int:
        return int(self.embeddings.shape[1])

    @classmethod
    def open(cls, cache_dir: str | os.PathLike, expected_key: dict, spec: ViewSpec) -> "ViewCache":
        cache_dir = Path(cache_dir)
        index = _read_index(cache_dir)
        expected = _as_json(expected_key)
        if index is None or index["key"] != expected or not index.get("complete"):
            state = "missing" if index is None else ("stale" if index["key"] != expected else "incomplete")
            raise StaleCacheError(f"teacher view cache in {cache_dir} is {state}: build it with "
                                  "`facekd cache-teacher --views V` (an interrupted build resumes)")
        shape = (expected["count"], expected["views"], expected["dim"])
        try:
            embeddings = np.load(cache_dir / VIEWS_FILE, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise StaleCacheError(f"teacher view cache in {cache_dir} is damaged ({exc}): delete it and rebuild") from None
        if embeddings.shape != shape or embeddings.dtype != np.float32:
            raise StaleCacheError(f"teacher view cache in {cache_dir} holds {embeddings.shape}, expected {shape}: rebuild it")
        return cls(cache_dir, expected, spec, embeddings)


def build_view_cache(teacher: Teacher, folder: FaceFolder, cache_dir: str | os.PathLike, spec: ViewSpec,
                     views: int, batch_size: int = 64, progress: bool = True) -> ViewCache:
    """Embed ``views`` views of every image (view 0 = the image itself) into ``cache_dir``; resumable."""
    if views < 1:
        raise ValueError(f"views must be at least 1, got {views}")
    key = _as_json(view_cache_key(teacher, folder, spec, views))
    dim = key["dim"]

    def embed_chunk(start: int, end: int) -> list[np.ndarray]:
        sources = [teacher.preprocess.resize_rgb(folder.load_rgb(i)) for i in range(start, end)]
        batch = np.stack([make_view(image, spec, start + k, v) for k, image in enumerate(sources) for v in range(views)])
        embeddings = _checked(teacher, teacher.embed(batch), (len(batch), dim), lambda row: folder.path(start + row // views))
        return [embeddings.reshape(end - start, views, dim)]

    per_chunk = max(1, batch_size // views)
    _fill_cache(Path(cache_dir), key, {VIEWS_FILE: (key["count"], views, dim)}, embed_chunk, per_chunk, progress,
                f"teacher views ×{views}")
    return ViewCache.open(cache_dir, key, spec)
